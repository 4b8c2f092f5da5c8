//! What a container does once started, chosen from its image and command as a real node would
//! run it: agnhost servers listen (or exit on a command line the real binary refuses), the
//! `calico_nettest` probe answers its targets from the network model, run-to-completion
//! containers of Jobs exit 0, everything else runs until deleted. Faults override all of it.

use crate::pointer::At;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::Cluster;
use crate::network::{
    self, Agnhost, ClusterObjects, ClusterView, Protocol, Source, Target, ViewOptions,
};
use crate::store::StoredObject;

/// What a started container does.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// Keeps running (a server, a daemon).
    Forever,
    /// Exits with this code, having written `log` and this termination message.
    Exit {
        /// Exit code.
        code: i32,
        /// Text for `kubectl logs`.
        log: String,
        /// The termination message (`terminationMessagePath`).
        message: String,
    },
}

/// Where the nettest probe script is mounted (see docs/probe-contract.md).
const PROBE_DIR: &str = "/etc/calico-nettest";

/// Decides what `container` of `pod` on `node` does.
pub fn decide(
    cluster: &Cluster,
    pod: &Value,
    container: &Value,
    node: &str,
    run_to_completion: bool,
) -> Run {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let faults = cluster.sim().faults();
    if faults.crash_loops(image, node) {
        return Run::Exit {
            code: 1,
            log: format!("kubesim: crash_loop fault for {image} on {node}\n"),
            message: String::new(),
        };
    }
    if is_probe(container) {
        return probe(cluster, pod, node);
    }
    let hostname = network::pod_hostname(pod);
    if let Some(Err(why)) = network::agnhost_listeners(container, &hostname) {
        return Run::Exit {
            code: 1,
            log: format!("{why}\n"),
            message: String::new(),
        };
    }
    if run_to_completion && !image.contains("agnhost") {
        return Run::Exit {
            code: 0,
            log: String::new(),
            message: String::new(),
        };
    }
    Run::Forever
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a container is a `calico_nettest` probe (it runs the probe script).
pub fn is_probe(container: &Value) -> bool {
    strings(container, "command")
        .iter()
        .chain(strings(container, "args").iter())
        .any(|a| a.starts_with(PROBE_DIR) && a.ends_with("probe.sh"))
}

/// The name of the ConfigMap mounted at the probe directory (in the pod's namespace).
pub fn probe_configmap(pod: &Value) -> Result<String, String> {
    let containers = pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let volume = containers
        .iter()
        .flat_map(|c| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(PROBE_DIR))
        .and_then(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
        .ok_or("no volume mounted at /etc/calico-nettest")?;
    pod.at("/spec/volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(volume.as_str()))
        })
        .and_then(|v| v.at("/configMap/name").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| "the probe volume is not a ConfigMap".to_string())
}

/// The ConfigMap mounted at the probe directory, read from the cluster.
fn probe_targets(cluster: &Cluster, pod: &Value) -> Result<String, String> {
    let ns = pod
        .at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let cm = probe_configmap(pod)?;
    let obj = cluster
        .get("v1", "configmaps", Some(ns), &cm)
        .map_err(|e| e.to_string())?;
    obj.at("/data/targets")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("ConfigMap {ns}/{cm} has no targets key"))
}

/// One target line of the probe contract.
struct ProbeTarget {
    id: String,
    protocol: String,
    host: String,
    port: String,
    expect: String,
    size: u32,
}

fn parse_targets(text: &str) -> Vec<ProbeTarget> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("-").to_string();
            ProbeTarget {
                id: get(0),
                protocol: get(1),
                host: get(2),
                port: get(3),
                expect: get(4),
                size: f.get(5).and_then(|s| s.parse().ok()).unwrap_or(0),
            }
        })
        .collect()
}

/// Runs the probe script's contract against the network model.
fn probe(cluster: &Cluster, pod: &Value, node: &str) -> Run {
    let text = match probe_targets(cluster, pod) {
        Ok(t) => t,
        Err(e) => return probe_setup_error(node, &e),
    };
    let snapshot = NetworkSnapshot::read(cluster);
    let view = ClusterView::build(&snapshot.objects(), ViewOptions::default(), &Agnhost);
    answer_probe(&view, &cluster.sim().faults().network, pod, node, &text)
}

/// What the probe script does when it cannot do its job (no targets): exit 2 with the
/// contract's `{"v":1, "node", "error"}` termination message.
pub fn probe_setup_error(node: &str, error: &str) -> Run {
    Run::Exit {
        code: 2,
        log: format!("{}\n", json!({"probe_error": error})),
        message: json!({"v": 1, "node": node, "error": error}).to_string(),
    }
}

