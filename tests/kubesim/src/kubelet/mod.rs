//! kubesim's node side: a scheduler, a kubelet for every Node, and the node lifecycle
//! controller, so pods move as on a real cluster.
//!
//! - The **scheduler** binds pods without `spec.nodeName` to a node that fits (node selector,
//!   required node affinity including the `metadata.name` field the DaemonSet controller pins
//!   with, taints against tolerations, cordoned and NotReady nodes), or marks them
//!   `PodScheduled=False` `Unschedulable` with the real message shape.
//! - Each bound pod gets a **kubelet** task ([`pod`]): sandbox and address (Calico IPAM
//!   semantics from the network model), init containers in order, image pulls, containers
//!   started with their [`behaviour`], readiness, restarts with back-off, termination messages
//!   and logs, graceful deletion.
//! - **Nodes** post `Ready` with heartbeats, report their kubelet version, and go `Unknown` with
//!   the unreachable taints when a `not_ready_nodes` fault stops their kubelet.
//!
//! Timing comes from [`crate::sim::Timing`], faults from [`crate::sim::SimFaults`].

pub mod behaviour;
pub mod pod;
pub mod scheduler;

use crate::pointer::At;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::controllers::Shutdown;
use crate::error::ApiResult;
use crate::network::Ipam;
use crate::store::EventType;

/// The field manager of kubelet writes.
pub const KUBELET: &str = "kubelet";

/// Shared state of the kubelets: pods with a running task, and the address allocator.
#[derive(Default)]
pub struct Node {
    running: Mutex<HashMap<String, ()>>,
    ipam: Mutex<Option<Ipam>>,
}

impl Node {
    /// Allocates a pod-network address for `handle` on `node`, building IPAM from the
    /// cluster's IP pools the first time (Calico IPPools, the Installation's pools, or the
    /// kubeadm-style default 10.244.0.0/16).
    pub fn allocate(&self, cluster: &Cluster, handle: &str, node: &Value) -> Option<String> {
        let mut guard = self.ipam.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let mut sources = cluster
                .list(
                    "crd.projectcalico.org/v1",
                    "ippools",
                    None,
                    &Default::default(),
                )
                .unwrap_or_default();
            sources.extend(
                cluster
                    .list(
                        "operator.tigera.io/v1",
                        "installations",
                        None,
                        &Default::default(),
                    )
                    .unwrap_or_default(),
            );
            let mut ipam = Ipam::from_objects(sources.iter());
            if ipam.pools().next().is_none() {
                ipam = Ipam::new(vec![
                    crate::network::IpPool::new("default", "10.244.0.0/16", Some(24)).ok()?,
                ]);
            }
            let pods = cluster
                .list("v1", "pods", None, &Default::default())
                .unwrap_or_default();
            ipam.restore_pods(pods.iter());
            *guard = Some(ipam);
        }
        let name = node
            .at("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let labels = crate::network::labels_of(node);
        guard
            .as_mut()?
            .allocate(handle, name, &labels)
            .ok()
            .map(|ip| ip.to_string())
    }

    /// Returns a pod's address to the pool.
    pub fn release(&self, handle: &str) {
        if let Some(ipam) = self.ipam.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            ipam.release(handle);
        }
    }
}

fn key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod.at("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        pod.at("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

/// The kubelets of every node: starts a task for each pod bound to a node.
pub async fn kubelets(cluster: Cluster, mut shutdown: Shutdown) {
    let state = Arc::new(Node::default());
    loop {
        let Ok(mut sub) = cluster.subscribe("v1", "pods", None) else {
            return;
        };
        for p in cluster
            .list("v1", "pods", None, &Default::default())
            .unwrap_or_default()
        {
            start_pod(&cluster, &state, &p, &shutdown);
        }
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                next = sub.next() => match next {
                    Some(Ok(ev)) => {
                        if ev.event_type == EventType::Deleted {
                            let v = &ev.object.value;
                            let ns = v.at("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                            let name = v.at("/metadata/name").and_then(Value::as_str).unwrap_or("");
                            state.release(&format!("{ns}/{name}"));
                            continue;
                        }
                        start_pod(&cluster, &state, &ev.object.value, &shutdown);
                    }
                    // Fell behind compacted history: list again.
                    Some(Err(_)) | None => break,
                }
            }
        }
    }
}

