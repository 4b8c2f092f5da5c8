//! Row 2: waiting for a calico-node rollout. `calico_upgrade` (one hop to the next Calico
//! minor) against `kubernetes.core.k8s` with `wait: true` applying the same DaemonSet change,
//! each on a fresh simulated cluster of the same size. kubesim's events are watched in-process
//! for the moment the DaemonSet changes and the moment its last new pod becomes Ready; its
//! request counters are sampled meanwhile.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_calico::catalog::InstallMethod;
use kubesim::Handle;
use serde_json::{Value, json};

use super::{CALICO_VERSION, RowOutput, Verdict, under};
use crate::Ctx;
use crate::measure::{self, Stat, ratio, secs};

/// Issue 7: the wait returns within 0.5 s of the last pod becoming Ready.
const AFTER_LIMIT: f64 = 0.5;
/// Issue 7: the whole upgrade within 5 % of the rollout's own time.
const OVERHEAD_LIMIT: f64 = 1.05;

/// What one measured rollout showed.
struct Rollout {
    /// The child's wall time.
    wall: f64,
    /// From the DaemonSet change to the last new pod Ready.
    rollout: f64,
    /// From the last new pod Ready to the child's exit.
    after: f64,
    /// API requests from the DaemonSet change to the last pod Ready.
    requests_during: u64,
    /// API requests from the last pod Ready to the child's exit.
    requests_after: u64,
    /// All the child's API requests.
    requests_total: u64,
    cpu: f64,
    max_rss_kb: u64,
    command: String,
}

#[derive(Default)]
struct Marks {
    ds_changed: Option<Instant>,
    /// (pod name, when it became Ready with the target image).
    ready: Vec<(String, Instant)>,
}

