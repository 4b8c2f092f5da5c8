//! The Deployment controller (`pkg/controller/deployment`): a ReplicaSet per pod template,
//! named `<deployment>-<pod-template-hash>`, with the `pod-template-hash` label on its
//! selector and template; RollingUpdate (`maxSurge` rounded up, `maxUnavailable` rounded
//! down, 25 % each by default) or Recreate; `deployment.kubernetes.io/revision` (and
//! `desired-replicas` / `max-replicas`) annotations; `revisionHistoryLimit`; paused
//! deployments and scaling events (proportional scaling, simplified); status and the
//! `Available` / `Progressing` conditions with `progressDeadlineSeconds` (real seconds, as the client waits).
//!
//! One pass follows `syncDeployment`: paused conditions, then either a scale-only sync or a
//! rollout step (`rolloutRolling` / `rolloutRecreate`), ending in `syncRolloutStatus`.

use crate::pointer::At;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Obj;
use super::{
    compute_hash, deleting, drive, int, int_or_percent, list, owned_by, owner_ref, s, sooner,
    write_status,
};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "deployment-controller";
const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const HASH_LABEL: &str = "pod-template-hash";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[
            ("apps/v1", "deployments"),
            ("apps/v1", "replicasets"),
            ("v1", "pods"),
        ],
        |c| {
            let deployments = list(c, "apps/v1", "deployments");
            if deployments.is_empty() {
                return None;
            }
            // ReplicaSets are few and the sync edits its copies; pods are many and only read.
            let sets: Vec<Value> = list(c, "apps/v1", "replicasets")
                .iter()
                .map(|o| o.value.clone())
                .collect();
            let pods = list(c, "v1", "pods");
            let mut requeue = None;
            for d in deployments {
                requeue = sooner(requeue, sync(c, &d, &sets, &pods));
            }
            requeue
        },
    )
    .await
}

// ---- small accessors -------------------------------------------------------------------

fn replicas(v: &Value) -> i64 {
    int(v, "/spec/replicas").unwrap_or(0)
}

fn stat(v: &Value, key: &str) -> i64 {
    int(v, &format!("/status/{key}")).unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    s(
        rs,
        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
    )
    .parse()
    .unwrap_or(0)
}

fn annotation<'a>(v: &'a Value, key: &str) -> &'a str {
    s(
        v,
        &format!("/metadata/annotations/{}", key.replace('/', "~1")),
    )
}

fn is_rolling(d: &Value) -> bool {
    s(d, "/spec/strategy/type") != "Recreate"
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable), 1 unavailable when both resolve to 0.
fn fenceposts(d: &Value) -> (i64, i64) {
    let want = replicas(d);
    let ru = d.at("/spec/strategy/rollingUpdate");
    let default = json!("25%");
    let surge = int_or_percent(
        Some(ru.and_then(|r| r.get("maxSurge")).unwrap_or(&default)),
        want,
        true,
    );
    let unavailable = int_or_percent(
        Some(ru.and_then(|r| r.get("maxUnavailable")).unwrap_or(&default)),
        want,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn max_surge(d: &Value) -> i64 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

fn max_unavailable(d: &Value) -> i64 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

fn progress_deadline(d: &Value) -> Option<i64> {
    int(d, "/spec/progressDeadlineSeconds").filter(|s| *s != i64::from(i32::MAX))
}

/// Templates equal once the `pod-template-hash` label is ignored (`EqualIgnoreHash`).
fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(labels) = t
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(HASH_LABEL);
            if labels.is_empty()
                && let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.remove("labels");
            }
        }
        if t.get("metadata")
            .is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
        {
            t.as_object_mut().map(|o| o.remove("metadata"));
        }
        t
    };
    strip(a) == strip(b)
}

// ---- conditions --------------------------------------------------------------------------

