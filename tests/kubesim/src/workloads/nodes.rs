//! Node eligibility as the DaemonSet controller decides it (`NodeShouldRunDaemonPod`):
//! `spec.nodeName`, `nodeSelector` and required node affinity must match; taints with effect
//! NoSchedule or NoExecute must be tolerated by the template's tolerations plus the ones the
//! controller adds. An untolerated NoSchedule taint keeps a pod that already runs there; an
//! untolerated NoExecute taint does not.

use crate::pointer::At;
use serde_json::{Value, json};

use super::s;

/// The tolerations the DaemonSet controller adds to every pod it creates
/// (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if host_network {
        t.push(json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

/// `spec.tolerations` of a pod spec with the DaemonSet tolerations merged in (an identical
/// toleration is not repeated).
pub fn with_daemon_tolerations(spec: &Value) -> Vec<Value> {
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in daemon_tolerations(spec["hostNetwork"] == true) {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    tolerations
}

/// Whether a DaemonSet with pod template spec `spec` should run a pod on `node`, and whether
/// a pod already there should keep running.
pub fn should_run(spec: &Value, node: &Value) -> (bool, bool) {
    let node_name = s(node, "/metadata/name");
    if let Some(n) = spec.get("nodeName").and_then(Value::as_str)
        && !n.is_empty()
        && n != node_name
    {
        return (false, false);
    }
    if !affinity_matches(spec, node) {
        return (false, false);
    }
    let tolerations = with_daemon_tolerations(spec);
    let taints = node
        .at("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let untolerated = |effects: &[&str]| {
        taints.iter().any(|t| {
            effects.contains(&t["effect"].as_str().unwrap_or(""))
                && !tolerations.iter().any(|tol| tolerates(tol, t))
        })
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// `nodeSelector` and required node affinity (terms ORed; expressions and fields ANDed).
pub fn affinity_matches(spec: &Value, node: &Value) -> bool {
    let labels = node
        .at("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object)
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let Some(terms) = spec
        .at("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let node_name = s(node, "/metadata/name");
    terms.iter().any(|term| {
        let exprs = term.get("matchExpressions").and_then(Value::as_array);
        let fields = term.get("matchFields").and_then(Value::as_array);
        // An empty term matches nothing.
        if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
            return false;
        }
        exprs.into_iter().flatten().all(|e| {
            requirement(
                e,
                labels
                    .get(e["key"].as_str().unwrap_or(""))
                    .and_then(Value::as_str),
            )
        }) && fields
            .into_iter()
            .flatten()
            .all(|f| requirement(f, (f["key"] == "metadata.name").then_some(node_name)))
    })
}

fn requirement(e: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = e["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok());
    match e["operator"].as_str().unwrap_or("") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((number(value), number(values.first().copied())), (Some(v), Some(w)) if v > w)
        }
        "Lt" => {
            matches!((number(value), number(values.first().copied())), (Some(v), Some(w)) if v < w)
        }
        _ => false,
    }
}

/// Whether a toleration tolerates a taint: an empty key with `Exists` tolerates every taint,
/// an empty effect every effect; `Equal` (the default) compares values.
pub fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect = tol["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
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
    fn taints_decide_running_and_continuing() {
        let node = |taints: Value| json!({"metadata": {"name": "n1", "labels": {"os": "linux"}}, "spec": {"taints": taints}});
        let plain = json!({"containers": []});
        assert_eq!(should_run(&plain, &node(json!([]))), (true, true));
        let cp =
            node(json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]));
        assert_eq!(should_run(&plain, &cp), (false, true));
        let evict = node(json!([{"key": "dedicated", "value": "x", "effect": "NoExecute"}]));
        assert_eq!(should_run(&plain, &evict), (false, false));
        // The controller's own tolerations: a NotReady node still runs daemons.
        let not_ready =
            node(json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]));
        assert_eq!(should_run(&plain, &not_ready), (true, true));
        let net = node(
            json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
        );
        assert_eq!(should_run(&plain, &net), (false, true));
        assert_eq!(
            should_run(&json!({"hostNetwork": true}), &net),
            (true, true)
        );
        let tolerant = json!({"tolerations": [{"operator": "Exists"}]});
        assert_eq!(should_run(&tolerant, &evict), (true, true));
    }

    #[test]
    fn selectors_and_affinity() {
        let n = json!({"metadata": {"name": "n1", "labels": {"os": "linux"}}});
        assert!(affinity_matches(
            &json!({"nodeSelector": {"os": "linux"}}),
            &n
        ));
        assert!(!affinity_matches(
            &json!({"nodeSelector": {"os": "windows"}}),
            &n
        ));
        let pinned = |name: &str| {
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}}}})
        };
        assert!(affinity_matches(&pinned("n1"), &n));
        assert!(!affinity_matches(&pinned("n2"), &n));
        assert_eq!(should_run(&json!({"nodeName": "n2"}), &n), (false, false));
    }
}