fn start_pod(cluster: &Cluster, state: &Arc<Node>, pod: &Value, shutdown: &Shutdown) {
    let bound = pod
        .at("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .at("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let k = key(pod);
    {
        let mut running = state.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&k) {
            return;
        }
        running.insert(k.clone(), ());
    }
    let cluster = cluster.clone();
    let state = state.clone();
    let pod = pod.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        pod::run(cluster, state.clone(), pod, shutdown).await;
        state
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
    });
}

/// Sets what a node's kubelet reports as its version (a restarted, upgraded kubelet).
pub fn set_kubelet_version(cluster: &Cluster, node: &str, version: &str) -> ApiResult<()> {
    let opts = WriteOptions::manager(KUBELET);
    cluster.modify("v1", "nodes", None, node, Some("status"), &opts, |n| {
        n["status"]["nodeInfo"]["kubeletVersion"] = json!(version);
    })?;
    cluster.modify("v1", "nodes", None, node, None, &opts, |n| {
        n["metadata"]["annotations"]["kubesim.k8s-calico.io/kubelet-version"] = json!(version);
    })?;
    Ok(())
}

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Node heartbeats and the node lifecycle controller. As kubelets do since NodeLease, a
/// Ready node renews its Lease in `kube-node-lease` every `node_heartbeat_ms` and posts its
/// status only when the status changes or every five minutes (`nodeStatusReportFrequency`):
/// a thousand nodes must not write a thousand Node objects a second, which would wake every
/// controller that watches nodes. Nodes in `not_ready_nodes` stop, turn `Unknown` and get
/// the unreachable taints; they recover when the fault is lifted.
pub async fn nodes(cluster: Cluster, mut shutdown: Shutdown) {
    let mut last_beat: HashMap<String, std::time::Instant> = HashMap::new();
    loop {
        let timing = cluster.sim().timing();
        let faults = cluster.sim().faults();
        let version = cluster.version().to_string();
        for node in cluster
            .list_shared("v1", "nodes", None, &Default::default())
            .unwrap_or_default()
        {
            let name = node
                .at("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let down = faults.not_ready_nodes.iter().any(|n| n == &name);
            // A healthy node beats every `nodeStatusUpdateFrequency`; one changing state
            // (going down, recovering, never reported) is handled on this pass.
            let settled = !down && is_ready(&node) && !is_unreachable(&node);
            if settled
                && last_beat
                    .get(&name)
                    .is_some_and(|t| t.elapsed() < NODE_STATUS_UPDATE)
            {
                continue;
            }
            heartbeat(&cluster, &node, &name, down, &version);
            last_beat.insert(name, std::time::Instant::now());
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(timing.node_heartbeat_ms.clamp(50, 10_000))) => {}
        }
    }
}

/// The kubelet's `nodeStatusUpdateFrequency` and its Lease renew interval.
const NODE_STATUS_UPDATE: std::time::Duration = std::time::Duration::from_secs(10);

