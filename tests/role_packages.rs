//! The k8s_upgrade role's package steps with real apt: a Debian root of the test's own
//! (`support::hostroot`, reached through the `community.general.chroot` connection), set up as
//! kubeadm's install guide leaves a 1.27 host, and a local copy of the community repository's
//! layout (`support::pkgrepo`, one signed repository per minor on 127.0.0.1).

mod support;

use support::ansible::{Workspace, recap, text};
use support::hostroot::{self, HostRoot};
use support::pkgrepo::PkgRepo;

struct World {
    ws: Workspace,
    repo: PkgRepo,
    host: HostRoot,
}

fn world(version: &str) -> Option<World> {
    if !hostroot::available() {
        return None;
    }
    let ws = Workspace::new(&[])?;
    let repo = PkgRepo::start();
    let host = HostRoot::new();
    host.install_kubernetes(&repo, version);
    ws.write(
        "inventory/packages/hosts",
        &format!("[kube_node]\n{}\n", host.inventory_line("node1")),
    );
    std::fs::copy(
        support::ansible::repo().join("tests/ansible/packages.yml"),
        ws.root().join("playbooks/packages.yml"),
    )
    .unwrap();
    Some(World { ws, repo, host })
}

impl World {
    fn run(&self, target: &str, extra: &[&str]) -> std::process::Output {
        let repository = format!(
            "k8s_upgrade_package_repository={}",
            self.repo.url_template()
        );
        let target = format!("k8s_target_version={target}");
        let mut args = vec![
            "-i",
            "inventory/packages/hosts",
            "playbooks/packages.yml",
            "-e",
            &repository,
            "-e",
            &target,
        ];
        args.extend_from_slice(extra);
        self.ws.playbook(&args)
    }

    /// Everything apt and dpkg keep: the sources, keys, selections, installed versions.
    fn package_state(&self) -> String {
        self.host.sh_ok(
            "cd /etc/apt && find sources.list.d keyrings -type f | sort | xargs -r sha256sum; \
             dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'",
        )
    }

    fn kubernetes_packages(&self) -> Vec<(String, String, String)> {
        self.host
            .packages()
            .into_iter()
            .filter(|(n, _)| ["kubeadm", "kubelet", "kubectl", "cri-tools"].contains(&n.as_str()))
            .map(|(n, (v, s))| (n, v, s))
            .collect()
    }
}

fn row(n: &str, v: &str, s: &str) -> (String, String, String) {
    (n.to_string(), v.to_string(), s.to_string())
}

#[test]
fn a_minor_upgrade_switches_the_repository_installs_and_holds_and_is_idempotent() {
    let Some(w) = world("1.27.16") else { return };
    assert_eq!(
        w.kubernetes_packages(),
        [
            row("cri-tools", "1.27.1-1.1", "install"),
            row("kubeadm", "1.27.16-1.1", "hold"),
            row("kubectl", "1.27.16-1.1", "hold"),
            row("kubelet", "1.27.16-1.1", "hold"),
        ]
    );

    // --check first: it says what would change and changes nothing.
    let before = w.package_state();
    let started = std::time::Instant::now();
    let out = w.run("1.28.15", &["--check", "--diff"]);
    let t = text(&out);
    eprintln!("check run: {:?}", started.elapsed());
    assert!(out.status.success(), "{t}");
    assert_eq!(w.package_state(), before, "--check changed the host:\n{t}");
    assert!(recap(&out, "node1")["changed"] > 0, "{t}");
    for would in [
        "Inst kubeadm [1.27.16-1.1] (1.28.15-1.1",
        "Inst cri-tools [1.27.1-1.1] (1.28.0-1.1",
        "Inst kubelet [1.27.16-1.1] (1.28.15-1.1",
        "Inst kubectl [1.27.16-1.1] (1.28.15-1.1",
    ] {
        assert!(t.contains(would), "{would:?} not previewed:\n{t}");
    }
    assert!(t.contains("core:/stable:/v1.28/deb/"), "{t}");

    // The real run.
    let started = std::time::Instant::now();
    let out = w.run("1.28.15", &[]);
    let t = text(&out);
    eprintln!("upgrade run: {:?}", started.elapsed());
    assert!(out.status.success(), "{t}");
    assert!(recap(&out, "node1")["changed"] > 0, "{t}");
    assert_eq!(
        w.kubernetes_packages(),
        [
            row("cri-tools", "1.28.0-1.1", "install"),
            row("kubeadm", "1.28.15-1.1", "hold"),
            row("kubectl", "1.28.15-1.1", "hold"),
            row("kubelet", "1.28.15-1.1", "hold"),
        ]
    );
    // The source is the 1.28 repository in deb822, signed by its key; the guide's one-line
    // source for 1.27 is set aside, kept.
    let sources =
        std::fs::read_to_string(w.host.file("/etc/apt/sources.list.d/kubernetes.sources")).unwrap();
    assert!(
        sources.contains(&format!("URIs: {}", w.repo.url("1.28"))),
        "{sources}"
    );
    assert!(sources.contains("Suites: /"), "{sources}");
    assert!(
        sources.contains("Signed-By: /etc/apt/keyrings/kubernetes.asc"),
        "{sources}"
    );
    assert!(
        !w.host
            .file("/etc/apt/sources.list.d/kubernetes.list")
            .exists()
    );
    let kept = std::fs::read_to_string(
        w.host
            .file("/etc/apt/sources.list.d/kubernetes.list.k8s-upgrade.bak"),
    )
    .unwrap();
    assert!(kept.contains("/v1.27/deb/"), "{kept}");
    // apt inside the root sees the 1.28 repository only.
    let policy = w.host.sh_ok("apt-cache madison kubeadm");
    assert!(!policy.contains("1.27."), "{policy}");
    assert!(policy.contains("1.28.15-1.1"), "{policy}");
    // The dummy programs are the installed ones.
    assert_eq!(w.host.sh_ok("kubeadm version -o short").trim(), "v1.28.15");

    // Again: nothing to do.
    let after = w.package_state();
    let out = w.run("1.28.15", &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(recap(&out, "node1")["changed"], 0, "{t}");
    assert_eq!(w.package_state(), after);
    // And --check agrees.
    let out = w.run("1.28.15", &["--check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(recap(&out, "node1")["changed"], 0, "{}", text(&out));
}

#[test]
fn a_patch_upgrade_is_previewed_by_apt_itself_and_a_missing_version_fails_clearly() {
    let Some(w) = world("1.28.14") else { return };
    // The repository switch to deb822 happens (same minor); the packages move 1.28.14 -> .15.
    let out = w.run("1.28.15", &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(
        w.kubernetes_packages()[1],
        row("kubeadm", "1.28.15-1.1", "hold")
    );

    // A version the repository does not have: apt's own message, nothing changed.
    let before = w.package_state();
    let out = w.run("1.28.99", &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("kubeadm=1.28.99-*"), "{t}");
    assert_eq!(w.package_state(), before);
    let _ = &w.repo;
}
