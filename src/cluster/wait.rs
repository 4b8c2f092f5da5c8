//! Waiting for Calico to roll out, with watches rather than polling.
//!
//! Every check is re-evaluated when the API server reports a change, so the wait ends as soon as
//! the rollout does and the number of requests grows with events, not with time. On timeout the
//! error names the nodes and pods that are not ready and why (CrashLoopBackOff,
//! ImagePullBackOff, …), which is what an operator needs at 3 a.m.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::detect::operator_resource;
use crate::module::progress;
use crate::version::Version;

/// What a rollout must reach.
#[derive(Debug, Clone)]
pub struct RolloutGoal {
    /// The namespace of calico-node (kube-system or calico-system).
    pub namespace: String,
    /// The Calico release every calico-node pod must run.
    pub version: Version,
    /// Deployments that must be available in that namespace (calico-kube-controllers, typha).
    pub deployments: Vec<String>,
    /// Operator installs: wait on TigeraStatus and Installation too.
    pub operator: bool,
    /// Whether `Installation.status.calicoVersion` can be trusted (operator v1.29+).
    pub installation_reports_version: bool,
}

/// Why a wait ended without success.
#[derive(Debug, Clone)]
pub struct NotReady {
    /// One line: what is missing, per node/pod.
    pub message: String,
    /// Nodes whose calico-node is not ready.
    pub nodes: Vec<String>,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Default)]
struct State {
    daemonset: Option<DaemonSet>,
    pods: BTreeMap<String, Pod>,
    deployments: BTreeMap<String, Deployment>,
    tigera_status: Option<DynamicObject>,
    installation: Option<DynamicObject>,
    last_watch_error: Option<String>,
}

enum Update {
    DaemonSet(Event<DaemonSet>),
    Pod(Event<Pod>),
    Deployment(Event<Deployment>),
    TigeraStatus(Event<DynamicObject>),
    Installation(Event<DynamicObject>),
    Error(String),
}

fn apply_event<K: ResourceExt + Clone>(map: &mut BTreeMap<String, K>, ev: Event<K>) {
    match ev {
        Event::Apply(o) | Event::InitApply(o) => {
            map.insert(o.name_any(), o);
        }
        Event::Delete(o) => {
            map.remove(&o.name_any());
        }
        // A re-list replaces what we know; objects re-appear as InitApply.
        Event::Init => map.clear(),
        Event::InitDone => {}
    }
}

fn apply_single<K: ResourceExt + Clone>(slot: &mut Option<K>, ev: Event<K>) {
    match ev {
        Event::Apply(o) | Event::InitApply(o) => *slot = Some(o),
        Event::Delete(_) | Event::Init => *slot = None,
        Event::InitDone => {}
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_version(p: &Pod) -> Option<Version> {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "calico-node"))
        .and_then(|c| c.image.as_deref())
        .and_then(Version::from_image)
}

/// Why a pod is not ready, from its container statuses. An init container that has not
/// completed is the reason (as `kubectl get pods` shows `Init:CrashLoopBackOff`): the main
/// containers only wait for it.
fn pod_problem(p: &Pod) -> String {
    let status = p.status.as_ref();
    let init = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|cs| {
            cs.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_none_or(|t| t.exit_code != 0)
        });
    let mut reasons: Vec<String> = init
        .filter_map(|cs| {
            let running = cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some();
            let problem = if running {
                Some("still running".to_string())
            } else {
                container_problem(cs)
            };
            problem.map(|r| format!("init container {}: {r}", cs.name))
        })
        .collect();
    if reasons.is_empty() {
        reasons = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(container_problem)
            .collect();
    }
    if reasons.is_empty() {
        let phase = status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let sched = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
            .and_then(|c| c.message.clone());
        reasons.push(match sched {
            Some(m) => format!("{phase}: {m}"),
            None => phase,
        });
    }
    reasons.join("; ")
}

/// Why one container is not ready: its waiting reason (with restarts and message), its last
/// exit, or simply that it is not ready; `None` when it is ready.
fn container_problem(cs: &ContainerStatus) -> Option<String> {
    if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        let mut r = w.reason.clone().unwrap_or_else(|| "Waiting".into());
        if cs.restart_count > 0 {
            r.push_str(&format!(" (restarts {})", cs.restart_count));
        }
        if let Some(m) = w.message.as_ref().filter(|m| !m.is_empty()) {
            r.push_str(&format!(": {m}"));
        }
        Some(r)
    } else if let Some(t) = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .filter(|_| !cs.ready)
    {
        Some(format!(
            "{} exited {} ({})",
            cs.name,
            t.exit_code,
            t.message.clone().or(t.reason.clone()).unwrap_or_default()
        ))
    } else if !cs.ready {
        Some(format!("{} not ready", cs.name))
    } else {
        None
    }
}

