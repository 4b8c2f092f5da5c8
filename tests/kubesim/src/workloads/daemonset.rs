//! The DaemonSet controller: one pod per eligible node, pinned with node affinity on
//! `metadata.name` and given the tolerations the real controller adds; ControllerRevisions
//! named `<ds>-<hash>`; RollingUpdate bounded by `maxUnavailable` (old pods replaced node by
//! node) or OnDelete; status fields as the real controller computes them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{drive, list, owned_by, owner_ref, pod_ready, template_hash, write_status};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;
use crate::kubelet::scheduler;

const MANAGER: &str = "daemonset-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("apps/v1", "daemonsets"), ("v1", "pods"), ("v1", "nodes")],
        |c| {
            let pods = list(c, "v1", "pods");
            let nodes = list(c, "v1", "nodes");
            for ds in list(c, "apps/v1", "daemonsets") {
                reconcile(c, &ds, &pods, &nodes);
            }
        },
    )
    .await
}

/// The tolerations the DaemonSet controller adds to every pod it creates.
fn added_tolerations(host_network: bool) -> Vec<Value> {
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

fn pod_for(ds: &Value, node: &str, hash: &str, generation: i64) -> Value {
    let mut template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let name = ds
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("ds");
    let ns = ds
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut meta = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    meta["labels"]["controller-revision-hash"] = json!(hash);
    meta["labels"]["pod-template-generation"] = json!(generation.to_string());
    meta["generateName"] = json!(format!("{name}-"));
    meta["namespace"] = json!(ns);
    meta["ownerReferences"] = json!([owner_ref(ds)]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    let spec = &mut template["spec"];
    let host_network = spec["hostNetwork"] == true;
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for t in added_tolerations(host_network) {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    spec["tolerations"] = json!(tolerations);
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Whether the DaemonSet wants a pod on `node` (its template against the node, ignoring the
/// pin the controller itself adds).
fn eligible(ds: &Value, node: &Value) -> bool {
    let mut probe =
        json!({"spec": ds.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({}))});
    let host_network = probe["spec"]["hostNetwork"] == true;
    let mut tolerations = probe["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tolerations.extend(added_tolerations(host_network));
    probe["spec"]["tolerations"] = json!(tolerations);
    scheduler::fits(&probe, node).is_ok()
}

fn ensure_revision(cluster: &Cluster, ds: &Value, hash: &str) {
    let ns = ds
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = ds
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let uid = ds
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let rev_name = format!("{name}-{hash}");
    let existing: Vec<Value> = cluster
        .list(
            "apps/v1",
            "controllerrevisions",
            Some(ns),
            &Default::default(),
        )
        .unwrap_or_default()
        .into_iter()
        .filter(|r| owned_by(r, uid))
        .collect();
    if existing
        .iter()
        .any(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(rev_name.as_str()))
    {
        return;
    }
    let next = existing
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let mut labels = ds
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["controller-revision-hash"] = json!(hash);
    let _ = cluster.create(
        "apps/v1",
        "controllerrevisions",
        Some(ns),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": rev_name, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(ds)]},
            "data": {"spec": {"template": ds.pointer("/spec/template").cloned().unwrap_or_default()}},
            "revision": next}),
        &WriteOptions::manager(MANAGER),
    );
    // Keep revisionHistoryLimit old revisions (default 10).
    let limit = ds
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let mut old: Vec<&Value> = existing.iter().collect();
    old.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    while old.len() > limit {
        let r = old.remove(0);
        if let Some(n) = r.pointer("/metadata/name").and_then(Value::as_str) {
            let _ = cluster.delete(
                "apps/v1",
                "controllerrevisions",
                Some(ns),
                n,
                &DeleteOptions::default(),
            );
        }
    }
}

fn reconcile(cluster: &Cluster, ds: &Value, pods: &[Value], nodes: &[Value]) {
    if ds.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = ds
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let uid = ds
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let generation = ds
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let hash = template_hash(ds.pointer("/spec/template").unwrap_or(&Value::Null));
    ensure_revision(cluster, ds, &hash);
    let opts = WriteOptions::manager(MANAGER);

    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for p in pods.iter().filter(|p| owned_by(p, uid)) {
        let node = pod_node(p);
        by_node.entry(node).or_default().push(p);
    }
    let wanted: Vec<&str> = nodes
        .iter()
        .filter(|n| eligible(ds, n))
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let is_current = |p: &Value| {
        p.pointer("/metadata/labels/controller-revision-hash")
            .and_then(Value::as_str)
            == Some(hash.as_str())
    };
    let delete = |p: &Value| {
        let name = p
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let _ = cluster.delete("v1", "pods", Some(ns), name, &DeleteOptions::default());
    };

    // Create missing pods; remove pods from nodes that no longer want one and failed pods.
    for node in &wanted {
        let live: Vec<&&Value> = by_node
            .get(*node)
            .map(|v| {
                v.iter()
                    .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                    .collect()
            })
            .unwrap_or_default();
        for p in &live {
            if p.pointer("/status/phase").and_then(Value::as_str) == Some("Failed") {
                delete(p);
            }
        }
        if by_node.get(*node).is_none_or(|v| v.is_empty()) {
            let _ = cluster.create(
                "v1",
                "pods",
                Some(ns),
                pod_for(ds, node, &hash, generation),
                &opts,
            );
        }
    }
    for (node, ps) in &by_node {
        if !wanted.contains(&node.as_str()) {
            ps.iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .for_each(|p| delete(p));
        }
    }

    let desired = wanted.len() as i64;
    let on_wanted = |f: &dyn Fn(&Value) -> bool| -> i64 {
        wanted
            .iter()
            .filter(|n| by_node.get(**n).is_some_and(|ps| ps.iter().any(|p| f(p))))
            .count() as i64
    };
    let ready = on_wanted(&|p| pod_ready(p));
    let updated =
        on_wanted(&|p| is_current(p) && p.pointer("/metadata/deletionTimestamp").is_none());

    // Rolling update: replace old pods while no more than maxUnavailable are unavailable.
    let strategy = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if strategy == "RollingUpdate" {
        let max_unavailable = super::int_or_percent(
            ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired,
            1,
            true,
        )
        .max(1);
        let mut unavailable = desired - ready;
        for node in &wanted {
            let Some(ps) = by_node.get(*node) else {
                continue;
            };
            for p in ps
                .iter()
                .filter(|p| !is_current(p) && p.pointer("/metadata/deletionTimestamp").is_none())
            {
                if !pod_ready(p) {
                    delete(p);
                } else if unavailable < max_unavailable {
                    delete(p);
                    unavailable += 1;
                }
            }
        }
    }

    let scheduled = on_wanted(&|_| true);
    let misscheduled = by_node
        .iter()
        .filter(|(n, _)| !wanted.contains(&n.as_str()))
        .count() as i64;
    write_status(
        cluster,
        "apps/v1",
        "daemonsets",
        ds,
        json!({
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": desired - ready,
            "updatedNumberScheduled": updated,
            "observedGeneration": generation,
        }),
        MANAGER,
    );
}

fn pod_node(p: &Value) -> String {
    if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
        return n.to_string();
    }
    p.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
