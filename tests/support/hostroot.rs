//! A Debian root of the test's own that Ansible treats as a host (through the
//! `community.general.chroot` connection): real apt and dpkg, with a package state that is the
//! root's, never the machine's.
//!
//! The root comes from the tar `make test` builds once with debootstrap
//! (`tests/hostroot/build.sh`, cached by its content hash) and names in `K8S_CALICO_HOSTROOT`;
//! each test unpacks its own copy (about a second) into a temporary directory. chroot needs root.
//! No systemd runs in a chroot: what the service step does there is said where it is used.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::pkgrepo::PkgRepo;

/// Why a root cannot be had here, or None when it can.
fn unavailable() -> Option<String> {
    let tar = std::env::var_os("K8S_CALICO_HOSTROOT").map(PathBuf::from);
    match tar {
        None => Some("K8S_CALICO_HOSTROOT is not set (`make test` builds the root)".into()),
        Some(t) if !t.exists() => Some(format!("{} does not exist", t.display())),
        Some(_) if !is_root() => Some("chroot needs root".into()),
        Some(_) => None,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Whether roots can be made here; says why not otherwise (a failure under `make test`).
pub fn available() -> bool {
    let Some(why) = unavailable() else {
        return super::pkgrepo::tools_present();
    };
    if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
        panic!("no host root: {why}");
    }
    eprintln!("SKIPPED: no host root: {why}");
    false
}

/// One unpacked root (removed on drop).
pub struct HostRoot {
    dir: tempfile::TempDir,
}

impl HostRoot {
    /// Unpacks the cached root. Call `available()` first.
    pub fn new() -> Self {
        let tar = std::env::var_os("K8S_CALICO_HOSTROOT").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .arg("-xf")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        HostRoot { dir }
    }

    /// The root directory (the chroot connection's `ansible_host`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the root by its path inside it ("/etc/apt/...").
    pub fn file(&self, inside: &str) -> PathBuf {
        self.path().join(inside.trim_start_matches('/'))
    }

    /// Runs `script` with /bin/sh inside the root.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("chroot")
            .arg(self.path())
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }

    /// Runs `script` inside the root and returns its stdout, failing the test if it fails.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets the root up as kubeadm's install guide leaves a host of `version`: the one-line
    /// source of its minor's repository with the key in /etc/apt/keyrings, kubeadm, kubelet and
    /// kubectl of that version installed and held.
    pub fn install_kubernetes(&self, repo: &PkgRepo, version: &str) {
        let minor = version.rsplit_once('.').unwrap().0;
        let keyrings = self.file("/etc/apt/keyrings");
        std::fs::create_dir_all(&keyrings).unwrap();
        std::fs::copy(
            repo.key_path(minor),
            keyrings.join("kubernetes-apt-keyring.asc"),
        )
        .unwrap();
        std::fs::write(
            self.file("/etc/apt/sources.list.d/kubernetes.list"),
            format!(
                "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.asc] {} /\n",
                repo.url(minor)
            ),
        )
        .unwrap();
        self.sh_ok(&format!(
            "apt-get update -q && apt-get install -y -q kubeadm={version}-1.1 kubelet={version}-1.1 \
             kubectl={version}-1.1 && apt-mark hold kubeadm kubelet kubectl"
        ));
    }

    /// Installed packages: name -> (version, selection) from dpkg, e.g. ("1.28.15-1.1", "hold").
    pub fn packages(&self) -> std::collections::BTreeMap<String, (String, String)> {
        self.sh_ok("dpkg-query -W -f '${Package} ${Version} ${db:Status-Want}\\n'")
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    (f.next()?.to_string(), f.next()?.to_string()),
                ))
            })
            .collect()
    }

    /// The inventory line of this root as host `name`.
    pub fn inventory_line(&self, name: &str) -> String {
        format!(
            "{name} ansible_connection=community.general.chroot ansible_host={} \
             ansible_python_interpreter=/usr/bin/python3",
            self.path().display()
        )
    }
}
