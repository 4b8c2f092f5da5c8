//! The operator's status manager (`pkg/controller/status/status.go` in tigera/operator): one
//! per component (`calico`, `apiserver`, ...), reporting the health of the DaemonSets and
//! Deployments its controller rendered as the `TigeraStatus` of that name.
//!
//! As upstream:
//! - nothing is reported until the controller found its CR (`OnCRFound`) and rendered
//!   (`ReadyToMonitor`); the CR going away deletes the TigeraStatus (`OnCRNotFound`);
//! - the objects are checked on a 5 s ticker (simulated seconds here), not on every change, so
//!   the reconciler's `IsAvailable` reads the last sync;
//! - a DaemonSet is progressing while `updatedNumberScheduled < desiredNumberScheduled`
//!   ("update is rolling out (n out of m updated)"), then while `numberUnavailable > 0`
//!   ("is not available (awaiting n nodes)"), ...; a Deployment while `unavailableReplicas > 0`;
//! - pods are failing when Failed, or a container (init or not) waits in `CrashLoopBackOff`
//!   ("has crash looping container: NAME"), `ImagePullBackOff`/`ErrImagePull` ("failed to pull
//!   container image for: NAME") or terminated with reason `Error`; the first failing pod of
//!   each object is named;
//! - Available = synced, not explicitly degraded, nothing progressing or failing;
//!   Progressing = something progressing and nothing failing; Degraded = explicitly degraded
//!   or something failing (reason `Some pods are failing`);
//! - conditions keep their `lastTransitionTime` unless their status changes; cleared
//!   conditions read `NotAvailable` / `Not Available`.

use crate::pointer::At;
use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::workloads::{int, s};

/// The field manager of the operator's writes (controller-runtime's default: the binary name).
pub const MANAGER: &str = "operator";

/// One component's status.
#[derive(Debug, Default, Clone)]
pub struct StatusManager {
    /// The TigeraStatus name.
    pub component: String,
    enabled: Option<bool>,
    ready_to_monitor: bool,
    has_synced: bool,
    explicit_degraded: Option<(String, String)>,
    daemonsets: Vec<(String, String)>,
    deployments: Vec<(String, String)>,
    progressing: Vec<String>,
    failing: Vec<String>,
    observed_generation: Option<i64>,
}

impl StatusManager {
    /// A dormant manager for `component`.
    pub fn new(component: &str) -> Self {
        Self {
            component: component.into(),
            ..Default::default()
        }
    }

    /// The controller found its CR.
    pub fn on_cr_found(&mut self, generation: Option<i64>) {
        self.enabled = Some(true);
        self.observed_generation = generation;
    }

    /// The CR is gone: forget everything, delete the TigeraStatus at the next update.
    pub fn on_cr_not_found(&mut self) {
        *self = Self {
            component: std::mem::take(&mut self.component),
            enabled: Some(false),
            ..Default::default()
        };
    }

    /// Monitors these DaemonSets and Deployments (replacing the earlier sets).
    pub fn monitor(&mut self, daemonsets: &[(&str, &str)], deployments: &[(&str, &str)]) {
        let own = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        self.daemonsets = own(daemonsets);
        self.deployments = own(deployments);
    }

    /// Start evaluating the monitored objects.
    pub fn ready_to_monitor(&mut self) {
        self.ready_to_monitor = true;
    }

    /// Explicitly degraded (a validation or write error).
    pub fn set_degraded(&mut self, reason: &str, msg: &str) {
        self.explicit_degraded = Some((reason.into(), msg.into()));
    }

    /// No explicit degradation.
    pub fn clear_degraded(&mut self) {
        self.explicit_degraded = None;
    }

    /// `IsAvailable`.
    pub fn is_available(&self) -> bool {
        self.ready_to_monitor
            && self.has_synced
            && self.explicit_degraded.is_none()
            && self.failing.is_empty()
            && self.progressing.is_empty()
    }

    /// `IsProgressing`.
    pub fn is_progressing(&self) -> bool {
        self.ready_to_monitor
            && self.has_synced
            && !self.progressing.is_empty()
            && self.failing.is_empty()
    }