fn new_condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = crate::clock::now_rfc3339();
    json!({"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message})
}

fn get_condition<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    d.at("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
}

/// `SetDeploymentCondition`: same status and reason changes nothing; same status keeps the
/// transition time; the condition moves to the end.
fn set_condition(d: &mut Value, mut cond: Value) {
    if let Some(cur) = get_condition(d, cond["type"].as_str().unwrap_or("")) {
        if cur["status"] == cond["status"] && cur["reason"] == cond["reason"] {
            return;
        }
        if cur["status"] == cond["status"] {
            cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    remove_condition(d, cond["type"].as_str().unwrap_or(""));
    if let Some(list) = d["status"]["conditions"].as_array_mut() {
        list.push(cond);
    }
}

fn remove_condition(d: &mut Value, kind: &str) {
    if !d.get("status").is_some_and(Value::is_object) {
        d["status"] = json!({});
    }
    if !d["status"]["conditions"].is_array() {
        d["status"]["conditions"] = json!([]);
    }
    if let Some(list) = d["status"]["conditions"].as_array_mut() {
        list.retain(|c| c["type"] != kind);
    }
}

// ---- ReplicaSet writes -------------------------------------------------------------------

/// `scaleReplicaSet`: size plus the desired/max replica annotations; true when the size
/// changed.
fn scale_rs(cluster: &Cluster, d: &Value, rs: &mut Value, to: i64) -> bool {
    let desired = replicas(d).to_string();
    let max = (replicas(d) + max_surge(d)).to_string();
    let size_changes = replicas(rs) != to;
    if !size_changes && annotation(rs, DESIRED) == desired && annotation(rs, MAX_REPLICAS) == max {
        return false;
    }
    let result = cluster.modify(
        "apps/v1",
        "replicasets",
        Some(s(rs, "/metadata/namespace")),
        s(rs, "/metadata/name"),
        None,
        &WriteOptions::manager(MANAGER),
        |o| {
            o["spec"]["replicas"] = json!(to);
            o["metadata"]["annotations"][DESIRED] = json!(desired);
            o["metadata"]["annotations"][MAX_REPLICAS] = json!(max);
        },
    );
    match result {
        Ok(_) => {
            rs["spec"]["replicas"] = json!(to);
            rs["metadata"]["annotations"][DESIRED] = json!(desired);
            rs["metadata"]["annotations"][MAX_REPLICAS] = json!(max);
            size_changes
        }
        Err(_) => false,
    }
}

/// Annotations a Deployment passes on to its ReplicaSets (all but the controller's own and
/// kubectl's last-applied configuration).
fn copied_annotations(d: &Value) -> serde_json::Map<String, Value> {
    let skip = [
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    ];
    d.at("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn set_deployment_revision(cluster: &Cluster, d: &mut Value, rev: &str) {
    if annotation(d, REVISION) == rev || rev.is_empty() {
        return;
    }
    let _ = cluster.modify(
        "apps/v1",
        "deployments",
        Some(s(d, "/metadata/namespace")),
        s(d, "/metadata/name"),
        None,
        &WriteOptions::manager(MANAGER),
        |o| o["metadata"]["annotations"][REVISION] = json!(rev),
    );
    d["metadata"]["annotations"][REVISION] = json!(rev);
}

/// `NewRSNewReplicas` for RollingUpdate: grow the new set within the surge.
fn new_rs_new_replicas(d: &Value, all: &[Value], new_replicas: i64) -> i64 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i64 = all.iter().map(replicas).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return new_replicas;
    }
    let up = (max_total - current).min(replicas(d) - new_replicas);
    new_replicas + up.max(0)
}

/// `getNewReplicaSet`: finds (and annotates) the ReplicaSet of the current template, or
/// creates it; its index in `sets`.
fn new_replica_set(
    cluster: &Cluster,
    d: &mut Value,
    sets: &mut Vec<Value>,
    create: bool,
) -> Option<usize> {
    let template = d.at("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let existing = sets.iter().position(|rs| {
        equal_ignore_hash(rs.at("/spec/template").unwrap_or(&Value::Null), &template)
    });
    let max_old = sets
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != existing)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);
    let new_revision = max_old + 1;
    let min_ready = d.at("/spec/minReadySeconds").cloned().unwrap_or(json!(0));
    if let Some(i) = existing {
        let rs = &sets[i];
        let old_rev = revision(rs);
        let had_rev = !annotation(rs, REVISION).is_empty();
        let copy = copied_annotations(d);
        let annotations_differ = copy
            .iter()
            .any(|(k, v)| rs.at("/metadata/annotations").and_then(|a| a.get(k)) != Some(v));
        let min_ready_differs =
            rs.at("/spec/minReadySeconds").cloned().unwrap_or(json!(0)) != min_ready;
        if annotations_differ || old_rev < new_revision || min_ready_differs {
            let result = cluster.modify(
                "apps/v1",
                "replicasets",
                Some(s(rs, "/metadata/namespace")),
                s(rs, "/metadata/name"),
                None,
                &WriteOptions::manager(MANAGER),
                |o| {
                    for (k, v) in &copy {
                        o["metadata"]["annotations"][k] = v.clone();
                    }
                    if old_rev < new_revision {
                        o["metadata"]["annotations"][REVISION] = json!(new_revision.to_string());
                        if had_rev {
                            // A rollback: keep the revisions this set had before.
                            let history = annotation(o, REVISION_HISTORY).to_string();
                            let history = if history.is_empty() {
                                old_rev.to_string()
                            } else {
                                format!("{history},{old_rev}")
                            };
                            o["metadata"]["annotations"][REVISION_HISTORY] = json!(history);
                        }
                    }
                    o["spec"]["minReadySeconds"] = min_ready.clone();
                },
            );
            if let Ok(updated) = result {
                sets[i] = updated;
            }
        }
        let rev = annotation(&sets[i], REVISION).to_string();
        set_deployment_revision(cluster, d, &rev);
        if progress_deadline(d).is_some() && get_condition(d, "Progressing").is_none() {
            let msg = format!(
                "Found new replica set \"{}\"",
                s(&sets[i], "/metadata/name")
            );
            set_condition(
                d,
                new_condition("Progressing", "True", "FoundNewReplicaSet", &msg),
            );
        }
        return Some(i);
    }
    if !create {
        return None;
    }
    let hash = compute_hash(&template, int(d, "/status/collisionCount"));
    let name = format!("{}-{hash}", s(d, "/metadata/name"));
    let ns = s(d, "/metadata/namespace").to_string();
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d
        .at("/spec/selector")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), json!(new_revision.to_string()));
    annotations.insert(DESIRED.into(), json!(replicas(d).to_string()));
    annotations.insert(
        MAX_REPLICAS.into(),
        json!((replicas(d) + max_surge(d)).to_string()),
    );
    let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": ns, "labels": rs_template["metadata"]["labels"],
            "annotations": annotations, "ownerReferences": [owner_ref(d)]},
        "spec": {"replicas": 0, "minReadySeconds": min_ready, "selector": selector,
            "template": rs_template}});
    let mut all = sets.clone();
    all.push(rs.clone());
    rs["spec"]["replicas"] = json!(new_rs_new_replicas(d, &all, 0));
    match cluster.create(
        "apps/v1",
        "replicasets",
        Some(&ns),
        rs,
        &WriteOptions::manager(MANAGER),
    ) {
        Ok(created) => {
            if progress_deadline(d).is_some() {
                let msg = format!("Created new replica set \"{name}\"");
                set_condition(
                    d,
                    new_condition("Progressing", "True", "NewReplicaSetCreated", &msg),
                );
            }
            set_deployment_revision(cluster, d, &new_revision.to_string());
            sets.push(created);
            Some(sets.len() - 1)
        }
        Err(e) if e.code == 409 => {
            // Same name, other template (not ours, or a hash collision): count it so the
            // next pass hashes differently.
            let count = int(d, "/status/collisionCount").unwrap_or(0) + 1;
            d["status"]["collisionCount"] = json!(count);
            None
        }
        Err(_) => None,
    }
}

