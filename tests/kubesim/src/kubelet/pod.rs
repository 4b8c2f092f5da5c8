//! One pod's life on its node, as the kubelet runs it: sandbox and address, init containers in
//! order, image pulls (with `ErrImagePull`/`ImagePullBackOff`), containers started with their
//! behaviour, readiness, restarts with `CrashLoopBackOff` back-off, completion for
//! run-to-completion pods, and graceful deletion.
//!
//! The pod advances on a short tick; its status is written only when it changes, so a steady
//! pod costs nothing but a read.

use crate::pointer::At;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::behaviour::{self, Run};
use super::{KUBELET, Node};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;

const TICK: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
enum State {
    /// Waiting for the sandbox or an earlier init container.
    Created,
    /// Pulling its image until the instant.
    Pulling(Instant),
    /// Could not pull: `ErrImagePull` until the instant, then `ImagePullBackOff`.
    PullFailed {
        until: Instant,
        backoff_until: Instant,
    },
    /// Starting (image present) until the instant.
    Starting(Instant),
    /// Running since `started` (RFC 3339); Ready from `ready_at`; exits at `exit` when its
    /// behaviour ends.
    Running {
        started: String,
        ready_at: Option<Instant>,
        exit: Option<(Instant, i32, String, String)>,
    },
    /// Waiting to restart after a crash.
    BackOff(Instant),
    /// Finished.
    Terminated {
        code: i32,
        message: String,
        started: String,
        finished: String,
    },
}

#[derive(Debug, Clone)]
struct Container {
    spec: Value,
    name: String,
    image: String,
    init: bool,
    state: State,
    restarts: u32,
    last: Option<Value>,
    pull_failures: u32,
}

