//! The workload controllers against the in-process API: DaemonSet rollouts (maxUnavailable
//! node by node with exact status, maxSurge, OnDelete) and ControllerRevisions; Deployment
//! rollouts to NewReplicaSetAvailable and ProgressDeadlineExceeded; Jobs (success, backoff
//! limit, deadline, conditions per version); Endpoints and EndpointSlices; PDB status and
//! eviction. Most tests play the kubelet themselves (`FakeKubelet`, server started without
//! kubelets) so every step is theirs to take; the last ones use the real scheduler and
//! kubelets, and `kubectl rollout status` when kubectl is on PATH.

use std::process::Command;
use std::time::{Duration, Instant};

use kubesim::{
    Cluster, DeleteOptions, Handle, KubeVersion, Server, ServerConfig, SimConfig, WriteOptions,
};
use serde_json::{Value, json};

fn start(version: &str, kubelet: bool) -> Handle {
    let sim = SimConfig {
        kubelet,
        ..SimConfig::default()
    };
    Server::start(ServerConfig {
        version: KubeVersion::parse(version).expect("version"),
        sim,
        ..ServerConfig::default()
    })
    .expect("server starts")
}

fn opts() -> WriteOptions {
    WriteOptions::manager("test")
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Polls `f` for up to `secs` seconds.
fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_node(c: &Cluster, name: &str, taints: Value) {
    c.create(
        "v1",
        "nodes",
        None,
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", name.len())}]}}),
        &opts(),
    )
    .expect("node");
}

fn pods(c: &Cluster, ns: &str, selector: &str) -> Vec<Value> {
    c.list(
        "v1",
        "pods",
        Some(ns),
        &kubesim::ListOptions {
            label_selector: Some(selector.into()),
            ..Default::default()
        },
    )
    .expect("pods")
}

/// Plays the kubelet (and the scheduler for unpinned pods): binds, starts, finishes and
/// reaps pods when the test says so. Images decide: `*never-ready*` runs without becoming
/// Ready, `*succeed*` exits 0, `*fail*` exits 1, anything else runs and is Ready.
struct FakeKubelet {
    c: Cluster,
    nodes: Vec<String>,
    next_ip: std::cell::Cell<u32>,
}

impl FakeKubelet {
    fn new(c: &Cluster, nodes: &[&str]) -> Self {
        Self {
            c: c.clone(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            next_ip: std::cell::Cell::new(10),
        }
    }

    fn all(&self) -> Vec<Value> {
        self.c
            .list("v1", "pods", None, &Default::default())
            .unwrap()
    }

    fn bind(&self) {
        for (i, p) in self.all().iter().enumerate() {
            if !s(p, "/spec/nodeName").is_empty()
                || p.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let pinned = s(
                p,
                "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0",
            );
            let node = if pinned.is_empty() {
                self.nodes[i % self.nodes.len()].clone()
            } else {
                pinned.to_string()
            };
            let _ = self
                .c
                .bind(s(p, "/metadata/namespace"), s(p, "/metadata/name"), &node);
        }
    }

    fn start(&self) {
        for p in self.all() {
            let phase = s(&p, "/status/phase");
            if s(&p, "/spec/nodeName").is_empty()
                || !(phase.is_empty() || phase == "Pending")
                || p.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let image = s(&p, "/spec/containers/0/image").to_string();
            let (phase, ready) = if image.contains("succeed") {
                ("Succeeded", false)
            } else if image.contains("fail") {
                ("Failed", false)
            } else {
                ("Running", !image.contains("never-ready"))
            };
            let ip = self.next_ip.get();
            self.next_ip.set(ip + 1);
            let now = "2024-01-01T00:00:00Z";
            let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastProbeTime": null, "lastTransitionTime": now});
            let status = json!({"phase": phase, "podIP": format!("10.244.0.{ip}"), "podIPs": [{"ip": format!("10.244.0.{ip}")}],
                "hostIP": "192.168.0.1", "startTime": now,
                "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
                "containerStatuses": [{"name": "c", "image": image, "ready": ready, "restartCount": 0}]});
            let _ = self.c.modify(
                "v1",
                "pods",
                Some(s(&p, "/metadata/namespace")),
                s(&p, "/metadata/name"),
                Some("status"),
                &opts(),
                |o| o["status"] = status.clone(),
            );
        }
    }

    fn reap(&self) {
        for p in self.all() {
            if p.pointer("/metadata/deletionTimestamp").is_some() {
                let _ = self.c.delete(
                    "v1",
                    "pods",
                    Some(s(&p, "/metadata/namespace")),
                    s(&p, "/metadata/name"),
                    &DeleteOptions {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                );
            }
        }
    }

    fn step(&self) {
        self.bind();
        self.start();
        self.reap();
    }
}

fn ds_status(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get("apps/v1", "daemonsets", Some(ns), name).unwrap()["status"].clone()
}

/// (desired, current, ready, available, updated, unavailable, misscheduled)
fn ds_counts(st: &Value) -> [i64; 7] {
    let n = |k: &str| st[k].as_i64().unwrap_or(0);
    [
        n("desiredNumberScheduled"),
        n("currentNumberScheduled"),
        n("numberReady"),
        n("numberAvailable"),
        n("updatedNumberScheduled"),
        n("numberUnavailable"),
        n("numberMisscheduled"),
    ]
}

fn wait_ds(c: &Cluster, name: &str, generation: i64, want: [i64; 7]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ds_status(c, "default", name);
        if st["observedGeneration"] == generation && ds_counts(&st) == want {
            return st;
        }
        if Instant::now() > deadline {
            panic!("daemonset {name}: wanted gen {generation} {want:?}, have {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn daemonset(name: &str, image: &str, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}}, "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn set_image(c: &Cluster, api: &str, res: &str, name: &str, image: &str) {
    c.modify(api, res, Some("default"), name, None, &opts(), |o| {
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    })
    .unwrap();
}

fn live(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

#[test]
fn daemonset_rolls_node_by_node_with_exact_status_and_revisions() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    for n in ["n1", "n2", "n3"] {
        add_node(c, n, json!([]));
    }
    // A control-plane taint the template does not tolerate: not desired there.
    add_node(
        c,
        "cp",
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
    );
    let k = FakeKubelet::new(c, &["n1", "n2", "n3"]);
    c.create(
        "apps/v1",
        "daemonsets",
        Some("default"),
        daemonset("agent", "agent:v1", json!({"type": "RollingUpdate"})),
        &opts(),
    )
    .unwrap();
    wait_ds(c, "agent", 1, [3, 3, 0, 0, 3, 3, 0]);
    let ps = pods(c, "default", "app=agent");
    assert_eq!(ps.len(), 3);
    let hash1 = s(&ps[0], "/metadata/labels/controller-revision-hash").to_string();
    for p in &ps {
        assert_eq!(s(p, "/metadata/labels/pod-template-generation"), "1");
        assert_eq!(s(p, "/metadata/labels/controller-revision-hash"), hash1);
        assert!(s(p, "/metadata/generateName").starts_with("agent-"));
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["controller"].as_bool(),
                owner["blockOwnerDeletion"].as_bool()
            ),
            (Some("DaemonSet"), Some(true), Some(true))
        );
        let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(term[0]["matchFields"][0]["key"], "metadata.name");
        let tol: Vec<&str> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["key"].as_str())
            .collect();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/disk-pressure",
            "node.kubernetes.io/memory-pressure",
            "node.kubernetes.io/pid-pressure",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(tol.contains(&key), "{key} in {tol:?}");
        }
        assert!(!tol.contains(&"node.kubernetes.io/network-unavailable"));
    }
    let rev1 = c
        .get(
            "apps/v1",
            "controllerrevisions",
            Some("default"),
            &format!("agent-{hash1}"),
        )
        .unwrap();
    assert_eq!(rev1["revision"], 1);
    assert_eq!(s(&rev1, "/metadata/labels/controller-revision-hash"), hash1);
    assert_eq!(rev1["data"]["spec"]["template"]["$patch"], "replace");
    k.step();
    wait_ds(c, "agent", 1, [3, 3, 3, 3, 3, 0, 0]);

    // Template change: one node at a time.
    set_image(c, "apps/v1", "daemonsets", "agent", "agent:v2");
    for step in 0..3 {
        // One old pod terminating, the rest untouched.
        let want_updated = step;
        wait_ds(c, "agent", 2, [3, 3, 3, 3, want_updated, 0, 0]);
        let terminating = wait(5, "an old pod terminating", || {
            let ps = pods(c, "default", "app=agent");
            let t: Vec<Value> = ps
                .iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_some())
                .cloned()
                .collect();
            (t.len() == 1).then_some(t)
        });
        assert_eq!(
            s(&terminating[0], "/metadata/labels/pod-template-generation"),
            "1"
        );
        k.reap();
        // Its replacement is created but not running yet.
        wait_ds(c, "agent", 2, [3, 3, 2, 2, want_updated + 1, 1, 0]);
        let ps = pods(c, "default", "app=agent");
        assert_eq!(live(&ps).len(), 3);
        // The new pod runs; the controller moves on to the next node. Not `step`: its reap
        // could remove the next old pod, which the controller may delete as soon as this one
        // is Ready, before the loop sees it terminating.
        k.bind();
        k.start();
    }
    let st = wait_ds(c, "agent", 2, [3, 3, 3, 3, 3, 0, 0]);
    assert!(
        st.get("numberUnavailable").is_none(),
        "omitted when 0: {st}"
    );
    let ds = c
        .get("apps/v1", "daemonsets", Some("default"), "agent")
        .unwrap();
    assert_eq!(
        s(
            &ds,
            "/metadata/annotations/deprecated.daemonset.template.generation"
        ),
        "2"
    );
    let ps = pods(c, "default", "app=agent");
    let hash2 = s(&ps[0], "/metadata/labels/controller-revision-hash").to_string();
    assert_ne!(hash1, hash2);
    assert!(
        ps.iter()
            .all(|p| s(p, "/metadata/labels/pod-template-generation") == "2")
    );
    let mut revs: Vec<(i64, String)> = c
        .list(
            "apps/v1",
            "controllerrevisions",
            Some("default"),
            &Default::default(),
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                s(r, "/metadata/name").to_string(),
            )
        })
        .collect();
    revs.sort();
    assert_eq!(
        revs,
        vec![(1, format!("agent-{hash1}")), (2, format!("agent-{hash2}"))]
    );

    // Rolling back to the first template re-numbers its revision (no new one).
    set_image(c, "apps/v1", "daemonsets", "agent", "agent:v1");
    wait(5, "revision renumbered", || {
        let r = c
            .get(
                "apps/v1",
                "controllerrevisions",
                Some("default"),
                &format!("agent-{hash1}"),
            )
            .ok()?;
        (r["revision"] == 3).then_some(())
    });
    h.shutdown();
}