// ---- status --------------------------------------------------------------------------------

/// `calculateStatus` into `d.status` (conditions kept, Available recomputed).
fn calculate_status(d: &mut Value, sets: &[Value], new: Option<usize>) {
    let available: i64 = sets.iter().map(|r| stat(r, "availableReplicas")).sum();
    let total: i64 = sets.iter().map(replicas).sum();
    let want = replicas(d);
    let unavailable = (total - available).max(0);
    let omit_zero = |v: i64| if v == 0 { Value::Null } else { json!(v) };
    let conditions = d
        .at("/status/conditions")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let collision = d.at("/status/collisionCount").cloned();
    d["status"] = json!({
        "observedGeneration": int(d, "/metadata/generation").unwrap_or(1),
        "replicas": omit_zero(sets.iter().map(|r| stat(r, "replicas")).sum()),
        "updatedReplicas": omit_zero(new.map(|i| stat(&sets[i], "replicas")).unwrap_or(0)),
        "readyReplicas": omit_zero(sets.iter().map(|r| stat(r, "readyReplicas")).sum()),
        "availableReplicas": omit_zero(available),
        "unavailableReplicas": omit_zero(unavailable),
        "conditions": conditions,
    });
    if let Some(c) = collision.filter(|c| !c.is_null()) {
        d["status"]["collisionCount"] = c;
    }
    if available >= want - max_unavailable(d) {
        set_condition(
            d,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
        );
    } else {
        set_condition(
            d,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
        );
    }
}

