//! The scheduler: binds each unscheduled pod to a node that fits, spreading pods over nodes,
//! or marks it `PodScheduled=False` (`Unschedulable`) with the reasons per node, as
//! kube-scheduler's message gives them.

use crate::pointer::At;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::cluster::{Cluster, ListOptions, WriteOptions};
use crate::controllers::Shutdown;
use crate::workloads::s;

/// Runs the scheduler until shutdown: on every pod or node change, and every few hundred
/// milliseconds for pods still waiting.
pub async fn run(cluster: Cluster, mut shutdown: Shutdown) {
    let Ok(mut pods) = cluster.subscribe("v1", "pods", None) else {
        return;
    };
    let Ok(mut nodes) = cluster.subscribe("v1", "nodes", None) else {
        return;
    };
    loop {
        schedule_pending(&cluster);
        // Wake for what can change a decision: a pod waiting for a node, or a node change.
        // Status writes of bound pods (thousands while a big cluster starts) do not.
        let retry = tokio::time::sleep(std::time::Duration::from_millis(300));
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                ev = pods.next() => match ev {
                    Some(Ok(ev)) if !s(&ev.object.value, "/spec/nodeName").is_empty() => continue,
                    _ => break,
                },
                _ = nodes.next() => break,
                _ = &mut retry => break,
            }
        }
        // Drain what else arrived: one pass handles it all.
        while pods.try_next().is_some() {}
        while nodes.try_next().is_some() {}
    }
}