#[test]
fn daemonset_max_surge_and_on_delete() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    for n in ["n1", "n2"] {
        add_node(c, n, json!([]));
    }
    let k = FakeKubelet::new(c, &["n1", "n2"]);
    c.create(
        "apps/v1",
        "daemonsets",
        Some("default"),
        daemonset(
            "surge",
            "a:v1",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        ),
        &opts(),
    )
    .unwrap();
    c.create(
        "apps/v1",
        "daemonsets",
        Some("default"),
        daemonset("manual", "a:v1", json!({"type": "OnDelete"})),
        &opts(),
    )
    .unwrap();
    wait_ds(c, "surge", 1, [2, 2, 0, 0, 2, 2, 0]);
    wait_ds(c, "manual", 1, [2, 2, 0, 0, 2, 2, 0]);
    k.step();
    wait_ds(c, "surge", 1, [2, 2, 2, 2, 2, 0, 0]);
    wait_ds(c, "manual", 1, [2, 2, 2, 2, 2, 0, 0]);

    set_image(c, "apps/v1", "daemonsets", "surge", "a:v2");
    set_image(c, "apps/v1", "daemonsets", "manual", "a:v2");
    // Surge: a new pod beside an old one on one node; nothing deleted yet.
    let ps = wait(5, "a surge pod", || {
        let ps = pods(c, "default", "app=surge");
        (ps.len() == 3).then_some(ps)
    });
    assert_eq!(live(&ps).len(), 3);
    // Status looks at the running (old) pod of each node.
    wait_ds(c, "surge", 2, [2, 2, 2, 2, 0, 0, 0]);
    let mut min_ready = usize::MAX;
    for _ in 0..6 {
        k.step();
        std::thread::sleep(Duration::from_millis(100));
        let ps = pods(c, "default", "app=surge");
        let ready = ps
            .iter()
            .filter(|p| {
                p.pointer("/metadata/deletionTimestamp").is_none()
                    && s(p, "/status/phase") == "Running"
            })
            .count();
        min_ready = min_ready.min(ready);
    }
    assert!(
        min_ready >= 2,
        "never below 2 running pods with maxUnavailable 0"
    );
    wait_ds(c, "surge", 2, [2, 2, 2, 2, 2, 0, 0]);

    // OnDelete: nothing happens until a pod is deleted.
    std::thread::sleep(Duration::from_millis(300));
    wait_ds(c, "manual", 2, [2, 2, 2, 2, 0, 0, 0]);
    let ps = pods(c, "default", "app=manual");
    assert!(live(&ps).len() == 2 && ps.len() == 2);
    c.delete(
        "v1",
        "pods",
        Some("default"),
        s(&ps[0], "/metadata/name"),
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    wait_ds(c, "manual", 2, [2, 2, 1, 1, 1, 1, 0]);
    k.step();
    wait_ds(c, "manual", 2, [2, 2, 2, 2, 1, 0, 0]);

    // A failed daemon pod is replaced.
    let victim = pods(c, "default", "app=manual")[0].clone();
    c.modify(
        "v1",
        "pods",
        Some("default"),
        s(&victim, "/metadata/name"),
        Some("status"),
        &opts(),
        |o| {
            o["status"]["phase"] = json!("Failed");
        },
    )
    .unwrap();
    wait(5, "the failed pod replaced", || {
        let ps = pods(c, "default", "app=manual");
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| p["metadata"]["uid"] != victim["metadata"]["uid"]))
        .then_some(())
    });
    h.shutdown();
}