/// `DeploymentComplete` on a status.
fn complete(d: &Value, status_of: &Value) -> bool {
    let want = replicas(d);
    stat(status_of, "updatedReplicas") == want
        && stat(status_of, "replicas") == want
        && stat(status_of, "availableReplicas") == want
        && stat(status_of, "observedGeneration") >= int(d, "/metadata/generation").unwrap_or(1)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `syncRolloutStatus`: status, Available, and the Progressing condition's progress or time
/// out; writes when anything changed. Returns when the progress deadline falls due.
fn sync_rollout_status(
    cluster: &Cluster,
    stored: &Value,
    d: &mut Value,
    sets: &[Value],
    new: Option<usize>,
) -> Option<Duration> {
    let old = d.clone();
    calculate_status(d, sets, new);
    let deadline = progress_deadline(d);
    if deadline.is_none() {
        remove_condition(d, "Progressing");
    }
    let current = get_condition(&old, "Progressing").cloned();
    let new_name = new.map(|i| s(&sets[i], "/metadata/name").to_string());
    let is_complete = stat(d, "replicas") == stat(d, "updatedReplicas")
        && current
            .as_ref()
            .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    let mut requeue = None;
    if let Some(deadline) = deadline
        && !is_complete
    {
        let dname = s(d, "/metadata/name").to_string();
        let what = |verb: &str| match &new_name {
            Some(n) => format!("ReplicaSet \"{n}\" {verb}"),
            None => format!("Deployment \"{dname}\" {verb}"),
        };
        let old_olds = stat(&old, "replicas") - stat(&old, "updatedReplicas");
        let new_olds = stat(d, "replicas") - stat(d, "updatedReplicas");
        let progressing = stat(d, "updatedReplicas") > stat(&old, "updatedReplicas")
            || new_olds < old_olds
            || stat(d, "readyReplicas") > stat(&old, "readyReplicas")
            || stat(d, "availableReplicas") > stat(&old, "availableReplicas");
        let limit = super::deadline(deadline as f64).as_secs_f64();
        if complete(d, d) {
            set_condition(
                d,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &what("has successfully progressed."),
                ),
            );
        } else if progressing {
            let mut cond = new_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &what("is progressing."),
            );
            if let Some(cur) = &current {
                if cur["status"] == "True" {
                    cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                }
                remove_condition(d, "Progressing");
            }
            set_condition(d, cond);
            requeue = Some(Duration::from_secs_f64(limit + 0.05));
        } else if let Some(cur) = &current
            && cur["reason"] != "NewReplicaSetAvailable"
        {
            let from = cur["lastUpdateTime"]
                .as_str()
                .and_then(crate::clock::parse_rfc3339)
                .unwrap_or(0) as f64;
            let left = from + limit - now_secs();
            if cur["reason"] == "ProgressDeadlineExceeded" || left < 0.0 {
                set_condition(
                    d,
                    new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &what("has timed out progressing."),
                    ),
                );
            } else {
                requeue = Some(Duration::from_secs_f64(left + 0.05));
            }
        }
    }
    write_whole_status(cluster, stored, d);
    requeue
}

