//! The upgrade lock against kubesim: a live holder keeps renewing its short Lease and is never
//! taken over; a holder that dies stops renewing and its lock is free about a lease later; a
//! `calico_upgrade` killed in the middle of a hop leaves a lock the next run takes within 90 s,
//! and that run finishes the upgrade.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_calico::cluster::lock::{LOCK_NAME, LOCK_NAMESPACE, Lock, Timing};
use k8s_calico::cluster::{self, Connection};
use serde_json::{Value, json};
use support::cluster::SimCluster;
use support::module::run;

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

fn lease(c: &SimCluster) -> Option<Value> {
    c.get(
        "coordination.k8s.io/v1",
        "leases",
        Some(LOCK_NAMESPACE),
        LOCK_NAME,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client for `c`, built on `rt` (the client's workers live on the runtime that built it).
fn client(rt: &tokio::runtime::Runtime, c: &SimCluster) -> kube::Client {
    let conn = Connection {
        kubeconfig: Some(c.handle.kubeconfig_path().to_path_buf()),
        context: None,
        validate_certs: true,
    };
    rt.block_on(cluster::client(&conn)).unwrap()
}

#[test]
fn a_live_holder_is_never_taken_over_and_a_dead_ones_lease_expires() {
    let c = SimCluster::start("nodes: {count: 1}\n", &[]);
    let timing = Timing {
        lease: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
    };
    // The holder lives in its own thread and runtime, renewing for three lease durations, then
    // dies without releasing: its runtime (and so its renewing task) is dropped.
    let kubeconfig = c.handle.kubeconfig_path().to_path_buf();
    let holder = std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async {
            let conn = Connection {
                kubeconfig: Some(kubeconfig),
                context: None,
                validate_certs: true,
            };
            let client = cluster::client(&conn).await.unwrap();
            let lock = Lock::acquire_with(&client, "holder-a", timing)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(9)).await;
            lock.held().unwrap();
            std::mem::forget(lock);
        });
        Instant::now()
    });
    while lease(&c).is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = runtime();
    let other = client(&rt, &c);
    let mut renewals = std::collections::BTreeSet::new();
    let mut refused = 0;
    while !holder.is_finished() {
        let err = rt
            .block_on(Lock::acquire_with(&other, "holder-b", timing))
            .err();
        if holder.is_finished() {
            break;
        }
        let err = err
            .expect("a live holder's lock was taken over")
            .to_string();
        assert!(err.contains("holder holder-a"), "{err}");
        refused += 1;
        renewals.insert(lease(&c).unwrap()["spec"]["renewTime"].to_string());
        std::thread::sleep(Duration::from_millis(400));
    }
    let died = holder.join().unwrap();
    // Far more than one lease duration: it was renewed all along.
    assert!(refused >= 10, "{refused}");
    assert!(renewals.len() >= 6, "{renewals:?}");
    // Dead: the lease runs out, and then it is free.
    let taken = loop {
        if let Ok(lock) = rt.block_on(Lock::acquire_with(&other, "holder-b", timing)) {
            break (Instant::now(), lock);
        }
        assert!(died.elapsed() < Duration::from_secs(10), "never freed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = taken.0 - died;
    assert!(
        waited <= timing.lease + Duration::from_secs(1),
        "free {waited:?} after the holder died"
    );
    assert_eq!(lease(&c).unwrap()["spec"]["holderIdentity"], "holder-b");
    rt.block_on(taken.1.release()).unwrap();
    assert!(lease(&c).is_none());
}

#[test]
fn a_run_killed_mid_hop_frees_its_lock_within_90_seconds_and_the_next_run_finishes() {
    // Every new calico-node takes half a minute to become Ready, so the rollout takes two: the
    // run is killed while it waits, and the rollout is still going when the lock is free.
    let c = SimCluster::start(
        "kubernetes_version: v1.29.10
nodes: {count: 4}
calico: {version: v3.27.5}
faults: {slow_ready: [{image: '*calico/node:v3.28.5', seconds: 30}]}
timing: {time_scale: 0.05}
",
        &["v3.27.5", "v3.28.5"],
    );
    let args = c.upgrade_args(json!({"target_version": "v3.28.5", "timeout": 900}));
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    std::fs::write(&args_file, serde_json::to_vec(&args).unwrap()).unwrap();
    let mut child = Command::new(BIN)
        .arg(&args_file)
        .env("HOME", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let applied = Instant::now();
    loop {
        let ds = c
            .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
            .unwrap();
        if ds.to_string().contains("calico/node:v3.28.5") {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(120),
            "the hop never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let holder = lease(&c).unwrap()["spec"]["holderIdentity"].clone();
    assert!(
        holder
            .as_str()
            .unwrap()
            .contains(&format!("pid-{}", child.id())),
        "{holder}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();

    // Whoever picks up after the crash forces past the pods the killed run left unready; the
    // lock is what blocks until the killed run's lease runs out.
    let mut again = args.clone();
    again["force"] = json!(true);
    let mut locked_out = 0;
    let finished = loop {
        let started = killed.elapsed();
        let (out, code) = run(BIN, &again);
        if code == 0 {
            break (started, out);
        }
        let msg = out["msg"].as_str().unwrap_or("");
        assert!(msg.contains("holds the lock"), "{out:#}");
        assert!(msg.contains(holder.as_str().unwrap()), "{msg}");
        locked_out += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "still locked {:?} after the kill: {msg}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let (freed, finished) = finished;
    assert!(
        locked_out > 0,
        "the killed run's lock never blocked a run: {finished:#}"
    );
    println!("the killed run's lock was taken over {freed:?} after the kill");
    assert!(freed < Duration::from_secs(90), "{freed:?}");
    assert_eq!(finished["changed"], true, "{finished:#}");
    assert_eq!(
        support::cluster::hops(&finished["ansible_facts"]["calico_upgrade"]),
        ["v3.28.5"]
    );
    for (node, image) in c.calico_node_images() {
        assert!(image.ends_with("calico/node:v3.28.5"), "{node}: {image}");
    }
    assert!(lease(&c).is_none(), "the finishing run released the lock");
}