/// What the probe script of `pod` on `node` reports for `targets` (the targets file of the
/// probe contract) in the cluster `view` under `faults`: its log and its termination message.
/// kubesim's kubelet and the real plane's probe runner both answer probes with it.
pub fn answer_probe(
    view: &ClusterView,
    faults: &network::Faults,
    pod: &Value,
    node: &str,
    targets: &str,
) -> Run {
    let ns = pod
        .at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = pod
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let source = Source::Pod {
        namespace: ns,
        name,
    };
    let mut log = String::new();
    let (mut ok, mut failed) = (0u64, Vec::new());
    let targets = parse_targets(targets);
    for (i, t) in targets.iter().enumerate() {
        let outcome = if t.protocol == "dns" {
            network::lookup(view, faults, source, &t.host)
        } else {
            let protocol = Protocol::parse(&t.protocol).unwrap_or(Protocol::Tcp);
            let port: u16 = t.port.parse().unwrap_or(0);
            let target = Target::new(&t.host, port, protocol)
                .payload(t.size)
                .flow(flow_of(name, i));
            network::connect(view, faults, source, &target)
        };
        let mut verdict = outcome.verdict.as_str().to_string();
        let answer = outcome.answer.clone().unwrap_or_default();
        let mut detail = outcome.detail.clone();
        if verdict == "ok" && t.expect != "-" && !crate::sim::glob(&t.expect, &answer) {
            verdict = "wrong_backend".into();
            detail = format!("answered '{answer}', expected '{}'", t.expect);
        }
        if verdict == "ok" {
            ok += 1;
        } else {
            failed.push(json!([t.id, verdict]));
        }
        log.push_str(
            &json!({"id": t.id, "protocol": t.protocol, "host": t.host, "port": t.port,
            "verdict": verdict, "ms": 1, "answer": answer, "detail": detail})
            .to_string(),
        );
        log.push('\n');
    }
    let mut summary = json!({"v": 1, "node": node, "total": targets.len(), "ok": ok, "failed": failed, "truncated": false}).to_string();
    if summary.len() > 4000 {
        summary = json!({"v": 1, "node": node, "total": targets.len(), "ok": ok, "failed": [], "truncated": true}).to_string();
    }
    Run::Exit {
        code: 0,
        log,
        message: summary,
    }
}

/// A stable per-probe flow id, like a source port, so repeated probes of a Service spread
/// over its backends.
fn flow_of(pod: &str, i: usize) -> u64 {
    pod.bytes().fold(i as u64 * 0x9e37_79b9, |h, b| {
        h.wrapping_mul(31).wrapping_add(b as u64)
    })
}

/// The objects the network view reads, shared with the store rather than copied: every
/// probe pod builds a view, and copying every pod for each would make a test of N nodes cost
/// N times the cluster.
pub struct NetworkSnapshot {
    nodes: Vec<Arc<StoredObject>>,
    pods: Vec<Arc<StoredObject>>,
    services: Vec<Arc<StoredObject>>,
    namespaces: Vec<Arc<StoredObject>>,
    network_policies: Vec<Arc<StoredObject>>,
}

impl NetworkSnapshot {
    /// Reads the current objects.
    pub fn read(cluster: &Cluster) -> Self {
        let all = |api: &str, resource: &str| {
            cluster
                .list_shared(api, resource, None, &Default::default())
                .unwrap_or_default()
        };
        Self {
            nodes: all("v1", "nodes"),
            pods: all("v1", "pods"),
            services: all("v1", "services"),
            namespaces: all("v1", "namespaces"),
            network_policies: all("networking.k8s.io/v1", "networkpolicies"),
        }
    }

    /// The objects as the network view takes them.
    pub fn objects(&self) -> ClusterObjects<'_> {
        fn values(v: &[Arc<StoredObject>]) -> Vec<&Value> {
            v.iter().map(|o| &o.value).collect()
        }
        ClusterObjects {
            nodes: values(&self.nodes),
            pods: values(&self.pods),
            services: values(&self.services),
            namespaces: values(&self.namespaces),
            network_policies: values(&self.network_policies),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_the_script() {
        let t = parse_targets("# c\na tcp 10.0.0.1 9376 - -\nb dns kubernetes.default - * \n\n");
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].protocol.as_str(), t[0].port.as_str(), t[0].size),
            ("tcp", "9376", 0)
        );
        assert_eq!(
            (t[1].host.as_str(), t[1].expect.as_str()),
            ("kubernetes.default", "*")
        );
    }

    #[test]
    fn the_probe_is_recognised_by_its_script() {
        assert!(is_probe(
            &json!({"command": ["bash", "/etc/calico-nettest/probe.sh"]})
        ));
        assert!(!is_probe(&json!({"args": ["serve-hostname"]})));
    }
}