fn deployment(name: &str, image: &str, replicas: i64, deadline: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn wait_deployment(c: &Cluster, k: &FakeKubelet, name: &str, reason: &str, secs: u64) -> Value {
    let mut max_live = 0;
    let d = wait(secs, &format!("deployment {name} {reason}"), || {
        k.step();
        max_live = max_live.max(live(&pods(c, "default", &format!("app={name}"))).len());
        let d = c
            .get("apps/v1", "deployments", Some("default"), name)
            .ok()?;
        let ok = condition(&d, "Progressing").is_some_and(|p| p["reason"] == reason)
            && d["status"]["observedGeneration"] == d["metadata"]["generation"];
        ok.then_some(d)
    });
    let want = d["spec"]["replicas"].as_i64().unwrap() as usize;
    // maxSurge 25% rounds up.
    assert!(
        max_live <= want + want.div_ceil(4),
        "{max_live} pods at once for {want} replicas"
    );
    d
}

#[test]
fn deployment_rolls_out_and_times_out() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    add_node(c, "n2", json!([]));
    let k = FakeKubelet::new(c, &["n1", "n2"]);
    c.create(
        "apps/v1",
        "deployments",
        Some("default"),
        deployment("web", "web:v1", 4, 600),
        &opts(),
    )
    .unwrap();
    let d = wait_deployment(c, &k, "web", "NewReplicaSetAvailable", 10);
    let st = &d["status"];
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["updatedReplicas"].as_i64(),
            st["readyReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(4), Some(4), Some(4), Some(4))
    );
    assert!(st.get("unavailableReplicas").is_none());
    let avail = condition(&d, "Available").unwrap();
    assert_eq!(
        (avail["status"].as_str(), avail["reason"].as_str()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "1"
    );
    let sets = c
        .list(
            "apps/v1",
            "replicasets",
            Some("default"),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(sets.len(), 1);
    let hash = s(&sets[0], "/metadata/labels/pod-template-hash").to_string();
    assert_eq!(s(&sets[0], "/metadata/name"), format!("web-{hash}"));
    assert_eq!(
        sets[0]["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash.as_str()
    );
    assert_eq!(
        s(
            &sets[0],
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "1"
    );
    let rs = &sets[0]["status"];
    assert_eq!(
        (
            rs["replicas"].as_i64(),
            rs["fullyLabeledReplicas"].as_i64(),
            rs["readyReplicas"].as_i64(),
            rs["availableReplicas"].as_i64()
        ),
        (Some(4), Some(4), Some(4), Some(4))
    );
    assert!(
        pods(c, "default", "app=web")
            .iter()
            .all(|p| s(p, "/metadata/labels/pod-template-hash") == hash)
    );

    // A rolling update to a new template.
    set_image(c, "apps/v1", "deployments", "web", "web:v2");
    wait_deployment(c, &k, "web", "NewReplicaSetAvailable", 10);
    let d = wait(5, "old pods gone", || {
        k.step();
        let d = c
            .get("apps/v1", "deployments", Some("default"), "web")
            .ok()?;
        (d["status"]["replicas"] == 4 && d["status"]["updatedReplicas"] == 4).then_some(d)
    });
    assert_eq!(
        s(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );
    let sets = c
        .list(
            "apps/v1",
            "replicasets",
            Some("default"),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|r| s(r, "/metadata/labels/pod-template-hash") == hash)
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);

    // Scale through the scale subresource.
    let r = c.resolve("apps/v1", "deployments").unwrap();
    c.set_scale(
        &r,
        Some("default"),
        "web",
        &json!({"spec": {"replicas": 2}}),
        &opts(),
    )
    .unwrap();
    wait(5, "scaled to 2", || {
        k.step();
        let d = c
            .get("apps/v1", "deployments", Some("default"), "web")
            .ok()?;
        (d["status"]["replicas"] == 2 && d["status"]["availableReplicas"] == 2).then_some(())
    });

    // Pods that never become Ready: the progress deadline (50 simulated seconds) passes.
    c.create(
        "apps/v1",
        "deployments",
        Some("default"),
        deployment("stuck", "never-ready:v1", 2, 1),
        &opts(),
    )
    .unwrap();
    let d = wait_deployment(c, &k, "stuck", "ProgressDeadlineExceeded", 10);
    let p = condition(&d, "Progressing").unwrap();
    assert_eq!(p["status"], "False");
    assert!(
        s(p, "/message").ends_with("has timed out progressing."),
        "{p}"
    );
    let a = condition(&d, "Available").unwrap();
    assert_eq!(
        (a["status"].as_str(), a["reason"].as_str()),
        (Some("False"), Some("MinimumReplicasUnavailable"))
    );
    assert_eq!(d["status"]["unavailableReplicas"], 2);
    h.shutdown();
}

#[test]
fn recreate_waits_for_old_pods_to_go() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    let k = FakeKubelet::new(c, &["n1"]);
    let mut d = deployment("rec", "r:v1", 2, 600);
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    c.create("apps/v1", "deployments", Some("default"), d, &opts())
        .unwrap();
    wait_deployment(c, &k, "rec", "NewReplicaSetAvailable", 10);
    set_image(c, "apps/v1", "deployments", "rec", "r:v2");
    // Old pods terminating, no new pods until the kubelet is done with them.
    wait(5, "old pods terminating", || {
        let ps = pods(c, "default", "app=rec");
        (ps.len() == 2 && live(&ps).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pods(c, "default", "app=rec").len(),
        2,
        "no new pod while old ones terminate"
    );
    wait_deployment(c, &k, "rec", "NewReplicaSetAvailable", 10);
    h.shutdown();
}

fn job(name: &str, image: &str, spec: Value) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}});
    for (k, v) in spec.as_object().unwrap() {
        j["spec"][k] = v.clone();
    }
    j
}

fn wait_job(c: &Cluster, k: &FakeKubelet, name: &str, kind: &str) -> Value {
    wait(10, &format!("job {name} {kind}"), || {
        k.step();
        let j = c.get("batch/v1", "jobs", Some("default"), name).ok()?;
        condition(&j, kind)
            .is_some_and(|c| c["status"] == "True")
            .then_some(j)
    })
}

#[test]
fn jobs_complete_fail_and_expire() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    let k = FakeKubelet::new(c, &["n1"]);
    c.create(
        "batch/v1",
        "jobs",
        Some("default"),
        job(
            "ok",
            "succeed:1",
            json!({"completions": 3, "parallelism": 2}),
        ),
        &opts(),
    )
    .unwrap();
    let j = wait_job(c, &k, "ok", "Complete");
    let st = &j["status"];
    assert_eq!(st["succeeded"], 3);
    assert!(
        st.get("active").is_none() && st.get("failed").is_none(),
        "{st}"
    );
    assert_eq!(st["ready"], 0);
    assert_eq!(st["uncountedTerminatedPods"], json!({}));
    assert!(st["completionTime"].is_string() && st["startTime"].is_string());
    assert!(
        condition(&j, "SuccessCriteriaMet").is_none(),
        "not before 1.31"
    );
    let ps = pods(c, "default", "job-name=ok");
    assert_eq!(ps.len(), 3);
    for p in &ps {
        assert_eq!(s(p, "/metadata/labels/batch.kubernetes.io~1job-name"), "ok");
        assert_eq!(
            s(p, "/metadata/labels/controller-uid"),
            s(&j, "/metadata/uid")
        );
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
    }

    c.create(
        "batch/v1",
        "jobs",
        Some("default"),
        job("bad", "fail:1", json!({"backoffLimit": 1})),
        &opts(),
    )
    .unwrap();
    let j = wait_job(c, &k, "bad", "Failed");
    assert_eq!(j["status"]["failed"], 2);
    let f = condition(&j, "Failed").unwrap();
    assert_eq!(
        (f["reason"].as_str(), f["message"].as_str()),
        (
            Some("BackoffLimitExceeded"),
            Some("Job has reached the specified backoff limit")
        )
    );

    c.create(
        "batch/v1",
        "jobs",
        Some("default"),
        job(
            "slow",
            "never-ready:1",
            json!({"activeDeadlineSeconds": 1, "ttlSecondsAfterFinished": 50}),
        ),
        &opts(),
    )
    .unwrap();
    let j = wait_job(c, &k, "slow", "Failed");
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    assert!(j["status"].get("active").is_none());
    // The TTL controller deletes it (foreground: its pods first).
    wait(10, "the finished job deleted", || {
        k.step();
        c.get("batch/v1", "jobs", Some("default"), "slow")
            .is_err()
            .then_some(())
    });
    assert!(pods(c, "default", "job-name=slow").is_empty());
    h.shutdown();
}

