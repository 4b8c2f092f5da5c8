//! `calico_nettest` through the real binary against simulated clusters: kubesim starts in
//! process, its kubelets run the probe pods and its network model answers the probes, with the
//! data-plane faults a real cluster shows (a partitioned node, UDP dropped between nodes, cluster
//! DNS down, large packets dropped, a NetworkPolicy in the way).
//!
//! Every test starts its own cluster, most of them five nodes (`cp1`, `w1`..`w4`), and checks
//! what users rely on: the scenario and the nodes named in the failures and the message, the
//! verdict, the regressions against a baseline, the nodes that could not be tested and why,
//! that the timeout holds, and that the temporary namespace is gone afterwards whatever
//! happened.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubesim::scenario::Scenario;
use kubesim::server::Handle;
use kubesim::{SimFaults, WriteOptions};
use serde_json::{Value, json};
use support::module::run;

const BIN: &str = env!("CARGO_BIN_EXE_calico_nettest");

/// The nodes of [`cluster`].
const NODES: [&str; 5] = ["cp1", "w1", "w2", "w3", "w4"];

/// A five-node kubeadm cluster with Calico v3.26.4 from its manifest, started with time running
/// 100× faster for durations manifests give in seconds, then 10× faster. `extra` is more
/// scenario YAML.
fn cluster(extra: &str) -> Handle {
    cluster_with_nodes("nodes: {count: 5, control_plane: 1}", extra)
}

fn cluster_with_nodes(nodes: &str, extra: &str) -> Handle {
    let yaml = format!(
        "kubernetes_version: v1.27.16\n{nodes}\ncalico: {{method: manifest, version: v3.26.4}}\ntiming: {{time_scale: 0.01}}\n{extra}"
    );
    let h = Scenario::from_yaml(&yaml).unwrap().start().unwrap();
    // Then 10× faster: pods still terminate quickly (grace 1 s → 0.1 s), and kubesim gives
    // the probe Jobs' activeDeadlineSeconds (the module's timeout) in real seconds either way.
    time_scale(&h, 0.1);
    h
}

/// From now on, durations manifests give in seconds take `scale` times as long.
fn time_scale(h: &Handle, scale: f64) {
    let mut timing = h.cluster().sim().timing();
    timing.time_scale = scale;
    h.cluster().sim().set_timing(timing);
}

/// Runs the module against `h` with `args` over a kubeconfig and a 120 s timeout.
fn nettest(h: &Handle, args: Value) -> Value {
    let mut a = json!({"kubeconfig": h.kubeconfig_path(), "timeout": 120});
    for (k, v) in args.as_object().unwrap() {
        a[k] = v.clone();
    }
    let (out, code) = run(BIN, &a);
    let failed = out["failed"] == json!(true);
    assert_eq!(code, i32::from(failed), "exit code vs failed: {out}");
    assert!(
        out["msg"].as_str().is_some_and(|m| !m.contains('\n')),
        "{out}"
    );
    out
}

fn facts(out: &Value) -> &Value {
    let f = &out["ansible_facts"]["calico_nettest"];
    assert!(f.is_object(), "no calico_nettest facts: {out}");
    f
}

fn msg(out: &Value) -> &str {
    out["msg"].as_str().unwrap()
}

fn failures(out: &Value) -> &Vec<Value> {
    facts(out)["failures"].as_array().unwrap()
}

fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn all_nodes() -> BTreeSet<String> {
    NODES.iter().map(|s| s.to_string()).collect()
}

/// The ordered pairs of different nodes.
fn pairs() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for a in NODES {
        for b in NODES {
            if a != b {
                out.push((a, b));
            }
        }
    }
    out
}

