//! The objects a network test deploys, all in one temporary namespace.
//!
//! Servers run `agnhost serve-hostname`, which only answers with its hostname: unlike `netexec`
//! it has no command endpoint, so the test never exposes a shell. Probes are Jobs pinned to
//! their node, one per node, that run the probe script and report through their log and
//! termination message.

use serde_json::{Value, json};

/// The label every object of a run carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "k8s-calico");
/// The label with the run id.
pub const RUN_LABEL: &str = "k8s-calico.io/nettest-run";
/// The label of probe pods (used by the network_policy scenario's allow rule).
pub const ROLE_LABEL: &str = "k8s-calico.io/nettest-role";

/// What the workloads are built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace of the run.
    pub namespace: String,
    /// The run id.
    pub run_id: String,
    /// The agnhost image.
    pub image: String,
    /// Image pull secrets.
    pub image_pull_secrets: Vec<String>,
    /// Node selector for every pod.
    pub node_selector: Value,
    /// Tolerations for every pod.
    pub tolerations: Value,
    /// Server port (TCP/HTTP and UDP).
    pub server_port: u16,
    /// Host-network server port.
    pub host_server_port: u16,
    /// Service port.
    pub service_port: u16,
    /// Seconds a probe may run.
    pub probe_deadline: u64,
    /// Seconds per connection attempt.
    pub connect_timeout: u64,
}

impl Settings {
    fn labels(&self, role: &str) -> Value {
        json!({MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: self.run_id, ROLE_LABEL: role})
    }

    fn pull_secrets(&self) -> Value {
        Value::Array(
            self.image_pull_secrets
                .iter()
                .map(|s| json!({"name": s}))
                .collect(),
        )
    }
}

/// The run's namespace.
pub fn namespace(s: &Settings) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": s.namespace, "labels": {MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: s.run_id}}})
}

fn server_daemonset(s: &Settings, name: &str, host_network: bool, port: u16) -> Value {
    let role = if host_network {
        "host-server"
    } else {
        "server"
    };
    // serve-hostname refuses `--http` together with `--udp` (the agnhost README), so HTTP and
    // UDP are two containers of one pod sharing the port number on different protocols.
    let container = |name: &str, mode: [&str; 2], port_name: &str, protocol: &str| {
        let mut c = json!({
            "name": name,
            "image": s.image,
            "args": ["serve-hostname", mode[0], mode[1], format!("--port={port}")],
            "ports": [{"name": port_name, "containerPort": port, "protocol": protocol}],
            "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": !host_network || port > 1024}
        });
        if protocol == "TCP" {
            c["readinessProbe"] = json!({"tcpSocket": {"port": port}, "periodSeconds": 2});
        }
        c
    };
    let mut pod = json!({
        "containers": [
            container("http", ["--http=true", "--udp=false"], "http", "TCP"),
            container("udp", ["--http=false", "--udp=true"], "udp", "UDP")
        ],
        "tolerations": s.tolerations,
        "nodeSelector": s.node_selector,
        "imagePullSecrets": s.pull_secrets(),
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": false
    });
    if host_network {
        pod["hostNetwork"] = json!(true);
        pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": s.namespace, "labels": s.labels(role)},
        "spec": {
            "selector": {"matchLabels": {RUN_LABEL: s.run_id, ROLE_LABEL: role}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": s.labels(role)}, "spec": pod}
        }
    })
}

/// The pod-network server DaemonSet.
pub fn servers(s: &Settings) -> Value {
    server_daemonset(s, "nt-server", false, s.server_port)
}

/// The host-network server DaemonSet (pod → node).
pub fn host_servers(s: &Settings) -> Value {
    server_daemonset(s, "nt-host-server", true, s.host_server_port)
}

/// The ClusterIP Service in front of the pod-network servers, or a NodePort one.
pub fn service(s: &Settings, node_port: bool) -> Value {
    let name = if node_port {
        "nt-nodeport"
    } else {
        "nt-server"
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": s.namespace, "labels": s.labels("server")},
        "spec": {
            "type": if node_port { "NodePort" } else { "ClusterIP" },
            "selector": {RUN_LABEL: s.run_id, ROLE_LABEL: "server"},
            "ports": [
                {"name": "http", "port": s.service_port, "targetPort": s.server_port, "protocol": "TCP"},
                {"name": "udp", "port": s.service_port, "targetPort": s.server_port, "protocol": "UDP"}
            ]
        }
    })
}

