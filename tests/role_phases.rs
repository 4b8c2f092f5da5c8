//! The Kubernetes phases of `playbooks/upgrade.yml` end to end: the real `ansible-playbook` on a
//! four-host inventory (cp1, cp2, w1, w2) against a simulated cluster (kubesim) with the same
//! nodes. Each host is a Debian root of the test's own (`support::hostroot`, reached through the
//! chroot connection) set up as kubeadm's install guide leaves a 1.28 host, with real apt against
//! a local copy of the community repositories (`support::pkgrepo`). kubectl is the real one; the
//! dummy kubeadm and the root's systemctl (no systemd runs in a chroot) hand their calls to
//! `tests/fixtures/kubeadm-standin`, which records them (with what the cluster looked like at
//! that moment) and moves kubesim's versions as the real tools would move a cluster's.

mod support;

use std::process::Output;

use serde::Deserialize;
use serde_json::Value;
use support::ansible::{Workspace, recap, text};
use support::cluster::SimCluster;
use support::hostroot::{self, HostRoot};
use support::pkgrepo::PkgRepo;

const HOSTS: [&str; 4] = ["cp1", "cp2", "w1", "w2"];
/// Where the stand-in's log is inside each root.
const LOG: &str = "/var/log/k8s-calico-standin.log";

/// Kubernetes 1.28 with Calico v3.26.5, which is tested on 1.28 but not on 1.29: Calico must
/// move before the control plane does (the plan for 1.28 takes it to v3.28.5, tested on both
/// minors), and after it to v3.29.7, the recommendation for 1.29. (On 1.27 -> 1.28 every
/// release tested on 1.27 is tested on 1.28 and both recommendations are v3.28.5, so neither
/// step could be seen.)
const CLUSTER_128: &str = "
kubernetes_version: v1.28.15
nodes: {count: 4, control_plane: 2}
calico:
  version: v3.26.5
  pool_cidr: 172.16.0.0/16
";
const RELEASES_128: &[&str] = &["v3.26.5", "v3.27.5", "v3.28.5", "v3.29.7"];
const TARGET: &str = "1.29.4";

/// One recorded call of a stand-in tool.
#[derive(Debug, Deserialize)]
struct Call {
    ts: f64,
    node: String,
    argv: Vec<String>,
    /// What the cluster looked like when the call was made (before it acted).
    seen: Value,
}

