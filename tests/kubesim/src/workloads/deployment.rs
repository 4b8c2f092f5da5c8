//! The Deployment controller: a ReplicaSet per pod template (`<name>-<pod-template-hash>`),
//! rolled with RollingUpdate (`maxSurge`/`maxUnavailable`, 25 % by default) or Recreate;
//! status and the `Available`/`Progressing` conditions `kubectl rollout status` reads.

use serde_json::{Value, json};

use super::{
    condition, drive, int_or_percent, list, owned_by, owner_ref, template_hash, write_status,
};
use crate::cluster::{Cluster, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "deployment-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("apps/v1", "deployments"), ("apps/v1", "replicasets")],
        |c| {
            let sets = list(c, "apps/v1", "replicasets");
            for d in list(c, "apps/v1", "deployments") {
                reconcile(c, &d, &sets);
            }
        },
    )
    .await
}

fn replicas(rs: &Value) -> i64 {
    rs.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn status_of(rs: &Value, key: &str) -> i64 {
    rs.pointer(&format!("/status/{key}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn scale(cluster: &Cluster, rs: &Value, to: i64) {
    if replicas(rs) == to {
        return;
    }
    let ns = rs.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = rs
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = cluster.modify(
        "apps/v1",
        "replicasets",
        ns,
        name,
        None,
        &WriteOptions::manager(MANAGER),
        |r| {
            r["spec"]["replicas"] = json!(to);
        },
    );
}

fn reconcile(cluster: &Cluster, d: &Value, sets: &[Value]) {
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = d
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("deploy");
    let uid = d
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let generation = d
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let template = d
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let mine: Vec<&Value> = sets.iter().filter(|r| owned_by(r, uid)).collect();
    let new_name = format!("{name}-{hash}");
    let revision = mine
        .iter()
        .filter_map(|r| {
            r.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let Some(new_rs) = mine
        .iter()
        .find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(new_name.as_str()))
        .map(|r| (*r).clone())
    else {
        let mut t = template.clone();
        t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or_else(|| json!({}));
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        if paused {
            return;
        }
        let _ = cluster.create(
            "apps/v1",
            "replicasets",
            Some(ns),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": new_name, "namespace": ns, "labels": t["metadata"]["labels"],
                    "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": want.to_string()},
                    "ownerReferences": [owner_ref(d)]},
                "spec": {"replicas": 0, "selector": selector, "template": t,
                    "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0))}}),
            &WriteOptions::manager(MANAGER),
        );
        return;
    };
    let olds: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) != Some(new_name.as_str()))
        .collect();
    let old_total: i64 = olds.iter().map(|r| replicas(r)).sum();
    let old_pods: i64 = olds.iter().map(|r| status_of(r, "replicas")).sum();
    let strategy = d
        .pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let (max_surge, max_unavailable) = if strategy == "Recreate" {
        (0, want)
    } else {
        let s = int_or_percent(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            want,
            0,
            true,
        );
        let u = int_or_percent(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            want,
            0,
            false,
        );
        let s = if d.pointer("/spec/strategy/rollingUpdate/maxSurge").is_none() {
            ((want as f64) * 0.25).ceil() as i64
        } else {
            s
        };
        let u = if d
            .pointer("/spec/strategy/rollingUpdate/maxUnavailable")
            .is_none()
        {
            ((want as f64) * 0.25).floor() as i64
        } else {
            u
        };
        if s == 0 && u == 0 { (0, 1) } else { (s, u) }
    };
    if strategy == "Recreate" {
        for r in &olds {
            scale(cluster, r, 0);
        }
        if old_pods == 0 {
            scale(cluster, &new_rs, want);
        }
    } else {
        // Scale up the new set within the surge, down the old ones within availability.
        let new_target = (want + max_surge - old_total).clamp(replicas(&new_rs), want);
        scale(cluster, &new_rs, new_target);
        let available: i64 = mine.iter().map(|r| status_of(r, "availableReplicas")).sum();
        let mut can_remove = (available - (want - max_unavailable)).max(0);
        for r in &olds {
            // Old pods that are not available can always go.
            let unavailable_here = (replicas(r) - status_of(r, "availableReplicas")).max(0);
            let remove = (unavailable_here + can_remove).min(replicas(r));
            if remove > 0 {
                scale(cluster, r, replicas(r) - remove);
                can_remove -= (remove - unavailable_here).max(0);
            }
        }
    }

    let total: i64 = mine.iter().map(|r| status_of(r, "replicas")).sum();
    let updated = status_of(&new_rs, "replicas");
    let ready: i64 = mine.iter().map(|r| status_of(r, "readyReplicas")).sum();
    let available: i64 = mine.iter().map(|r| status_of(r, "availableReplicas")).sum();
    let complete =
        updated == want && status_of(&new_rs, "availableReplicas") == want && old_pods == 0;
    let available_cond = condition(
        d,
        "Available",
        available >= want - max_unavailable.min(want),
        if available >= want - max_unavailable.min(want) {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available >= want - max_unavailable.min(want) {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
    );
    let progressing = if complete {
        condition(
            d,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        condition(
            d,
            "Progressing",
            true,
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": [available_cond, progressing],
    });
    if total - available > 0 {
        status["unavailableReplicas"] = json!(total - available);
    } else {
        status["unavailableReplicas"] = Value::Null;
    }
    write_status(cluster, "apps/v1", "deployments", d, status, MANAGER);
}
