//! The collection `k8s_calico.calico` as users get it: the tarball `make collection` builds
//! (`make test` builds it and passes its path in `K8S_CALICO_COLLECTION`), installed with
//! `ansible-galaxy` into an empty path, documented by `ansible-doc` without warnings, and run by
//! a playbook that names everything by FQCN against kubesim. The aarch64 builds run under
//! qemu-user. The action plugins' choice of build is tested on the repository's own copy.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::ansible::{Workspace, recap, text, venv};
use support::cluster::SimCluster;

const MODULES: &[&str] = &["calico_matrix", "calico_upgrade", "calico_nettest"];
const ARCHS: &[&str] = &["x86_64", "aarch64"];

/// The tarball from `make collection`, or why the test is skipped (a failure under `make test`).
fn tarball() -> Option<PathBuf> {
    match std::env::var_os("K8S_CALICO_COLLECTION").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        other => {
            let why = match other {
                Some(p) => format!("K8S_CALICO_COLLECTION={} is not a file", p.display()),
                None => "K8S_CALICO_COLLECTION is not set".to_string(),
            };
            if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
                panic!(
                    "{why}: run `make test`, which builds the collection with `make collection`"
                );
            }
            eprintln!("SKIPPED: {why} (`make test` builds it and sets it)");
            None
        }
    }
}

/// The collection installed into an empty collections path.
struct Installed {
    dir: tempfile::TempDir,
    venv: PathBuf,
}

impl Installed {
    fn new() -> Option<Self> {
        let tarball = tarball()?;
        let venv = venv()?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let installed = Installed { dir, venv };
        let out = installed
            .command("ansible-galaxy")
            .args(["collection", "install", "--offline", "-p"])
            .arg(installed.collections())
            .arg(&tarball)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        Some(installed)
    }

    fn collections(&self) -> PathBuf {
        self.dir.path().join("collections")
    }

    fn root(&self) -> PathBuf {
        self.collections()
            .join("ansible_collections/k8s_calico/calico")
    }

    /// A tool of the virtualenv, run in the empty directory: no ansible.cfg, no repository.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.venv.join("bin").join(tool));
        let home = self.dir.path().join("home");
        cmd.current_dir(self.dir.path())
            .env("ANSIBLE_COLLECTIONS_PATH", self.collections())
            .env("ANSIBLE_HOME", home.join(".ansible"))
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("HOME", &home)
            .env_remove("ANSIBLE_CONFIG")
            .env_remove("ANSIBLE_LIBRARY")
            .env_remove("KUBECONFIG")
            .env_remove("K8S_AUTH_KUBECONFIG");
        cmd
    }
}

/// Fails on any warning in an `ansible-doc` run.
fn no_warnings(out: &Output) {
    let t = text(out);
    assert!(out.status.success(), "{t}");
    assert!(
        !t.contains("WARNING") && !t.contains("ERROR") && !t.contains("codec"),
        "ansible-doc warned: {t}"
    );
}

#[test]
fn the_installed_collection_documents_its_modules_without_warnings() {
    let Some(c) = Installed::new() else { return };
    let out = c
        .command("ansible-doc")
        .arg("k8s_calico.calico.calico_upgrade")
        .output()
        .unwrap();
    no_warnings(&out);
    let t = text(&out);
    for expected in [
        "k8s_calico.calico.calico_upgrade",
        "target_version",
        "backup_dir",
        "EXAMPLES",
        "RETURN VALUES",
    ] {
        assert!(t.contains(expected), "ansible-doc lacks {expected}: {t}");
    }
    let out = c
        .command("ansible-doc")
        .args(["-l", "k8s_calico.calico"])
        .output()
        .unwrap();
    no_warnings(&out);
    let listed: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut expected: Vec<String> = MODULES
        .iter()
        .map(|m| format!("k8s_calico.calico.{m}"))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{}", text(&out));
    let out = c
        .command("ansible-doc")
        .args(["-t", "role", "k8s_calico.calico.k8s_calico"])
        .output()
        .unwrap();
    no_warnings(&out);
    assert!(text(&out).contains("k8s_calico_upgrade_timeout"));
}

#[test]
fn the_crate_the_collection_and_every_build_have_one_version() {
    let Some(c) = Installed::new() else { return };
    let version = env!("CARGO_PKG_VERSION");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(c.root().join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["collection_info"]["version"], version);
    // antsibull-changelog escapes Markdown: "v0\.1\.0".
    let changelog = std::fs::read_to_string(c.root().join("CHANGELOG.md")).unwrap();
    assert!(
        changelog
            .replace('\\', "")
            .contains(&format!("## v{version}")),
        "{changelog}"
    );
    for m in MODULES {
        let bin = c.root().join(format!("bin/{m}_x86_64"));
        let out = Command::new(&bin).arg("--version").output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            line.starts_with(&format!("{m} {version} ")),
            "{}: {line}",
            bin.display()
        );
    }
}

