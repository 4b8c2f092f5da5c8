//! The DaemonSet controller (`pkg/controller/daemon`): one pod per eligible node, pinned with
//! a required node affinity on `metadata.name` (the scheduler binds it) and given the
//! tolerations the real controller adds; ControllerRevisions `<ds>-<hash>` with increasing
//! `revision`s, pruned to `revisionHistoryLimit`; `controller-revision-hash` and
//! `pod-template-generation` pod labels; RollingUpdate with `maxUnavailable` / `maxSurge` and
//! `minReadySeconds`, or OnDelete; status computed as `updateDaemonSetStatus` does.
//!
//! The template generation (`deprecated.daemonset.template.generation`) is the API server's:
//! `cluster::write` sets it on create and bumps it on every template change, ignoring what
//! clients send; this controller reads it for the `pod-template-generation` label.

use crate::pointer::At;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::Obj;
use super::nodes::{should_run, with_daemon_tolerations};
use super::{
    ReadyClock, by_phase_then_age, compute_hash, deleting, drive, int, int_or_percent, list,
    owned_by, owner_ref, pod_from_template, pod_ready, pod_terminal, s, scaled, sooner,
    write_status,
};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "daemonset-controller";
const HASH_LABEL: &str = "controller-revision-hash";
const GENERATION_LABEL: &str = "pod-template-generation";
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    let mut clock = ReadyClock::default();
    drive(
        cluster,
        shutdown,
        &[("apps/v1", "daemonsets"), ("v1", "pods"), ("v1", "nodes")],
        move |c| {
            let pods = list(c, "v1", "pods");
            clock.retain(&pods);
            let nodes = list(c, "v1", "nodes");
            let mut requeue = None;
            for ds in list(c, "apps/v1", "daemonsets") {
                requeue = sooner(requeue, sync(c, &ds, &pods, &nodes, &mut clock));
            }
            requeue
        },
    )
    .await
}

/// The node a daemon pod is for: its `spec.nodeName`, else the node its affinity pins.
pub fn target_node(pod: &Value) -> String {
    let bound = s(pod, "/spec/nodeName");
    if !bound.is_empty() {
        return bound.to_string();
    }
    let terms = pod
        .at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    for term in terms.into_iter().flatten() {
        for f in term
            .get("matchFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if f["key"] == "metadata.name"
                && f["operator"] == "In"
                && let Some(n) = f.at("/values/0").and_then(Value::as_str)
            {
                return n.to_string();
            }
        }
    }
    String::new()
}

/// `IsPodUpdated`: the pod carries the current template generation or revision hash.
fn is_updated(pod: &Value, hash: &str, generation: i64) -> bool {
    s(pod, &format!("/metadata/labels/{GENERATION_LABEL}")) == generation.to_string()
        || s(pod, &format!("/metadata/labels/{HASH_LABEL}")) == hash
}

/// The pod the controller creates for `node`.
fn pod_for(ds: &Value, node: &str, hash: &str, generation: i64) -> Value {
    let template = ds
        .at("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut pod = pod_from_template(&template, ds, s(ds, "/metadata/name"));
    pod["metadata"]["labels"][HASH_LABEL] = json!(hash);
    pod["metadata"]["labels"][GENERATION_LABEL] = json!(generation.to_string());
    let spec = &mut pod["spec"];
    spec["tolerations"] = json!(with_daemon_tolerations(spec));
    // `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required terms become the pin alone.
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    });
    pod
}