pub fn run(ctx: &Ctx) -> Result<RowOutput> {
    let nodes = if ctx.quick { 5 } else { 100 };
    let releases = kubesim::calico::releases_from(CALICO_VERSION)?;
    let target = releases
        .get(1)
        .cloned()
        .ok_or_else(|| anyhow!("no release after {CALICO_VERSION}"))?;
    let upgrade = ctx.module("calico_upgrade")?;
    let playbook = ctx.venv.join("bin/ansible-playbook");
    let reps = ctx.reps.min(3);

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut their_error = None;
    for rep in 0..reps {
        eprintln!("bench: rollout {rep}: calico_upgrade on {nodes} nodes");
        ours.push(upgrade_once(&upgrade, nodes, &target)?);
        if !playbook.is_file() {
            their_error = Some(format!("{} is missing", playbook.display()));
            continue;
        }
        eprintln!("bench: rollout {rep}: kubernetes.core.k8s wait on {nodes} nodes");
        match k8s_once(ctx, nodes, &target) {
            Ok(r) => theirs.push(r),
            Err(e) => their_error = Some(format!("{e:#}")),
        }
    }

    let mut body = String::new();
    writeln!(
        body,
        "A {nodes}-node cluster running Calico {CALICO_VERSION} from its manifest; calico-node \
         rolls one node at a time (the manifest's `maxUnavailable: 1`). `calico_upgrade` \
         upgrades to {target} (backup, pre-checks, manifest checks, apply, wait, verify); \
         `kubernetes.core.k8s` applies the {target} calico-node DaemonSet with `wait: true` \
         (it polls every `wait_sleep`, 5 s by default). The rollout is timed from the \
         DaemonSet's change to its last new pod becoming Ready, both seen by kubesim itself; \
         requests are kubesim's count of the tool's HTTP requests. Targets: return within \
         0.5 s of the last pod Ready; requests that grow with events, not with elapsed time; \
         the whole upgrade within 5 % of the rollout's own time.\n"
    )?;
    writeln!(
        body,
        "| tool | rollout | last Ready → return | requests during rollout | requests after | requests in all | whole run | whole ÷ rollout | CPU | peak RSS |"
    )?;
    writeln!(
        body,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (name, rs) in [
        ("`calico_upgrade`", &ours),
        ("`kubernetes.core.k8s` wait", &theirs),
    ] {
        if rs.is_empty() {
            continue;
        }
        let st = |f: &dyn Fn(&Rollout) -> f64| Stat::of(&rs.iter().map(f).collect::<Vec<_>>());
        let count = |x: f64| format!("{x:.0}");
        writeln!(
            body,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            st(&|r| r.rollout).show(secs),
            st(&|r| r.after).show(secs),
            st(&|r| r.requests_during as f64).show(count),
            st(&|r| r.requests_after as f64).show(count),
            st(&|r| r.requests_total as f64).show(count),
            st(&|r| r.wall).show(secs),
            st(&|r| r.wall / r.rollout).show(|x| format!("{x:.2}")),
            st(&|r| r.cpu).show(secs),
            st(&|r| r.max_rss_kb as f64).show(measure::mb_from_kb),
        )?;
    }
    if let Some(e) = &their_error {
        writeln!(body, "\n`kubernetes.core.k8s` not measured: {e}\n")?;
    }
    let after = Stat::of(&ours.iter().map(|r| r.after).collect::<Vec<_>>()).median;
    let overhead = Stat::of(&ours.iter().map(|r| r.wall / r.rollout).collect::<Vec<_>>()).median;
    let per_event = Stat::of(
        &ours
            .iter()
            .map(|r| r.requests_during as f64 / nodes as f64)
            .collect::<Vec<_>>(),
    )
    .median;
    let per_second = Stat::of(
        &ours
            .iter()
            .map(|r| r.requests_during as f64 / r.rollout)
            .collect::<Vec<_>>(),
    )
    .median;
    writeln!(
        body,
        "\n`calico_upgrade` made {per_event:.2} requests per node rolled ({per_second:.1} per \
         second of rollout) while waiting: a watch is one long request however long the \
         rollout takes, so the count follows events (re-lists after a dropped watch), not time."
    )?;
    if let Some(t) = theirs.first() {
        writeln!(
            body,
            "`kubernetes.core.k8s` polled {:.1} times per second of rollout.",
            t.requests_during as f64 / t.rollout
        )?;
    }
    writeln!(
        body,
        "\nThe whole upgrade includes the backup, the pre-checks and reading the manifests \
         before the DaemonSet changes, and the checks after it: that is the difference between \
         \"whole run\" and \"rollout\".\n"
    )?;
    writeln!(body, "Measured commands:\n\n```sh\n{}", ours[0].command)?;
    if let Some(t) = theirs.first() {
        writeln!(body, "{}", t.command)?;
    }
    writeln!(body, "```\n")?;
    let mut verdicts = vec![
        Verdict {
            what: format!("2. `calico_upgrade` last Ready → return ({nodes} nodes)"),
            target: "< 0.5 s".into(),
            measured: secs(after),
            status: under(after, AFTER_LIMIT),
        },
        Verdict {
            what: "2. `calico_upgrade` whole ÷ rollout".into(),
            target: "≤ 1.05".into(),
            measured: format!("{overhead:.2}"),
            status: under(overhead, OVERHEAD_LIMIT + 1e-9),
        },
    ];
    if let Some(t) = theirs.first() {
        let their_after = Stat::of(&theirs.iter().map(|r| r.after).collect::<Vec<_>>()).median;
        verdicts.push(Verdict {
            what: "2. last Ready → return, k8s wait ÷ calico_upgrade".into(),
            target: "(comparison)".into(),
            measured: ratio(their_after / after.max(1e-3)),
            status: format!("k8s: {}, {} requests", secs(their_after), t.requests_total),
        });
    }
    Ok(RowOutput { body, verdicts })
}

/// Starts the cluster and the observer.
fn cluster(nodes: usize, target: &str) -> Result<(Handle, Arc<Mutex<Marks>>)> {
    let handle = super::calico_cluster(nodes)?;
    let marks = Arc::new(Mutex::new(Marks::default()));
    let c = handle.cluster().clone();
    let mut pods = c
        .subscribe("v1", "pods", None)
        .map_err(|e| anyhow!("watching pods: {e}"))?;
    let mut dss = c
        .subscribe("apps/v1", "daemonsets", None)
        .map_err(|e| anyhow!("watching daemonsets: {e}"))?;
    let m = marks.clone();
    let target = target.to_string();
    handle.runtime().spawn(async move {
        loop {
            tokio::select! {
                ev = dss.next() => {
                    let Some(Ok(ev)) = ev else { return };
                    let o = &ev.object.value;
                    if o["metadata"]["name"] == "calico-node" && o["metadata"]["namespace"] == "kube-system" {
                        let generation = |v: &Value| v["metadata"]["generation"].as_i64();
                        let changed = ev.prev.as_ref().is_some_and(|p| generation(&p.value) != generation(o));
                        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                        if changed && m.ds_changed.is_none() {
                            m.ds_changed = Some(Instant::now());
                        }
                    }
                }
                ev = pods.next() => {
                    let Some(Ok(ev)) = ev else { return };
                    let o = &ev.object.value;
                    if o["metadata"]["labels"]["k8s-app"] != "calico-node" {
                        continue;
                    }
                    let on_target = o["spec"]["containers"].as_array().is_some_and(|cs| {
                        cs.iter().any(|c| c["image"].as_str().is_some_and(|i| i.ends_with(&format!(":{target}"))))
                    });
                    let was_ready = ev.prev.as_ref().is_some_and(|p| ready(&p.value));
                    if on_target && ready(o) && !was_ready && o["metadata"]["deletionTimestamp"].is_null() {
                        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                        m.lock().unwrap_or_else(|e| e.into_inner()).ready.push((name, Instant::now()));
                    }
                }
            }
        }
    });
    Ok((handle, marks))
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Runs `cmd` under GNU time while sampling kubesim's request counter, then works out the
/// rollout's marks.
fn measure_rollout(
    handle: &Handle,
    marks: &Mutex<Marks>,
    cmd: &Command,
    nodes: usize,
) -> Result<Rollout> {
    handle.faults().reset_counters();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outcome, series, end) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut series: Vec<(Instant, u64)> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                series.push((Instant::now(), handle.faults().counters().total_requests));
                std::thread::sleep(Duration::from_millis(10));
            }
            series
        });
        let outcome = measure::timed(cmd, None);
        let end = Instant::now();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (outcome, sampler.join().unwrap_or_default(), end)
    });
    let outcome = outcome?;
    let total = handle.faults().counters().total_requests;
    let m = marks.lock().unwrap_or_else(|e| e.into_inner());
    let start = m
        .ds_changed
        .context("the calico-node DaemonSet never changed")?;
    let mut names: Vec<&str> = m.ready.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names.dedup();
    if names.len() < nodes {
        bail!(
            "only {} of {nodes} calico-node pods became Ready on the new version\n{}",
            names.len(),
            String::from_utf8_lossy(&outcome.stdout)
        );
    }
    let last = m.ready.iter().map(|(_, t)| *t).max().unwrap_or(start);
    let at = |t: Instant| {
        series
            .iter()
            .take_while(|(when, _)| *when <= t)
            .last()
            .map_or(0, |(_, n)| *n)
    };
    Ok(Rollout {
        wall: outcome.sample.wall,
        rollout: last.duration_since(start).as_secs_f64(),
        after: end.saturating_duration_since(last).as_secs_f64(),
        requests_during: at(last).saturating_sub(at(start)),
        requests_after: total.saturating_sub(at(last)),
        requests_total: total,
        cpu: outcome.sample.cpu(),
        max_rss_kb: outcome.sample.max_rss_kb,
        command: measure::show(cmd),
    })
}

