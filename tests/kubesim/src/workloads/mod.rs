//! kube-controller-manager's workload controllers, on top of the in-process API: DaemonSet,
//! Deployment, ReplicaSet, Job and the disruption (PodDisruptionBudget status) controller.
//!
//! Each controller reconciles every object of its kind whenever its kind, pods or nodes
//! change (and on a short tick), writing status only when it changes, with the fields
//! `kubectl rollout status` and the product's waits read.

pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod job;
pub mod replicaset;

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::controllers::Shutdown;

/// Runs `reconcile` whenever one of `watched` (api version, resource) changes, at most every
/// `min_gap`, and at least every second.
pub(crate) async fn drive(
    cluster: Cluster,
    mut shutdown: Shutdown,
    watched: &[(&str, &str)],
    mut reconcile: impl FnMut(&Cluster),
) {
    let mut subs = Vec::new();
    for (api, resource) in watched {
        if let Ok(s) = cluster.subscribe(api, resource, None) {
            subs.push(s);
        }
    }
    loop {
        reconcile(&cluster);
        let changed = async {
            if subs.is_empty() {
                std::future::pending::<()>().await;
            }
            let futs: Vec<_> = subs.iter_mut().map(|s| Box::pin(s.next())).collect();
            let _ = futures::future::select_all(futs).await;
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        for s in subs.iter_mut() {
            while s.try_next().is_some() {}
        }
    }
}

/// A short, stable hash of a pod template, as the controllers name revisions with.
pub fn template_hash(template: &Value) -> String {
    let text = template.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Kubernetes renders hashes with a "safe" alphabet without vowels.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    out
}

/// The controller owner reference to `owner`.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner.pointer("/metadata/name"),
        "uid": owner.pointer("/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true
    })
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

/// Whether a pod is Ready.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// Whether a pod has finished.
pub fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// An int-or-percent value resolved against `total` (`round_up` as the controller does for
/// surge, down for unavailability).
pub fn int_or_percent(v: Option<&Value>, total: i64, default: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) if s.ends_with('%') => {
            let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = p * total as f64 / 100.0;
            if round_up {
                x.ceil() as i64
            } else {
                x.floor() as i64
            }
        }
        Some(Value::String(s)) => s.parse().unwrap_or(default),
        _ => default,
    }
}

/// The objects of a kind, or none.
pub(crate) fn list(cluster: &Cluster, api: &str, resource: &str) -> Vec<Value> {
    cluster
        .list(api, resource, None, &Default::default())
        .unwrap_or_default()
}

/// Writes `status` when it differs from what the object has.
pub(crate) fn write_status(
    cluster: &Cluster,
    api: &str,
    resource: &str,
    obj: &Value,
    status: Value,
    manager: &str,
) {
    let mut merged = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in s {
            if v.is_null() {
                m.remove(k);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    if obj.get("status") == Some(&merged) {
        return;
    }
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = cluster.modify(
        api,
        resource,
        ns,
        name,
        Some("status"),
        &crate::cluster::WriteOptions::manager(manager),
        |o| {
            o["status"] = merged;
        },
    );
}

/// A condition with `lastTransitionTime` kept while its status is unchanged.
pub fn condition(old: &Value, kind: &str, status: bool, reason: &str, message: &str) -> Value {
    let s = if status { "True" } else { "False" };
    let now = crate::clock::now_rfc3339();
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned());
    let since = match &prev {
        Some(p) if p["status"] == s => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let update = match &prev {
        Some(p) if p["status"] == s && p["reason"] == reason => p["lastUpdateTime"].clone(),
        _ => json!(now),
    };
    json!({"type": kind, "status": s, "reason": reason, "message": message,
        "lastTransitionTime": since, "lastUpdateTime": update})
}
