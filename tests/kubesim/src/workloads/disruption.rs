//! The disruption controller (`pkg/controller/disruption`): PodDisruptionBudget status,
//! which the eviction subresource (`Cluster::evict`) and `kubectl drain` obey.
//!
//! - `minAvailable` as a number: `expectedPods` is the number of selected pods,
//!   `desiredHealthy` the number given;
//! - `minAvailable` as a percentage, or `maxUnavailable`: `expectedPods` is the scale of the
//!   pods' controllers (Deployment via its ReplicaSet, ReplicaSet, StatefulSet,
//!   ReplicationController); pods without one, or of a controller without a scale (a
//!   DaemonSet), fail the sync (`SyncFailed`, no disruptions allowed), as upstream;
//!   percentages round up;
//! - `currentHealthy`: Ready pods neither terminating nor recently evicted
//!   (`disruptedPods`); `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)`.

use crate::pointer::At;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Obj;
use super::{
    controller_uid, deleting, drive, int, int_or_percent, list, pod_ready, s, write_status,
};
use crate::cluster::Cluster;
use crate::controllers::Shutdown;
use crate::selectors::LabelSelector;

const MANAGER: &str = "disruption-controller";
/// How long an eviction stays in `disruptedPods` waiting for the pod's deletion.
const DELETION_TIMEOUT_SECS: i64 = 120;

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[
            ("policy/v1", "poddisruptionbudgets"),
            ("v1", "pods"),
            ("apps/v1", "deployments"),
            ("apps/v1", "replicasets"),
            ("apps/v1", "statefulsets"),
        ],
        |c| {
            let pdbs = list(c, "policy/v1", "poddisruptionbudgets");
            if pdbs.is_empty() {
                return None;
            }
            let pods = list(c, "v1", "pods");
            let scales = Scales::read(c);
            for pdb in pdbs {
                sync(c, &pdb, &pods, &scales);
            }
            Some(Duration::from_secs(1))
        },
    )
    .await
}

/// The workloads a pod's controller reference can point at, by uid.
struct Scales {
    by_uid: BTreeMap<String, Value>,
}

impl Scales {
    fn read(c: &Cluster) -> Self {
        let mut by_uid = BTreeMap::new();
        for (api, res) in [
            ("apps/v1", "deployments"),
            ("apps/v1", "replicasets"),
            ("apps/v1", "statefulsets"),
            ("apps/v1", "daemonsets"),
            ("v1", "replicationcontrollers"),
        ] {
            for o in list(c, api, res) {
                by_uid.insert(s(&o, "/metadata/uid").to_string(), o.value.clone());
            }
        }
        Self { by_uid }
    }

    /// The scalable controller of a pod: (uid, replicas), or why there is none.
    fn of_pod(&self, pod: &Value) -> Result<(String, i64), String> {
        let name = s(pod, "/metadata/name");
        let Some(uid) = controller_uid(pod) else {
            return Err(format!("found no controller ref for pod {name:?}"));
        };
        let Some(owner) = self.by_uid.get(uid) else {
            return Err(format!("found no controllers for pod {name:?}"));
        };
        match owner["kind"].as_str().unwrap_or("") {
            "ReplicaSet" => {
                // A Deployment's ReplicaSet counts as the Deployment.
                if let Some(d) = controller_uid(owner).and_then(|u| self.by_uid.get(u))
                    && d["kind"] == "Deployment"
                {
                    return Ok((
                        s(d, "/metadata/uid").into(),
                        int(d, "/spec/replicas").unwrap_or(1),
                    ));
                }
                Ok((uid.into(), int(owner, "/spec/replicas").unwrap_or(1)))
            }
            "StatefulSet" | "ReplicationController" | "Deployment" => {
                Ok((uid.into(), int(owner, "/spec/replicas").unwrap_or(1)))
            }
            kind => Err(format!(
                "{kind}.apps {:?} does not implement the scale subresource",
                s(owner, "/metadata/name")
            )),
        }
    }
}

fn sync(cluster: &Cluster, pdb: &Value, pods: &[Obj], scales: &Scales) {
    let ns = s(pdb, "/metadata/namespace");
    let generation = int(pdb, "/metadata/generation").unwrap_or(1);
    let selector = pdb
        .at("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok());
    let matched: Vec<&Value> = pods
        .iter()
        .map(|p| &p.value)
        .filter(|p| s(p, "/metadata/namespace") == ns)
        .filter(|p| selector.as_ref().is_some_and(|sel| sel.matches(p)))
        .collect();
    let expected_scale = || -> Result<i64, String> {
        let mut controllers = BTreeMap::new();
        for p in &matched {
            let (uid, n) = scales.of_pod(p)?;
            controllers.insert(uid, n);
        }
        Ok(controllers.values().sum())
    };
    let min = pdb.at("/spec/minAvailable");
    let max = pdb.at("/spec/maxUnavailable");
    let counts: Result<(i64, i64), String> = match (min, max) {
        (_, Some(max)) => expected_scale().map(|expected| {
            let unavailable = int_or_percent(Some(max), expected, true);
            (expected, (expected - unavailable).max(0))
        }),
        (Some(Value::Number(n)), None) => Ok((matched.len() as i64, n.as_i64().unwrap_or(0))),
        (Some(min), None) => {
            expected_scale().map(|expected| (expected, int_or_percent(Some(min), expected, true)))
        }
        (None, None) => Ok((matched.len() as i64, 0)),
    };
    // Evictions still waiting for their pod's deletion.
    let now = crate::clock::now_unix();
    let disrupted: serde_json::Map<String, Value> = pdb
        .at("/status/disruptedPods")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(name, t)| {
                    matched
                        .iter()
                        .any(|p| s(p, "/metadata/name") == name.as_str() && !deleting(p))
                        && t.as_str()
                            .and_then(crate::clock::parse_rfc3339)
                            .is_some_and(|t| t + DELETION_TIMEOUT_SECS > now)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let healthy = matched
        .iter()
        .filter(|p| !deleting(p) && !disrupted.contains_key(s(p, "/metadata/name")) && pod_ready(p))
        .count() as i64;
    let old_cond = pdb
        .at("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionAllowed"))
        .cloned();
    let cond = |status: &str, reason: &str, message: &str| {
        let since = match &old_cond {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => json!(crate::clock::now_rfc3339()),
        };
        json!({"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since})
    };
    let status = match counts {
        Ok((expected, desired)) => {
            let mut allowed = healthy - desired;
            if expected <= 0 || allowed <= 0 {
                allowed = 0;
            }
            let c = if allowed > 0 {
                cond("True", "SufficientPods", "")
            } else {
                cond("False", "InsufficientPods", "")
            };
            json!({
                "observedGeneration": generation,
                "expectedPods": expected,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "disruptionsAllowed": allowed,
                "disruptedPods": if disrupted.is_empty() { Value::Null } else { Value::Object(disrupted) },
                "conditions": [c],
            })
        }
        // failSafe: nothing may be disrupted; the counts stay as they were.
        Err(message) => json!({
            "observedGeneration": generation,
            "disruptionsAllowed": 0,
            "currentHealthy": int(pdb, "/status/currentHealthy").unwrap_or(0),
            "desiredHealthy": int(pdb, "/status/desiredHealthy").unwrap_or(0),
            "expectedPods": int(pdb, "/status/expectedPods").unwrap_or(0),
            "conditions": [cond("False", "SyncFailed", &message)],
        }),
    };
    write_status(
        cluster,
        "policy/v1",
        "poddisruptionbudgets",
        pdb,
        status,
        MANAGER,
    );
}