#[test]
fn jobs_on_1_31_stage_their_conditions() {
    let h = start("v1.31.2", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    let k = FakeKubelet::new(c, &["n1"]);
    c.create(
        "batch/v1",
        "jobs",
        Some("default"),
        job("ok", "succeed:1", json!({})),
        &opts(),
    )
    .unwrap();
    let j = wait_job(c, &k, "ok", "Complete");
    let met = condition(&j, "SuccessCriteriaMet").unwrap();
    assert_eq!(met["reason"], "CompletionsReached");
    assert_eq!(
        condition(&j, "Complete").unwrap()["reason"],
        "CompletionsReached"
    );
    assert_eq!(j["status"]["terminating"], 0);

    c.create(
        "batch/v1",
        "jobs",
        Some("default"),
        job("late", "never-ready:1", json!({"activeDeadlineSeconds": 1})),
        &opts(),
    )
    .unwrap();
    // FailureTarget first; Failed only once the pod is gone.
    let j = wait(10, "FailureTarget", || {
        k.bind();
        k.start();
        let j = c.get("batch/v1", "jobs", Some("default"), "late").ok()?;
        condition(&j, "FailureTarget").map(|_| j.clone())
    });
    assert!(condition(&j, "Failed").is_none(), "{j}");
    let j = wait(5, "terminating counted", || {
        let j = c.get("batch/v1", "jobs", Some("default"), "late").ok()?;
        (j["status"]["terminating"] == 1).then_some(j)
    });
    assert!(condition(&j, "Failed").is_none());
    let j = wait_job(c, &k, "late", "Failed");
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    h.shutdown();
}

#[test]
fn endpoints_and_slices_follow_ready_pods() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    let k = FakeKubelet::new(c, &["n1"]);
    for (name, image) in [("a", "web:1"), ("b", "web:1"), ("c", "never-ready:1")] {
        c.create("v1", "pods", Some("default"), json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}]}}), &opts())
            .unwrap();
    }
    k.step();
    c.create("v1", "services", Some("default"), json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}), &opts())
        .unwrap();
    let ep = wait(5, "endpoints", || {
        let ep = c.get("v1", "endpoints", Some("default"), "web").ok()?;
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)).then_some(ep)
    });
    let subset = &ep["subsets"][0];
    assert_eq!(subset["notReadyAddresses"].as_array().unwrap().len(), 1);
    assert_eq!(subset["notReadyAddresses"][0]["targetRef"]["name"], "c");
    assert_eq!(
        subset["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(subset["addresses"][0]["nodeName"], "n1");
    assert_eq!(s(&ep, "/metadata/labels/tier"), "front");
    let slice = wait(5, "an endpointslice", || {
        let l = c
            .list(
                "discovery.k8s.io/v1",
                "endpointslices",
                Some("default"),
                &kubesim::ListOptions {
                    label_selector: Some("kubernetes.io/service-name=web".into()),
                    ..Default::default()
                },
            )
            .ok()?;
        (l.len() == 1 && l[0]["endpoints"].as_array().map(Vec::len) == Some(3))
            .then(|| l[0].clone())
    });
    assert_eq!(
        s(
            &slice,
            "/metadata/labels/endpointslice.kubernetes.io~1managed-by"
        ),
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    let ready: Vec<bool> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["conditions"]["ready"] == true)
        .collect();
    assert_eq!(ready.iter().filter(|r| **r).count(), 2);
    // A terminating pod leaves Endpoints and stays in the slice as terminating.
    c.delete(
        "v1",
        "pods",
        Some("default"),
        "a",
        &DeleteOptions::default(),
    )
    .unwrap();
    wait(5, "a out of endpoints", || {
        let ep = c.get("v1", "endpoints", Some("default"), "web").ok()?;
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    wait(5, "a terminating in the slice", || {
        let l = c
            .list(
                "discovery.k8s.io/v1",
                "endpointslices",
                Some("default"),
                &Default::default(),
            )
            .ok()?;
        l.iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .any(|e| {
                e["targetRef"]["name"] == "a"
                    && e["conditions"]["terminating"] == true
                    && e["conditions"]["ready"] == false
            })
            .then_some(())
    });
    // The Service goes: so do its Endpoints and slices.
    c.delete(
        "v1",
        "services",
        Some("default"),
        "web",
        &DeleteOptions::default(),
    )
    .unwrap();
    wait(5, "endpoints gone", || {
        c.get("v1", "endpoints", Some("default"), "web")
            .is_err()
            .then_some(())
    });
    wait(5, "slices gone", || {
        c.list(
            "discovery.k8s.io/v1",
            "endpointslices",
            Some("default"),
            &Default::default(),
        )
        .ok()?
        .is_empty()
        .then_some(())
    });
    h.shutdown();
}

#[test]
fn pdb_status_decides_evictions() {
    let h = start("v1.30.6", false);
    let c = h.cluster();
    add_node(c, "n1", json!([]));
    let k = FakeKubelet::new(c, &["n1"]);
    c.create(
        "apps/v1",
        "deployments",
        Some("default"),
        deployment("db", "db:1", 2, 600),
        &opts(),
    )
    .unwrap();
    wait_deployment(c, &k, "db", "NewReplicaSetAvailable", 10);
    c.create("policy/v1", "poddisruptionbudgets", Some("default"), json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "db"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}}), &opts())
        .unwrap();
    let pdb = wait(5, "pdb status", || {
        let p = c
            .get("policy/v1", "poddisruptionbudgets", Some("default"), "db")
            .ok()?;
        (p["status"]["observedGeneration"] == 1).then_some(p)
    });
    let st = &pdb["status"];
    assert_eq!(
        (
            st["expectedPods"].as_i64(),
            st["currentHealthy"].as_i64(),
            st["desiredHealthy"].as_i64(),
            st["disruptionsAllowed"].as_i64()
        ),
        (Some(2), Some(2), Some(2), Some(0))
    );
    let cond = condition(&pdb, "DisruptionAllowed").unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("InsufficientPods"))
    );
    let victim = s(&pods(c, "default", "app=db")[0], "/metadata/name").to_string();
    let err = c
        .evict("default", &victim, &DeleteOptions::default())
        .unwrap_err();
    assert_eq!(err.code, 429);

    // maxUnavailable 50%: the Deployment's scale is the expected count.
    c.modify(
        "policy/v1",
        "poddisruptionbudgets",
        Some("default"),
        "db",
        None,
        &opts(),
        |o| {
            o["spec"] =
                json!({"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "db"}}});
        },
    )
    .unwrap();
    wait(5, "one disruption allowed", || {
        let p = c
            .get("policy/v1", "poddisruptionbudgets", Some("default"), "db")
            .ok()?;
        (p["status"]["observedGeneration"] == 2
            && p["status"]["disruptionsAllowed"] == 1
            && p["status"]["desiredHealthy"] == 1)
            .then_some(())
    });
    c.evict("default", &victim, &DeleteOptions::default())
        .expect("eviction allowed");
    // The second eviction in a row is refused until the replacement is Ready.
    let other = pods(c, "default", "app=db")
        .into_iter()
        .find(|p| {
            s(p, "/metadata/name") != victim && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .unwrap();
    assert_eq!(
        c.evict(
            "default",
            s(&other, "/metadata/name"),
            &DeleteOptions::default()
        )
        .unwrap_err()
        .code,
        429
    );

    // Pods of a DaemonSet have no scale: a maxUnavailable budget cannot be computed.
    c.create(
        "apps/v1",
        "daemonsets",
        Some("default"),
        daemonset("ds", "x:1", json!({"type": "RollingUpdate"})),
        &opts(),
    )
    .unwrap();
    k.step();
    c.create("policy/v1", "poddisruptionbudgets", Some("default"), json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "ds"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "ds"}}}}), &opts())
        .unwrap();
    wait(5, "SyncFailed", || {
        k.step();
        let p = c
            .get("policy/v1", "poddisruptionbudgets", Some("default"), "ds")
            .ok()?;
        (condition(&p, "DisruptionAllowed")?["reason"] == "SyncFailed").then_some(())
    });
    h.shutdown();
}