fn schedule_pending(cluster: &Cluster) {
    // Only unbound pods are read in full: a pass stays cheap however many pods already run.
    let unbound = ListOptions {
        field_selector: Some("spec.nodeName=".into()),
        ..Default::default()
    };
    let pending: Vec<Value> = cluster
        .list("v1", "pods", None, &unbound)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.at("/metadata/deletionTimestamp").is_none()
                && p.at("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Pending")
                    == "Pending"
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let nodes = cluster
        .list_shared("v1", "nodes", None, &Default::default())
        .unwrap_or_default();
    let by_name: HashMap<&str, &Value> = nodes
        .iter()
        .map(|n| (s(n, "/metadata/name"), &n.value))
        .collect();
    // Pods per node, for spreading: only pods that may go to any node need it.
    let mut load: Option<HashMap<String, usize>> = None;
    for pod in &pending {
        let ns = pod
            .at("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let name = pod
            .at("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        // kube-scheduler's NodeAffinity PreFilter: a pod pinned by `metadata.name` (every
        // DaemonSet pod) is filtered against its named nodes only. The full pass below still
        // runs when none fits, for the per-node reasons of the Unschedulable message.
        let pinned = pinned_nodes(pod).and_then(|names| {
            names
                .into_iter()
                .filter_map(|n| by_name.get(n.as_str()).copied())
                .find(|node| fits(pod, node).is_ok())
        });
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(&str, usize)> = pinned.map(|n| (s(n, "/metadata/name"), 0));
        if best.is_none() {
            let load = load.get_or_insert_with(|| pods_per_node(cluster));
            for node in &nodes {
                let node_name = s(node, "/metadata/name");
                match fits(pod, node) {
                    Ok(()) => {
                        let l = load.get(node_name).copied().unwrap_or(0);
                        if best.is_none_or(|(_, b)| l < b) {
                            best = Some((node_name, l));
                        }
                    }
                    Err(why) => *reasons.entry(why).or_default() += 1,
                }
            }
        }
        match best {
            Some((node, _)) => {
                if cluster.bind(ns, name, node).is_ok()
                    && let Some(load) = load.as_mut()
                {
                    *load.entry(node.to_string()).or_default() += 1;
                }
            }
            None => {
                let n = nodes.len();
                let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
                let message = format!(
                    "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
                    if parts.is_empty() {
                        "no nodes".to_string()
                    } else {
                        parts.join(", ")
                    }
                );
                let already = pod
                    .at("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "PodScheduled" && c["message"] == json!(message))
                    });
                if !already {
                    let _ = cluster.modify("v1", "pods", Some(ns), name, Some("status"), &WriteOptions::manager("default-scheduler"), |p| {
                        p["status"]["phase"] = json!("Pending");
                        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": message, "lastProbeTime": null, "lastTransitionTime": crate::clock::now_rfc3339()}]);
                    });
                }
            }
        }
    }
}

/// How many pods each node is bound to.
fn pods_per_node(cluster: &Cluster) -> HashMap<String, usize> {
    let mut load = HashMap::new();
    for p in cluster
        .list_shared("v1", "pods", None, &Default::default())
        .unwrap_or_default()
    {
        let node = s(&p, "/spec/nodeName");
        if !node.is_empty() {
            *load.entry(node.to_string()).or_default() += 1;
        }
    }
    load
}

/// The node names a pod's required node affinity limits it to, when every term pins
/// `metadata.name` with `In` (as the DaemonSet controller's pin does); `None` otherwise.
fn pinned_nodes(pod: &Value) -> Option<Vec<String>> {
    let terms = pod
        .at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())?;
    let mut names = Vec::new();
    for term in terms {
        let pin = term
            .get("matchFields")
            .and_then(Value::as_array)
            .and_then(|f| {
                f.iter()
                    .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
            })?;
        names.extend(
            pin["values"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    Some(names)
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.at("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pod` may run on `node`, or the scheduler's reason why not.
pub fn fits(pod: &Value, node: &Value) -> Result<(), String> {
    let node_labels = labels(node);
    let node_name = node
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(sel) = pod.at("/spec/nodeSelector").and_then(Value::as_object)
        && !sel
            .iter()
            .all(|(k, v)| node_labels.get(k).map(String::as_str) == v.as_str())
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(terms) = pod
        .at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        && !terms.is_empty()
        && !terms.iter().any(|t| term_matches(t, &node_labels, node_name))
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    let tolerations = pod
        .at("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut taints = node
        .at("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if node.at("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
    }
    for t in &taints {
        let effect = t["effect"].as_str().unwrap_or("");
        if effect != "NoSchedule" && effect != "NoExecute" {
            continue;
        }
        if !tolerations.iter().any(|tol| tolerates(tol, t)) {
            if t["key"] == "node.kubernetes.io/unschedulable" {
                return Err("node(s) were unschedulable".into());
            }
            let value = t["value"]
                .as_str()
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            return Err(format!(
                "node(s) had untolerated taint {{{}{value}}}",
                t["key"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

fn term_matches(term: &Value, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fields = term
        .get("matchFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|e| {
        requirement(
            e,
            labels
                .get(e["key"].as_str().unwrap_or(""))
                .map(String::as_str),
        )
    }) && fields.iter().all(|f| {
        let value = (f["key"] == "metadata.name").then_some(node_name);
        requirement(f, value)
    })
}

fn requirement(e: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = e["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match e["operator"].as_str().unwrap_or("") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e["operator"] == "Gt" { v > w } else { v < w }
        }
        _ => false,
    }
}

/// Whether a toleration tolerates a taint (Kubernetes' rules: empty key with `Exists`
/// tolerates everything; an empty effect matches every effect).
pub fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect_ok = match tol["effect"].as_str() {
        None | Some("") => true,
        Some(e) => Some(e) == taint["effect"].as_str(),
    };
    if !effect_ok {
        return false;
    }
    let key = tol["key"].as_str().unwrap_or("");
    match tol["operator"].as_str().unwrap_or("Equal") {
        "Exists" => key.is_empty() || Some(key) == taint["key"].as_str(),
        _ => {
            Some(key) == taint["key"].as_str()
                && tol["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_selectors_and_daemonset_pinning() {
        let node = json!({"metadata": {"name": "cp1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}});
        let plain = json!({"spec": {}});
        assert!(
            fits(&plain, &node)
                .unwrap_err()
                .contains("untolerated taint {node-role.kubernetes.io/control-plane}")
        );
        let tolerant = json!({"spec": {"tolerations": [{"operator": "Exists"}], "nodeSelector": {"kubernetes.io/os": "linux"}}});
        assert!(fits(&tolerant, &node).is_ok());
        let pinned = json!({"spec": {"tolerations": [{"operator": "Exists"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["w1"]}]}]}}}}});
        assert!(fits(&pinned, &node).is_err());
        let cordoned = json!({"metadata": {"name": "w1"}, "spec": {"unschedulable": true}});
        assert_eq!(
            fits(&plain, &cordoned).unwrap_err(),
            "node(s) were unschedulable"
        );
    }
}