/// The ELF machine of a file (62 x86_64, 183 aarch64) and whether it asks for a dynamic loader.
fn elf(path: &Path) -> (u16, bool) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    // Program headers: a PT_INTERP (3) entry names the dynamic loader a dynamic binary needs.
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    let dynamic = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    });
    (machine, dynamic)
}

#[test]
fn the_collection_carries_static_builds_for_x86_64_and_aarch64() {
    let Some(c) = Installed::new() else { return };
    for m in MODULES {
        for (arch, machine) in ARCHS.iter().zip([62u16, 183]) {
            let bin = c.root().join(format!("bin/{m}_{arch}"));
            let (found, dynamic) = elf(&bin);
            assert_eq!(found, machine, "{}", bin.display());
            assert!(!dynamic, "{} is not static", bin.display());
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&bin.metadata().unwrap().permissions());
            assert_eq!(mode & 0o111, 0o111, "{} is not executable", bin.display());
        }
    }
}

/// Runs `bin` under qemu-user for aarch64, or says why the test is skipped.
fn qemu() -> Option<PathBuf> {
    let found = ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
            panic!("qemu-aarch64-static not found: `make test` installs qemu-user-static");
        }
        eprintln!("SKIPPED: qemu-aarch64-static not found (apt-get install qemu-user-static)");
    }
    found
}

