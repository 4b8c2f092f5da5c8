//! The `not_ready_nodes` fault: the node's kubelet stops posting status, the node lifecycle
//! controller marks it `Unknown` and taints it unreachable, and both clear when the fault is
//! lifted, as a real node that loses and regains its kubelet. Healthy kubelets renew their
//! Lease and leave an unchanged Node alone.

use std::time::{Duration, Instant};

use kubesim::scenario::Scenario;
use serde_json::Value;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn unreachable_taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["key"] == "node.kubernetes.io/unreachable")
        .map(|t| t["effect"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_node_whose_kubelet_stops_goes_unknown_and_unreachable_then_recovers() {
    let h = Scenario::from_yaml(
        "nodes: {count: 3}\ntiming: {node_heartbeat_ms: 50}\nfaults: {not_ready_nodes: [w2]}\n",
    )
    .unwrap()
    .start()
    .unwrap();
    let c = h.cluster();
    let node = |name: &str| c.get("v1", "nodes", None, name).unwrap();
    wait_for("w2 Unknown and tainted", || {
        let n = node("w2");
        ready(&n) == "Unknown" && !unreachable_taints(&n).is_empty()
    });
    let mut effects = unreachable_taints(&node("w2"));
    effects.sort();
    assert_eq!(effects, ["NoExecute", "NoSchedule"]);
    for healthy in ["cp1", "w1"] {
        assert_eq!(ready(&node(healthy)), "True", "{healthy}");
        assert!(unreachable_taints(&node(healthy)).is_empty());
    }

    c.sim().update_faults(|f| f.not_ready_nodes.clear());
    wait_for("w2 Ready again", || {
        let n = node("w2");
        ready(&n) == "True" && unreachable_taints(&n).is_empty()
    });
    h.shutdown();
}

#[test]
fn healthy_kubelets_renew_leases_and_leave_unchanged_node_status_alone() {
    let h = Scenario::from_yaml("nodes: {count: 3}\ntiming: {node_heartbeat_ms: 50}\n")
        .unwrap()
        .start()
        .unwrap();
    let c = h.cluster();
    let lease = |name: &str| {
        c.get(
            "coordination.k8s.io/v1",
            "leases",
            Some("kube-node-lease"),
            name,
        )
    };
    wait_for("a Lease for every node", || {
        ["cp1", "w1", "w2"].iter().all(|n| lease(n).is_ok())
    });
    let w1 = lease("w1").unwrap();
    assert_eq!(w1["spec"]["holderIdentity"], "w1");
    assert_eq!(w1["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(w1["metadata"]["ownerReferences"][0]["kind"], "Node");
    // Twenty look-ups of every node later, a Ready node's object has not been rewritten:
    // a kubelet posts an unchanged status only every few minutes, not on every beat.
    let rv = |name: &str| {
        c.get("v1", "nodes", None, name).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_for("w1 Ready", || {
        ready(&c.get("v1", "nodes", None, "w1").unwrap()) == "True"
    });
    let before = rv("w1");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        rv("w1"),
        before,
        "an unchanged node status was written again"
    );
    h.shutdown();
}