fn kubectl_path() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// With the real scheduler and kubelets (a small timing): a DaemonSet and a Deployment roll
/// through a template change, watched by `kubectl rollout status` when kubectl is present.
#[test]
fn real_kubelet_rollouts_and_kubectl_rollout_status() {
    let h = start("v1.30.6", true);
    let c = h.cluster();
    for n in ["w1", "w2", "w3"] {
        add_node(c, n, json!([]));
    }
    c.create(
        "apps/v1",
        "daemonsets",
        Some("default"),
        daemonset(
            "node-agent",
            "registry.k8s.io/pause:3.9",
            json!({"type": "RollingUpdate"}),
        ),
        &opts(),
    )
    .unwrap();
    c.create(
        "apps/v1",
        "deployments",
        Some("default"),
        deployment("front", "registry.k8s.io/pause:3.9", 3, 600),
        &opts(),
    )
    .unwrap();
    let done = |c: &Cluster| {
        let ds = c
            .get("apps/v1", "daemonsets", Some("default"), "node-agent")
            .ok()?;
        let d = c
            .get("apps/v1", "deployments", Some("default"), "front")
            .ok()?;
        let ds_ok = ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
            && ds["status"]["updatedNumberScheduled"] == 3
            && ds["status"]["numberAvailable"] == 3;
        let d_ok = condition(&d, "Progressing")
            .is_some_and(|p| p["reason"] == "NewReplicaSetAvailable")
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["replicas"] == 3;
        (ds_ok && d_ok).then_some(())
    };
    wait(20, "first rollout", || done(c));
    set_image(
        c,
        "apps/v1",
        "daemonsets",
        "node-agent",
        "registry.k8s.io/pause:3.10",
    );
    set_image(
        c,
        "apps/v1",
        "deployments",
        "front",
        "registry.k8s.io/pause:3.10",
    );
    match kubectl_path() {
        Some(kubectl) => {
            for what in ["daemonset/node-agent", "deployment/front"] {
                let out = Command::new(&kubectl)
                    .args(["rollout", "status", what, "-n", "default", "--timeout=60s"])
                    .env("KUBECONFIG", h.kubeconfig_path())
                    .output()
                    .expect("kubectl runs");
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{what}: {text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(text.contains("successfully rolled out"), "{text}");
            }
        }
        None => {
            assert!(
                std::env::var("K8S_CALICO_NO_SKIP").as_deref() != Ok("1"),
                "kubectl is not on PATH and K8S_CALICO_NO_SKIP=1"
            );
            println!("kubectl is not on PATH: checking the rollout without it");
        }
    }
    wait(30, "second rollout", || done(c));
    let ps = pods(c, "default", "app=node-agent");
    assert_eq!(live(&ps).len(), 3);
    assert!(
        live(&ps)
            .iter()
            .all(|p| s(p, "/spec/containers/0/image").ends_with("3.10"))
    );
    h.shutdown();
}