fn condition(obj: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
}

impl State {
    /// How far the rollout is, in one line for a progress report: nodes whose calico-node runs
    /// the goal's release, of them ready, and the Deployments still waited for.
    fn progress(&self, goal: &RolloutGoal) -> String {
        let live: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let desired = self
            .daemonset
            .as_ref()
            .and_then(|d| d.status.as_ref())
            .map(|s| s.desired_number_scheduled.max(0) as usize)
            .unwrap_or(live.len());
        let updated: Vec<&&Pod> = live
            .iter()
            .filter(|p| pod_version(p).as_ref() == Some(&goal.version))
            .collect();
        let ready = updated.iter().filter(|p| pod_ready(p)).count();
        let mut line = format!(
            "calico-node {}: {}/{desired} nodes updated, {ready}/{desired} ready",
            goal.version,
            updated.len()
        );
        let waiting: Vec<&str> = goal
            .deployments
            .iter()
            .filter(|name| {
                self.deployments.get(*name).is_none_or(|d| {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0)
                        < want
                })
            })
            .map(String::as_str)
            .collect();
        if !waiting.is_empty() {
            line.push_str(&format!("; waiting for {}", waiting.join(", ")));
        }
        line
    }

    /// `Ok` when the goal is reached, else what is missing.
    fn check(&self, goal: &RolloutGoal) -> Result<(), NotReady> {
        let mut missing = Vec::new();
        let mut nodes = Vec::new();
        match &self.daemonset {
            None => missing.push(format!(
                "DaemonSet {}/calico-node does not exist yet",
                goal.namespace
            )),
            Some(ds) => {
                let st = ds.status.clone().unwrap_or_default();
                let generation = ds.metadata.generation.unwrap_or(0);
                if st.observed_generation.unwrap_or(0) < generation {
                    missing.push(
                        "calico-node DaemonSet change not yet observed by its controller"
                            .to_string(),
                    );
                }
                let desired = st.desired_number_scheduled;
                if st.updated_number_scheduled.unwrap_or(0) < desired
                    || st.number_available.unwrap_or(0) < desired
                {
                    missing.push(format!(
                        "calico-node {}/{} updated, {}/{} available",
                        st.updated_number_scheduled.unwrap_or(0),
                        desired,
                        st.number_available.unwrap_or(0),
                        desired
                    ));
                }
                let live: Vec<&Pod> = self
                    .pods
                    .values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                for p in &live {
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "(unscheduled)".into());
                    let version = pod_version(p);
                    if version.as_ref() != Some(&goal.version) {
                        nodes.push(node.clone());
                        missing.push(format!(
                            "node {node}: pod {} runs {} (not yet replaced)",
                            p.name_any(),
                            version
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "an unknown version".into())
                        ));
                    } else if !pod_ready(p) {
                        nodes.push(node.clone());
                        missing.push(format!(
                            "node {node}: pod {} {}",
                            p.name_any(),
                            pod_problem(p)
                        ));
                    }
                }
                if (live.len() as i32) < desired {
                    missing.push(format!(
                        "{} of {desired} calico-node pods exist",
                        live.len()
                    ));
                }
            }
        }
        for name in &goal.deployments {
            match self.deployments.get(name) {
                None => missing.push(format!(
                    "Deployment {}/{name} does not exist yet",
                    goal.namespace
                )),
                Some(d) => {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = d.status.clone().unwrap_or_default();
                    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
                        || st.updated_replicas.unwrap_or(0) < want
                        || st.available_replicas.unwrap_or(0) < want
                    {
                        missing.push(format!(
                            "Deployment {name}: {}/{want} updated, {}/{want} available",
                            st.updated_replicas.unwrap_or(0),
                            st.available_replicas.unwrap_or(0)
                        ));
                    }
                }
            }
        }
        if goal.operator {
            match &self.tigera_status {
                None => missing.push("TigeraStatus calico does not exist yet".to_string()),
                Some(ts) => {
                    let available = condition(ts, "Available");
                    let progressing = condition(ts, "Progressing");
                    let degraded = condition(ts, "Degraded");
                    if let Some((s, reason, msg)) = &degraded
                        && s == "True"
                    {
                        missing.push(format!("TigeraStatus calico Degraded ({reason}): {msg}"));
                    }
                    if available.as_ref().map(|c| c.0.as_str()) != Some("True") {
                        missing.push("TigeraStatus calico not Available".to_string());
                    }
                    if let Some((s, _, msg)) = &progressing
                        && s == "True"
                    {
                        missing.push(format!("TigeraStatus calico Progressing: {msg}"));
                    }
                }
            }
            if goal.installation_reports_version {
                let v = self
                    .installation
                    .as_ref()
                    .and_then(|i| i.data.pointer("/status/calicoVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or("none");
                if v.trim_start_matches('v') != goal.version.0.to_string() {
                    missing.push(format!(
                        "Installation status.calicoVersion is {v}, not {}",
                        goal.version
                    ));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        nodes.sort();
        nodes.dedup();
        if let Some(e) = &self.last_watch_error {
            missing.push(format!("last watch error: {e}"));
        }
        Err(NotReady {
            message: missing.join("; "),
            nodes,
        })
    }
}

fn tagged<K, F>(
    s: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    f: F,
) -> BoxStream<'static, Update>
where
    K: Send + 'static,
    F: Fn(Event<K>) -> Update + Send + 'static,
{
    s.default_backoff()
        .map(move |r| match r {
            Ok(ev) => f(ev),
            Err(e) => Update::Error(e.to_string()),
        })
        .boxed()
}

/// Waits until the goal is reached or `timeout` passes.
pub async fn rollout(
    client: &Client,
    goal: &RolloutGoal,
    timeout: Duration,
) -> Result<(), NotReady> {
    let ns = goal.namespace.as_str();
    let cfg = watcher::Config::default;
    let mut streams = vec![
        tagged(
            watcher::watcher(
                Api::<DaemonSet>::namespaced(client.clone(), ns),
                cfg().fields("metadata.name=calico-node"),
            ),
            Update::DaemonSet,
        ),
        tagged(
            watcher::watcher(
                Api::<Pod>::namespaced(client.clone(), ns),
                cfg().labels("k8s-app=calico-node"),
            ),
            Update::Pod,
        ),
    ];
    if !goal.deployments.is_empty() {
        streams.push(tagged(
            watcher::watcher(Api::<Deployment>::namespaced(client.clone(), ns), cfg()),
            Update::Deployment,
        ));
    }
    if goal.operator {
        let ts: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &operator_resource("TigeraStatus", "tigerastatuses"),
        );
        streams.push(tagged(
            watcher::watcher(ts, cfg().fields("metadata.name=calico")),
            Update::TigeraStatus,
        ));
        let inst: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &operator_resource("Installation", "installations"),
        );
        streams.push(tagged(
            watcher::watcher(inst, cfg().fields("metadata.name=default")),
            Update::Installation,
        ));
    }
    let mut updates = futures::stream::select_all(streams);
    let mut state = State::default();
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut next_report = started + progress::INTERVAL;
    loop {
        let next = tokio::time::timeout_at(deadline.min(next_report), updates.next()).await;
        let update = match next {
            Ok(Some(u)) => u,
            Ok(None) => break,
            // Waking up to report: the wait goes on.
            Err(_) if tokio::time::Instant::now() < deadline => {
                progress::report(&format!(
                    "{} ({} s of {} s)",
                    state.progress(goal),
                    started.elapsed().as_secs(),
                    timeout.as_secs()
                ));
                next_report += progress::INTERVAL;
                continue;
            }
            Err(_) => {
                let why = state.check(goal).err().unwrap_or_else(|| NotReady {
                    message: "unknown".into(),
                    nodes: vec![],
                });
                return Err(NotReady {
                    message: format!(
                        "not rolled out to {} within {}s: {}",
                        goal.version,
                        timeout.as_secs(),
                        why.message
                    ),
                    nodes: why.nodes,
                });
            }
        };
        match update {
            Update::DaemonSet(ev) => apply_single(&mut state.daemonset, ev),
            Update::Pod(ev) => apply_event(&mut state.pods, ev),
            Update::Deployment(ev) => apply_event(&mut state.deployments, ev),
            Update::TigeraStatus(ev) => apply_single(&mut state.tigera_status, ev),
            Update::Installation(ev) => apply_single(&mut state.installation, ev),
            Update::Error(e) => {
                state.last_watch_error = Some(e);
                continue;
            }
        }
        if state.check(goal).is_ok() {
            return Ok(());
        }
    }
    state.check(goal)
}