impl Call {
    fn is(&self, node: &str, argv: &[&str]) -> bool {
        self.node == node
            && self
                .argv
                .starts_with(&argv.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Whether the call changes a host or the cluster (everything but `kubeadm upgrade plan`).
    fn changes_something(&self) -> bool {
        !(self.argv.len() >= 3 && self.argv[..3] == ["kubeadm", "upgrade", "plan"])
    }
}

/// A workspace with the four-host inventory, its roots, the repositories and the cluster.
struct Phases {
    ws: Workspace,
    c: SimCluster,
    roots: Vec<HostRoot>,
    _repo: PkgRepo,
}

fn workspace() -> Option<Workspace> {
    Workspace::new(&[
        ("calico_matrix", env!("CARGO_BIN_EXE_calico_matrix")),
        ("calico_upgrade", env!("CARGO_BIN_EXE_calico_upgrade")),
        ("calico_nettest", env!("CARGO_BIN_EXE_calico_nettest")),
    ])
}

fn write_exec(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A root for `host`: Kubernetes 1.28.15 from the 1.28 repository, the stand-in behind kubeadm
/// and systemctl, the real kubectl and the cluster's kubeconfig at the same path as outside.
fn host_root(host: &str, repo: &PkgRepo, c: &SimCluster) -> HostRoot {
    let root = HostRoot::new();
    root.install_kubernetes(repo, "1.28.15");
    let standin = "/usr/local/lib/k8s-calico-test/kubeadm-standin";
    std::fs::create_dir_all(root.file(standin).parent().unwrap()).unwrap();
    std::fs::copy(
        support::ansible::repo().join("tests/fixtures/kubeadm-standin"),
        root.file(standin),
    )
    .unwrap();
    let env = format!(
        "export STANDIN_NODE='{host}' STANDIN_LOG='{LOG}' KUBESIM_URL='{}' KUBESIM_TOKEN='{}'",
        c.handle.url(),
        c.handle.token()
    );
    write_exec(
        &root.file("/etc/k8s-calico-test/kubeadm-hook"),
        &format!("#!/bin/sh\n{env} STANDIN_TOOL=kubeadm\nexec python3 {standin} \"$@\"\n"),
    );
    std::fs::remove_file(root.file("/usr/bin/systemctl")).unwrap();
    write_exec(
        &root.file("/usr/bin/systemctl"),
        &format!("#!/bin/sh\n{env} STANDIN_TOOL=systemctl\nexec python3 {standin} \"$@\"\n"),
    );
    let kubectl = root.file("/usr/local/bin/kubectl-real");
    // The binary itself (/usr/bin/kubectl may be a link out of the root); a hard link saves a copy.
    let real = std::fs::canonicalize("/usr/bin/kubectl").unwrap();
    if std::fs::hard_link(&real, &kubectl).is_err() {
        std::fs::copy(&real, &kubectl).unwrap();
    }
    let kubeconfig = c.kubeconfig();
    std::fs::create_dir_all(root.file(&kubeconfig).parent().unwrap()).unwrap();
    std::fs::copy(&kubeconfig, root.file(&kubeconfig)).unwrap();
    root
}

impl Phases {
    fn start(scenario: &str, releases: &[&str]) -> Option<Self> {
        if !hostroot::available() {
            return None;
        }
        let ws = workspace()?;
        let c = SimCluster::start(scenario, releases);
        let repo = PkgRepo::start();
        let roots: Vec<HostRoot> = std::thread::scope(|s| {
            let started: Vec<_> = HOSTS
                .iter()
                .map(|h| s.spawn(|| host_root(h, &repo, &c)))
                .collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let line = |i: usize| roots[i].inventory_line(HOSTS[i]);
        let inventory = format!(
            "[kube_control_plane]\n{}\n{}\n\n[kube_node]\n{}\n{}\n\n\
             [k8s_cluster:children]\nkube_control_plane\nkube_node\n",
            line(0),
            line(1),
            line(2),
            line(3)
        );
        ws.write("inventory/phases/hosts", &inventory);
        let kubeconfig = c.kubeconfig();
        ws.write(
            "inventory/phases/group_vars/all.yml",
            &format!(
                "k8s_upgrade_admin_conf: {kubeconfig}\n\
                 k8s_upgrade_kubectl_command: /usr/local/bin/kubectl-real\n\
                 k8s_upgrade_package_repository: {}\n\
                 k8s_upgrade_drain_timeout: 60\n\
                 k8s_upgrade_node_ready_timeout: 60\n\
                 k8s_calico_admin_conf: {kubeconfig}\n\
                 k8s_calico_manifest_dir: {}\n\
                 k8s_calico_backup_dir: {}\n\
                 k8s_calico_upgrade_timeout: 60\n\
                 k8s_calico_nettest_timeout: 60\n",
                repo.url_template(),
                c.manifest_dir().display(),
                c.backup_dir().display(),
            ),
        );
        Some(Phases {
            ws,
            c,
            roots,
            _repo: repo,
        })
    }

    /// `playbooks/upgrade.yml` on the four hosts.
    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["-i", "inventory/phases/hosts", "playbooks/upgrade.yml"];
        args.extend_from_slice(extra);
        self.ws.playbook(&args)
    }

    /// The stand-in calls so far on every host, in order.
    fn calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = self
            .roots
            .iter()
            .flat_map(|r| {
                std::fs::read_to_string(r.file(LOG))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect::<Vec<Call>>()
            })
            .collect();
        calls.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        calls
    }

    /// The Kubernetes packages of `host` as dpkg has them: name, version, selection.
    fn packages(&self, host: &str) -> Vec<(String, String, String)> {
        let i = HOSTS.iter().position(|h| *h == host).unwrap();
        self.roots[i]
            .packages()
            .into_iter()
            .filter(|(n, _)| ["kubeadm", "kubelet", "kubectl"].contains(&n.as_str()))
            .map(|(n, (v, s))| (n, v, s))
            .collect()
    }

    /// The API server's version as a client reads it (`kubectl version`, i.e. `/version`).
    fn server_version(&self) -> String {
        let out = std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                &self.c.kubeconfig(),
                "version",
                "--output=json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn cordoned(&self) -> Vec<String> {
        self.c
            .list("v1", "nodes")
            .iter()
            .filter(|n| n["spec"]["unschedulable"] == true)
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn kubelet_versions(&self) -> Vec<(String, String)> {
        self.c
            .list("v1", "nodes")
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    }
}

/// Where `needle` first appears in `haystack`, or a panic showing the output.
fn at(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the output:\n{haystack}"))
}

/// Where the task `name` (`role : name`) first ran on some host (its header is printed for
/// skipped tasks too), if it did.
fn first_run(out: &str, name: &str) -> Option<usize> {
    let header = format!("TASK [{name}]");
    let mut from = 0;
    while let Some(i) = out[from..].find(&header).map(|i| i + from) {
        let result = out[i..]
            .lines()
            .skip(1)
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        if !result.starts_with("skipping:") {
            return Some(i);
        }
        from = i + header.len();
    }
    None
}

/// Where the task `name` first ran, or a panic showing the output.
fn ran(out: &str, name: &str) -> usize {
    first_run(out, name).unwrap_or_else(|| panic!("{name:?} never ran:\n{out}"))
}

fn image_tag(c: &Call) -> String {
    c.seen["calico_node"]["image"]
        .as_str()
        .and_then(|i| i.rsplit(':').next())
        .unwrap_or_default()
        .to_string()
}

fn rolled_out(c: &Call) -> bool {
    let n = &c.seen["calico_node"];
    n["desired"].as_u64().unwrap_or(0) > 0
        && n["updated"] == n["desired"]
        && n["ready"] == n["desired"]
}

/// The argv of each call of `node`, joined with spaces.
fn argvs(calls: &[Call], node: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.node == node)
        .map(|c| c.argv.join(" "))
        .collect()
}

/// What a host's upgrade runs after its `kubeadm upgrade apply|node`: kubelet and kubectl.
/// The recorded calls after kubeadm's: the kubelet's restart (systemd_service: daemon-reload
/// first). The packages are installed by real apt, not recorded: `assert_packages` reads them.
fn kubelet_steps() -> Vec<String> {
    vec![
        "systemctl daemon-reload".to_string(),
        "systemctl restart kubelet.service".to_string(),
    ]
}

/// The call's view of `package` on its host.
fn package_at(c: &Call, package: &str) -> String {
    c.seen["packages"][package]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// On `node`: kubeadm of the target was installed when kubeadm upgraded, kubelet and kubectl of
/// the target when the kubelet restarted, and afterwards all three are the target, held.
fn assert_packages(p: &Phases, calls: &[Call], node: &str, v: &str) {
    let deb = format!("{v}-1.1");
    let kubeadm = calls
        .iter()
        .find(|c| c.is(node, &["kubeadm", "upgrade"]))
        .unwrap_or_else(|| panic!("{node}: no kubeadm upgrade: {calls:#?}"));
    assert_eq!(package_at(kubeadm, "kubeadm"), deb, "{kubeadm:?}");
    assert_ne!(package_at(kubeadm, "kubelet"), deb, "{kubeadm:?}");
    let restart = calls
        .iter()
        .find(|c| c.is(node, &["systemctl", "restart"]))
        .unwrap_or_else(|| panic!("{node}: no kubelet restart: {calls:#?}"));
    assert_eq!(package_at(restart, "kubelet"), deb, "{restart:?}");
    assert_eq!(package_at(restart, "kubectl"), deb, "{restart:?}");
    let held = |n: &str| (n.to_string(), deb.clone(), "hold".to_string());
    assert_eq!(
        p.packages(node),
        [held("kubeadm"), held("kubectl"), held("kubelet")],
        "{node}"
    );
}

/// Every host that restarted its kubelet was cordoned and had no pods left but DaemonSet pods.
fn assert_drained_at_restart(calls: &[Call], node: &str) {
    let restart = calls
        .iter()
        .find(|c| c.is(node, &["systemctl", "restart", "kubelet.service"]))
        .unwrap_or_else(|| panic!("{node} never restarted its kubelet: {calls:#?}"));
    assert_eq!(
        restart.seen["node"]["unschedulable"], true,
        "{node} not cordoned at its kubelet restart: {restart:?}"
    );
    assert_eq!(
        restart.seen["node"]["pods"],
        serde_json::json!([]),
        "{node} not drained at its kubelet restart: {restart:?}"
    );
}

#[test]
fn plan_reads_the_cluster_says_what_control_plane_will_do_and_writes_nothing() {
    let Some(p) = Phases::start(CLUSTER_128, RELEASES_128) else {
        return;
    };
    let target = format!("k8s_target_version={TARGET}");

    // plan: reads only, and says what the control_plane phase will do.
    p.c.handle.faults().reset_counters();
    let out = p.run(&["-e", "k8s_upgrade_phase=plan", "-e", &target]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let counters = p.c.handle.faults().counters();
    assert_eq!(counters.total_writes, 0, "{:#?}\n{t}", counters.writes);
    let changing: Vec<Call> = p
        .calls()
        .into_iter()
        .filter(Call::changes_something)
        .collect();
    assert!(changing.is_empty(), "plan changed hosts: {changing:#?}");
    assert!(
        t.contains(&format!("Kubernetes 1.28.15 -> {TARGET}")),
        "{t}"
    );
    assert!(t.contains("Path: v3.27.5 -> v3.28.5"), "{t}");
    assert!(t.contains("Control plane, one at a time: cp1, cp2"), "{t}");
    // Every host was checked and its state shown.
    let repo = p._repo.url("1.29");
    for h in HOSTS {
        assert!(
            t.contains(&format!(
                "{h}: kubeadm 1.28.15, kubelet 1.28.15, kubectl 1.28.15; swap unknown; {repo} has {TARGET}"
            )),
            "{h}: {t}"
        );
    }
    // It read the cluster: the upgrade's pre-checks ran (in check mode).
    ran(
        &t,
        "k8s_calico : Run the upgrade's pre-checks (check mode, nothing is written)",
    );
    assert_eq!(p.server_version(), "v1.28.15");
    for (node, image) in p.c.calico_node_images() {
        assert!(image.ends_with("calico/node:v3.26.5"), "{node}: {image}");
    }
    for h in HOSTS {
        assert_eq!(recap(&out, h)["changed"], 0, "{h}: {t}");
    }
}

#[test]
fn plan_checks_every_host_and_refuses_the_ones_that_would_not_upgrade() {
    let Some(p) = Phases::start(CLUSTER_128, &[]) else {
        return;
    };
    // w1 has swap on (a chroot has no /proc of its own: the root's file stands for it).
    std::fs::write(
        p.roots[2].file("/proc/swaps"),
        "Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n",
    )
    .unwrap();
    let before: Vec<String> = p
        .roots
        .iter()
        .map(|r| r.sh_ok("dpkg-query -W; ls -R /etc/apt"))
        .collect();
    p.c.handle.faults().reset_counters();

    // 1.29.4 is in the 1.29 repository: only w1 is refused, for its swap.
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=plan",
        "-e",
        &format!("k8s_target_version={TARGET}"),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    let repo = p._repo.url("1.29");
    for h in ["cp1", "cp2", "w2"] {
        assert!(
            t.contains(&format!(
                "{h}: kubeadm 1.28.15, kubelet 1.28.15, kubectl 1.28.15; swap unknown; {repo} has {TARGET}"
            )),
            "{h}: {t}"
        );
        assert_eq!(recap(&out, h)["failed"], 0, "{h}: {t}");
    }
    assert!(
        t.contains("w1: kubeadm 1.28.15, kubelet 1.28.15, kubectl 1.28.15; swap on;"),
        "{t}"
    );
    assert!(t.contains("w1: swap is on (/proc/swaps)"), "{t}");
    assert_eq!(recap(&out, "w1")["failed"], 1, "{t}");

    // 1.29.9 is not: every host says so.
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=plan",
        "-e",
        "k8s_target_version=1.29.9",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for h in HOSTS {
        assert!(
            t.contains(&format!(
                "{h}: the repository {repo} has no kubeadm, kubelet, kubectl 1.29.9"
            )),
            "{h}: {t}"
        );
    }
    // Nothing changed anywhere.
    let after: Vec<String> = p
        .roots
        .iter()
        .map(|r| r.sh_ok("dpkg-query -W; ls -R /etc/apt"))
        .collect();
    assert_eq!(before, after);
    assert_eq!(p.c.handle.faults().counters().total_writes, 0);
    assert!(
        p.calls().iter().all(|c| !c.changes_something()),
        "{:#?}",
        p.calls()
    );
}

#[test]
fn control_plane_order_is_bridge_apply_node_recommendation_network_test() {
    let Some(p) = Phases::start(CLUSTER_128, RELEASES_128) else {
        return;
    };
    let target = format!("k8s_target_version={TARGET}");
    let v = format!("v{TARGET}");
    // control_plane.
    let started = std::time::Instant::now();
    let out = p.run(&["-e", "k8s_upgrade_phase=control_plane", "-e", &target]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    eprintln!("control_plane phase: {:?}", started.elapsed());
    let calls = p.calls();

    // Only the control-plane hosts were touched: cp1 with apply, cp2 with node, in that order.
    assert!(
        argvs(&calls, "w1").is_empty() && argvs(&calls, "w2").is_empty(),
        "{calls:#?}"
    );
    let mut cp1 = vec![
        format!("kubeadm upgrade plan {v}"),
        format!("kubeadm upgrade apply --yes {v}"),
    ];
    cp1.extend(kubelet_steps());
    assert_eq!(argvs(&calls, "cp1"), cp1);
    let mut cp2 = vec!["kubeadm upgrade node".to_string()];
    cp2.extend(kubelet_steps());
    assert_eq!(argvs(&calls, "cp2"), cp2);
    assert_packages(&p, &calls, "cp1", TARGET);
    assert_packages(&p, &calls, "cp2", TARGET);
    for w in ["w1", "w2"] {
        let untouched = |n: &str| (n.to_string(), "1.28.15-1.1".to_string(), "hold".to_string());
        assert_eq!(
            p.packages(w),
            [
                untouched("kubeadm"),
                untouched("kubectl"),
                untouched("kubelet")
            ]
        );
    }

    // Calico was on the bridge, rolled out on every node, before kubeadm moved the API server.
    let apply = calls
        .iter()
        .find(|c| c.is("cp1", &["kubeadm", "upgrade", "apply"]))
        .unwrap();
    assert_eq!(apply.seen["server_version"], "v1.28.15", "{apply:?}");
    assert_eq!(
        image_tag(apply),
        "v3.28.5",
        "no bridge before kubeadm: {apply:?}"
    );
    assert!(
        rolled_out(apply),
        "bridge not rolled out at kubeadm apply: {apply:?}"
    );
    let first = calls.iter().find(|c| c.node == "cp1").unwrap();
    assert_eq!(image_tag(first), "v3.28.5", "{first:?}");

    // One at a time: cp2 started after cp1 was done (upgraded, uncordoned).
    let cp1_last = calls.iter().rfind(|c| c.node == "cp1").unwrap();
    let cp2_first = calls.iter().find(|c| c.node == "cp2").unwrap();
    assert!(cp1_last.ts < cp2_first.ts);
    assert_eq!(cp2_first.seen["server_version"], v.as_str());
    assert_eq!(
        cp2_first.seen["cordoned"],
        serde_json::json!([]),
        "{cp2_first:?}"
    );
    let cp2_node = calls
        .iter()
        .find(|c| c.is("cp2", &["kubeadm", "upgrade", "node"]))
        .unwrap();
    assert_eq!(cp2_node.seen["server_version"], v.as_str());
    assert_drained_at_restart(&calls, "cp1");
    assert_drained_at_restart(&calls, "cp2");
    // Calico stayed on the bridge while the control plane moved.
    for c in &calls {
        assert_eq!(image_tag(c), "v3.28.5", "{c:?}");
    }

    // The playbook's order: bridge -> apply -> node -> recommendation -> network test.
    let bridge = ran(&t, "k8s_calico : Upgrade Calico to v3.28.5");
    let apply_task = ran(
        &t,
        "k8s_upgrade : Upgrade the control plane with kubeadm upgrade apply",
    );
    let node_task = ran(
        &t,
        "k8s_upgrade : Upgrade this control-plane node with kubeadm upgrade node",
    );
    let recommended = ran(&t, "k8s_calico : Upgrade Calico to v3.29.7");
    let nettest = ran(&t, "k8s_calico : Prove pod networking after the upgrade");
    assert!(bridge < apply_task && apply_task < node_task, "{t}");
    assert!(node_task < recommended && recommended < nettest, "{t}");
    // The bridge ran without the network test; the one after the recommendation passed.
    assert_eq!(t.matches("network test passed").count(), 1, "{t}");
    assert!(at(&t, "network test passed") > nettest, "{t}");

    // The cluster afterwards.
    assert_eq!(p.server_version(), v);
    let kubelets = p.kubelet_versions();
    assert_eq!(
        kubelets,
        [
            ("cp1".to_string(), v.clone()),
            ("cp2".to_string(), v.clone()),
            ("w1".to_string(), "v1.28.15".to_string()),
            ("w2".to_string(), "v1.28.15".to_string()),
        ]
    );
    let images = p.c.calico_node_images();
    assert_eq!(images.len(), 4, "{images:?}");
    for (node, image) in &images {
        assert!(image.ends_with("calico/node:v3.29.7"), "{node}: {image}");
    }
    assert_eq!(p.c.backups().len(), 2, "one backup per Calico change");
    assert!(p.cordoned().is_empty(), "{:?}", p.cordoned());
}

/// Kubernetes 1.28 clusters whose control plane the test moves to 1.29.4 (as the control_plane
/// phase leaves it), with Calico v3.29.7, the recommendation for 1.29.
const CLUSTER_WORKERS: &str = "
kubernetes_version: v1.28.15
nodes: {count: 4, control_plane: 2}
calico:
  version: v3.29.7
  pool_cidr: 172.16.0.0/16
";

/// A Deployment whose pods can only run on the workers (the control-plane nodes are tainted).
fn web_deployment() -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.9"}]}
            }
        }
    })
}

/// The control plane on the target already, the web Deployment's four pods running on the workers.
fn workers_cluster() -> Option<Phases> {
    let p = Phases::start(CLUSTER_WORKERS, &["v3.29.7"])?;
    let v = format!("v{TARGET}");
    let cluster = p.c.handle.cluster();
    cluster.set_version(kubesim::KubeVersion::parse(&v).unwrap());
    for cp in ["cp1", "cp2"] {
        kubesim::kubelet::set_kubelet_version(cluster, cp, &v).unwrap();
    }
    p.c.create("apps/v1", "deployments", Some("default"), web_deployment());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running =
            p.c.list("v1", "pods")
                .into_iter()
                .filter(|p| {
                    p["metadata"]["labels"]["app"] == "web" && p["status"]["phase"] == "Running"
                })
                .count();
        if running == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "web pods not running");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(p)
}