fn write_whole_status(cluster: &Cluster, stored: &Value, d: &Value) {
    let mut status = d["status"].clone();
    // Keys the new status lacks are removed.
    if let (Some(new), Some(old)) = (
        status.as_object_mut(),
        stored.get("status").and_then(Value::as_object),
    ) {
        for k in old.keys() {
            new.entry(k.clone()).or_insert(Value::Null);
        }
    }
    write_status(cluster, "apps/v1", "deployments", stored, status, MANAGER);
}

// ---- the sync ------------------------------------------------------------------------------

fn sync(cluster: &Cluster, stored: &Value, all_sets: &[Value], pods: &[Obj]) -> Option<Duration> {
    let uid = s(stored, "/metadata/uid");
    let ns = s(stored, "/metadata/namespace");
    let mut sets: Vec<Value> = all_sets
        .iter()
        .filter(|r| s(r, "/metadata/namespace") == ns && owned_by(r, uid))
        .cloned()
        .collect();
    sets.sort_by(|a, b| {
        s(a, "/metadata/creationTimestamp")
            .cmp(s(b, "/metadata/creationTimestamp"))
            .then_with(|| s(a, "/metadata/name").cmp(s(b, "/metadata/name")))
    });
    let mut d = stored.clone();
    if !d.get("status").is_some_and(Value::is_object) {
        d["status"] = json!({});
    }
    if deleting(stored) {
        let new = new_replica_set(cluster, &mut d, &mut sets, false);
        calculate_status(&mut d, &sets, new);
        write_whole_status(cluster, stored, &d);
        return None;
    }
    let empty_selector = stored
        .at("/spec/selector")
        .and_then(Value::as_object)
        .is_none_or(|m| {
            m.values().all(|v| {
                v.as_object().is_some_and(|o| o.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            })
        });
    if empty_selector {
        return None;
    }
    check_paused_conditions(&mut d);
    let paused = stored.at("/spec/paused").and_then(Value::as_bool) == Some(true);
    if paused || is_scaling_event(cluster, &mut d, &mut sets) {
        return scale_only(cluster, stored, &mut d, &mut sets, paused);
    }
    if is_rolling(stored) {
        rollout_rolling(cluster, stored, &mut d, &mut sets)
    } else {
        rollout_recreate(cluster, stored, &mut d, &mut sets, pods)
    }
}

fn check_paused_conditions(d: &mut Value) {
    if progress_deadline(d).is_none() {
        return;
    }
    let cond = get_condition(d, "Progressing");
    if cond.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return;
    }
    let paused_cond = cond.is_some_and(|c| c["reason"] == "DeploymentPaused");
    let paused = d.at("/spec/paused").and_then(Value::as_bool) == Some(true);
    if paused && !paused_cond {
        set_condition(
            d,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
            ),
        );
    } else if !paused && paused_cond {
        set_condition(
            d,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            ),
        );
    }
}

fn is_scaling_event(cluster: &Cluster, d: &mut Value, sets: &mut Vec<Value>) -> bool {
    let _ = new_replica_set(cluster, d, sets, false);
    let want = replicas(d).to_string();
    sets.iter().filter(|r| replicas(r) > 0).any(|r| {
        let desired = annotation(r, DESIRED);
        !desired.is_empty() && desired != want
    })
}

/// `sync`: scaling only (paused deployments, scaling events), then the status without
/// progress estimation.
fn scale_only(
    cluster: &Cluster,
    stored: &Value,
    d: &mut Value,
    sets: &mut Vec<Value>,
    paused: bool,
) -> Option<Duration> {
    let new = new_replica_set(cluster, d, sets, false);
    scale(cluster, d, sets, new);
    if paused {
        cleanup(cluster, d, sets, new);
    }
    calculate_status(d, sets, new);
    write_whole_status(cluster, stored, d);
    None
}

