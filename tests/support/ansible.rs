//! Running the real `ansible-playbook` against a copy of the repository's Ansible content, with
//! the module binaries this `cargo test` just built.
//!
//! The copy keeps the repository layout (`ansible/`, `playbooks/` with its `roles` link,
//! `inventory/`, `ansible.cfg`, and the `.collections` link through which `ansible.cfg` finds
//! `ansible/` as the collection `k8s_calico.calico`) so the playbooks are tested exactly as
//! users run them, and it never picks up stale release binaries a developer may have in
//! `ansible/bin/`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds the virtualenv with ansible-core, or says why the test is skipped. Under `make test`
/// (`K8S_CALICO_NO_SKIP=1`) a missing virtualenv fails the test instead.
pub fn venv() -> Option<PathBuf> {
    let candidate = std::env::var_os("K8S_CALICO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    if candidate.join("bin/ansible-playbook").exists() {
        return Some(candidate);
    }
    if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
        panic!(
            "ansible-playbook not found in {}: run `make venv`",
            candidate.display()
        );
    }
    eprintln!(
        "SKIPPED: ansible-playbook not found in {} (run `make venv`, or `make test` which does)",
        candidate.display()
    );
    None
}

/// A private copy of the Ansible content with freshly built module binaries.
pub struct Workspace {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The virtualenv.
    pub venv: PathBuf,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let dest = to.join(entry.file_name());
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(target, dest).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

impl Workspace {
    /// Copies the content and installs `binaries` (module name, path) as the collection's
    /// builds for this machine's architecture.
    pub fn new(binaries: &[(&str, &str)]) -> Option<Self> {
        let venv = venv()?;
        let dir = tempfile::tempdir().unwrap();
        for part in ["ansible", "playbooks", "inventory"] {
            copy_tree(&repo().join(part), &dir.path().join(part));
        }
        std::fs::copy(repo().join("ansible.cfg"), dir.path().join("ansible.cfg")).unwrap();
        let bin = dir.path().join("ansible/bin");
        // A developer's release builds: not what this test run built.
        let _ = std::fs::remove_dir_all(&bin);
        std::fs::create_dir_all(&bin).unwrap();
        for (name, path) in binaries {
            std::fs::copy(path, bin.join(format!("{name}_{}", std::env::consts::ARCH))).unwrap();
        }
        let link = dir
            .path()
            .join(".collections/ansible_collections/k8s_calico");
        std::fs::create_dir_all(&link).unwrap();
        std::os::unix::fs::symlink("../../../ansible", link.join("calico")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Some(Self { dir, venv })
    }

    /// The copy's root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (e.g. an extra test playbook) into the copy.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A command for a tool of the virtualenv, run in the copy with a private Ansible home.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.venv.join("bin").join(tool));
        cmd.current_dir(self.root())
            .env("ANSIBLE_CONFIG", self.root().join("ansible.cfg"))
            .env("ANSIBLE_HOME", self.root().join("home/.ansible"))
            .env("ANSIBLE_LOCAL_TEMP", self.root().join("home/tmp"))
            .env("ANSIBLE_REMOTE_TEMP", self.root().join("home/remote-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("HOME", self.root().join("home"))
            .env_remove("KUBECONFIG")
            .env_remove("K8S_AUTH_KUBECONFIG");
        cmd
    }

    /// Runs `ansible-playbook` with the given arguments and returns its output.
    pub fn playbook(&self, args: &[&str]) -> Output {
        self.command("ansible-playbook")
            .args(args)
            .output()
            .unwrap()
    }
}

/// The combined stdout and stderr, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The recap counts of a host (`ok=3 changed=0 ...`), from the PLAY RECAP.
pub fn recap(out: &Output, host: &str) -> std::collections::BTreeMap<String, u64> {
    let t = text(out);
    let line = t
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(host) && l.contains("ok="))
        .unwrap_or_else(|| panic!("no recap for {host} in:\n{t}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}