/// A Kubernetes-safe name for a node's objects (node names may be long FQDNs).
pub fn node_slug(node: &str, host_network: bool, round: u32) -> String {
    let mut base: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(30);
    let hash = node.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let kind = if host_network { "h" } else { "p" };
    format!(
        "nt-probe-{kind}{round}-{}-{:06x}",
        base.trim_matches('-'),
        hash & 0xffffff
    )
}

/// The ConfigMap with one node's targets and the probe script.
pub fn targets_configmap(s: &Settings, name: &str, script: &str, targets: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": s.namespace, "labels": s.labels("probe")},
        "data": {"targets": targets, "probe.sh": script}
    })
}

/// The probe Job for one node, pinned to it by node name as the DaemonSet controller pins its
/// pods: the `kubernetes.io/hostname` label is the kubelet's host name, which differs from the
/// node name where nodes are named after DNS names (cloud providers, `--hostname-override`).
pub fn probe_job(s: &Settings, name: &str, node: &str, host_network: bool) -> Value {
    let mut pod = json!({
        "restartPolicy": "Never",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        }}},
        "tolerations": s.tolerations,
        "imagePullSecrets": s.pull_secrets(),
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "probe",
            "image": s.image,
            "command": ["bash", "/etc/calico-nettest/probe.sh"],
            "env": [
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "PROBE_TIMEOUT", "value": s.connect_timeout.to_string()}
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [{"name": "targets", "mountPath": "/etc/calico-nettest", "readOnly": true}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "128Mi"}}
        }],
        "volumes": [{"name": "targets", "configMap": {"name": name}}]
    });
    if host_network {
        pod["hostNetwork"] = json!(true);
        pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    let role = if host_network { "host-probe" } else { "probe" };
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": s.namespace, "labels": s.labels(role)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": s.probe_deadline,
            "template": {"metadata": {"labels": s.labels(role)}, "spec": pod}
        }
    })
}

/// The network_policy scenario's default-deny ingress policy for the servers.
pub fn deny_servers(s: &Settings) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "nt-deny-ingress", "namespace": s.namespace, "labels": s.labels("policy")},
        "spec": {"podSelector": {"matchLabels": {ROLE_LABEL: "server"}}, "policyTypes": ["Ingress"]}
    })
}

/// The network_policy scenario's allow rule: probes may reach the servers.
pub fn allow_probes(s: &Settings) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "nt-allow-probes", "namespace": s.namespace, "labels": s.labels("policy")},
        "spec": {
            "podSelector": {"matchLabels": {ROLE_LABEL: "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {ROLE_LABEL: "probe"}}}]}]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            namespace: "calico-nettest-abc".into(),
            run_id: "abc".into(),
            image: "registry.k8s.io/e2e-test-images/agnhost:2.53".into(),
            image_pull_secrets: vec!["regcred".into()],
            node_selector: json!({}),
            tolerations: json!([{"operator": "Exists"}]),
            server_port: 9376,
            host_server_port: 31937,
            service_port: 80,
            probe_deadline: 120,
            connect_timeout: 3,
        }
    }

    #[test]
    fn no_workload_exposes_a_shell() {
        let s = settings();
        for ds in [servers(&s), host_servers(&s)] {
            for c in ds
                .pointer("/spec/template/spec/containers")
                .unwrap()
                .as_array()
                .unwrap()
            {
                let args = c["args"].to_string();
                assert!(
                    args.contains("serve-hostname") && !args.contains("netexec"),
                    "{args}"
                );
                // agnhost exits when HTTP and a raw mode are asked of one process.
                assert!(
                    !(args.contains("--http=true") && args.contains("--udp=true")),
                    "{args}"
                );
            }
        }
    }

    #[test]
    fn probes_are_pinned_and_tolerant() {
        let s = settings();
        let j = probe_job(&s, "nt-probe-p0-w1-000000", "w1", false);
        let term = j
            .pointer("/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0")
            .unwrap();
        assert_eq!(
            term,
            &json!({"key": "metadata.name", "operator": "In", "values": ["w1"]})
        );
        assert!(j.pointer("/spec/template/spec/nodeSelector").is_none());
        assert_eq!(j.pointer("/spec/backoffLimit").unwrap(), 0);
        assert_eq!(
            j.pointer("/spec/template/spec/tolerations/0/operator")
                .unwrap(),
            "Exists"
        );
        assert_eq!(
            j.pointer("/spec/template/spec/imagePullSecrets/0/name")
                .unwrap(),
            "regcred"
        );
    }

    #[test]
    fn node_names_become_valid_object_names() {
        let n = node_slug("Worker-1.example.internal", false, 0);
        assert!(
            n.len() <= 63
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert_ne!(node_slug("a.b", false, 0), node_slug("a-b", false, 0));
    }
}
