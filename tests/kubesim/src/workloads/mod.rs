//! kube-controller-manager's workload controllers on top of the in-process API: DaemonSet,
//! Deployment, ReplicaSet, Job (with the TTL-after-finished clean-up), Endpoints,
//! EndpointSlice and the disruption (PodDisruptionBudget status) controller.
//!
//! Each controller reconciles every object of its kind whenever its kind or the objects it
//! reads change (pods, nodes, ...), and again when a deadline it computed comes due (a
//! `minReadySeconds`, a progress deadline, a Job's `activeDeadlineSeconds`), at least every
//! second. Decisions follow the upstream controllers (`pkg/controller/...`), step by step
//! where it matters for status: `kubectl rollout status` and the product's waits read it.
//!
//! Durations manifests give in seconds for how long the cluster takes (`minReadySeconds`,
//! `ttlSecondsAfterFinished`, pod failure back-off) are simulated seconds: they are multiplied
//! by the simulation's `time_scale`. Deadlines a client sets on that work
//! (`progressDeadlineSeconds`, `activeDeadlineSeconds`) stay real seconds: the client measures
//! its own patience in real seconds, and kubesim's own latencies (scheduling, a busy CI
//! machine) are real too, so a scaled deadline would fail work that took milliseconds.

pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod job;
pub mod nodes;
pub mod replicaset;

use crate::pointer::At;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::controllers::{ControllerSpec, Shutdown};

/// The workload controllers, to start with the server (`controllers::builtin()` does).
pub fn controllers() -> Vec<ControllerSpec> {
    vec![
        ControllerSpec::new("daemonset-controller", daemonset::run),
        ControllerSpec::new("deployment-controller", deployment::run),
        ControllerSpec::new("replicaset-controller", replicaset::run),
        ControllerSpec::new("job-controller", job::run),
        ControllerSpec::new("ttl-after-finished-controller", job::run_ttl),
        ControllerSpec::new("endpoint-controller", endpoints::run_endpoints),
        ControllerSpec::new("endpointslice-controller", endpoints::run_slices),
        ControllerSpec::new("disruption-controller", disruption::run),
    ]
}

/// Runs `reconcile` whenever one of `watched` (api version, resource) changes, when the
/// requeue delay it returned has passed, and at least every second. Bursts of changes are
/// coalesced (a few milliseconds), as a work queue would.
pub(crate) async fn drive(
    cluster: Cluster,
    mut shutdown: Shutdown,
    watched: &[(&str, &str)],
    mut reconcile: impl FnMut(&Cluster) -> Option<Duration>,
) {
    let mut subs = Vec::new();
    for (api, resource) in watched {
        if let Ok(s) = cluster.subscribe(api, resource, None) {
            subs.push(s);
        }
    }
    loop {
        let started = Instant::now();
        let requeue = reconcile(&cluster)
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        let took = started.elapsed();
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
            _ = tokio::time::sleep(requeue) => {}
        }
        // Batch what arrives meanwhile. A pass that took long waits as long again, as a
        // rate-limited work queue would: on a big cluster the controllers then share the CPU
        // with the kubelets instead of re-reading every pod back to back.
        tokio::time::sleep(took.max(Duration::from_millis(10))).await;
        for s in subs.iter_mut() {
            // A subscriber that fell behind compacted history errs: the next full reconcile
            // reads the current state anyway, so nothing is lost.
            while s.try_next().is_some() {}
        }
    }
}

/// Keeps the earliest of several requeue delays.
pub(crate) fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The hash controllers name revisions and ReplicaSets with (`ComputeHash` upstream): FNV-1a
/// (32 bits) of the template, plus the collision count when there is one, its decimal form
/// rendered in the "safe" alphabet without vowels. Deterministic for a given template.
pub fn compute_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    // serde_json keeps object keys sorted, so equal templates hash alike.
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    safe_encode(&h.to_string())
}

/// `rand.SafeEncodeString`: each byte mapped onto an alphabet without vowels (no words).
fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Kept for callers of the earlier API: the hash of a template without collisions.
pub fn template_hash(template: &Value) -> String {
    compute_hash(template, None)
}

/// The controller owner reference to `owner` (`controller: true, blockOwnerDeletion: true`,
/// as `metav1.NewControllerRef` makes).
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner.at("/metadata/name"),
        "uid": owner.at("/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true
    })
}

/// The uid of the object's controller, if it has one.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.at("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn owned_by(obj: &Value, uid: &str) -> bool {
    !uid.is_empty() && controller_uid(obj) == Some(uid)
}

/// Objects grouped by the uid of their controller, built once per pass: a controller with
/// hundreds of owners (a Job per node) would otherwise scan every pod for each owner.
pub(crate) fn by_controller(objs: &[Obj]) -> HashMap<&str, Vec<&Value>> {
    let mut index: HashMap<&str, Vec<&Value>> = HashMap::new();
    for o in objs {
        if let Some(uid) = controller_uid(&o.value) {
            index.entry(uid).or_default().push(&o.value);
        }
    }
    index
}

/// A string field by JSON pointer, or "".
pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

/// An integer field by JSON pointer.
pub(crate) fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.at(ptr).and_then(Value::as_i64)
}