/// The run's namespace is gone, and nothing of the run is left in any namespace.
fn assert_cleaned_up(h: &Handle, out: &Value) {
    let ns = facts(out)["namespace"].as_str().unwrap();
    assert!(ns.starts_with("calico-nettest-"), "{ns}");
    let run_id = facts(out)["run_id"].as_str().unwrap();
    assert_eq!(ns, format!("calico-nettest-{run_id}"));
    let got = h.cluster().get("v1", "namespaces", None, ns);
    assert!(
        got.is_err(),
        "namespace {ns} still exists after the run: {got:?}"
    );
    for (api, resource) in [
        ("v1", "pods"),
        ("v1", "configmaps"),
        ("v1", "services"),
        ("apps/v1", "daemonsets"),
        ("batch/v1", "jobs"),
        ("networking.k8s.io/v1", "networkpolicies"),
    ] {
        let left: Vec<Value> = h
            .cluster()
            .list(api, resource, None, &Default::default())
            .unwrap()
            .into_iter()
            .filter(|o| {
                o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
                    || o.pointer("/metadata/labels/k8s-calico.io~1nettest-run")
                        .and_then(Value::as_str)
                        == Some(run_id)
            })
            .collect();
        assert!(left.is_empty(), "{resource} of the run left: {left:?}");
    }
}

/// Every failure, for assertion messages.
fn show(out: &Value) -> String {
    let f: Vec<String> = failures(out)
        .iter()
        .map(|f| format!("{} {} ({})", f["id"], f["verdict"], f["detail"]))
        .collect();
    format!(
        "msg: {}\nnot_tested: {}\nfailures:\n  {}",
        msg(out),
        facts(out)["not_tested"],
        f.join("\n  ")
    )
}

fn set_faults(h: &Handle, change: impl FnOnce(&mut SimFaults)) {
    h.cluster().sim().update_faults(change);
}