#[test]
fn a_drain_blocked_by_a_disruption_budget_is_retried_then_fails_naming_it_and_uncordons() {
    let Some(p) = workers_cluster() else { return };
    // Every web pod must stay: no eviction is allowed.
    p.c.create(
        "policy/v1",
        "poddisruptionbudgets",
        Some("default"),
        serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 4, "selector": {"matchLabels": {"app": "web"}}}
        }),
    );
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=nodes",
        "-e",
        &format!("k8s_target_version={TARGET}"),
        "-e",
        "k8s_upgrade_drain_timeout=5",
        "-e",
        "k8s_upgrade_drain_attempts=2",
        "-e",
        "k8s_upgrade_drain_retry_delay=1",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    // Two attempts, then the failure names the budget.
    ran(&t, "k8s_upgrade : Drain the node, attempt 1");
    ran(&t, "k8s_upgrade : Drain the node, attempt 2");
    assert!(t.contains("kubectl drain w1 failed 2 times"), "{t}");
    assert!(
        t.contains(
            "PodDisruptionBudgets allowing no disruption: default/web (needs 4 healthy pods, has 4)"
        ),
        "{t}"
    );
    assert!(t.contains("The node was uncordoned."), "{t}");
    // Nothing is left cordoned, every web pod still runs, w1's kubelet did not move, w2 (the
    // next batch) was not touched.
    assert!(p.cordoned().is_empty(), "{:?}", p.cordoned());
    let web = p
        .c
        .list("v1", "pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web" && p["status"]["phase"] == "Running")
        .count();
    assert_eq!(web, 4);
    let calls = p.calls();
    assert!(argvs(&calls, "w2").is_empty(), "{calls:#?}");
    assert!(
        !argvs(&calls, "w1")
            .iter()
            .any(|c| c.starts_with("systemctl restart")),
        "{calls:#?}"
    );
    let kubelet = p
        .packages("w1")
        .into_iter()
        .find(|(n, _, _)| n == "kubelet")
        .unwrap();
    assert_eq!(kubelet.1, "1.28.15-1.1");
    assert_eq!(recap(&out, "w1")["rescued"], 1, "{t}");
}