fn ready_status(node: &Value) -> &str {
    node.at("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

fn is_ready(node: &Value) -> bool {
    ready_status(node) == "True"
}

fn is_unreachable(node: &Value) -> bool {
    node.at("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t["key"] == UNREACHABLE))
}

fn heartbeat(cluster: &Cluster, node: &Value, name: &str, down: bool, server_version: &str) {
    let now = crate::clock::now_rfc3339();
    let ready = ready_status(node).to_string();
    let tainted = is_unreachable(node);
    let opts = WriteOptions::manager(KUBELET);
    if down {
        if ready != "Unknown" {
            let _ = cluster.modify("v1", "nodes", None, name, Some("status"), &opts, |n| {
                set_condition(
                    n,
                    "Ready",
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                    &now,
                );
            });
        }
        if !tainted {
            let _ = cluster.modify(
                "v1",
                "nodes",
                None,
                name,
                None,
                &WriteOptions::manager("node-controller"),
                |n| {
                    let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
                    let mut taints: Vec<Value> = taints
                        .into_iter()
                        .filter(|t| t["key"] != UNREACHABLE)
                        .collect();
                    taints.push(json!({"key": UNREACHABLE, "effect": "NoSchedule"}));
                    taints
                        .push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
                    n["spec"]["taints"] = json!(taints);
                },
            );
        }
        return;
    }
    if tainted {
        let _ = cluster.modify(
            "v1",
            "nodes",
            None,
            name,
            None,
            &WriteOptions::manager("node-controller"),
            |n| {
                let taints: Vec<Value> = n["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t["key"] != UNREACHABLE)
                    .collect();
                n["spec"]["taints"] = json!(taints);
            },
        );
    }
    // A kubelet reports its own version: the one it was restarted with (the admin API's
    // annotation), else the one it already reports (an API server upgrade does not move the
    // kubelets), else, on a node that never reported, the server's.
    let kubelet_version = node
        .at("/metadata/annotations/kubesim.k8s-calico.io~1kubelet-version")
        .or_else(|| node.at("/status/nodeInfo/kubeletVersion"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(server_version)
        .to_string();
    let arch = node
        .at("/metadata/labels/kubernetes.io~1arch")
        .and_then(Value::as_str)
        .unwrap_or("amd64")
        .to_string();
    renew_lease(cluster, node, name);
    let mut posted = node.clone();
    let report = |n: &mut Value| {
        set_condition(
            n,
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        );
        for (t, reason, msg) in [
            (
                "MemoryPressure",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ] {
            set_condition(n, t, "False", reason, msg, &now);
        }
        let info = &mut n["status"]["nodeInfo"];
        info["kubeletVersion"] = json!(kubelet_version);
        info["kubeProxyVersion"] = json!(kubelet_version);
        info["containerRuntimeVersion"] = json!("containerd://1.7.24");
        info["architecture"] = json!(arch);
        info["operatingSystem"] = json!("linux");
        info["osImage"] = json!("Ubuntu 22.04.5 LTS");
        info["kernelVersion"] = json!("5.15.0-126-generic");
        if n["status"]["capacity"].is_null() {
            n["status"]["capacity"] = json!({"cpu": "4", "memory": "16374584Ki", "pods": "110", "ephemeral-storage": "101430960Ki"});
            n["status"]["allocatable"] = json!({"cpu": "4", "memory": "16272184Ki", "pods": "110", "ephemeral-storage": "93478772582"});
        }
    };
    report(&mut posted);
    let last_report = node
        .at("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastHeartbeatTime"].as_str())
        .and_then(crate::clock::parse_rfc3339);
    let due = last_report.is_none_or(|t| crate::clock::now_unix() - t >= STATUS_REPORT_SECS);
    if due || without_heartbeat_times(&posted) != without_heartbeat_times(node) {
        let _ = cluster.modify("v1", "nodes", None, name, Some("status"), &opts, report);
    }
}

/// `nodeStatusReportFrequency`: how often a kubelet posts an unchanged status.
const STATUS_REPORT_SECS: i64 = 300;

/// A node's status with the condition heartbeat times cleared: what decides whether a
/// kubelet has something new to report.
fn without_heartbeat_times(node: &Value) -> Value {
    let mut status = node.get("status").cloned().unwrap_or(Value::Null);
    if let Some(conds) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
    status
}

/// Renews the node's Lease in `kube-node-lease` (created on first use, owned by the Node, as
/// the kubelet's lease controller does).
fn renew_lease(cluster: &Cluster, node: &Value, name: &str) {
    let now = crate::clock::now_rfc3339_micros();
    let opts = WriteOptions::manager(KUBELET);
    let lease = "coordination.k8s.io/v1";
    let renewed = cluster.modify(
        lease,
        "leases",
        Some("kube-node-lease"),
        name,
        None,
        &opts,
        |l| {
            l["spec"]["renewTime"] = json!(now);
            l["spec"]["holderIdentity"] = json!(name);
        },
    );
    if renewed.is_err() {
        let _ = cluster.create(
            lease,
            "leases",
            Some("kube-node-lease"),
            json!({
                "apiVersion": lease, "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": node.at("/metadata/uid").cloned().unwrap_or(Value::Null)}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }),
            &opts,
        );
    }
}

/// Sets a node condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(
    n: &mut Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let mut conds = n["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let old = conds.iter().position(|c| c["type"] == kind);
    let transition = match old {
        Some(i) if conds[i]["status"] == status => conds[i]["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let c = json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": transition});
    match old {
        Some(i) => conds[i] = c,
        None => conds.push(c),
    }
    n["status"]["conditions"] = json!(conds);
}