impl Container {
    fn new(spec: &Value, init: bool) -> Self {
        Self {
            name: spec["name"].as_str().unwrap_or("").to_string(),
            image: spec["image"].as_str().unwrap_or("").to_string(),
            spec: spec.clone(),
            init,
            state: State::Created,
            restarts: 0,
            last: None,
            pull_failures: 0,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        matches!(&self.state, State::Running { ready_at: Some(at), .. } if *at <= now)
    }

    /// Whether nothing will change without a new event: running and Ready for good, or
    /// finished.
    fn steady(&self, now: Instant) -> bool {
        match &self.state {
            State::Running {
                ready_at: Some(at),
                exit: None,
                ..
            } => *at <= now,
            State::Terminated { .. } => true,
            _ => false,
        }
    }

    fn done_ok(&self) -> bool {
        matches!(&self.state, State::Terminated { code: 0, .. })
    }
}

fn back_off(restarts: u32, timing: &crate::sim::Timing) -> Duration {
    // The kubelet's container back-off: 10 s doubling to 5 minutes, in simulated time.
    let secs = (10.0 * 2f64.powi(restarts.min(5) as i32)).min(300.0);
    timing.scaled(secs).max(Duration::from_millis(20))
}

/// Runs `pod` until it is deleted or has finished.
pub async fn run(cluster: Cluster, node_state: Arc<Node>, pod: Value, mut shutdown: Shutdown) {
    let ns = pod
        .at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let name = pod
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = pod
        .at("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let node_name = pod
        .at("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Ok(node) = cluster.get("v1", "nodes", None, &node_name) else {
        return;
    };
    let host_ip = crate::network::node_internal_ip(&node)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let host_network = pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    let restart_policy = pod
        .at("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_string();
    let handle = format!("{ns}/{name}");
    let opts = WriteOptions::manager(KUBELET);
    let start_time = pod
        .at("/status/startTime")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(crate::clock::now_rfc3339);

    let spec_list = |k: &str, init: bool| -> Vec<Container> {
        pod.at(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|c| Container::new(c, init)).collect())
            .unwrap_or_default()
    };
    let mut inits = spec_list("initContainers", true);
    let mut mains = spec_list("containers", false);
    let pod_ip = if host_network {
        host_ip.clone()
    } else {
        node_state
            .allocate(&cluster, &handle, &node)
            .unwrap_or_default()
    };
    let mut last_written = Value::Null;
    let mut rendered_at = 0;

    loop {
        let timing = cluster.sim().timing();
        let now = Instant::now();
        // The pod as the API has it now: deleted, terminating, or still wanted.
        // Read in place, not copied: every pod's kubelet looks every tick.
        let current = match cluster
            .resolve("v1", "pods")
            .and_then(|r| cluster.get_stored(&r, Some(&ns), &name))
        {
            Ok(p) if p.at("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str()) => p,
            _ => {
                node_state.release(&handle);
                return;
            }
        };
        if current.at("/metadata/deletionTimestamp").is_some() {
            let grace = current
                .at("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
                .max(0);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(timing.scaled(grace as f64)) => {}
            }
            let _ = cluster.delete(
                "v1",
                "pods",
                Some(&ns),
                &name,
                &DeleteOptions {
                    grace_period_seconds: Some(0),
                    precondition_uid: Some(uid.clone()),
                    ..Default::default()
                },
            );
            node_state.release(&handle);
            return;
        }

        // Init containers one at a time, then the containers together.
        let init_done = inits.iter().all(Container::done_ok);
        if !init_done {
            if let Some(c) = inits.iter_mut().find(|c| !c.done_ok()) {
                advance(
                    &cluster,
                    &pod,
                    &node_name,
                    c,
                    &restart_policy,
                    &timing,
                    now,
                    &ns,
                    &name,
                );
            }
        } else {
            for c in mains.iter_mut() {
                advance(
                    &cluster,
                    &pod,
                    &node_name,
                    c,
                    &restart_policy,
                    &timing,
                    now,
                    &ns,
                    &name,
                );
            }
        }
        // A settled pod whose object did not change has nothing new to report: skip the
        // render, which every pod would otherwise repeat every tick.
        let settled = inits.iter().chain(mains.iter()).all(|c| c.steady(now));
        if settled && current.rv == rendered_at {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            continue;
        }
        // Only a render of the settled state counts: the tick a container turns Ready is
        // itself settled, and must still be reported.
        rendered_at = if settled { current.rv } else { 0 };
        let status = render(
            &inits,
            &mains,
            init_done,
            &restart_policy,
            &start_time,
            &host_ip,
            &pod_ip,
            now,
            &current,
        );
        if status != last_written {
            let written = status.clone();
            if cluster
                .modify("v1", "pods", Some(&ns), &name, Some("status"), &opts, |p| {
                    merge_status(p, &written)
                })
                .is_ok()
            {
                last_written = status;
            }
        }
        let phase = last_written["phase"].as_str().unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            if !host_network {
                node_state.release(&handle);
            }
            return;
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn advance(
    cluster: &Cluster,
    pod: &Value,
    node: &str,
    c: &mut Container,
    restart_policy: &str,
    timing: &crate::sim::Timing,
    now: Instant,
    ns: &str,
    name: &str,
) {
    let faults = cluster.sim().faults();
    match c.state.clone() {
        State::Created => {
            c.state = State::Pulling(now + Duration::from_millis(timing.image_pull_ms))
        }
        State::Pulling(until) if until <= now => {
            if faults.never_pulls(&c.image, node) {
                c.pull_failures += 1;
                let wait = back_off(c.pull_failures.saturating_sub(1), timing);
                c.state = State::PullFailed {
                    until: now + wait / 2,
                    backoff_until: now + wait,
                };
            } else {
                c.state = State::Starting(now + Duration::from_millis(timing.container_start_ms));
            }
        }
        State::PullFailed { backoff_until, .. } if backoff_until <= now => {
            c.state = State::Pulling(now + Duration::from_millis(timing.image_pull_ms));
        }
        State::Starting(until) | State::BackOff(until) if until <= now => {
            if matches!(c.state, State::BackOff(_)) {
                c.state = State::Starting(now + Duration::from_millis(timing.container_start_ms));
                return;
            }
            let to_completion = c.init || restart_policy != "Always";
            let run = behaviour::decide(cluster, pod, &c.spec, node, to_completion);
            let started = crate::clock::now_rfc3339();
            match run {
                Run::Forever => {
                    let probe = c.spec.get("readinessProbe");
                    let ready_at = match probe {
                        None => now,
                        Some(p) => {
                            let delay = p
                                .get("initialDelaySeconds")
                                .and_then(Value::as_f64)
                                .unwrap_or(0.0);
                            now + Duration::from_millis(timing.readiness_delay_ms)
                                + timing.scaled(delay)
                        }
                    } + faults.extra_ready_delay(&c.image, node);
                    c.state = State::Running {
                        started,
                        ready_at: Some(ready_at),
                        exit: None,
                    };
                }
                Run::Exit { code, log, message } => {
                    let at = now
                        + Duration::from_millis(if code == 0 {
                            timing.job_run_ms
                        } else {
                            timing.container_start_ms
                        });
                    c.state = State::Running {
                        started,
                        ready_at: None,
                        exit: Some((at, code, log, message)),
                    };
                }
            }
        }
        State::Running {
            started,
            exit: Some((at, code, log, message)),
            ..
        } if at <= now => {
            if !log.is_empty() {
                cluster.append_log(ns, name, &c.name, &log);
            }
            let message = if message.is_empty()
                && code != 0
                && c.spec
                    .get("terminationMessagePolicy")
                    .and_then(Value::as_str)
                    == Some("FallbackToLogsOnError")
            {
                log.lines()
                    .rev()
                    .take(80)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                message
            };
            let finished = crate::clock::now_rfc3339();
            let restart = c.init && code != 0 && restart_policy != "Never"
                || !c.init
                    && (restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0));
            let terminated = State::Terminated {
                code,
                message,
                started,
                finished,
            };
            if restart {
                c.last = Some(terminated_json(&terminated));
                c.restarts += 1;
                c.state = State::BackOff(now + back_off(c.restarts - 1, timing));
            } else {
                c.state = terminated;
            }
        }
        _ => {}
    }
}

fn terminated_json(s: &State) -> Value {
    match s {
        State::Terminated {
            code,
            message,
            started,
            finished,
        } => {
            let mut t = json!({"exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" },
                "startedAt": started, "finishedAt": finished, "containerID": "containerd://kubesim"});
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            json!({"terminated": t})
        }
        _ => json!({}),
    }
}

fn container_status(c: &Container, now: Instant) -> Value {
    let (state, ready, started) = match &c.state {
        State::Created => (
            json!({"waiting": {"reason": if c.init { "PodInitializing" } else { "ContainerCreating" }}}),
            false,
            false,
        ),
        // A restart keeps showing the back-off until the new container runs, as the kubelet's
        // status does: only the first start is ContainerCreating.
        State::Starting(_) if c.restarts > 0 => (
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {} in pod", c.name)}}),
            false,
            false,
        ),
        State::Pulling(_) | State::Starting(_) => (
            json!({"waiting": {"reason": "ContainerCreating"}}),
            false,
            false,
        ),
        State::PullFailed { until, .. } => {
            let reason = if *until > now {
                "ErrImagePull"
            } else {
                "ImagePullBackOff"
            };
            let message = if *until > now {
                format!(
                    "failed to pull and unpack image \"{}\": failed to resolve reference \"{}\": not found",
                    c.image, c.image
                )
            } else {
                format!("Back-off pulling image \"{}\"", c.image)
            };
            (
                json!({"waiting": {"reason": reason, "message": message}}),
                false,
                false,
            )
        }
        State::Running { started, .. } => (
            json!({"running": {"startedAt": started}}),
            c.ready(now),
            true,
        ),
        State::BackOff(_) => (
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {} in pod", c.name)}}),
            false,
            false,
        ),
        State::Terminated { .. } => (terminated_json(&c.state), false, false),
    };
    let mut s = json!({
        "name": c.name, "image": c.image, "imageID": format!("{}@sha256:kubesim", c.image.split(':').next().unwrap_or("")),
        "ready": ready, "started": started, "restartCount": c.restarts, "state": state,
        "lastState": c.last.clone().unwrap_or_else(|| json!({})),
    });
    if matches!(
        c.state,
        State::Running { .. } | State::Terminated { .. } | State::BackOff(_)
    ) {
        s["containerID"] = json!("containerd://kubesim");
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn render(
    inits: &[Container],
    mains: &[Container],
    init_done: bool,
    restart_policy: &str,
    start_time: &str,
    host_ip: &str,
    pod_ip: &str,
    now: Instant,
    current: &Value,
) -> Value {
    let all_ready = init_done && !mains.is_empty() && mains.iter().all(|c| c.ready(now));
    let all_done = init_done
        && mains
            .iter()
            .all(|c| matches!(c.state, State::Terminated { .. }));
    let phase = if all_done && restart_policy != "Always" {
        if mains.iter().all(Container::done_ok) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if init_done
        && mains.iter().any(|c| {
            !matches!(
                c.state,
                State::Created | State::Pulling(_) | State::PullFailed { .. } | State::Starting(_)
            )
        })
    {
        "Running"
    } else if inits
        .iter()
        .any(|c| matches!(c.state, State::Terminated { code, .. } if code != 0))
        && restart_policy == "Never"
    {
        "Failed"
    } else {
        "Pending"
    };
    let old = current
        .at("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |kind: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c["type"] == kind && c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(crate::clock::now_rfc3339()));
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let not_ready_reason = if all_done {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            cond("Initialized", init_done, Some("ContainersNotInitialized")),
            cond("Ready", all_ready, Some(not_ready_reason)),
            cond("ContainersReady", all_ready, Some(not_ready_reason)),
            cond("PodScheduled", true, None)
        ],
        "hostIP": host_ip,
        "startTime": start_time,
        "containerStatuses": mains.iter().map(|c| container_status(c, now)).collect::<Vec<_>>(),
    });
    if !host_ip.is_empty() {
        status["hostIPs"] = json!([{"ip": host_ip}]);
    }
    if !pod_ip.is_empty() {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
    }
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(
            inits
                .iter()
                .map(|c| container_status(c, now))
                .collect::<Vec<_>>()
        );
    }
    status
}

/// Writes the kubelet's part of the status, keeping what others set (qosClass, nominated node).
fn merge_status(pod: &mut Value, status: &Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if let Some(m) = status.as_object() {
        for (k, v) in m {
            pod["status"][k] = v.clone();
        }
    }
}