    /// `IsDegraded`.
    pub fn is_degraded(&self) -> bool {
        self.explicit_degraded.is_some()
            || (self.ready_to_monitor && self.has_synced && !self.failing.is_empty())
    }

    /// `syncState`: reads the monitored objects and their pods.
    fn sync_state(&mut self, c: &Cluster) {
        let mut progressing = Vec::new();
        let mut failing = Vec::new();
        for (ns, name) in &self.daemonsets {
            let Ok(ds) = c.get("apps/v1", "daemonsets", Some(ns), name) else {
                continue;
            };
            let st = |k: &str| int(&ds, &format!("/status/{k}")).unwrap_or(0);
            let nn = format!("{ns}/{name}");
            let generation = int(&ds, "/metadata/generation").unwrap_or(0);
            if st("updatedNumberScheduled") < st("desiredNumberScheduled") {
                progressing.push(format!(
                    "DaemonSet {nn:?} update is rolling out ({} out of {} updated)",
                    st("updatedNumberScheduled"),
                    st("desiredNumberScheduled")
                ));
            } else if st("numberUnavailable") > 0 {
                progressing.push(format!(
                    "DaemonSet {nn:?} is not available (awaiting {} nodes)",
                    st("numberUnavailable")
                ));
            } else if st("numberAvailable") == 0 && st("desiredNumberScheduled") != 0 {
                progressing.push(format!(
                    "DaemonSet {nn:?} is not yet scheduled on any nodes"
                ));
            } else if generation > st("observedGeneration") {
                progressing.push(format!(
                    "DaemonSet {nn:?} update is being processed (generation {generation}, observed generation {})",
                    st("observedGeneration")
                ));
            }
            if let Some(f) = pods_failing(c, &ds) {
                failing.push(f);
            }
        }
        for (ns, name) in &self.deployments {
            let Ok(d) = c.get("apps/v1", "deployments", Some(ns), name) else {
                continue;
            };
            let st = |k: &str| int(&d, &format!("/status/{k}")).unwrap_or(0);
            let nn = format!("{ns}/{name}");
            let generation = int(&d, "/metadata/generation").unwrap_or(0);
            if st("unavailableReplicas") > 0 {
                progressing.push(format!(
                    "Deployment {nn:?} is not available (awaiting {} replicas)",
                    st("unavailableReplicas")
                ));
            } else if st("availableReplicas") == 0 {
                progressing.push(format!(
                    "Deployment {nn:?} is not yet scheduled on any nodes"
                ));
            } else if st("observedGeneration") < generation {
                progressing.push(format!(
                    "Deployment {nn:?} update is being processed (generation {generation}, observed generation {})",
                    st("observedGeneration")
                ));
            }
            if let Some(f) = pods_failing(c, &d) {
                failing.push(f);
            }
        }
        self.progressing = progressing;
        self.failing = failing;
        self.has_synced = true;
    }

    /// `updateStatus`, run on the ticker: syncs and writes (or deletes) the TigeraStatus.
    pub fn update_status(&mut self, c: &Cluster) {
        match self.enabled {
            None => return,
            Some(false) => {
                let _ = c.delete(
                    "operator.tigera.io/v1",
                    "tigerastatuses",
                    None,
                    &self.component,
                    &Default::default(),
                );
                return;
            }
            Some(true) => {}
        }
        let mut conditions = Vec::new();
        if self.ready_to_monitor {
            self.sync_state(c);
            conditions.push(if self.is_available() {
                cond(
                    "Available",
                    "True",
                    "AllObjectsAvailable",
                    "All objects available",
                )
            } else {
                cleared("Available")
            });
            conditions.push(if self.is_progressing() {
                cond(
                    "Progressing",
                    "True",
                    "ResourceNotReady",
                    &self.progressing.join("\n"),
                )
            } else {
                cleared("Progressing")
            });
            conditions.push(if self.is_degraded() {
                cond(
                    "Degraded",
                    "True",
                    &self.degraded_reason(),
                    &self.degraded_message(),
                )
            } else {
                cleared("Degraded")
            });
        } else if let Some((reason, msg)) = &self.explicit_degraded {
            conditions.push(cond(
                "Degraded",
                "True",
                "PodFailure",
                &format!("{reason}{msg}"),
            ));
        } else {
            conditions.push(cleared("Degraded"));
        }
        self.set(c, conditions);
    }

