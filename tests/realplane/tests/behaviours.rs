//! kubesim's faults on the real plane, each as a user would see it with kubectl: a crash loop
//! (CrashLoopBackOff, restarts rising), an image that cannot be pulled (ErrImagePull, then
//! ImagePullBackOff), slow readiness, a pod that is never ready, a node whose kubelet is gone;
//! and everything recovers when the faults are lifted. Then the nettest probe pods: answered
//! from the network model, a partitioned node failing its probes.

use std::time::{Duration, Instant};

use realplane::{Binaries, ImageFault, NetworkFaults, Options, RealPlane, SimFaults, SlowReady};
use serde_json::{Value, json};

fn plane(nodes: usize) -> Option<RealPlane> {
    let binaries = Binaries::for_test()?;
    let options = Options {
        nodes,
        ..Options::default()
    };
    Some(RealPlane::start_with(binaries, options).unwrap_or_else(|e| panic!("{e}")))
}

fn kubectl(p: &RealPlane, args: &[&str]) -> String {
    let out = p.kubectl(args).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// The pods of a Deployment's app label.
fn pods(p: &RealPlane, app: &str) -> Vec<Value> {
    p.list("v1", "pods")
        .into_iter()
        .filter(|o| {
            o["metadata"]["labels"]["app"] == app && o["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

fn wait(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<String>) {
    let until = Instant::now() + timeout;
    loop {
        let Some(last) = check() else { return };
        assert!(
            Instant::now() < until,
            "{what} not within {timeout:?}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn faults_show_as_a_kubelet_would_show_them_and_lift() {
    let Some(p) = plane(3) else { return };
    p.set_faults(&SimFaults {
        crash_loop: vec![ImageFault {
            image: "*example/crashy:1".into(),
            nodes: vec![],
        }],
        never_pull: vec![ImageFault {
            image: "*example/missing:1".into(),
            nodes: vec![],
        }],
        slow_ready: vec![
            SlowReady {
                image: "*example/slow:1".into(),
                nodes: vec![],
                seconds: 4.0,
            },
            SlowReady {
                image: "*example/never:1".into(),
                nodes: vec![],
                seconds: 1e9,
            },
        ],
        not_ready_nodes: vec!["w2".into()],
        ..SimFaults::default()
    })
    .unwrap();
    let begun = Instant::now();
    for app in ["crashy", "missing", "slow", "never"] {
        kubectl(
            &p,
            &[
                "create",
                "deployment",
                app,
                &format!("--image=registry.example/example/{app}:1"),
            ],
        );
    }

    wait("w2 Unknown", Duration::from_secs(30), || {
        let n = p.get("v1", "nodes", None, "w2").unwrap();
        let c = n["status"]["conditions"].to_string();
        let down = c.contains("NodeStatusUnknown") && !c.contains("KubeletReady");
        (!down).then_some(c)
    });
    wait("a rising crash loop", Duration::from_secs(60), || {
        let pods = pods(&p, "crashy");
        let s = pods
            .first()
            .map(|p| p["status"]["containerStatuses"][0].clone())
            .unwrap_or_default();
        let looping = s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && s["restartCount"].as_i64().unwrap_or(0) >= 2
            && s["lastState"]["terminated"]["exitCode"] == 1;
        (!looping).then(|| s.to_string())
    });
    let mut seen = std::collections::BTreeSet::new();
    wait(
        "ErrImagePull then ImagePullBackOff",
        Duration::from_secs(60),
        || {
            let pods = pods(&p, "missing");
            let Some(pod) = pods.first() else {
                return Some("no pod yet".into());
            };
            seen.insert(
                pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            let both = seen.contains("ErrImagePull")
                && seen.contains("ImagePullBackOff")
                && pod["status"]["phase"] == "Pending";
            (!both).then(|| format!("{seen:?} {}", pod["status"]))
        },
    );
    wait("the slow pod ready", Duration::from_secs(60), || {
        let pods = pods(&p, "slow");
        (!pods.first().is_some_and(ready))
            .then(|| format!("{:?}", pods.first().map(|p| &p["status"])))
    });
    assert!(
        begun.elapsed() >= Duration::from_secs(4),
        "ready before its delay"
    );
    let never = pods(&p, "never");
    assert_eq!(never.len(), 1);
    assert_eq!(
        never[0]["status"]["phase"], "Running",
        "{}",
        never[0]["status"]
    );
    assert!(!ready(&never[0]), "{}", never[0]["status"]);
    // kubectl says what a user would read.
    let table = kubectl(&p, &["get", "pods", "-o", "wide"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    assert!(
        table.contains("ImagePullBackOff") || table.contains("ErrImagePull"),
        "{table}"
    );
    assert!(
        !table.contains(" w2 "),
        "nothing starts on the node that is down: {table}"
    );

    p.set_faults(&SimFaults::default()).unwrap();
    wait("everything ready again", Duration::from_secs(90), || {
        let not_ready: Vec<String> = ["crashy", "missing", "never"]
            .iter()
            .flat_map(|a| pods(&p, a))
            .filter(|o| !ready(o))
            .map(|o| format!("{} {}", o["metadata"]["name"], o["status"]))
            .collect();
        let w2 = p.get("v1", "nodes", None, "w2").unwrap()["status"]["conditions"].to_string();
        let up = w2.contains("KubeletReady");
        (!not_ready.is_empty() || !up).then(|| format!("{not_ready:#?} w2: {w2}"))
    });
    let crashy = &pods(&p, "crashy")[0]["status"]["containerStatuses"][0];
    assert!(
        crashy["restartCount"].as_i64().unwrap() >= 2,
        "restarts are kept: {crashy}"
    );
}

/// A probe Job as calico_nettest writes one: the script mounted from a ConfigMap with the
/// targets, pinned to a node.
fn probe_job(node: &str, targets: &str) -> Value {
    json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("targets-{node}")},
            "data": {"targets": targets, "probe.sh": "# the real script is not run here\n"}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("probe-{node}")},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "nodeName": node,
                "containers": [{"name": "probe", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                    "command": ["bash", "/etc/calico-nettest/probe.sh"],
                    "volumeMounts": [{"name": "probe", "mountPath": "/etc/calico-nettest"}]}],
                "volumes": [{"name": "probe", "configMap": {"name": format!("targets-{node}")}}]}}}}
    ])
}

#[test]
fn probe_pods_complete_with_the_contracts_message_and_a_partition_shows() {
    let Some(p) = plane(3) else { return };
    // A server on w2, as calico_nettest deploys them.
    kubectl(
        &p,
        &[
            "run",
            "server",
            "--image=registry.k8s.io/e2e-test-images/agnhost:2.53",
            "--overrides={\"spec\": {\"nodeName\": \"w2\"}}",
            "--port=9376",
            "--",
            "serve-hostname",
            "--http=true",
            "--port=9376",
        ],
    );
    let mut ip = String::new();
    wait("the server's address", Duration::from_secs(30), || {
        let Some(s) = p.get("v1", "pods", Some("default"), "server") else {
            return Some("no pod yet".into());
        };
        ip = s["status"]["podIP"].as_str().unwrap_or("").to_string();
        (!ready(&s) || ip.is_empty()).then(|| s["status"].to_string())
    });
    let run_probe = |node: &str, targets: &str| -> Value {
        let file = p.dir().join(format!("probe-{node}.json"));
        std::fs::write(
            &file,
            json!({"apiVersion": "v1", "kind": "List", "items": probe_job(node, targets)})
                .to_string(),
        )
        .unwrap();
        kubectl(&p, &["apply", "-f", &file.display().to_string()]);
        let mut message = Value::Null;
        wait(
            "the probe's termination message",
            Duration::from_secs(60),
            || {
                let pods = p.list("v1", "pods");
                let job = format!("probe-{node}");
                let Some(pod) = pods
                    .iter()
                    .find(|o| o["metadata"]["labels"]["job-name"] == job)
                else {
                    return Some("no pod yet".into());
                };
                let t = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
                message = t["message"]
                    .as_str()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or_default();
                let done = pod["status"]["phase"] == "Succeeded" && !message.is_null();
                (!done).then(|| pod["status"].to_string())
            },
        );
        wait("the Job complete", Duration::from_secs(30), || {
            let job = p
                .get(
                    "batch/v1",
                    "jobs",
                    Some("default"),
                    &format!("probe-{node}"),
                )
                .unwrap_or_default();
            (job["status"]["succeeded"] != 1).then(|| job["status"].to_string())
        });
        message
    };
    let to_server = format!("to-server http {ip} 9376 server -\n");
    let healthy = run_probe(
        "w1",
        &format!("{to_server}dns dns kubernetes.default - -\n"),
    );
    assert_eq!(
        healthy,
        json!({"v": 1, "node": "w1", "total": 2, "ok": 2, "failed": [], "truncated": false})
    );

    p.set_faults(&SimFaults {
        network: NetworkFaults::partition(["w2"]),
        ..SimFaults::default()
    })
    .unwrap();
    let cut = run_probe("cp1", &to_server);
    assert_eq!(cut["ok"], 0, "{cut}");
    assert_eq!(cut["failed"], json!([["to-server", "timeout"]]), "{cut}");
}