/// What a revision stores: a strategic-merge patch replacing the template.
fn revision_data(ds: &Value) -> Value {
    let mut template = ds
        .at("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The current revision's hash and the template generation, after creating or re-numbering
/// the revision as `constructHistory` does; `None` after a hash collision (the collision
/// count went up; the next pass uses the new hash).
fn construct_history(cluster: &Cluster, ds: &Value) -> Option<(String, i64, Vec<Value>)> {
    let ns = s(ds, "/metadata/namespace");
    let name = s(ds, "/metadata/name");
    let uid = s(ds, "/metadata/uid");
    let collision = int(ds, "/status/collisionCount");
    let template = ds.at("/spec/template").unwrap_or(&Value::Null);
    let hash = compute_hash(template, collision);
    let rev_name = format!("{name}-{hash}");
    let opts = WriteOptions::manager(MANAGER);
    let revisions: Vec<Value> = cluster
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
    let data = revision_data(ds);
    let max_rev = revisions
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .max()
        .unwrap_or(0);
    let generation_now: i64 = s(ds, &format!("/metadata/annotations/{TEMPLATE_GENERATION}"))
        .parse()
        .unwrap_or(0);
    let equal = revisions
        .iter()
        .filter(|r| r["data"] == data)
        .max_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    let cur_hash = match equal {
        Some(r) => {
            let rev = r["revision"].as_i64().unwrap_or(0);
            if rev < max_rev {
                // A template seen before (a rollback): the revision becomes the newest.
                let _ = cluster.modify(
                    "apps/v1",
                    "controllerrevisions",
                    Some(ns),
                    s(r, "/metadata/name"),
                    None,
                    &opts,
                    |o| o["revision"] = json!(max_rev + 1),
                );
            }
            let h = s(r, &format!("/metadata/labels/{HASH_LABEL}"));
            if h.is_empty() {
                hash.clone()
            } else {
                h.to_string()
            }
        }
        None => {
            let mut labels = ds
                .at("/spec/template/metadata/labels")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            labels[HASH_LABEL] = json!(hash);
            let created = cluster.create(
                "apps/v1",
                "controllerrevisions",
                Some(ns),
                json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": rev_name, "namespace": ns, "labels": labels,
                        "ownerReferences": [owner_ref(ds)]},
                    "data": data, "revision": max_rev + 1}),
                &opts,
            );
            if let Err(e) = created {
                if e.code == 409 {
                    // The name is taken by a different template: a hash collision.
                    let count = collision.unwrap_or(0) + 1;
                    write_status(
                        cluster,
                        "apps/v1",
                        "daemonsets",
                        ds,
                        json!({"collisionCount": count}),
                        MANAGER,
                    );
                }
                return None;
            }
            hash
        }
    };
    let generation = generation_now.max(1);
    Some((cur_hash, generation, revisions))
}

/// Deletes old revisions beyond `revisionHistoryLimit`, oldest first, keeping any a pod
/// still runs.
fn cleanup_history(
    cluster: &Cluster,
    ds: &Value,
    hash: &str,
    revisions: &[Value],
    pods: &[&Value],
) {
    let limit = int(ds, "/spec/revisionHistoryLimit").unwrap_or(10).max(0) as usize;
    let mut old: Vec<&Value> = revisions
        .iter()
        .filter(|r| s(r, &format!("/metadata/labels/{HASH_LABEL}")) != hash)
        .collect();
    if old.len() <= limit {
        return;
    }
    let mut to_kill = old.len() - limit;
    let live: HashSet<&str> = pods
        .iter()
        .map(|p| s(p, &format!("/metadata/labels/{HASH_LABEL}")))
        .collect();
    old.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    for r in old {
        if to_kill == 0 {
            break;
        }
        if live.contains(s(r, &format!("/metadata/labels/{HASH_LABEL}"))) {
            continue;
        }
        let _ = cluster.delete(
            "apps/v1",
            "controllerrevisions",
            Some(s(ds, "/metadata/namespace")),
            s(r, "/metadata/name"),
            &DeleteOptions::default(),
        );
        to_kill -= 1;
    }
}

/// The DaemonSet's pods by target node, leaving out finished pods already being deleted
/// (`getNodesToDaemonPods`).
fn pods_by_node<'a>(ds: &Value, pods: &'a [Obj]) -> BTreeMap<String, Vec<&'a Value>> {
    let uid = s(ds, "/metadata/uid");
    let ns = s(ds, "/metadata/namespace");
    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for p in pods {
        if s(p, "/metadata/namespace") != ns || !owned_by(p, uid) {
            continue;
        }
        if pod_terminal(p) && deleting(p) {
            continue;
        }
        by_node.entry(target_node(p)).or_default().push(p);
    }
    by_node
}

/// `maxSurge` and `maxUnavailable` against `desired` nodes (both rounded up; 1 unavailable
/// when both come to 0).
fn rolling_counts(ds: &Value, desired: i64) -> (i64, i64) {
    let ru = ds.at("/spec/updateStrategy/rollingUpdate");
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), desired, true);
    let unavailable = match ru.and_then(|r| r.get("maxUnavailable")) {
        Some(v) => int_or_percent(Some(v), desired, true),
        None => 1,
    };
    if desired > 0 && surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn is_rolling(ds: &Value) -> bool {
    matches!(
        ds.at("/spec/updateStrategy/type").and_then(Value::as_str),
        None | Some("RollingUpdate")
    )
}