fn upgrade_once(bin: &std::path::Path, nodes: usize, target: &str) -> Result<Rollout> {
    let (handle, marks) = cluster(nodes, target)?;
    let dir = super::scratch()?;
    let manifests = dir.path().join("manifests");
    kubesim::calico::write_manifest_dir(
        &manifests,
        &[CALICO_VERSION, target],
        InstallMethod::Manifest,
    )?;
    let args = dir.path().join("args.json");
    std::fs::write(
        &args,
        serde_json::to_vec(&json!({
            "kubeconfig": handle.kubeconfig_path(),
            "target_version": target,
            "manifest_dir": manifests,
            "backup_dir": dir.path().join("backups"),
            "timeout": 900,
        }))?,
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg(&args)
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG");
    let r = measure_rollout(&handle, &marks, &cmd, nodes)?;
    Ok(r)
}

fn k8s_once(ctx: &Ctx, nodes: usize, target: &str) -> Result<Rollout> {
    let (handle, marks) = cluster(nodes, target)?;
    let dir = super::scratch()?;
    let ds = kubesim::calico::manifest_objects(target, InstallMethod::Manifest)?
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet" && o["metadata"]["name"] == "calico-node")
        .context("no calico-node DaemonSet in the target manifest")?;
    let ds_file = dir.path().join("calico-node.json");
    std::fs::write(&ds_file, serde_json::to_vec_pretty(&ds)?)?;
    std::fs::write(
        dir.path().join("hosts"),
        format!(
            "localhost ansible_connection=local ansible_python_interpreter={}\n",
            ctx.venv.join("bin/python").display()
        ),
    )?;
    let play = dir.path().join("rollout.yml");
    std::fs::write(
        &play,
        format!(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - kubernetes.core.k8s:\n        kubeconfig: \"{}\"\n        state: present\n        src: \"{}\"\n        wait: true\n        wait_timeout: 900\n",
            handle.kubeconfig_path().display(),
            ds_file.display()
        ),
    )?;
    let mut cmd = Command::new(ctx.venv.join("bin/ansible-playbook"));
    cmd.arg("-i")
        .arg(dir.path().join("hosts"))
        .arg(&play)
        .current_dir(dir.path())
        .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
        .env("ANSIBLE_CONFIG", dir.path().join("no-ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG");
    measure_rollout(&handle, &marks, &cmd, nodes)
}
