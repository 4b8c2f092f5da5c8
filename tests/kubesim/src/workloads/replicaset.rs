//! The ReplicaSet controller (`pkg/controller/replicaset`): keeps `spec.replicas` active pods
//! (neither finished nor terminating); when scaling down it deletes the pods upstream ranks
//! first (unscheduled, pending, not ready, crowded nodes, recently ready, restarting, newest);
//! status `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` (with
//! `minReadySeconds`), `observedGeneration`.

use crate::pointer::At;
use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Obj;
use super::{
    ReadyClock, deleting, drive, int, list, owned_by, pod_active, pod_from_template, pod_ready, s,
    scaled, sooner, write_status,
};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "replicaset-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    let mut clock = ReadyClock::default();
    drive(
        cluster,
        shutdown,
        &[("apps/v1", "replicasets"), ("v1", "pods")],
        move |c| {
            let pods = list(c, "v1", "pods");
            clock.retain(&pods);
            let mut requeue = None;
            for rs in list(c, "apps/v1", "replicasets") {
                requeue = sooner(requeue, sync(c, &rs, &pods, &mut clock));
            }
            requeue
        },
    )
    .await
}

fn active_pods<'a>(rs: &Value, pods: &'a [Obj]) -> Vec<&'a Value> {
    let uid = s(rs, "/metadata/uid");
    let ns = s(rs, "/metadata/namespace");
    pods.iter()
        .map(|p| &p.value)
        .filter(|p| s(p, "/metadata/namespace") == ns && owned_by(p, uid) && pod_active(p))
        .collect()
}

/// The order in which surplus pods are deleted (`ActivePodsWithRanks`): smaller first.
fn deletion_rank(p: &Value, crowd: &HashMap<&str, usize>) -> impl Ord {
    let node = s(p, "/spec/nodeName");
    let phase = match s(p, "/status/phase") {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let ready = pod_ready(p);
    let ready_since = p
        .at("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or("")
        .to_string();
    let restarts: i64 = p
        .at("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (
        !node.is_empty(),
        phase,
        ready,
        std::cmp::Reverse(crowd.get(node).copied().unwrap_or(0)),
        // Ready for less time first: the later timestamp first.
        std::cmp::Reverse(if ready { ready_since } else { String::new() }),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
    )
}

fn sync(cluster: &Cluster, rs: &Value, pods: &[Obj], clock: &mut ReadyClock) -> Option<Duration> {
    let ns = s(rs, "/metadata/namespace").to_string();
    let name = s(rs, "/metadata/name");
    let want = int(rs, "/spec/replicas").unwrap_or(1).max(0);
    let mut active = active_pods(rs, pods);
    let mut acted = false;
    if !deleting(rs) {
        let have = active.len() as i64;
        if have < want {
            let template = rs
                .at("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            for _ in have..want.min(have + 500) {
                let pod = pod_from_template(&template, rs, name);
                let _ = cluster.create(
                    "v1",
                    "pods",
                    Some(&ns),
                    pod,
                    &WriteOptions::manager(MANAGER),
                );
            }
            acted = true;
        } else if have > want {
            let mut crowd: HashMap<&str, usize> = HashMap::new();
            for p in &active {
                *crowd.entry(s(p, "/spec/nodeName")).or_default() += 1;
            }
            active.sort_by_cached_key(|p| deletion_rank(p, &crowd));
            for p in active.iter().take((have - want) as usize) {
                let _ = cluster.delete(
                    "v1",
                    "pods",
                    Some(&ns),
                    s(p, "/metadata/name"),
                    &DeleteOptions::default(),
                );
            }
            acted = true;
        }
    }
    let fresh;
    let active = if acted {
        fresh = cluster
            .list_shared("v1", "pods", Some(&ns), &Default::default())
            .unwrap_or_default();
        active_pods(rs, &fresh)
    } else {
        active
    };
    let min_ready = scaled(
        cluster,
        int(rs, "/spec/minReadySeconds").unwrap_or(0) as f64,
    );
    let template_labels = rs
        .at("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (mut labeled, mut ready, mut available) = (0i64, 0i64, 0i64);
    let mut requeue = None;
    for p in &active {
        let labels = p.at("/metadata/labels");
        if template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            labeled += 1;
        }
        if pod_ready(p) {
            ready += 1;
            match clock.available(p, min_ready) {
                Ok(()) => available += 1,
                Err(wait) => requeue = sooner(requeue, Some(wait)),
            }
        }
    }
    let omit_zero = |v: i64| if v == 0 { Value::Null } else { json!(v) };
    write_status(
        cluster,
        "apps/v1",
        "replicasets",
        rs,
        json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": omit_zero(labeled),
            "readyReplicas": omit_zero(ready),
            "availableReplicas": omit_zero(available),
            "observedGeneration": int(rs, "/metadata/generation").unwrap_or(1),
        }),
        MANAGER,
    );
    requeue
}