/// `scale`: one active (or the newest) set gets everything; a saturated new set empties the
/// old ones; otherwise the difference is shared in proportion to the sets' sizes.
fn scale(cluster: &Cluster, d: &Value, sets: &mut [Value], new: Option<usize>) {
    let want = replicas(d);
    let active: Vec<usize> = (0..sets.len())
        .filter(|i| replicas(&sets[*i]) > 0)
        .collect();
    let target = match active.len() {
        0 => new.or(if sets.is_empty() {
            None
        } else {
            Some(sets.len() - 1)
        }),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = target {
        if replicas(&sets[i]) != want {
            scale_rs(cluster, d, &mut sets[i], want);
        }
        return;
    }
    if let Some(n) = new
        && replicas(&sets[n]) == want
        && annotation(&sets[n], DESIRED) == want.to_string()
        && stat(&sets[n], "availableReplicas") == want
    {
        for i in active.into_iter().filter(|i| *i != n) {
            scale_rs(cluster, d, &mut sets[i], 0);
        }
        return;
    }
    if !is_rolling(d) {
        return;
    }
    let total: i64 = active.iter().map(|i| replicas(&sets[*i])).sum();
    let to_add = want + max_surge(d) - total;
    if to_add == 0 || total == 0 {
        return;
    }
    // Largest first; newer first when growing, older first when shrinking.
    let mut order = active.clone();
    order.sort_by(|a, b| {
        replicas(&sets[*b])
            .cmp(&replicas(&sets[*a]))
            .then(if to_add > 0 { b.cmp(a) } else { a.cmp(b) })
    });
    let mut added = 0;
    let mut targets: Vec<(usize, i64)> = Vec::new();
    for i in &order {
        let share = (replicas(&sets[*i]) * to_add) as f64 / total as f64;
        let share = share.round() as i64;
        let share = if to_add > 0 {
            share.min(to_add - added)
        } else {
            share.max(to_add - added)
        };
        added += share;
        targets.push((*i, replicas(&sets[*i]) + share));
    }
    if let Some(first) = targets.first_mut() {
        first.1 += to_add - added;
    }
    for (i, to) in targets {
        scale_rs(cluster, d, &mut sets[i], to.max(0));
    }
}

/// `cleanupDeployment`: old, empty, settled sets beyond `revisionHistoryLimit`, oldest
/// revision first.
fn cleanup(cluster: &Cluster, d: &Value, sets: &[Value], new: Option<usize>) {
    let Some(limit) = int(d, "/spec/revisionHistoryLimit").filter(|l| *l != i64::from(i32::MAX))
    else {
        return;
    };
    let mut old: Vec<&Value> = sets
        .iter()
        .enumerate()
        .filter(|(i, r)| Some(*i) != new && !deleting(r))
        .map(|(_, r)| r)
        .collect();
    let diff = old.len() as i64 - limit.max(0);
    if diff <= 0 {
        return;
    }
    old.sort_by_key(|r| revision(r));
    for r in old.into_iter().take(diff as usize) {
        if stat(r, "replicas") != 0
            || replicas(r) != 0
            || int(r, "/metadata/generation").unwrap_or(1) > stat(r, "observedGeneration")
        {
            continue;
        }
        let _ = cluster.delete(
            "apps/v1",
            "replicasets",
            Some(s(r, "/metadata/namespace")),
            s(r, "/metadata/name"),
            &DeleteOptions::default(),
        );
    }
}

fn rollout_rolling(
    cluster: &Cluster,
    stored: &Value,
    d: &mut Value,
    sets: &mut Vec<Value>,
) -> Option<Duration> {
    let Some(new) = new_replica_set(cluster, d, sets, true) else {
        let requeue = sync_rollout_status(cluster, stored, d, sets, None);
        return sooner(requeue, Some(Duration::from_millis(50)));
    };
    // reconcileNewReplicaSet
    let want = replicas(d);
    let new_size = replicas(&sets[new]);
    let scaled_up = if new_size > want {
        scale_rs(cluster, d, &mut sets[new], want)
    } else if new_size < want {
        let to = new_rs_new_replicas(d, sets, new_size);
        scale_rs(cluster, d, &mut sets[new], to)
    } else {
        false
    };
    if scaled_up {
        return sync_rollout_status(cluster, stored, d, sets, Some(new));
    }
    if reconcile_old(cluster, d, sets, new) {
        return sync_rollout_status(cluster, stored, d, sets, Some(new));
    }
    if complete(d, stored) {
        cleanup(cluster, d, sets, Some(new));
    }
    sync_rollout_status(cluster, stored, d, sets, Some(new))
}

/// `reconcileOldReplicaSets`: scale old sets down, unhealthy replicas first, never below
/// `replicas - maxUnavailable` available pods.
fn reconcile_old(cluster: &Cluster, d: &Value, sets: &mut [Value], new: usize) -> bool {
    let olds: Vec<usize> = (0..sets.len()).filter(|i| *i != new).collect();
    let old_count: i64 = olds.iter().map(|i| replicas(&sets[*i])).sum();
    if old_count == 0 {
        return false;
    }
    let all_count: i64 = sets.iter().map(replicas).sum();
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = replicas(&sets[new]) - stat(&sets[new], "availableReplicas");
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return false;
    }
    // cleanupUnhealthyReplicas (oldest first)
    let mut cleaned = 0;
    for i in &olds {
        if cleaned >= max_scaled_down {
            break;
        }
        let rs = &sets[*i];
        let (size, avail) = (replicas(rs), stat(rs, "availableReplicas"));
        if size == 0 || size == avail {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(size - avail);
        scale_rs(cluster, d, &mut sets[*i], size - down);
        cleaned += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let available: i64 = sets.iter().map(|r| stat(r, "availableReplicas")).sum();
    let mut scaled_down = 0;
    if available > min_available {
        let total = available - min_available;
        for i in &olds {
            if scaled_down >= total {
                break;
            }
            let size = replicas(&sets[*i]);
            if size == 0 {
                continue;
            }
            let down = size.min(total - scaled_down);
            scale_rs(cluster, d, &mut sets[*i], size - down);
            scaled_down += down;
        }
    }
    cleaned + scaled_down > 0
}

fn rollout_recreate(
    cluster: &Cluster,
    stored: &Value,
    d: &mut Value,
    sets: &mut Vec<Value>,
    pods: &[Obj],
) -> Option<Duration> {
    let mut new = new_replica_set(cluster, d, sets, false);
    let mut scaled_down = false;
    for (i, rs) in sets.iter_mut().enumerate() {
        if Some(i) != new && replicas(rs) > 0 {
            scaled_down |= scale_rs(cluster, d, rs, 0);
        }
    }
    if scaled_down {
        return sync_rollout_status(cluster, stored, d, sets, new);
    }
    // Old pods still running (or terminating) hold the new set back.
    let old_uids: Vec<&str> = (0..sets.len())
        .filter(|i| Some(*i) != new)
        .map(|i| s(&sets[i], "/metadata/uid"))
        .collect();
    let old_status: i64 = (0..sets.len())
        .filter(|i| Some(*i) != new)
        .map(|i| stat(&sets[i], "replicas"))
        .sum();
    let old_pods_running = old_status > 0
        || pods.iter().any(|p| {
            old_uids.iter().any(|u| owned_by(p, u))
                && !matches!(s(p, "/status/phase"), "Failed" | "Succeeded")
        });
    if old_pods_running {
        return sooner(
            sync_rollout_status(cluster, stored, d, sets, new),
            Some(Duration::from_millis(100)),
        );
    }
    if new.is_none() {
        new = new_replica_set(cluster, d, sets, true);
    }
    if let Some(n) = new {
        let want = replicas(d);
        scale_rs(cluster, d, &mut sets[n], want);
    }
    if complete(d, stored) {
        cleanup(cluster, d, sets, new);
    }
    sync_rollout_status(cluster, stored, d, sets, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let d = |n: i64, ru: Value| json!({"spec": {"replicas": n, "strategy": {"type": "RollingUpdate", "rollingUpdate": ru}}});
        assert_eq!(fenceposts(&d(10, json!({}))), (3, 2));
        assert_eq!(fenceposts(&d(1, json!({}))), (1, 0));
        assert_eq!(
            fenceposts(&d(3, json!({"maxSurge": 0, "maxUnavailable": "10%"}))),
            (0, 1)
        );
        assert_eq!(max_unavailable(&d(2, json!({"maxUnavailable": 5}))), 2);
        let recreate = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {}});
        let b =
            json!({"metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}}, "spec": {}});
        assert!(equal_ignore_hash(&a, &b));
        let c = json!({"metadata": {"labels": {"app": "y"}}, "spec": {}});
        assert!(!equal_ignore_hash(&a, &c));
    }
}