/// Whether the object is being deleted.
pub(crate) fn deleting(v: &Value) -> bool {
    v.at("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// `IsPodReady`: the pod's Ready condition is True (whether or not it is terminating).
pub fn pod_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.at("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether a pod has finished (`Succeeded` or `Failed`).
pub fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.at("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// `FilterActivePods`: neither finished nor being deleted.
pub fn pod_active(pod: &Value) -> bool {
    !pod_terminal(pod) && !deleting(pod)
}

/// `GetScaledValueFromIntOrPercent`: an int, or a percentage of `total` rounded up or down.
/// Malformed values count as 0 (the API server refuses them anyway).
pub fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(text)) => match text.strip_suffix('%') {
            Some(p) => {
                let p: i64 = p.trim().parse().unwrap_or(0);
                let x = p * total;
                if round_up {
                    (x + 99).div_euclid(100)
                } else {
                    x.div_euclid(100)
                }
            }
            None => text.trim().parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// A client's deadline in seconds, as a real duration (never scaled: see the module docs).
pub(crate) fn deadline(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

/// Simulated seconds as a real duration (× the simulation's `time_scale`).
pub(crate) fn scaled(cluster: &Cluster, seconds: f64) -> Duration {
    cluster.sim().timing().scaled(seconds)
}

/// When pods became Ready, as this controller saw it, for `IsPodAvailable` with
/// `minReadySeconds` in scaled time (the Ready condition's timestamp has whole seconds only,
/// too coarse for scaled durations).
#[derive(Default)]
pub(crate) struct ReadyClock {
    since: HashMap<String, Instant>,
}

impl ReadyClock {
    /// Whether `pod` has been Ready for `min_ready` (scaled); `None` when available, else
    /// how long until it will be (if it stays Ready).
    pub(crate) fn available(&mut self, pod: &Value, min_ready: Duration) -> Result<(), Duration> {
        let uid = s(pod, "/metadata/uid").to_string();
        if !pod_ready(pod) {
            self.since.remove(&uid);
            return Err(Duration::from_secs(3600));
        }
        if min_ready.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        let since = *self.since.entry(uid).or_insert_with(|| {
            // Ready long before we first looked (a restarted controller): trust the
            // condition's timestamp, which is whole seconds.
            let ltt = ready_condition(pod)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .and_then(crate::clock::parse_rfc3339);
            match ltt {
                Some(t) => {
                    let age = (crate::clock::now_unix() - t - 1).max(0) as u64;
                    now.checked_sub(Duration::from_secs(age)).unwrap_or(now)
                }
                None => now,
            }
        });
        let ready_for = now.duration_since(since);
        if ready_for >= min_ready {
            Ok(())
        } else {
            Err(min_ready - ready_for)
        }
    }

    /// Forgets pods that no longer exist.
    pub(crate) fn retain(&mut self, pods: &[Obj]) {
        let live: std::collections::HashSet<&str> =
            pods.iter().map(|p| s(p, "/metadata/uid")).collect();
        self.since.retain(|uid, _| live.contains(uid.as_str()));
    }
}

/// A stored object as controllers read it: shared, never copied (derefs to its value).
pub(crate) type Obj = std::sync::Arc<crate::store::StoredObject>;

/// The objects of a kind, or none.
pub(crate) fn list(cluster: &Cluster, api: &str, resource: &str) -> Vec<Obj> {
    cluster
        .list_shared(api, resource, None, &Default::default())
        .unwrap_or_default()
}

/// Writes `status` when it differs from what the object has: keys set to null are removed,
/// the others replaced.
pub(crate) fn write_status(
    cluster: &Cluster,
    api: &str,
    resource: &str,
    obj: &Value,
    status: Value,
    manager: &str,
) {
    let mut merged = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    if !merged.is_object() {
        merged = json!({});
    }
    if let (Some(m), Some(st)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in st {
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
    let ns = obj.at("/metadata/namespace").and_then(Value::as_str);
    let name = s(obj, "/metadata/name");
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

/// Pod ordering used when choosing which pod stays: Running first, then older first, then by
/// name (`podByCreationTimestampAndPhase`).
pub(crate) fn by_phase_then_age(a: &&Value, b: &&Value) -> std::cmp::Ordering {
    let running = |p: &Value| s(p, "/status/phase") == "Running";
    running(b)
        .cmp(&running(a))
        .then_with(|| s(a, "/metadata/creationTimestamp").cmp(s(b, "/metadata/creationTimestamp")))
        .then_with(|| s(a, "/metadata/name").cmp(s(b, "/metadata/name")))
}

/// A new pod from a controller's template (`GetPodFromTemplate`): the template's labels,
/// annotations and finalizers, `generateName` `<prefix>-`, the controller reference.
pub(crate) fn pod_from_template(template: &Value, owner: &Value, prefix: &str) -> Value {
    let mut meta = json!({
        "generateName": format!("{prefix}-"),
        "namespace": owner.at("/metadata/namespace").cloned().unwrap_or(json!("default")),
        "ownerReferences": [owner_ref(owner)],
    });
    for key in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template.at(&format!("/metadata/{key}"))
            && !v.is_null()
        {
            meta[key] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_upstream() {
        let p = json!("25%");
        assert_eq!(int_or_percent(Some(&p), 10, true), 3);
        assert_eq!(int_or_percent(Some(&p), 10, false), 2);
        assert_eq!(int_or_percent(Some(&json!(2)), 10, false), 2);
        assert_eq!(int_or_percent(None, 10, false), 0);
        assert_eq!(int_or_percent(Some(&json!("bad%")), 10, true), 0);
    }

    #[test]
    fn hashes_use_the_safe_alphabet_and_change_with_collisions() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let h = compute_hash(&t, None);
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(h, compute_hash(&t, None));
        assert_ne!(h, compute_hash(&t, Some(1)));
    }
}