    fn degraded_reason(&self) -> String {
        let mut reasons = Vec::new();
        if let Some((r, _)) = &self.explicit_degraded {
            reasons.push(r.clone());
        }
        if !self.failing.is_empty() {
            reasons.push("Some pods are failing".to_string());
        }
        reasons.join("; ")
    }

    fn degraded_message(&self) -> String {
        let mut msgs = Vec::new();
        if let Some((_, m)) = &self.explicit_degraded {
            msgs.push(m.clone());
        }
        msgs.extend(self.failing.iter().cloned());
        msgs.join("\n")
    }

    /// `set`: merges conditions into the TigeraStatus, creating it when missing, writing only
    /// on change.
    fn set(&self, c: &Cluster, conditions: Vec<Value>) {
        let opts = WriteOptions::manager(MANAGER);
        let existing = c
            .get(
                "operator.tigera.io/v1",
                "tigerastatuses",
                None,
                &self.component,
            )
            .ok();
        let mut current: Vec<Value> = existing
            .as_ref()
            .and_then(|t| t.at("/status/conditions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let before = current.clone();
        let now = crate::clock::now_rfc3339();
        for mut new in conditions {
            if let Some(g) = self.observed_generation {
                new["observedGeneration"] = json!(g);
            }
            match current.iter_mut().find(|c| c["type"] == new["type"]) {
                Some(old) => {
                    new["lastTransitionTime"] = if old["status"] == new["status"] {
                        old["lastTransitionTime"].clone()
                    } else {
                        json!(now)
                    };
                    *old = new;
                }
                None => {
                    new["lastTransitionTime"] = json!(now);
                    current.push(new);
                }
            }
        }
        if existing.is_some() && current == before {
            return;
        }
        match existing {
            None => {
                let obj = json!({"apiVersion": "operator.tigera.io/v1", "kind": "TigeraStatus",
                    "metadata": {"name": self.component}, "spec": {}});
                if c.create("operator.tigera.io/v1", "tigerastatuses", None, obj, &opts)
                    .is_ok()
                {
                    let _ = c.modify(
                        "operator.tigera.io/v1",
                        "tigerastatuses",
                        None,
                        &self.component,
                        Some("status"),
                        &opts,
                        |o| o["status"] = json!({"conditions": current}),
                    );
                }
            }
            Some(_) => {
                let _ = c.modify(
                    "operator.tigera.io/v1",
                    "tigerastatuses",
                    None,
                    &self.component,
                    Some("status"),
                    &opts,
                    |o| o["status"]["conditions"] = json!(current),
                );
            }
        }
    }
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message})
}

fn cleared(type_: &str) -> Value {
    cond(type_, "False", "NotAvailable", "Not Available")
}

/// `podsFailing`: the first failing pod among those the object's selector matches.
fn pods_failing(c: &Cluster, owner: &Value) -> Option<String> {
    let ns = s(owner, "/metadata/namespace");
    let labels = owner.at("/spec/selector/matchLabels")?.as_object()?;
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",");
    let pods = c
        .list(
            "v1",
            "pods",
            Some(ns),
            &crate::ListOptions {
                label_selector: Some(selector),
                ..Default::default()
            },
        )
        .ok()?;
    for p in &pods {
        let name = s(p, "/metadata/name");
        if s(p, "/status/phase") == "Failed" {
            return Some(format!("Pod {ns}/{name} has failed"));
        }
        for key in ["initContainerStatuses", "containerStatuses"] {
            for cs in p
                .at(&format!("/status/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let cname = s(cs, "/name");
                match s(cs, "/state/waiting/reason") {
                    "CrashLoopBackOff" => {
                        return Some(format!(
                            "Pod {ns}/{name} has crash looping container: {cname}"
                        ));
                    }
                    "ImagePullBackOff" | "ErrImagePull" => {
                        return Some(format!(
                            "Pod {ns}/{name} failed to pull container image for: {cname}"
                        ));
                    }
                    _ => {}
                }
                if s(cs, "/state/terminated/reason") == "Error" {
                    return Some(format!("Pod {ns}/{name} has terminated container: {cname}"));
                }
            }
        }
    }
    None
}
