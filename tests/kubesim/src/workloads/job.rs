//! The Job controller: pods up to `parallelism` until `completions` succeed; `backoffLimit`
//! failed pods or `activeDeadlineSeconds` fail the Job (its active pods deleted); status
//! counts and the `Complete`/`Failed` conditions; `ttlSecondsAfterFinished` clean-up.

use serde_json::{Value, json};

use super::{drive, list, owned_by, owner_ref, pod_ready, pod_terminal, write_status};
use crate::cluster::{Cluster, DeleteOptions, Propagation, WriteOptions};
use crate::controllers::Shutdown;

const MANAGER: &str = "job-controller";

/// Runs the controller until shutdown.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("batch/v1", "jobs"), ("v1", "pods")],
        |c| {
            let pods = list(c, "v1", "pods");
            for job in list(c, "batch/v1", "jobs") {
                reconcile(c, &job, &pods);
            }
        },
    )
    .await
}

fn job_condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = crate::clock::now_rfc3339();
    json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now})
}

fn seconds_since(ts: &str) -> i64 {
    crate::clock::parse_rfc3339(ts)
        .map(|t| crate::clock::now_unix() - t)
        .unwrap_or(0)
}

fn reconcile(cluster: &Cluster, job: &Value, pods: &[Value]) {
    if job.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = job
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("job");
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let timing = cluster.sim().timing();
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let finished = conditions
        .iter()
        .find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
    if let Some(done) = finished {
        // ttlSecondsAfterFinished: the TTL controller deletes the Job and, in the foreground,
        // its pods.
        if let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_i64)
        {
            let since = done["lastTransitionTime"]
                .as_str()
                .map(seconds_since)
                .unwrap_or(0);
            if timing
                .scaled(since as f64 / timing.time_scale.max(1e-9))
                .as_secs_f64()
                >= timing.scaled(ttl as f64).as_secs_f64()
            {
                let _ = cluster.delete(
                    "batch/v1",
                    "jobs",
                    Some(ns),
                    name,
                    &DeleteOptions {
                        propagation: Some(Propagation::Foreground),
                        ..Default::default()
                    },
                );
            }
        }
        return;
    }
    let mine: Vec<&Value> = pods.iter().filter(|p| owned_by(p, uid)).collect();
    let active: Vec<&&Value> = mine
        .iter()
        .filter(|p| !pod_terminal(p) && p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let succeeded = mine
        .iter()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded"))
        .count() as i64;
    let failed = mine
        .iter()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Failed"))
        .count() as i64;
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let backoff_limit = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let start = job
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(crate::clock::now_rfc3339);
    let kill_active = || {
        for p in &active {
            let n = p
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = cluster.delete("v1", "pods", Some(ns), n, &DeleteOptions::default());
        }
    };
    let mut status = json!({
        "startTime": start,
        "active": if active.is_empty() { Value::Null } else { json!(active.len()) },
        "ready": active.iter().filter(|p| pod_ready(p)).count(),
        "succeeded": if succeeded > 0 { json!(succeeded) } else { Value::Null },
        "failed": if failed > 0 { json!(failed) } else { Value::Null },
    });
    let deadline = job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64);
    let elapsed_real = crate::clock::parse_rfc3339(&start)
        .map(|t| crate::clock::now_unix() - t)
        .unwrap_or(0);
    if succeeded >= completions {
        status["completionTime"] = json!(crate::clock::now_rfc3339());
        status["conditions"] = json!([job_condition("Complete", "", "")]);
        status["active"] = Value::Null;
    } else if failed > backoff_limit {
        kill_active();
        status["conditions"] = json!([job_condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit"
        )]);
        status["active"] = Value::Null;
    } else if deadline
        .is_some_and(|d| elapsed_real as f64 >= timing.scaled(d as f64).as_secs_f64().ceil())
    {
        kill_active();
        status["conditions"] = json!([job_condition(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline"
        )]);
        status["active"] = Value::Null;
    } else {
        let wanted = parallelism.min(completions - succeeded) - active.len() as i64;
        for _ in 0..wanted.max(0) {
            let mut template = job
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut meta = template
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            for (k, v) in [
                ("controller-uid", uid),
                ("job-name", name),
                ("batch.kubernetes.io/controller-uid", uid),
                ("batch.kubernetes.io/job-name", name),
            ] {
                meta["labels"][k] = json!(v);
            }
            meta["generateName"] = json!(format!("{name}-"));
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = json!([owner_ref(job)]);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].take()});
            let _ = cluster.create("v1", "pods", Some(ns), pod, &WriteOptions::manager(MANAGER));
        }
    }
    write_status(cluster, "batch/v1", "jobs", job, status, MANAGER);
}
