//! The kubelet of `calico_nettest`'s probe pods: kwok starts them (an address, Running), then
//! this runner answers their targets from kubesim's network model, built from the objects the
//! API server holds, and completes them with the termination message the probe contract
//! defines (`docs/probe-contract.md`): exit 0 and the summary, or the setup error.
//!
//! It is the same model and the same contract code kubesim's own kubelet uses
//! (`kubesim::kubelet::behaviour`), so the network test means the same thing in both worlds.
//! Network faults (a partitioned node, UDP dropped, DNS down, a small MTU) are read from
//! `network-faults.json` in the plane's directory on every probe, so a test changes them while
//! the plane runs. Probe pods on nodes in `not_ready_nodes` never run, as on a node whose
//! kubelet is gone.
//!
//! What a kubelet would also do and this runner does not: serve the probe's log (`kubectl
//! logs` needs a kubelet). The module reads the log only when the termination message is
//! truncated (more failures than fit in 4 KiB).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Client;
use kubesim::kubelet::behaviour::{self as contract, Run};
use kubesim::network::{Agnhost, ClusterObjects, ClusterView, ViewOptions};
use kubesim::sim::SimFaults;
use serde_json::{Value, json};

use crate::api;

/// The field manager (and so the audit log's user agent is the runner's own).
const MANAGER: &str = "realplane-probe-runner";

/// Where a plane's runner reads the faults from.
pub fn faults_file(dir: &Path) -> PathBuf {
    dir.join("network-faults.json")
}

/// The faults in force: `network` answers the probes, `not_ready_nodes` keeps probes from
/// running on those nodes. A missing or unreadable file is a healthy network.
pub fn read_faults(dir: &Path) -> SimFaults {
    std::fs::read(faults_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the faults the runner reads, atomically.
pub fn write_faults(dir: &Path, faults: &SimFaults) -> std::io::Result<()> {
    let tmp = dir.join(".network-faults.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(faults).unwrap_or_default())?;
    std::fs::rename(tmp, faults_file(dir))
}

fn is_probe_pod(pod: &Value) -> bool {
    pod["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(contract::is_probe))
}

/// Started by kwok (Running, an address) and not finished yet.
fn waiting_for_answer(pod: &Value) -> bool {
    let running =
        pod["status"]["phase"] == "Running" && pod["metadata"]["deletionTimestamp"].is_null();
    let finished = pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| !c["state"]["terminated"].is_null()));
    running && !finished && is_probe_pod(pod)
}

/// The objects the network view reads, from the API server.
struct Snapshot {
    nodes: Vec<Value>,
    pods: Vec<Value>,
    services: Vec<Value>,
    namespaces: Vec<Value>,
    network_policies: Vec<Value>,
}

impl Snapshot {
    async fn read(client: &Client) -> Result<Self, api::Error> {
        Ok(Self {
            nodes: api::list(client, "v1", "nodes", None).await?,
            pods: api::list(client, "v1", "pods", None).await?,
            services: api::list(client, "v1", "services", None).await?,
            namespaces: api::list(client, "v1", "namespaces", None).await?,
            network_policies: api::list(client, "networking.k8s.io/v1", "networkpolicies", None)
                .await?,
        })
    }

    /// As kubesim's view takes them. Endpoints are derived from Services' selectors, as
    /// kubesim derives them, and the `kubernetes` Service's from the control-plane nodes (the
    /// API server's real endpoint is 127.0.0.1, which no pod could reach).
    fn objects(&self) -> ClusterObjects<'_> {
        ClusterObjects {
            nodes: self.nodes.iter().collect(),
            pods: self.pods.iter().collect(),
            services: self.services.iter().collect(),
            namespaces: self.namespaces.iter().collect(),
            network_policies: self.network_policies.iter().collect(),
            ..Default::default()
        }
    }
}

async fn targets(client: &Client, pod: &Value) -> Result<String, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let cm = contract::probe_configmap(pod)?;
    let obj = api::get(client, "v1", "configmaps", Some(ns), &cm)
        .await
        .map_err(|e| e.to_string())?;
    obj["data"]["targets"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("ConfigMap {ns}/{cm} has no targets key"))
}

