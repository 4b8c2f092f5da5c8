//! The playbooks end to end: the real `ansible-playbook` runs `playbooks/upgrade.yml` against a
//! simulated cluster (kubesim) and the tests read the cluster afterwards.

mod support;

use std::process::Output;

use serde_json::Value;
use support::ansible::{Workspace, recap, text};
use support::cluster::SimCluster;

fn workspace() -> Option<Workspace> {
    Workspace::new(&[
        ("calico_matrix", env!("CARGO_BIN_EXE_calico_matrix")),
        ("calico_upgrade", env!("CARGO_BIN_EXE_calico_upgrade")),
        ("calico_nettest", env!("CARGO_BIN_EXE_calico_nettest")),
    ])
}

/// Kubernetes 1.27 with Calico v3.26.4 from calico.yaml and local changes: the recommendation
/// for 1.27 is v3.28.5, two hops away.
const CLUSTER: &str = "
kubernetes_version: v1.27.16
nodes: {count: 4, control_plane: 1}
calico:
  version: v3.26.4
  pool_cidr: 172.16.0.0/16
  env: {IP_AUTODETECTION_METHOD: 'interface=eth0'}
  config: {veth_mtu: '1440'}
";
const RELEASES: &[&str] = &["v3.26.4", "v3.27.5", "v3.28.5"];

/// `playbooks/upgrade.yml --tags calico` on the one-host demo inventory against `c`.
fn tags_calico(ws: &Workspace, c: &SimCluster, extra: &[&str]) -> Output {
    let kubeconfig = format!("k8s_calico_kubeconfig={}", c.kubeconfig());
    let manifests = format!("k8s_calico_manifest_dir={}", c.manifest_dir().display());
    let backups = format!("k8s_calico_backup_dir={}", c.backup_dir().display());
    let mut args = vec![
        "-i",
        "inventory/demo/hosts",
        "playbooks/upgrade.yml",
        "--tags",
        "calico",
        "-e",
        &kubeconfig,
        "-e",
        &manifests,
        "-e",
        &backups,
        "-e",
        "k8s_calico_upgrade_timeout=60",
        "-e",
        "k8s_calico_nettest_timeout=60",
    ];
    args.extend_from_slice(extra);
    ws.playbook(&args)
}

fn assert_runs(c: &SimCluster, version: &str) {
    let images = c.calico_node_images();
    assert_eq!(images.len(), 4, "{images:?}");
    assert!(images.keys().all(|n| !n.is_empty()), "{images:?}");
    for (node, image) in images {
        assert!(
            image.ends_with(&format!("calico/node:{version}")),
            "{node}: {image}"
        );
    }
}

fn calico_config(c: &SimCluster) -> Value {
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    let cm = c
        .get("v1", "configmaps", Some("kube-system"), "calico-config")
        .unwrap();
    serde_json::json!({"env": ds["spec"]["template"]["spec"]["containers"][0]["env"], "data": cm["data"]})
}

#[test]
fn tags_calico_upgrades_a_manifest_install_tests_the_network_and_a_second_run_changes_nothing() {
    let Some(ws) = workspace() else { return };
    let c = SimCluster::start(CLUSTER, RELEASES);
    let out = tags_calico(&ws, &c, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_runs(&c, "v3.28.5");
    assert_eq!(c.backups().len(), 1, "{t}");
    assert!(t.contains("Calico v3.26.4 -> v3.28.5"), "{t}");
    assert!(t.contains("network test passed: "), "{t}");
    let config = calico_config(&c);
    assert!(config.to_string().contains("interface=eth0"), "{config}");
    assert_eq!(config["data"]["veth_mtu"], "1440");
    // Every namespace the network test made is gone.
    let leftovers: Vec<String> = c
        .list("v1", "namespaces")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("calico-nettest"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    c.handle.faults().reset_counters();
    let again = tags_calico(&ws, &c, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(recap(&again, "demo-cp1")["changed"], 0, "{}", text(&again));
    assert_eq!(c.handle.faults().counters().total_writes, 0);
    assert_eq!(c.backups().len(), 1);
}

#[test]
fn check_diff_writes_nothing_and_shows_what_would_change() {
    let Some(ws) = workspace() else { return };
    let c = SimCluster::start(CLUSTER, RELEASES);
    c.handle.faults().reset_counters();
    let out = tags_calico(&ws, &c, &["--check", "--diff"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let counters = c.handle.faults().counters();
    assert_eq!(counters.total_writes, 0, "{:#?}\n{t}", counters.writes);
    assert!(c.backups().is_empty());
    assert_runs(&c, "v3.26.4");
    assert!(t.contains("DaemonSet kube-system/calico-node"), "{t}");
    assert!(t.contains("v3.28.5"), "{t}");
}

#[test]
fn a_crash_loop_is_rescued_by_the_rollback_and_the_play_fails_naming_the_node() {
    let Some(ws) = workspace() else { return };
    let c = SimCluster::start(
        &format!(
            "{CLUSTER}faults: {{crash_loop: [{{image: '*calico/node:v3.27.5', nodes: [w2]}}]}}\n"
        ),
        RELEASES,
    );
    let before = calico_config(&c);
    let out = tags_calico(&ws, &c, &["-e", "k8s_calico_upgrade_timeout=15"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert_eq!(recap(&out, "demo-cp1")["failed"], 1, "{t}");
    assert!(t.contains("w2"), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    assert_runs(&c, "v3.26.4");
    assert_eq!(calico_config(&c), before);
}

#[test]
fn tags_calico_upgrades_an_operator_install_through_the_operator() {
    let Some(ws) = workspace() else { return };
    let c = SimCluster::start_with(
        "
kubernetes_version: v1.27.16
nodes: {count: 4, control_plane: 1}
calico: {method: operator, version: v3.26.4}
timing: {time_scale: 0.005}
",
        RELEASES,
        k8s_calico::catalog::InstallMethod::Operator,
    );
    let out = tags_calico(&ws, &c, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_runs(&c, "v3.28.5");
    let operator = c
        .get(
            "apps/v1",
            "deployments",
            Some("tigera-operator"),
            "tigera-operator",
        )
        .unwrap();
    let image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.ends_with(":v1.34.14"),
        "the newest operator patch that embeds v3.28.5: {image}"
    );
    let installation = c
        .get("operator.tigera.io/v1", "installations", None, "default")
        .unwrap();
    assert_eq!(
        installation["status"]["calicoVersion"], "v3.28.5",
        "{installation:#}"
    );
    assert_eq!(c.backups().len(), 1, "{t}");
    assert!(t.contains("network test passed: "), "{t}");

    c.handle.faults().reset_counters();
    let again = tags_calico(&ws, &c, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(recap(&again, "demo-cp1")["changed"], 0, "{}", text(&again));
    assert_eq!(c.handle.faults().counters().total_writes, 0);
}
