//! The Job controller (`pkg/controller/job`) and the TTL-after-finished controller.
//!
//! Pods up to `parallelism` until `completions` succeed (NonIndexed, or Indexed with
//! `batch.kubernetes.io/job-completion-index`); failed pods are replaced after the pod
//! failure back-off (10 s doubling, simulated); more than `backoffLimit` failures (or
//! container restarts with `restartPolicy: OnFailure`) or `activeDeadlineSeconds` fail the
//! Job and delete its active pods. Status `active`, `ready` (1.24+), `terminating` (1.29+),
//! `succeeded`, `failed`, `uncountedTerminatedPods` (1.26+), `startTime`,
//! `completionTime`, `completedIndexes`, and the conditions per version: before 1.31 the
//! terminal `Complete` / `Failed` at once; from 1.31 first `SuccessCriteriaMet` /
//! `FailureTarget`, and the terminal condition once no pod is still terminating.
//!
//! Pod labels come from the template, which the API server labelled (`job-name`,
//! `controller-uid` and their `batch.kubernetes.io/` forms). Pod tracking finalizers are not
//! modelled: pods are counted by phase.
//!
//! `ttlSecondsAfterFinished`: the TTL controller deletes a finished Job with foreground
//! propagation (its pods go first), as upstream.

use crate::pointer::At;
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    by_controller, deleting, drive, int, list, owned_by, pod_active, pod_from_template, pod_ready,
    pod_terminal, s, scaled, sooner, write_status,
};
use crate::cluster::{Cluster, DeleteOptions, Propagation, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "job-controller";
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// What the controller remembers between passes (in scaled time, finer than timestamps).
#[derive(Default)]
struct Memory {
    started: HashMap<String, Instant>,
    /// Failures seen and when the count last went up.
    failures: HashMap<String, (i64, Instant)>,
}

/// Runs the Job controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    let mut memory = Memory::default();
    drive(
        cluster,
        shutdown,
        &[("batch/v1", "jobs"), ("v1", "pods")],
        move |c| {
            let jobs = list(c, "batch/v1", "jobs");
            if jobs.is_empty() {
                return None;
            }
            let pods = list(c, "v1", "pods");
            let owned = by_controller(&pods);
            let mut requeue = None;
            for job in &jobs {
                let mine = owned
                    .get(s(job, "/metadata/uid"))
                    .map_or(&[][..], Vec::as_slice);
                requeue = sooner(requeue, sync(c, job, mine, &mut memory));
            }
            let live: BTreeSet<&str> = jobs.iter().map(|j| s(j, "/metadata/uid")).collect();
            memory.started.retain(|k, _| live.contains(k.as_str()));
            memory.failures.retain(|k, _| live.contains(k.as_str()));
            requeue
        },
    )
    .await
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = crate::clock::now_rfc3339();
    let mut c =
        json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

fn has_condition(job: &Value, kind: &str) -> Option<Value> {
    job.at("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// Whether the Job has finished (`Complete` or `Failed` True).
pub fn finished(job: &Value) -> Option<Value> {
    has_condition(job, "Complete").or_else(|| has_condition(job, "Failed"))
}

fn index_of(pod: &Value) -> Option<i64> {
    s(
        pod,
        &format!("/metadata/annotations/{}", INDEX.replace('/', "~1")),
    )
    .parse()
    .ok()
}

/// "0-2,4" from a set of indexes.
fn index_ranges(set: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn new_pod(job: &Value, index: Option<i64>, minor: u32) -> Value {
    let name = s(job, "/metadata/name");
    let template = job
        .at("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let Some(i) = index else {
        return pod_from_template(&template, job, name);
    };
    let mut pod = pod_from_template(&template, job, &format!("{name}-{i}"));
    pod["metadata"]["annotations"][INDEX] = json!(i.to_string());
    if minor >= 28 {
        pod["metadata"]["labels"][INDEX] = json!(i.to_string());
    }
    pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
    if let Some(containers) = pod["spec"]["containers"].as_array_mut() {
        for c in containers {
            let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef":
                {"fieldPath": format!("metadata.annotations['{INDEX}']")}}});
            match c["env"].as_array_mut() {
                Some(list) => list.push(env),
                None => c["env"] = json!([env]),
            }
        }
    }
    pod
}

fn restarts(pod: &Value) -> i64 {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| {
            pod.at(&format!("/status/{k}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["restartCount"].as_i64())
        .sum()
}

/// One Job's pass over `owned`, the pods it controls (from this pass's list).
fn sync(cluster: &Cluster, job: &Value, owned: &[&Value], memory: &mut Memory) -> Option<Duration> {
    if deleting(job) || finished(job).is_some() {
        return None;
    }
    let minor = cluster.version().minor;
    let ns = s(job, "/metadata/namespace").to_string();
    let uid = s(job, "/metadata/uid").to_string();
    let mine: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| s(p, "/metadata/namespace") == ns)
        .collect();
    let mut active: Vec<&Value> = mine.iter().copied().filter(|p| pod_active(p)).collect();
    let phase = |p: &&Value, ph: &str| s(p, "/status/phase") == ph;
    let succeeded_pods: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|p| phase(p, "Succeeded"))
        .collect();
    let succeeded = succeeded_pods.len() as i64;
    let failed = mine.iter().filter(|p| phase(p, "Failed")).count() as i64;
    let indexed = s(job, "/spec/completionMode") == "Indexed";
    let completions = int(job, "/spec/completions");
    let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
    let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6);
    let suspended = job.at("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let now = Instant::now();

    let mut status = json!({});
    let start_time = match job.at("/status/startTime").and_then(Value::as_str) {
        Some(t) => Some(t.to_string()),
        None if !suspended => {
            memory.started.insert(uid.clone(), now);
            Some(crate::clock::now_rfc3339())
        }
        None => None,
    };
    if let Some(t) = &start_time {
        status["startTime"] = json!(t);
    }
    // Failure back-off bookkeeping.
    let entry = memory.failures.entry(uid.clone()).or_insert((failed, now));
    if failed > entry.0 {
        *entry = (failed, now);
    }
    let last_failure = entry.1;

    let mut requeue = None;
    // A target condition recorded earlier carries the verdict (1.31+).
    let mut verdict: Option<(&str, String, String)> = None;
    if let Some(c) = has_condition(job, "FailureTarget") {
        verdict = Some(("Failed", s(&c, "/reason").into(), s(&c, "/message").into()));
    } else if let Some(c) = has_condition(job, "SuccessCriteriaMet") {
        verdict = Some((
            "Complete",
            s(&c, "/reason").into(),
            s(&c, "/message").into(),
        ));
    }
    let on_failure = s(job, "/spec/template/spec/restartPolicy") == "OnFailure";
    let restart_total: i64 = active
        .iter()
        .filter(|p| matches!(s(p, "/status/phase"), "Running" | "Pending"))
        .map(|p| restarts(p))
        .sum();
    let past_backoff_on_failure = on_failure
        && if backoff_limit == 0 {
            restart_total > 0
        } else {
            restart_total >= backoff_limit
        };
    if verdict.is_none() {
        if failed > backoff_limit || past_backoff_on_failure {
            verdict = Some((
                "Failed",
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let (Some(deadline), false) = (int(job, "/spec/activeDeadlineSeconds"), suspended)
        {
            let started = *memory.started.entry(uid.clone()).or_insert_with(|| {
                let age = start_time
                    .as_deref()
                    .and_then(crate::clock::parse_rfc3339)
                    .map(|t| (crate::clock::now_unix() - t).max(0) as u64)
                    .unwrap_or(0);
                now.checked_sub(Duration::from_secs(age)).unwrap_or(now)
            });
            let allowed = super::deadline(deadline as f64);
            let elapsed = now.duration_since(started);
            if elapsed >= allowed {
                verdict = Some((
                    "Failed",
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                requeue = Some(allowed - elapsed);
            }
        }
    }
    // Whether this pass created or deleted pods, so the counts below must read them again.
    let wrote = Cell::new(false);
    let delete = |p: &Value| {
        wrote.set(true);
        let _ = cluster.delete(
            "v1",
            "pods",
            Some(&ns),
            s(p, "/metadata/name"),
            &DeleteOptions::default(),
        );
    };
    let mut completed_indexes = BTreeSet::new();
    if indexed {
        for p in &succeeded_pods {
            if let Some(i) = index_of(p).filter(|i| completions.is_none_or(|c| *i < c)) {
                completed_indexes.insert(i);
            }
        }
    }
    let done_count = if indexed {
        completed_indexes.len() as i64
    } else {
        succeeded
    };
    match verdict {
        Some(("Failed", _, _)) => {
            for p in &active {
                delete(p);
            }
            active.clear();
        }
        Some(_) => {}
        None => {
            // manageJob
            let want_active = if suspended {
                0
            } else {
                match completions {
                    None if succeeded > 0 => active.len() as i64,
                    None => parallelism,
                    Some(c) => (c - done_count).clamp(0, parallelism),
                }
            };
            let surplus = active.len() as i64 - want_active;
            if surplus > 0 {
                // Not yet scheduled or not ready first, then the newest.
                active.sort_by_key(|p| {
                    (
                        !s(p, "/spec/nodeName").is_empty(),
                        pod_ready(p),
                        std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
                    )
                });
                for p in active.drain(..surplus as usize) {
                    delete(p);
                }
            } else if surplus < 0 {
                let backoff = if failed > 0 {
                    let secs = (10.0 * 2f64.powi((failed - 1).min(16) as i32)).min(600.0);
                    scaled(cluster, secs)
                } else {
                    Duration::ZERO
                };
                let waited = now.duration_since(last_failure);
                if waited < backoff {
                    requeue = sooner(requeue, Some(backoff - waited));
                } else {
                    let mut wanted: Vec<Option<i64>> = Vec::new();
                    if indexed {
                        let busy: BTreeSet<i64> =
                            active.iter().filter_map(|p| index_of(p)).collect();
                        let total = completions.unwrap_or(0);
                        for i in (0..total)
                            .filter(|i| !completed_indexes.contains(i) && !busy.contains(i))
                            .take((-surplus) as usize)
                        {
                            wanted.push(Some(i));
                        }
                    } else {
                        wanted.resize((-surplus).min(500) as usize, None);
                    }
                    for index in wanted {
                        wrote.set(true);
                        let _ = cluster.create(
                            "v1",
                            "pods",
                            Some(&ns),
                            new_pod(job, index, minor),
                            &WriteOptions::manager(MANAGER),
                        );
                    }
                }
            }
            let complete = match completions {
                None => succeeded > 0 && active.is_empty(),
                Some(c) => done_count >= c && active.is_empty(),
            };
            if complete {
                verdict = Some(if minor >= 31 {
                    (
                        "Complete",
                        "CompletionsReached".into(),
                        "Reached expected number of succeeded pods".into(),
                    )
                } else {
                    ("Complete", String::new(), String::new())
                });
            }
        }
    }
    // Pods still on their way out (after a deletion).
    let reread;
    let fresh: Vec<&Value> = if wrote.get() {
        reread = cluster
            .list_shared("v1", "pods", Some(&ns), &Default::default())
            .unwrap_or_default();
        reread
            .iter()
            .map(|p| &p.value)
            .filter(|p| owned_by(p, &uid))
            .collect()
    } else {
        mine.clone()
    };
    let terminating = fresh
        .iter()
        .filter(|p| deleting(p) && !pod_terminal(p))
        .count() as i64;
    let active_now: Vec<&Value> = fresh.iter().copied().filter(|p| pod_active(p)).collect();

    let mut conditions = job
        .at("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut completion_time = Value::Null;
    if let Some((kind, reason, message)) = &verdict {
        let target = if *kind == "Failed" {
            "FailureTarget"
        } else {
            "SuccessCriteriaMet"
        };
        let staged = minor >= 31;
        if staged && !conditions.iter().any(|c| c["type"] == target) {
            conditions.push(condition(target, reason, message));
        }
        if !staged || terminating == 0 {
            conditions.push(condition(kind, reason, message));
            if *kind == "Complete" {
                completion_time = json!(crate::clock::now_rfc3339());
            }
        } else {
            requeue = sooner(requeue, Some(Duration::from_millis(50)));
        }
    }
    let omit_zero = |v: i64| if v == 0 { Value::Null } else { json!(v) };
    status["active"] = omit_zero(active_now.len() as i64);
    status["succeeded"] = omit_zero(succeeded);
    status["failed"] = omit_zero(failed);
    if minor >= 24 {
        status["ready"] = json!(active_now.iter().filter(|p| pod_ready(p)).count());
    }
    if minor >= 29 {
        status["terminating"] = json!(terminating);
    }
    if minor >= 26 {
        status["uncountedTerminatedPods"] = json!({});
    }
    if indexed {
        status["completedIndexes"] = if completed_indexes.is_empty() {
            Value::Null
        } else {
            json!(index_ranges(&completed_indexes))
        };
    }
    status["completionTime"] = completion_time;
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    write_status(cluster, "batch/v1", "jobs", job, status, MANAGER);
    requeue
}

/// Runs the TTL-after-finished controller until shutdown: finished Jobs with
/// `ttlSecondsAfterFinished` are deleted (foreground) that many simulated seconds after
/// they finished.
pub async fn run_ttl(cluster: Cluster, shutdown: Shutdown) {
    let mut seen: HashMap<String, Instant> = HashMap::new();
    drive(cluster, shutdown, &[("batch/v1", "jobs")], move |c| {
        let now = Instant::now();
        let mut requeue = None;
        let jobs = list(c, "batch/v1", "jobs");
        for job in &jobs {
            let Some(ttl) = int(job, "/spec/ttlSecondsAfterFinished") else {
                continue;
            };
            let Some(done) = finished(job) else { continue };
            if deleting(job) {
                continue;
            }
            let finished_at = *seen
                .entry(s(job, "/metadata/uid").to_string())
                .or_insert_with(|| {
                    let age = done["lastTransitionTime"]
                        .as_str()
                        .and_then(crate::clock::parse_rfc3339)
                        .map(|t| (crate::clock::now_unix() - t - 1).max(0) as u64)
                        .unwrap_or(0);
                    now.checked_sub(Duration::from_secs(age)).unwrap_or(now)
                });
            let expires = finished_at + scaled(c, ttl as f64);
            if now >= expires {
                let _ = c.delete(
                    "batch/v1",
                    "jobs",
                    Some(s(job, "/metadata/namespace")),
                    s(job, "/metadata/name"),
                    &DeleteOptions {
                        propagation: Some(Propagation::Foreground),
                        ..Default::default()
                    },
                );
            } else {
                requeue = sooner(requeue, Some(expires - now));
            }
        }
        let live: BTreeSet<&str> = jobs.iter().map(|j| s(j, "/metadata/uid")).collect();
        seen.retain(|k, _| live.contains(k.as_str()));
        requeue
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_render_as_ranges() {
        let set: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(index_ranges(&set), "0-2,4,6-7");
        assert_eq!(index_ranges(&BTreeSet::new()), "");
    }
}