/// The status a kubelet posts for a probe container that ran.
fn completed_status(pod: &Value, code: i32, message: &str) -> Value {
    let now = kubesim::clock::now_rfc3339();
    let statuses: Vec<Value> = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let started = c["state"]["running"]["startedAt"].clone();
            json!({"name": c["name"], "image": c["image"], "imageID": c["imageID"],
                "containerID": c["containerID"], "ready": false, "started": false,
                "restartCount": c["restartCount"],
                "state": {"running": null, "waiting": null, "terminated": {
                    "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": message, "startedAt": started, "finishedAt": now}}})
        })
        .collect();
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    json!({"status": {"phase": phase, "containerStatuses": statuses, "conditions": [
        {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}]}})
}

async fn answer(
    client: &Client,
    snapshot: &Snapshot,
    faults: &SimFaults,
    pod: &Value,
) -> Result<(), api::Error> {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let run = match targets(client, pod).await {
        Ok(text) => {
            let view = ClusterView::build(&snapshot.objects(), ViewOptions::default(), &Agnhost);
            contract::answer_probe(&view, &faults.network, pod, node, &text)
        }
        Err(e) => contract::probe_setup_error(node, &e),
    };
    let Run::Exit { code, message, .. } = run else {
        return Ok(());
    };
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let path = format!("{}/status", api::path("v1", "pods", Some(ns), Some(name)));
    let body = completed_status(pod, code, &message);
    let query = format!("{path}?fieldManager={MANAGER}");
    api::request(
        client,
        "PATCH",
        &query,
        "application/strategic-merge-patch+json",
        Some(&body),
    )
    .await?;
    Ok(())
}

/// Answers probe pods until the task is dropped.
pub async fn run(client: Client, dir: PathBuf) {
    let mut done: HashSet<String> = HashSet::new();
    loop {
        if let Err(e) = pass(&client, &dir, &mut done).await {
            eprintln!("realplane probe runner: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn pass(client: &Client, dir: &Path, done: &mut HashSet<String>) -> Result<(), api::Error> {
    let pods = api::list(client, "v1", "pods", None).await?;
    let faults = read_faults(dir);
    let due: Vec<&Value> = pods
        .iter()
        .filter(|p| waiting_for_answer(p))
        .filter(|p| !done.contains(p["metadata"]["uid"].as_str().unwrap_or("")))
        .filter(|p| {
            let node = p["spec"]["nodeName"].as_str().unwrap_or("");
            !faults.not_ready_nodes.iter().any(|n| n == node)
        })
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let snapshot = Snapshot::read(client).await?;
    for pod in due {
        answer(client, &snapshot, &faults, pod).await?;
        done.insert(pod["metadata"]["uid"].as_str().unwrap_or("").to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesim::network;

    #[test]
    fn faults_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_faults(dir.path()), SimFaults::default());
        let f = SimFaults {
            network: network::Faults::partition(["w2"]),
            ..SimFaults::default()
        };
        write_faults(dir.path(), &f).unwrap();
        assert_eq!(read_faults(dir.path()), f);
    }

    #[test]
    fn only_running_unfinished_probe_pods_wait_for_an_answer() {
        let probe = json!({"metadata": {"uid": "u"}, "spec": {"containers": [
            {"name": "probe", "command": ["bash", "/etc/calico-nettest/probe.sh"]}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "probe", "state": {"running": {}}}]}});
        assert!(waiting_for_answer(&probe));
        let mut done = probe.clone();
        done["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}});
        assert!(!waiting_for_answer(&done));
        let mut server = probe.clone();
        server["spec"]["containers"][0] = json!({"name": "s", "args": ["serve-hostname"]});
        assert!(!waiting_for_answer(&server));
        let status = completed_status(&probe, 0, "{\"v\":1}");
        assert_eq!(status["status"]["phase"], "Succeeded");
        assert_eq!(
            status["status"]["containerStatuses"][0]["state"]["terminated"]["message"],
            "{\"v\":1}"
        );
    }
}