/// `findUpdatedPodsOnNode`: the node's one new and one old live pod, or `None` when there
/// are duplicates (the manage step cleans those up first).
fn new_and_old<'a>(
    pods: &[&'a Value],
    hash: &str,
    generation: i64,
) -> Option<(Option<&'a Value>, Option<&'a Value>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().copied().filter(|p| !deleting(p)) {
        let slot = if is_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

struct Plan {
    create: Vec<String>,
    delete: Vec<(String, String)>,
    requeue: Option<Duration>,
}

fn sync(
    cluster: &Cluster,
    ds: &Value,
    pods: &[Obj],
    nodes: &[Obj],
    clock: &mut ReadyClock,
) -> Option<Duration> {
    if deleting(ds) {
        return None;
    }
    let Some((hash, generation, revisions)) = construct_history(cluster, ds) else {
        return Some(Duration::from_millis(20));
    };
    let ns = s(ds, "/metadata/namespace").to_string();
    let min_ready = scaled(
        cluster,
        int(ds, "/spec/minReadySeconds").unwrap_or(0) as f64,
    );
    let template_spec = ds
        .at("/spec/template/spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let by_node = pods_by_node(ds, pods);
    let mut plan = manage(ds, nodes, &by_node, &template_spec, &hash, clock, min_ready);
    // Like the expectations upstream: roll only once the manage step has nothing to do.
    if plan.create.is_empty() && plan.delete.is_empty() && is_rolling(ds) {
        let desired = nodes
            .iter()
            .filter(|n| should_run(&template_spec, n).0)
            .count() as i64;
        plan = rolling_update(ds, &by_node, &hash, generation, desired, clock, min_ready);
    }
    let acted = !plan.create.is_empty() || !plan.delete.is_empty();
    for node in &plan.create {
        let _ = cluster.create(
            "v1",
            "pods",
            Some(&ns),
            pod_for(ds, node, &hash, generation),
            &WriteOptions::manager(MANAGER),
        );
    }
    for (pod_ns, name) in &plan.delete {
        // Graceful: the kubelet finishes running pods' deletion.
        let _ = cluster.delete("v1", "pods", Some(pod_ns), name, &DeleteOptions::default());
    }
    let fresh;
    let by_node = if acted {
        fresh = cluster
            .list_shared("v1", "pods", Some(&ns), &Default::default())
            .unwrap_or_default();
        pods_by_node(ds, &fresh)
    } else {
        by_node
    };
    let all: Vec<&Value> = by_node.values().flatten().copied().collect();
    cleanup_history(cluster, ds, &hash, &revisions, &all);
    let requeue = update_status(
        cluster,
        ds,
        nodes,
        &by_node,
        &template_spec,
        &hash,
        generation,
        clock,
        min_ready,
    );
    sooner(plan.requeue, requeue)
}

/// `podsShouldBeOnNode` over every node: pods to create, failed or surplus pods to delete.
fn manage(
    ds: &Value,
    nodes: &[Obj],
    by_node: &BTreeMap<String, Vec<&Value>>,
    template_spec: &Value,
    hash: &str,
    clock: &mut ReadyClock,
    min_ready: Duration,
) -> Plan {
    let mut plan = Plan {
        create: Vec::new(),
        delete: Vec::new(),
        requeue: None,
    };
    let surge = is_rolling(ds) && rolling_counts(ds, 1).0 != 0;
    let del = |plan: &mut Plan, p: &Value| {
        plan.delete.push((
            s(p, "/metadata/namespace").to_string(),
            s(p, "/metadata/name").to_string(),
        ));
    };
    let mut known = HashSet::new();
    for node in nodes {
        let node_name = s(node, "/metadata/name");
        known.insert(node_name);
        let (run, keep) = should_run(template_spec, node);
        let here = by_node.get(node_name);
        if run && here.is_none() {
            plan.create.push(node_name.to_string());
        } else if keep {
            let mut running = Vec::new();
            for p in here.into_iter().flatten().copied() {
                if deleting(p) {
                    continue;
                }
                if pod_terminal(p) {
                    // Failed (or finished) daemon pods are replaced.
                    del(&mut plan, p);
                } else {
                    running.push(p);
                }
            }
            if running.len() <= 1 {
                continue;
            }
            running.sort_by(by_phase_then_age);
            if !surge {
                for p in &running[1..] {
                    del(&mut plan, p);
                }
                continue;
            }
            // Surging: an old and a new pod may coexist until the new one is available.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in &running {
                let slot = if s(p, &format!("/metadata/labels/{HASH_LABEL}")) == hash {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(*p);
                } else {
                    del(&mut plan, p);
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !pod_ready(old) {
                    del(&mut plan, old);
                } else {
                    match clock.available(new, min_ready) {
                        Ok(()) => del(&mut plan, old),
                        Err(wait) => plan.requeue = sooner(plan.requeue, Some(wait)),
                    }
                }
            }
        } else if let Some(here) = here {
            for p in here.iter().filter(|p| !deleting(p)) {
                del(&mut plan, p);
            }
        }
    }
    // Unscheduled pods for nodes that are gone.
    for (node, here) in by_node {
        if !known.contains(node.as_str()) {
            for p in here
                .iter()
                .filter(|p| s(p, "/spec/nodeName").is_empty() && !deleting(p))
            {
                del(&mut plan, p);
            }
        }
    }
    plan
}

/// `rollingUpdate`: without surge, delete old pods while at most `maxUnavailable` nodes are
/// unavailable (the manage step then creates their replacements); with surge, create new
/// pods beside old ones on up to `maxSurge` nodes and delete old pods whose replacement is
/// available.
fn rolling_update(
    ds: &Value,
    by_node: &BTreeMap<String, Vec<&Value>>,
    hash: &str,
    generation: i64,
    desired: i64,
    clock: &mut ReadyClock,
    min_ready: Duration,
) -> Plan {
    let (max_surge, max_unavailable) = rolling_counts(ds, desired);
    let mut plan = Plan {
        create: Vec::new(),
        delete: Vec::new(),
        requeue: None,
    };
    let name_of = |p: &Value| {
        (
            s(p, "/metadata/namespace").to_string(),
            s(p, "/metadata/name").to_string(),
        )
    };
    let mut available = |p: &Value, plan: &mut Plan| match clock.available(p, min_ready) {
        Ok(()) => true,
        Err(wait) => {
            if pod_ready(p) {
                plan.requeue = sooner(plan.requeue, Some(wait));
            }
            false
        }
    };
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = new_and_old(pods, hash, generation) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new, &mut plan) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old, &mut plan) {
                        replace.push(name_of(old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name_of(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
        plan.delete = replace;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    let mut surged = 0;
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in by_node {
        let Some((new, old)) = new_and_old(pods, hash, generation) else {
            surged += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old, &mut plan) {
                    allowed.push(node.clone());
                } else if surged < max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new, &mut plan) {
                    plan.delete.push(name_of(old));
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = (max_surge - surged).clamp(0, candidates.len() as i64) as usize;
    plan.create = allowed;
    plan.create.extend(candidates.into_iter().take(room));
    plan
}

/// `updateDaemonSetStatus`; returns when to look again for pods about to become available.
#[allow(clippy::too_many_arguments)]
fn update_status(
    cluster: &Cluster,
    ds: &Value,
    nodes: &[Obj],
    by_node: &BTreeMap<String, Vec<&Value>>,
    template_spec: &Value,
    hash: &str,
    generation: i64,
    clock: &mut ReadyClock,
    min_ready: Duration,
) -> Option<Duration> {
    let (mut desired, mut current, mut misscheduled) = (0i64, 0i64, 0i64);
    let (mut ready, mut available, mut updated) = (0i64, 0i64, 0i64);
    let mut requeue = None;
    for node in nodes {
        let (run, _) = should_run(template_spec, node);
        let here = by_node
            .get(s(node, "/metadata/name"))
            .filter(|v| !v.is_empty());
        if !run {
            if here.is_some() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        let Some(here) = here else { continue };
        current += 1;
        let mut sorted = here.clone();
        sorted.sort_by(by_phase_then_age);
        let pod = sorted[0];
        if pod_ready(pod) {
            ready += 1;
            match clock.available(pod, min_ready) {
                Ok(()) => available += 1,
                Err(wait) => requeue = sooner(requeue, Some(wait)),
            }
        }
        if is_updated(pod, hash, generation) {
            updated += 1;
        }
    }
    let omit_zero = |v: i64| if v == 0 { Value::Null } else { json!(v) };
    write_status(
        cluster,
        "apps/v1",
        "daemonsets",
        ds,
        json!({
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": int(ds, "/metadata/generation").unwrap_or(1),
            "updatedNumberScheduled": omit_zero(updated),
            "numberAvailable": omit_zero(available),
            "numberUnavailable": omit_zero(desired - available),
        }),
        MANAGER,
    );
    requeue
}