#[test]
fn the_aarch64_builds_run_under_qemu_user() {
    let Some(c) = Installed::new() else { return };
    let Some(qemu) = qemu() else { return };
    let version = env!("CARGO_PKG_VERSION");
    for m in MODULES {
        let bin = c.root().join(format!("bin/{m}_aarch64"));
        let out = Command::new(&qemu)
            .arg(&bin)
            .arg("--version")
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && line.starts_with(&format!("{m} {version} ")),
            "{} under qemu: {line}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // More than --version: a whole module run, offline, by the protocol.
    let args = c.dir.path().join("args");
    std::fs::write(
        &args,
        r#"{"kubernetes_version": "1.27.16", "calico_version": "v3.26.4", "_ansible_check_mode": false}"#,
    )
    .unwrap();
    let out = Command::new(&qemu)
        .arg(c.root().join("bin/calico_matrix_aarch64"))
        .arg(&args)
        .output()
        .unwrap();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(result["failed"], false, "{result}");
    assert_eq!(
        result["ansible_facts"]["calico_matrix"]["recommended_version"], "v3.28.5",
        "{result}"
    );
}

/// 1.27 with Calico v3.27.5 from calico.yaml: the recommendation, v3.28.5, is one hop away.
const CLUSTER: &str = "
kubernetes_version: v1.27.16
nodes: {count: 3, control_plane: 1}
calico: {version: v3.27.5}
";

const FQCN_PLAYBOOK: &str = r#"
- name: Everything by its FQCN, from the installed collection
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Plan Calico for the cluster
      k8s_calico.calico.calico_matrix:
        kubeconfig: "{{ kubeconfig }}"
      register: plan

    - name: The plan reads the cluster
      ansible.builtin.assert:
        that:
          - plan.ansible_facts.calico_matrix.kubernetes_version == '1.27.16'
          - plan.ansible_facts.calico_matrix.current_version == 'v3.27.5'
          - plan.ansible_facts.calico_matrix.recommended_version == 'v3.28.5'

    - name: Upgrade Calico with the role
      ansible.builtin.include_role:
        name: k8s_calico.calico.k8s_calico
      vars:
        k8s_calico_kubeconfig: "{{ kubeconfig }}"
        k8s_calico_control_plane_group: all
"#;

#[test]
fn a_playbook_using_only_fqcn_runs_the_module_and_the_role_against_kubesim() {
    let Some(c) = Installed::new() else { return };
    let sim = SimCluster::start(CLUSTER, &["v3.27.5", "v3.28.5"]);
    let playbook = c.dir.path().join("fqcn.yml");
    std::fs::write(&playbook, FQCN_PLAYBOOK).unwrap();
    let python = c.venv.join("bin/python");
    let out = c
        .command("ansible-playbook")
        .args(["-i", "localhost,", "-e"])
        .arg(format!("ansible_python_interpreter={}", python.display()))
        .arg("-e")
        .arg(format!("kubeconfig={}", sim.kubeconfig()))
        .arg("-e")
        .arg(format!(
            "k8s_calico_manifest_dir={}",
            sim.manifest_dir().display()
        ))
        .arg("-e")
        .arg(format!(
            "k8s_calico_backup_dir={}",
            sim.backup_dir().display()
        ))
        .args([
            "-e",
            "k8s_calico_upgrade_timeout=120",
            "-e",
            "k8s_calico_nettest_timeout=120",
        ])
        .arg(&playbook)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(recap(&out, "localhost")["failed"], 0, "{t}");
    // The cluster, read afterwards: every calico-node runs the recommendation.
    let images = sim.calico_node_images();
    assert_eq!(images.len(), 3, "{images:?}");
    assert!(
        images.values().all(|i| i.ends_with("calico/node:v3.28.5")),
        "{images:?}\n{t}"
    );
    assert_eq!(sim.backups().len(), 1, "{t}");
    assert!(t.contains("network test passed"), "{t}");
}

/// The repository's own copy, with the builds this `cargo test` made.
fn workspace() -> Option<Workspace> {
    Workspace::new(&[
        ("calico_matrix", env!("CARGO_BIN_EXE_calico_matrix")),
        ("calico_upgrade", env!("CARGO_BIN_EXE_calico_upgrade")),
        ("calico_nettest", env!("CARGO_BIN_EXE_calico_nettest")),
    ])
}

/// A fact module that says the host is `system` `machine`, then an offline calico_matrix task
/// with `extra` task vars; run with -vvv so the copies show.
fn on_a_host(ws: &Workspace, system: &str, machine: &str, extra: &str) -> Output {
    ws.write(
        "library/fake_facts",
        &format!(
            "#!/bin/sh\n# WANT_JSON\necho '{{\"changed\": false, \"ansible_facts\": {{\"system\": \"{system}\", \"architecture\": \"{machine}\"}}}}'\n"
        ),
    );
    let playbook = ws.write(
        "playbooks/arch.yml",
        &format!(
            "- hosts: demo-cp1\n  gather_facts: false\n  tasks:\n    - fake_facts:\n    - k8s_calico.calico.calico_matrix:\n        kubernetes_version: '1.27.16'\n      vars:\n{extra}"
        ),
    );
    ws.command("ansible-playbook")
        .env("ANSIBLE_LIBRARY", ws.root().join("library"))
        .args(["-vvv", "-i", "inventory/demo/hosts"])
        .arg(playbook)
        .output()
        .unwrap()
}

#[test]
fn on_the_controller_the_build_runs_in_place_and_elsewhere_it_is_copied() {
    let Some(ws) = workspace() else { return };
    let arch = std::env::consts::ARCH;
    let machine = if arch == "x86_64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let in_place = on_a_host(&ws, "Linux", machine, "        unused: true\n");
    let t = text(&in_place);
    assert!(in_place.status.success(), "{t}");
    assert!(
        !t.contains(&format!("AnsiballZ_calico_matrix_{arch}")),
        "{t}"
    );
    let copied = on_a_host(
        &ws,
        "Linux",
        machine,
        "        k8s_calico_copy_module: true\n",
    );
    let t = text(&copied);
    assert!(copied.status.success(), "{t}");
    assert!(
        t.contains(&format!("AnsiballZ_calico_matrix_{arch}")),
        "{t}"
    );
    assert_eq!(recap(&copied, "demo-cp1")["failed"], 0, "{t}");
}

#[test]
fn a_host_of_another_platform_is_refused_and_a_missing_build_named() {
    let Some(ws) = workspace() else { return };
    let copy = "        k8s_calico_copy_module: true\n";
    let out = on_a_host(&ws, "Linux", "armv7l", copy);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(
            "has builds for Linux x86_64 and aarch64 only, and the host (Linux armv7l) is neither"
        ),
        "{t}"
    );
    let out = on_a_host(&ws, "FreeBSD", "amd64", copy);
    assert!(
        text(&out).contains("the host (FreeBSD amd64) is neither"),
        "{}",
        text(&out)
    );
    // This copy has only this machine's build: the other one is named as missing.
    let other = if std::env::consts::ARCH == "x86_64" {
        "aarch64"
    } else {
        "x86_64"
    };
    let out = on_a_host(&ws, "Linux", other, copy);
    let t = text(&out);
    assert!(
        t.contains(&format!("has no {other} build here")) && t.contains("make collection"),
        "{t}"
    );
}
