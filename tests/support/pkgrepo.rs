//! A local package repository laid out like the community one (pkgs.k8s.io): one flat apt
//! repository per Kubernetes minor under `core:/stable:/v1.M/deb/`, each with dummy `kubeadm`,
//! `kubelet`, `kubectl` and `cri-tools` packages built with `dpkg-deb`, indexed by
//! `apt-ftparchive`, signed (`InRelease`, `Release.gpg`) with a throwaway gpg key published as
//! `Release.key`, and served over HTTP on 127.0.0.1 on an ephemeral port.
//!
//! The dummy programs answer `version` the way the real ones do (`kubeadm version -o short`,
//! `kubelet --version`, `kubectl version --client`) and hand every call to
//! `/etc/k8s-calico-test/<program>-hook` when a test root has one (the phase tests' recorder).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What one minor's repository holds: the Kubernetes patch versions and the cri-tools version.
pub struct Minor {
    /// e.g. "1.28".
    pub minor: &'static str,
    /// Kubernetes versions of kubeadm, kubelet and kubectl, e.g. ["1.28.14", "1.28.15"].
    pub versions: &'static [&'static str],
    /// The cri-tools version the minor's kubeadm depends on, e.g. "1.28.0".
    pub cri_tools: &'static str,
}

/// The repositories the tests use: 1.27 to 1.29, two patches each.
pub const MINORS: &[Minor] = &[
    Minor {
        minor: "1.27",
        versions: &["1.27.15", "1.27.16"],
        cri_tools: "1.27.1",
    },
    Minor {
        minor: "1.28",
        versions: &["1.28.14", "1.28.15"],
        cri_tools: "1.28.0",
    },
    Minor {
        minor: "1.29",
        versions: &["1.29.3", "1.29.4"],
        cri_tools: "1.29.0",
    },
];

/// Whether the tools the repository is built with are here; says why not otherwise (and fails
/// under `make test`, `K8S_CALICO_NO_SKIP=1`).
pub fn tools_present() -> bool {
    let missing: Vec<&str> = ["dpkg-deb", "apt-ftparchive", "gpg", "gpgconf"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not found (apt-get install dpkg apt-utils gpg, or `make test-tools`)",
        missing.join(", ")
    );
    if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// The built repositories and the HTTP server in front of them (stopped on drop).
pub struct PkgRepo {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The dummy program `tool` of Kubernetes `version`.
fn program(tool: &str, version: &str) -> String {
    let answer = match tool {
        "kubeadm" => format!("v{version}"),
        "kubelet" => format!("Kubernetes v{version}"),
        "kubectl" => format!("Client Version: v{version}"),
        _ => format!("crictl version v{version}"),
    };
    format!(
        "#!/bin/sh\n# Dummy {tool} {version}, a k8s-calico test package.\n\
         hook=/etc/k8s-calico-test/{tool}-hook\n\
         if [ -x \"$hook\" ]; then exec \"$hook\" \"$@\"; fi\n\
         case \" $* \" in *\" version \"*|*\" --version \"*) echo '{answer}' ;; esac\n"
    )
}

/// Builds one `.deb` into `out`.
fn build_deb(work: &Path, out: &Path, name: &str, version: &str, depends: Option<String>) {
    let deb_version = format!("{version}-1.1");
    let tree = work.join(format!("{name}_{deb_version}"));
    let bin = if name == "cri-tools" { "crictl" } else { name };
    write_exec(&tree.join("usr/bin").join(bin), &program(bin, version));
    if name == "kubelet" {
        let unit = tree.join("usr/lib/systemd/system/kubelet.service");
        std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
        std::fs::write(
            &unit,
            "[Unit]\nDescription=kubelet (k8s-calico test package)\n\n[Service]\n\
             ExecStart=/usr/bin/kubelet\n\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
    }
    let mut control = format!(
        "Package: {name}\nVersion: {deb_version}\nArchitecture: all\n\
         Maintainer: k8s-calico tests <tests@invalid>\n\
         Description: dummy {name} {version} for the k8s-calico package tests\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(tree.join("DEBIAN/control"), control).unwrap();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&tree)
        .arg(out.join(format!("{name}_{deb_version}_all.deb"))));
}

impl PkgRepo {
    /// Builds every repository of `MINORS`, signs them and starts serving them.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.arg("--homedir").arg(&gnupg).args(["--batch", "--quiet"]);
            c.args(args);
            c
        };
        run(&mut gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "k8s-calico test repository <tests@invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
        let key = run(&mut gpg(&["--armor", "--export"])).stdout;
        let work = dir.path().join("build");
        for m in MINORS {
            let repo = dir
                .path()
                .join("www")
                .join(format!("core:/stable:/v{}/deb", m.minor));
            std::fs::create_dir_all(&repo).unwrap();
            build_deb(&work, &repo, "cri-tools", m.cri_tools, None);
            for v in m.versions {
                let cri = format!("cri-tools (>= {})", m.cri_tools);
                build_deb(&work, &repo, "kubeadm", v, Some(cri));
                build_deb(&work, &repo, "kubelet", v, None);
                build_deb(&work, &repo, "kubectl", v, None);
            }
            let packages = run(Command::new("apt-ftparchive")
                .arg("packages")
                .arg(".")
                .current_dir(&repo))
            .stdout;
            std::fs::write(repo.join("Packages"), packages).unwrap();
            let release = run(Command::new("apt-ftparchive")
                .arg("release")
                .arg(".")
                .current_dir(&repo))
            .stdout;
            std::fs::write(repo.join("Release"), release).unwrap();
            let sign = |args: &[&str], out: &str| {
                let mut c = gpg(args);
                c.arg("--output")
                    .arg(repo.join(out))
                    .arg(repo.join("Release"));
                run(&mut c);
            };
            sign(&["--clearsign"], "InRelease");
            sign(&["--armor", "--detach-sign"], "Release.gpg");
            std::fs::write(repo.join("Release.key"), &key).unwrap();
        }
        // No agent is left behind.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&gnupg)
            .args(["--kill", "all"])
            .status();
        let log = std::fs::File::create(dir.path().join("http.log")).unwrap();
        let mut server = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path().join("www"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        PkgRepo { dir, server, port }
    }

    /// The URL template for `k8s_upgrade_package_repository` ("{minor}" for the minor).
    pub fn url_template(&self) -> String {
        format!(
            "http://127.0.0.1:{}/core:/stable:/v{{minor}}/deb/",
            self.port
        )
    }

    /// The URL of one minor's repository.
    pub fn url(&self, minor: &str) -> String {
        self.url_template().replace("{minor}", minor)
    }

    /// The armored public key (as `Release.key` serves it).
    pub fn key_path(&self, minor: &str) -> PathBuf {
        self.dir
            .path()
            .join("www")
            .join(format!("core:/stable:/v{minor}/deb/Release.key"))
    }

    /// The requests the server saw (its log).
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("http.log")).unwrap_or_default()
    }
}

impl Drop for PkgRepo {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