#[test]
fn a_healthy_cluster_passes_every_scenario_and_leaves_nothing_behind() {
    let h = cluster("");
    // Every scenario, the optional ones too; the external target is the API server's address
    // on the control-plane node, outside the pod network.
    let out = nettest(
        &h,
        json!({"scenarios": ["*"], "external_targets": ["10.0.0.10:6443"], "max_peers_per_node": 0}),
    );
    assert_eq!(out["failed"], json!(false), "{}", show(&out));
    let f = facts(&out);
    assert_eq!(f["passed"], json!(true), "{}", show(&out));
    assert!(failures(&out).is_empty(), "{}", show(&out));
    assert_eq!(f["regressions"], json!([]));
    assert_eq!(f["not_tested"], json!([]));
    assert_eq!(strings(&f["nodes_tested"]), all_nodes());
    let every: BTreeSet<String> = [
        "control_plane",
        "pod_to_pod_same_node",
        "pod_to_pod_cross_node",
        "pod_to_service",
        "dns",
        "node_to_pod",
        "pod_to_node",
        "pod_to_apiserver",
        "mtu",
        "network_policy",
        "nodeport",
        "external",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(strings(&f["scenarios_run"]), every);
    // Each scenario ran probes, and all of them passed.
    let by = f["summary"]["by_scenario"].as_object().unwrap();
    assert_eq!(by.keys().cloned().collect::<BTreeSet<_>>(), every);
    for (s, c) in by {
        assert!(c["run"].as_u64().unwrap() > 0, "{s}: {c}");
        assert_eq!(c["passed"], c["run"], "{s}: {c}");
        assert_eq!(c["failed"], json!(0), "{s}: {c}");
    }
    // Every node probed every other node's pods, both ways (max_peers_per_node 0: all peers).
    assert_eq!(by["pod_to_pod_cross_node"]["run"], json!(5 * 4 * 2));
    assert_eq!(by["pod_to_pod_same_node"]["run"], json!(5 * 2));
    assert_eq!(by["mtu"]["run"], json!(5 * 4));
    let run = f["summary"]["probes_run"].as_u64().unwrap();
    assert_eq!(f["summary"]["passed"].as_u64(), Some(run));
    let m = msg(&out);
    assert!(
        m.starts_with(&format!("network test passed: {run} probes on 5 nodes")),
        "{m}"
    );
    assert_cleaned_up(&h, &out);
}

#[test]
fn a_partitioned_node_is_named_with_its_peers_and_the_timeout() {
    let h = cluster("");
    // Only the pod network is cut (the kubelet still reaches the API server): the probes on
    // w2 run and report, and every connection between w2 and another node is dropped.
    set_faults(&h, |f| {
        f.network.partitions = vec![["w2".to_string()].into_iter().collect()];
        f.network.partition_keeps_apiserver = true;
    });
    let out = nettest(&h, json!({}));
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let fs = failures(&out);
    let got = ids(fs);
    for (a, b) in pairs() {
        let id = format!("pod_to_pod_cross_node/{a}->{b}/http");
        if a == "w2" || b == "w2" {
            assert!(got.contains(&id), "{id} missing\n{}", show(&out));
        } else {
            assert!(!got.contains(&id), "{id} failed\n{}", show(&out));
        }
    }
    for f in fs {
        if let Some(t) = f["target_node"].as_str() {
            // Failures between two nodes all involve w2, and are timeouts (dropped packets).
            assert!(f["source_node"] == "w2" || t == "w2", "{f}\n{}", show(&out));
            assert_eq!(f["verdict"], "timeout", "{f}");
        }
    }
    let cross = fs
        .iter()
        .find(|f| f["id"] == "pod_to_pod_cross_node/w2->w1/http")
        .unwrap();
    assert_eq!(cross["scenario"], "pod_to_pod_cross_node");
    assert_eq!(cross["source_node"], "w2");
    assert_eq!(cross["target_node"], "w1");
    // Same-node traffic still works on w2.
    assert!(!got.iter().any(|i| i.starts_with("pod_to_pod_same_node/")));
    // The message leads with w2 and its peers, and the verdict.
    let m = msg(&out);
    let first = m
        .strip_prefix("network test failed: ")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(
        first.contains("w2") && ["cp1", "w1", "w3", "w4"].iter().all(|n| first.contains(n)),
        "{m}"
    );
    assert!(first.contains("timeout"), "{m}");
    assert_eq!(facts(&out)["not_tested"], json!([]));
    assert_eq!(strings(&facts(&out)["nodes_tested"]), all_nodes());
    assert_cleaned_up(&h, &out);
}

#[test]
fn udp_blocked_dns_down_and_large_packets_dropped_each_fail_their_own_probes() {
    // One cluster, one fault at a time (each run must leave nothing behind for the next).
    let h = cluster("");
    udp_blocked_between_nodes_fails_only_the_cross_node_udp_probes(&h);
    set_faults(&h, |f| *f = SimFaults::default());
    cluster_dns_down_fails_the_dns_scenario_on_every_node(&h);
    set_faults(&h, |f| *f = SimFaults::default());
    large_packets_dropped_between_nodes_fail_the_mtu_scenario(&h);
}

fn udp_blocked_between_nodes_fails_only_the_cross_node_udp_probes(h: &Handle) {
    set_faults(h, |f| {
        f.network.udp_blocked = kubesim::network::UdpBlock::BetweenNodes;
    });
    let out = nettest(h, json!({"scenarios": ["pod_to_pod_*", "mtu"]}));
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let want: BTreeSet<String> = pairs()
        .iter()
        .map(|(a, b)| format!("pod_to_pod_cross_node/{a}->{b}/udp"))
        .collect();
    assert_eq!(ids(failures(&out)), want, "{}", show(&out));
    for f in failures(&out) {
        assert_eq!(f["verdict"], "timeout", "{f}");
        assert_eq!(f["scenario"], "pod_to_pod_cross_node", "{f}");
        assert!(f["target"].as_str().unwrap().ends_with(":9376"), "{f}");
    }
    let m = msg(&out);
    assert!(m.contains("timeout"), "{m}");
    assert!(NODES.iter().any(|n| m.contains(n)), "{m}");
    assert_cleaned_up(h, &out);
}

fn cluster_dns_down_fails_the_dns_scenario_on_every_node(h: &Handle) {
    set_faults(h, |f| f.network.dns_down = true);
    let out = nettest(h, json!({}));
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let want: BTreeSet<String> = NODES
        .iter()
        .flat_map(|n| {
            [
                format!("dns/{n}->nt-server"),
                format!("dns/{n}->kubernetes.default"),
            ]
        })
        .collect();
    assert_eq!(ids(failures(&out)), want, "{}", show(&out));
    for f in failures(&out) {
        assert_eq!(f["verdict"], "dns", "{f}");
        assert_eq!(f["scenario"], "dns", "{f}");
    }
    let ns = facts(&out)["namespace"].as_str().unwrap();
    assert!(
        failures(&out)
            .iter()
            .any(|f| f["target"] == format!("nt-server.{ns}.svc.cluster.local")),
        "{}",
        show(&out)
    );
    let m = msg(&out);
    assert!(m.contains("dns"), "{m}");
    assert!(NODES.iter().any(|n| m.contains(n)), "{m}");
    assert_cleaned_up(h, &out);
}

fn large_packets_dropped_between_nodes_fail_the_mtu_scenario(h: &Handle) {
    set_faults(h, |f| f.network.max_cross_node_payload = Some(1400));
    let out = nettest(h, json!({}));
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let want: BTreeSet<String> = pairs()
        .iter()
        .map(|(a, b)| format!("mtu/{a}->{b}/http"))
        .collect();
    assert_eq!(ids(failures(&out)), want, "{}", show(&out));
    for f in failures(&out) {
        assert_eq!(f["verdict"], "timeout", "{f}");
        assert_eq!(f["scenario"], "mtu", "{f}");
    }
    let m = msg(&out);
    assert!(m.contains("timeout"), "{m}");
    let by = &facts(&out)["summary"]["by_scenario"];
    assert_eq!(by["mtu"]["failed"], json!(20));
    assert_eq!(by["pod_to_pod_cross_node"]["failed"], json!(0));
    assert_cleaned_up(h, &out);
}

/// Creates a default-deny ingress NetworkPolicy in every `calico-nettest-*` namespace as soon as
/// it appears, as policy engines that add one to new namespaces do, until dropped.
struct DenyNewNamespaces {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl DenyNewNamespaces {
    fn start(h: &Handle) -> Self {
        let cluster = h.cluster().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut done = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for ns in cluster
                    .list("v1", "namespaces", None, &Default::default())
                    .unwrap_or_default()
                {
                    let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
                    if !name.starts_with("calico-nettest-") || done.contains(&name) {
                        continue;
                    }
                    let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": {"name": "default-deny-ingress", "namespace": name},
                        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
                    cluster
                        .create(
                            "networking.k8s.io/v1",
                            "networkpolicies",
                            Some(&name),
                            policy,
                            &WriteOptions::manager("policy-engine"),
                        )
                        .unwrap();
                    done.push(name);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            done
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn a_network_policy_that_blocks_the_servers_fails_pod_traffic_with_timeouts() {
    // Servers become Ready 1.5 s late, so the policy is in place well before any probe runs,
    // even on a loaded machine.
    let h = cluster("faults: {slow_ready: [{image: '*agnhost*', seconds: 1.5}]}\n");
    let deny = DenyNewNamespaces::start(&h);
    let out = nettest(&h, json!({}));
    let denied = deny.finish();
    let ns = facts(&out)["namespace"].as_str().unwrap().to_string();
    assert_eq!(denied, vec![ns.clone()]);
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let got = ids(failures(&out));
    // Pod to pod, on the same node and across nodes, is dropped: TCP (HTTP) and UDP.
    for (a, b) in pairs() {
        for p in ["http", "udp"] {
            let id = format!("pod_to_pod_cross_node/{a}->{b}/{p}");
            assert!(got.contains(&id), "{id} missing\n{}", show(&out));
        }
    }
    for n in NODES {
        for p in ["http", "udp"] {
            let id = format!("pod_to_pod_same_node/{n}->{n}/{p}");
            assert!(got.contains(&id), "{id} missing\n{}", show(&out));
        }
        // Traffic from a pod's own node is always allowed (the Kubernetes documentation), and
        // the host-network servers are not selected by any policy.
        assert!(!got.contains(&format!("node_to_pod/{n}->{n}/http/local")));
    }
    assert!(
        !got.iter()
            .any(|i| i.starts_with("pod_to_node/") || i.starts_with("dns/")),
        "{}",
        show(&out)
    );
    for f in failures(&out) {
        assert_eq!(f["verdict"], "timeout", "{f}");
        if f["scenario"] == "pod_to_pod_cross_node" {
            let src = f["source_node"].as_str().unwrap();
            let dst = f["target_node"].as_str().unwrap();
            assert!(src != dst && NODES.contains(&src) && NODES.contains(&dst));
        }
    }
    let m = msg(&out);
    assert!(m.contains("timeout"), "{m}");
    assert!(NODES.iter().any(|n| m.contains(n)), "{m}");
    assert_cleaned_up(&h, &out);
}

#[test]
fn a_failure_that_passed_in_the_baseline_is_a_regression() {
    let h = cluster("");
    let scenarios = json!(["pod_to_pod_*", "mtu"]);
    let before = nettest(&h, json!({"scenarios": scenarios}));
    assert_eq!(before["failed"], json!(false), "{}", show(&before));
    let baseline = facts(&before).clone();

    set_faults(&h, |f| {
        f.network.partitions = vec![["w3".to_string()].into_iter().collect()];
        f.network.partition_keeps_apiserver = true;
    });
    let after = nettest(&h, json!({"scenarios": scenarios, "baseline": baseline}));
    assert_eq!(after["failed"], json!(true), "{}", show(&after));
    let regressions = facts(&after)["regressions"].as_array().unwrap();
    // Everything that fails now passed before: every failure is a regression.
    assert!(!regressions.is_empty(), "{}", show(&after));
    assert_eq!(ids(regressions), ids(failures(&after)), "{}", show(&after));
    assert!(
        ids(regressions).contains("pod_to_pod_cross_node/w1->w3/http"),
        "{}",
        show(&after)
    );
    for r in regressions {
        assert!(r["source_node"] == "w3" || r["target_node"] == "w3", "{r}");
        assert_eq!(r["verdict"], "timeout", "{r}");
    }
    let m = msg(&after);
    assert!(
        m.starts_with(&format!(
            "network test failed: {} regressions since the baseline: ",
            regressions.len()
        )),
        "{m}"
    );
    assert!(m.contains("w3") && m.contains("timeout"), "{m}");
    assert_cleaned_up(&h, &after);

    // With the failing run as the baseline, the same failures are no longer regressions.
    let again = nettest(
        &h,
        json!({"scenarios": scenarios, "baseline": facts(&after).clone()}),
    );
    assert_eq!(again["failed"], json!(true), "{}", show(&again));
    assert_eq!(ids(failures(&again)), ids(failures(&after)));
    assert_eq!(facts(&again)["regressions"], json!([]), "{}", show(&again));
    assert!(!msg(&again).contains("regression"), "{}", msg(&again));
    assert_cleaned_up(&h, &again);
}

#[test]
fn a_run_that_times_out_still_cleans_up_and_names_the_untested_nodes() {
    // The probes start but never finish within the module's timeout (a hung probe).
    let h = cluster("");
    let mut timing = h.cluster().sim().timing();
    timing.job_run_ms = 120_000;
    // Real time, as the module's timeout is.
    timing.time_scale = 1.0;
    h.cluster().sim().set_timing(timing);
    let started = Instant::now();
    // 16 s: of the 12.8 s before the cleanup's share, up to 6.4 s for the servers to become
    // Ready, which a loaded machine needs.
    let out = nettest(&h, json!({"timeout": 16, "retries": 0}));
    let took = started.elapsed();
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let f = facts(&out);
    let not_tested: BTreeSet<String> = f["not_tested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    for n in NODES {
        assert!(
            not_tested.contains(n),
            "{n} not in not_tested\n{}",
            show(&out)
        );
    }
    for n in f["not_tested"].as_array().unwrap() {
        assert!(
            n["reason"]
                .as_str()
                .unwrap()
                .contains("did not finish within the timeout"),
            "{n}"
        );
    }
    assert_eq!(f["nodes_tested"], json!([]), "{}", show(&out));
    assert_eq!(f["passed"], json!(false));
    let m = msg(&out);
    assert!(m.contains("nodes not tested: "), "{m}");
    assert!(m.contains("did not finish within the timeout"), "{m}");
    // The timeout covers the whole run, cleanup included (a little slack for start-up).
    assert!(took < Duration::from_secs(18), "the run took {took:?}");
    assert_cleaned_up(&h, &out);
}

#[test]
fn nodes_whose_test_pods_cannot_run_are_named_and_the_namespace_still_goes() {
    // w3 is tainted for maintenance (the test pods tolerate only the control-plane taint), and
    // w4 cannot pull the agnhost image.
    let h = cluster_with_nodes(
        "nodes: [{name: cp1, control_plane: true}, {name: w1}, {name: w2}, \
         {name: w3, taints: [{key: maintenance, value: 'true', effect: NoSchedule}]}, {name: w4}]",
        "",
    );
    // Real time, as the module's short timeout is.
    time_scale(&h, 1.0);
    set_faults(&h, |f| {
        f.never_pull = vec![kubesim::ImageFault {
            image: "*agnhost*".into(),
            nodes: vec!["w4".into()],
        }];
    });
    let out = nettest(
        &h,
        json!({"timeout": 16, "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let f = facts(&out);
    let nt = f["not_tested"].as_array().unwrap();
    let reason = |node: &str| -> String {
        nt.iter()
            .find(|n| n["node"] == node)
            .unwrap_or_else(|| panic!("{node} not in not_tested\n{}", show(&out)))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("w3").contains("no server pod was placed on it"),
        "{nt:?}"
    );
    let w4 = reason("w4");
    assert!(w4.contains("not ready") && w4.contains("ImagePull"), "{w4}");
    assert_eq!(nt.len(), 2, "{}", show(&out));
    assert_eq!(
        strings(&f["nodes_tested"]),
        ["cp1", "w1", "w2"].iter().map(|s| s.to_string()).collect()
    );
    // The nodes that could run their pods were tested, and passed.
    assert!(failures(&out).is_empty(), "{}", show(&out));
    let m = msg(&out);
    assert!(m.contains("nodes not tested: "), "{m}");
    assert!(m.contains("w3 (") && m.contains("w4 ("), "{m}");
    assert_cleaned_up(&h, &out);
}

#[test]
fn every_service_backend_answers_on_a_larger_healthy_cluster() {
    let h = cluster_with_nodes("nodes: {count: 12, control_plane: 1}", "");
    let out = nettest(&h, json!({"scenarios": ["pod_to_service"]}));
    assert_eq!(out["failed"], json!(false), "{}", show(&out));
}

#[test]
fn probes_are_pinned_by_node_name_even_when_the_hostname_label_differs() {
    // As on cloud providers whose node names are DNS names: the kubelet's
    // kubernetes.io/hostname label holds the short host name, not the node name, and the
    // host-network servers answer with that host name.
    let h = cluster_with_nodes(
        "nodes: [{name: cp1, control_plane: true}, \
         {name: ip-10-0-0-11.ec2.internal, labels: {kubernetes.io/hostname: ip-10-0-0-11}}, \
         {name: ip-10-0-0-12.ec2.internal, labels: {kubernetes.io/hostname: ip-10-0-0-12}}]",
        "",
    );
    time_scale(&h, 1.0);
    let out = nettest(&h, json!({"timeout": 30}));
    assert_eq!(out["failed"], json!(false), "{}", show(&out));
    let by = &facts(&out)["summary"]["by_scenario"];
    assert_eq!(by["pod_to_node"]["run"], json!(3 * 2), "{by}");
    assert_eq!(by["pod_to_node"]["passed"], json!(3 * 2), "{by}");
    assert_eq!(
        strings(&facts(&out)["nodes_tested"]),
        [
            "cp1",
            "ip-10-0-0-11.ec2.internal",
            "ip-10-0-0-12.ec2.internal"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
    assert_cleaned_up(&h, &out);
}

#[test]
fn a_probe_that_breaks_without_a_report_leaves_its_node_untested_not_failed() {
    let h = cluster("");
    // Every API request of the module takes 50 ms longer, so the fault below is in force long
    // before the module, having seen its servers Ready, creates its probe Jobs (three requests
    // later, and the Job's pod must still be created, bound, pulled and started). Should the
    // race ever be lost, the test says so rather than judging the module.
    let mut api = h.faults().faults();
    api.latency_ms = 50;
    h.faults().set_faults(api);
    // Once the servers run, agnhost containers that start on w2 exit at once with code 1: the
    // servers keep running, the probes of w2 fail without a termination message.
    let cluster = h.cluster().clone();
    let watcher = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let pods = cluster
                .list("v1", "pods", None, &Default::default())
                .unwrap_or_default();
            let ready = pods
                .iter()
                .filter(|p| {
                    p.pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("calico-nettest-"))
                        && p.pointer("/metadata/labels/k8s-calico.io~1nettest-role")
                            .and_then(Value::as_str)
                            .is_some_and(|r| r == "server" || r == "host-server")
                        && p.pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .is_some_and(|c| {
                                c.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                })
                .count();
            // Both server DaemonSets, pod network and host network, on every node.
            if ready == 2 * NODES.len() {
                cluster.sim().update_faults(|f| {
                    f.crash_loop = vec![kubesim::ImageFault {
                        image: "*agnhost*".into(),
                        nodes: vec!["w2".into()],
                    }];
                });
                let probes_started = pods.iter().any(|p| {
                    p.pointer("/metadata/labels/job-name").is_some()
                        && p.pointer("/status/containerStatuses").is_some()
                });
                return !probes_started;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    });
    let out = nettest(&h, json!({}));
    assert!(
        watcher.join().unwrap(),
        "the fault came too late or never; the test proves nothing"
    );
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    let f = facts(&out);
    let nt = f["not_tested"].as_array().unwrap();
    assert_eq!(nt.len(), 1, "{}", show(&out));
    assert_eq!(nt[0]["node"], "w2");
    let reason = nt[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("w2")
            && reason.contains("failed without a report")
            && reason.contains("exit code 1"),
        "{reason}"
    );
    // w2's network was not found wanting: nothing failed, the other nodes were tested (and
    // reached w2's servers).
    assert!(failures(&out).is_empty(), "{}", show(&out));
    assert_eq!(
        strings(&f["nodes_tested"]),
        ["cp1", "w1", "w3", "w4"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let m = msg(&out);
    assert!(
        m.starts_with("network test failed: nodes not tested: w2 ("),
        "{m}"
    );
    assert_cleaned_up(&h, &out);
}

#[test]
fn the_timeout_covers_cleanup_when_the_namespace_is_slow_to_go() {
    // Another controller's finalizer on an object in the test namespace holds its deletion
    // (as a backup tool or a policy engine may): the module asks for the deletion, waits only
    // as long as its timeout allows, and says so.
    let h = cluster("");
    time_scale(&h, 1.0);
    let cluster = h.cluster().clone();
    let holder = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let ns = cluster
                .list("v1", "namespaces", None, &Default::default())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .find(|n| n.starts_with("calico-nettest-"));
            if let Some(ns) = ns {
                let held = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "held", "namespace": ns, "finalizers": ["example.com/hold"]}});
                cluster
                    .create(
                        "v1",
                        "configmaps",
                        Some(&ns),
                        held,
                        &WriteOptions::manager("backup-tool"),
                    )
                    .unwrap();
                return Some(ns);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });
    let started = Instant::now();
    let out = nettest(&h, json!({"timeout": 16}));
    let took = started.elapsed();
    let ns = holder.join().unwrap().expect("no test namespace appeared");
    assert_eq!(facts(&out)["namespace"], json!(ns));
    // The network itself passed; the namespace was still being deleted when time ran out.
    assert_eq!(out["failed"], json!(false), "{}", show(&out));
    assert!(took < Duration::from_secs(18), "the run took {took:?}");
    let warnings = out["warnings"].to_string();
    assert!(
        warnings.contains(&ns) && warnings.contains("still being deleted"),
        "{warnings}"
    );
    let got = h.cluster().get("v1", "namespaces", None, &ns).unwrap();
    assert!(
        got.pointer("/metadata/deletionTimestamp").is_some(),
        "{got}"
    );
    // Once the finalizer goes, so does the namespace, and nothing of the run is left.
    h.cluster()
        .modify(
            "v1",
            "configmaps",
            Some(&ns),
            "held",
            None,
            &WriteOptions::manager("backup-tool"),
            |o| o["metadata"]["finalizers"] = json!([]),
        )
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while h.cluster().get("v1", "namespaces", None, &ns).is_ok() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_cleaned_up(&h, &out);
}

#[test]
fn a_probe_pod_deleted_before_it_reports_is_not_waited_for() {
    // The probes hang, and someone deletes their pods (a drain, an eviction, an impatient
    // admin): nothing replaces them (backoffLimit 0), so the module reports at once instead of
    // waiting out its timeout.
    let h = cluster("");
    let mut timing = h.cluster().sim().timing();
    timing.job_run_ms = 600_000;
    h.cluster().sim().set_timing(timing);
    let cluster = h.cluster().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let deleter = std::thread::spawn(move || {
        let mut deleted = BTreeSet::new();
        while !flag.load(Ordering::Relaxed) {
            for p in cluster
                .list("v1", "pods", None, &Default::default())
                .unwrap_or_default()
            {
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                if p["metadata"]["labels"]["job-name"].is_string()
                    && p["status"]["phase"] == "Running"
                    && deleted.insert(name.clone())
                {
                    let ns = p["metadata"]["namespace"].as_str().unwrap_or("");
                    let _ = cluster.delete("v1", "pods", Some(ns), &name, &Default::default());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        deleted.len()
    });
    let started = Instant::now();
    let out = nettest(&h, json!({"timeout": 120, "retries": 0}));
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    // Every probe pod was deleted (kubesim's Job controller may create replacements, which
    // are deleted in turn; the module must not wait for them either).
    assert!(deleter.join().unwrap() >= 2 * NODES.len());
    assert_eq!(out["failed"], json!(true), "{}", show(&out));
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    let f = facts(&out);
    let nt = f["not_tested"].as_array().unwrap();
    let names: BTreeSet<String> = nt
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, all_nodes(), "{}", show(&out));
    for n in nt {
        let reason = n["reason"].as_str().unwrap();
        assert!(
            reason.contains("was deleted before it reported")
                && reason.contains(n["node"].as_str().unwrap()),
            "{reason}"
        );
    }
    assert!(failures(&out).is_empty(), "{}", show(&out));
    assert_eq!(f["nodes_tested"], json!([]));
    assert_cleaned_up(&h, &out);
}
