//! The disruption controller: PodDisruptionBudget status (`expectedPods`, `currentHealthy`,
//! `desiredHealthy`, `disruptionsAllowed`, the `DisruptionAllowed` condition), which eviction
//! and `kubectl drain` obey.

use serde_json::{Value, json};

use super::{drive, int_or_percent, list, pod_ready, pod_terminal, write_status};
use crate::cluster::Cluster;
use crate::controllers::Shutdown;

const MANAGER: &str = "disruption-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("policy/v1", "poddisruptionbudgets"), ("v1", "pods")],
        |c| {
            let pods = list(c, "v1", "pods");
            for pdb in list(c, "policy/v1", "poddisruptionbudgets") {
                reconcile(c, &pdb, &pods);
            }
        },
    )
    .await
}

fn selects(selector: &Value, pod: &Value) -> bool {
    let labels = pod
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let value = labels.get(key).and_then(Value::as_str);
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or("") {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
        })
}

fn reconcile(cluster: &Cluster, pdb: &Value, pods: &[Value]) {
    let ns = pdb
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let selector = pdb
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let matched: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
                && !pod_terminal(p)
                && selects(&selector, p)
        })
        .collect();
    let expected = matched.len() as i64;
    let healthy = matched.iter().filter(|p| pod_ready(p)).count() as i64;
    let desired = match (
        pdb.pointer("/spec/minAvailable"),
        pdb.pointer("/spec/maxUnavailable"),
    ) {
        (Some(min), _) => int_or_percent(Some(min), expected, 0, true),
        (None, Some(max)) => expected - int_or_percent(Some(max), expected, 0, true),
        _ => 0,
    };
    let allowed = (healthy - desired).max(0);
    let cond = json!({"type": "DisruptionAllowed", "status": if allowed > 0 { "True" } else { "False" },
        "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" }, "message": "",
        "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "lastTransitionTime": crate::clock::now_rfc3339()});
    let keep_cond = pdb
        .pointer("/status/conditions/0")
        .filter(|c| c["status"] == cond["status"])
        .cloned()
        .unwrap_or(cond);
    write_status(
        cluster,
        "policy/v1",
        "poddisruptionbudgets",
        pdb,
        json!({
            "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "expectedPods": expected,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
            "conditions": [keep_cond],
        }),
        MANAGER,
    );
}
