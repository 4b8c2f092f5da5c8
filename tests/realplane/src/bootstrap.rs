//! What kubeadm and the kubelets put into a new cluster, created once the API server is up:
//! the admin binding, the nodes (registered as kubelets register them, with kubeadm's labels
//! and taint on control-plane nodes), kubeadm's ConfigMap and add-ons (kube-proxy, CoreDNS
//! behind `kube-dns`), and kwok's default node and pod lifecycle.

use std::net::Ipv4Addr;

use kube::Client;
use serde_json::{Value, json};

use crate::api::{self, Error};

/// The annotation that makes kwok manage a node.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The annotation the node stage reads the node's InternalIP from.
pub const INTERNAL_IP_ANNOTATION: &str = "realplane.k8s-calico.test/internal-ip";
/// The field manager of what "kubeadm" creates.
const KUBEADM: &str = "kubeadm";

/// One node to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its name: `cp1`.. for control-plane nodes, `w1`.. for workers (kubesim's names).
    pub name: String,
    /// Whether it is a control-plane node.
    pub control_plane: bool,
    /// Its InternalIP.
    pub ip: Ipv4Addr,
}

/// `count` nodes, the first `control_plane` of them control-plane nodes, with addresses from
/// 10.0.0.10 on (240 a /24), as kubesim's scenarios number them.
pub fn node_specs(count: usize, control_plane: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| NodeSpec {
            name: if i < control_plane {
                format!("cp{}", i + 1)
            } else {
                format!("w{}", i + 1 - control_plane)
            },
            control_plane: i < control_plane,
            ip: Ipv4Addr::new(
                10,
                0,
                u8::try_from(i / 240).unwrap_or(u8::MAX),
                10 + (i % 240) as u8,
            ),
        })
        .collect()
}

/// The Node object a kubelet registers, with kubeadm's marks on control-plane nodes.
pub fn node_object(n: &NodeSpec) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"});
    let mut taints = Vec::new();
    if n.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
        taints
            .push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
    }
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n.name, "labels": labels, "annotations": {
            KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1,
            INTERNAL_IP_ANNOTATION: n.ip.to_string(),
            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"taints": taints}})
}

/// Creates `object`, leaving one that already exists as it is.
async fn ensure(
    client: &Client,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    object: Value,
) -> Result<(), Error> {
    match api::create(client, api_version, resource, namespace, &object, KUBEADM).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// kubeadm's `kubeadm:cluster-admins` binding, which authorises admin.conf's user.
pub async fn admin_binding(client: &Client) -> Result<(), Error> {
    ensure(client, "rbac.authorization.k8s.io/v1", "clusterrolebindings", None, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubeadm:cluster-admins"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}]})).await
}

/// The default lifecycle (`stages/*.yaml`): nodes become Ready and keep posting status, pods
/// run and are ready, Jobs' pods complete, deleted pods go.
pub fn default_stages(kubelet_version: &str) -> Vec<Value> {
    [
        include_str!("../stages/node-ready.yaml"),
        include_str!("../stages/node-heartbeat.yaml"),
        include_str!("../stages/pod-running.yaml"),
        include_str!("../stages/pod-complete.yaml"),
        include_str!("../stages/pod-delete.yaml"),
        include_str!("../stages/pod-recover.yaml"),
    ]
    .iter()
    .map(|text| {
        let text = text.replace("__KUBELET_VERSION__", kubelet_version);
        serde_saphyr::from_str::<Value>(&text).expect("the stages shipped with realplane parse")
    })
    .collect()
}

/// Registers the nodes.
pub async fn nodes(client: &Client, nodes: &[NodeSpec]) -> Result<(), Error> {
    for n in nodes {
        ensure(client, "v1", "nodes", None, node_object(n)).await?;
    }
    Ok(())
}

/// kubeadm's `kubeadm-config` ConfigMap and add-ons: kube-proxy on every node, CoreDNS (two
/// replicas) behind the `kube-dns` Service at 10.96.0.10.
pub async fn kubeadm_addons(client: &Client, version: &str, pod_subnet: &str) -> Result<(), Error> {
    let ks = Some("kube-system");
    ensure(client, "v1", "configmaps", ks, json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": format!("apiServer: {{}}\napiVersion: kubeadm.k8s.io/v1beta4\ncertificatesDir: /etc/kubernetes/pki\nclusterName: kubernetes\ncontrollerManager: {{}}\ndns: {{}}\nencryptionAlgorithm: RSA-2048\netcd:\n  local:\n    dataDir: /var/lib/etcd\nimageRepository: registry.k8s.io\nkind: ClusterConfiguration\nkubernetesVersion: {version}\nnetworking:\n  dnsDomain: cluster.local\n  podSubnet: {pod_subnet}\n  serviceSubnet: 10.96.0.0/12\nproxy: {{}}\nscheduler: {{}}\n")}})).await?;
    ensure(client, "apps/v1", "daemonsets", ks, json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {"hostNetwork": true, "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}], "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "kube-proxy", "image": format!("registry.k8s.io/kube-proxy:{version}"),
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": true}}]}}}})).await?;
    ensure(client, "v1", "services", ks, json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}})).await?;
    ensure(client, "apps/v1", "deployments", ks, json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {"priorityClassName": "system-cluster-critical",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.1",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 10}}]}}}})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_and_addressed_like_kubesims() {
        let n = node_specs(5, 1);
        let names: Vec<&str> = n.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["cp1", "w1", "w2", "w3", "w4"]);
        assert_eq!(n[0].ip.to_string(), "10.0.0.10");
        let cp = node_object(&n[0]);
        assert_eq!(
            cp["spec"]["taints"][0]["key"],
            "node-role.kubernetes.io/control-plane"
        );
        assert!(
            node_object(&n[1])["spec"]["taints"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_default_stages_parse_and_carry_the_kubelet_version() {
        let stages = default_stages("v1.34.4");
        assert_eq!(stages.len(), 6);
        assert!(stages[0].to_string().contains("kubeletVersion: v1.34.4"));
        assert!(stages.iter().all(|s| s["kind"] == "Stage"));
    }
}