#[test]
fn nodes_phase_drains_and_upgrades_the_workers_in_batches_then_tests_the_network() {
    let Some(p) = workers_cluster() else { return };
    let v = format!("v{TARGET}");

    let started = std::time::Instant::now();
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=nodes",
        "-e",
        &format!("k8s_target_version={TARGET}"),
        "-e",
        "k8s_upgrade_serial=2",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    eprintln!("nodes phase: {:?}", started.elapsed());
    let calls = p.calls();

    // The control-plane hosts were left alone; each worker ran the whole sequence.
    assert!(
        argvs(&calls, "cp1").is_empty() && argvs(&calls, "cp2").is_empty(),
        "{calls:#?}"
    );
    let mut steps = vec!["kubeadm upgrade node".to_string()];
    steps.extend(kubelet_steps());
    for w in ["w1", "w2"] {
        assert_eq!(argvs(&calls, w), steps, "{w}");
        assert_packages(&p, &calls, w, TARGET);
        // It had workload pods before the drain, none left (and cordoned) at its restart.
        let first = calls.iter().find(|c| c.node == w).unwrap();
        assert_eq!(first.seen["node"]["unschedulable"], false, "{first:?}");
        assert_ne!(
            first.seen["node"]["pods"],
            serde_json::json!([]),
            "{first:?}"
        );
        assert_drained_at_restart(&calls, w);
        // k8s_upgrade_serial=2: both workers are one batch, drained together.
        let restart = calls
            .iter()
            .find(|c| c.is(w, &["systemctl", "restart", "kubelet.service"]))
            .unwrap();
        assert_eq!(
            restart.seen["cordoned"],
            serde_json::json!(["w1", "w2"]),
            "{restart:?}"
        );
        assert_eq!(restart.seen["node"]["kubelet_version"], "v1.28.15");
    }
    // The network test ran after the workers, on the upgraded nodes.
    let last_uncordon = t
        .rfind("TASK [k8s_upgrade : Uncordon")
        .unwrap_or_else(|| panic!("no uncordon:\n{t}"));
    let verify = ran(&t, "k8s_calico : Prove pod networking");
    assert!(last_uncordon < verify, "{t}");
    assert!(at(&t, "network test passed") > verify, "{t}");

    // The cluster afterwards: every kubelet on the target, nothing cordoned, Calico untouched.
    assert_eq!(p.server_version(), v);
    for (node, kubelet) in p.kubelet_versions() {
        assert_eq!(kubelet, v, "{node}");
    }
    assert!(p.cordoned().is_empty(), "{:?}", p.cordoned());
    assert!(p.c.backups().is_empty());

    // The control_plane phase again: every control-plane node already runs the target and
    // Calico the recommendation, so nothing moves, but the network is still proven.
    let before = calls.len();
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=control_plane",
        "-e",
        &format!("k8s_target_version={TARGET}"),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(p.calls().len(), before, "{:#?}", &p.calls()[before..]);
    assert!(t.contains(&format!("cp1 already runs kubelet {v}")), "{t}");
    assert!(t.contains(&format!("cp2 already runs kubelet {v}")), "{t}");
    assert!(
        t.contains("Calico v3.29.7 already runs: nothing to upgrade"),
        "{t}"
    );
    // The verify stage ran in the play after the control plane, before the workers' plays.
    let play = at(
        &t,
        "PLAY [Calico to the recommendation, then the network test]",
    );
    let workers = at(&t, "PLAY [Worker nodes, in batches]");
    let verify = first_run(&t[play..], "k8s_calico : Prove pod networking")
        .map(|i| i + play)
        .unwrap_or_else(|| panic!("no network test after the control plane:\n{t}"));
    let passed = at(&t, "network test passed");
    assert!(verify < passed && passed < workers, "{t}");
    assert!(p.c.backups().is_empty());
    for (node, image) in p.c.calico_node_images() {
        assert!(image.ends_with("calico/node:v3.29.7"), "{node}: {image}");
    }
}

