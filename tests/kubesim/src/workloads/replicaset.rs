//! The ReplicaSet controller: as many pods as `spec.replicas`, removing not-ready pods first
//! when scaling down; status replicas, ready and available counts.

use serde_json::{Value, json};

use super::{drive, list, owned_by, owner_ref, pod_ready, pod_terminal, write_status};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "replicaset-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("apps/v1", "replicasets"), ("v1", "pods")],
        |c| {
            let pods = list(c, "v1", "pods");
            for rs in list(c, "apps/v1", "replicasets") {
                reconcile(c, &rs, &pods);
            }
        },
    )
    .await
}

fn reconcile(cluster: &Cluster, rs: &Value, pods: &[Value]) {
    if rs.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = rs
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = rs
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("rs");
    let uid = rs
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let mut mine: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            owned_by(p, uid)
                && !pod_terminal(p)
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    let have = mine.len() as i64;
    if have < want {
        for _ in have..want {
            let mut template = rs
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut meta = template
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            meta["generateName"] = json!(format!("{name}-"));
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = json!([owner_ref(rs)]);
            if let Some(m) = meta.as_object_mut() {
                m.remove("name");
            }
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].take()});
            let _ = cluster.create("v1", "pods", Some(ns), pod, &WriteOptions::manager(MANAGER));
        }
    } else if have > want {
        // Not-ready pods go first, then the newest.
        mine.sort_by_key(|p| {
            (
                pod_ready(p),
                std::cmp::Reverse(
                    p.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
            )
        });
        for p in mine.iter().take((have - want) as usize) {
            let n = p
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = cluster.delete("v1", "pods", Some(ns), n, &DeleteOptions::default());
        }
    }
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| owned_by(p, uid) && !pod_terminal(p))
        .collect();
    let ready = owned.iter().filter(|p| pod_ready(p)).count();
    write_status(
        cluster,
        "apps/v1",
        "replicasets",
        rs,
        json!({
            "replicas": owned.len(),
            "fullyLabeledReplicas": owned.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1),
        }),
        MANAGER,
    );
}