#[test]
fn bad_values_are_refused_before_any_task_runs() {
    let Some(p) = Phases::start(CLUSTER_WORKERS, &[]) else {
        return;
    };
    let target = format!("k8s_target_version={TARGET}");
    p.c.handle.faults().reset_counters();
    for (extra, expected) in [
        (
            "k8s_upgrade_phase=bogus",
            "value of k8s_upgrade_phase must be one of: plan, calico, control_plane, nodes, got: bogus",
        ),
        (
            "k8s_calico_upgrade_timeout=-5",
            "k8s_calico_upgrade_timeout must be 1 or more seconds, got -5",
        ),
        (
            "k8s_upgrade_drain_timeout=0",
            "k8s_upgrade_drain_timeout must be 1 or more seconds, got 0",
        ),
        (
            "k8s_calico_nettest_timeout=5",
            "k8s_calico_nettest_timeout must be 10 or more seconds, got 5",
        ),
    ] {
        let out = p.run(&[
            "-e",
            "k8s_upgrade_phase=control_plane",
            "-e",
            &target,
            "-e",
            extra,
        ]);
        let t = text(&out);
        assert!(!out.status.success(), "{extra}: {t}");
        assert!(t.contains(expected), "{extra}: {t}");
        assert!(
            !t.contains("TASK [k8s_") && !t.contains("PLAY [Plan"),
            "{extra}: a task ran before the check:\n{t}"
        );
    }
    assert!(p.calls().is_empty(), "{:#?}", p.calls());
    assert_eq!(p.c.handle.faults().counters().total_writes, 0);

    // k8s_calico_upgrade_enabled=false: Calico is skipped, saying so, in every Calico stage
    // of the control_plane phase (bridge, recommendation); the control plane, already on the
    // target here, is left as it is.
    let out = p.run(&[
        "-e",
        "k8s_upgrade_phase=control_plane",
        "-e",
        "k8s_target_version=1.28.15",
        "-e",
        "k8s_calico_upgrade_enabled=false",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let skip = "k8s_calico_upgrade_enabled is false: Calico is not planned, backed up, upgraded or tested.";
    assert_eq!(t.matches(skip).count(), 2, "{t}");
    assert_eq!(
        first_run(&t, "k8s_calico : Plan the Calico release for this cluster"),
        None,
        "{t}"
    );
    assert!(!t.contains("network test passed"), "{t}");
    assert!(t.contains("cp1 already runs kubelet v1.28.15"), "{t}");
    assert!(p.calls().is_empty(), "{:#?}", p.calls());
    assert_eq!(p.c.handle.faults().counters().total_writes, 0);
    assert_eq!(p.server_version(), "v1.28.15");
    for h in HOSTS {
        assert_eq!(recap(&out, h)["changed"], 0, "{h}: {t}");
    }
}
