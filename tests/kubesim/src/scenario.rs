//! Scenario files: the starting cluster of a test or the demo, as YAML.
//!
//! ```yaml
//! kubernetes_version: v1.27.16
//! nodes: {count: 5, control_plane: 1}        # or a list of {name, control_plane, labels, taints, arch}
//! calico:
//!   method: manifest                          # or operator (the Tigera operator emulation)
//!   version: v3.26.4
//!   pool_cidr: 192.168.0.0/16
//!   env: {IP_AUTODETECTION_METHOD: "interface=eth0"}   # calico-node env set or overridden
//!   config: {veth_mtu: "1440"}                          # calico-config data
//!   manifest: calico.yaml                     # or calico-typha.yaml (manifest installs)
//!   datastore: kubernetes                     # or etcd (manifest installs)
//!   installation: {registry: my.registry.io/}  # operator installs: merged into Installation.spec
//! other_cni: [flannel]                        # flannel, canal, cilium, weave, kube-router, antrea, multus
//! bulk: {ipamblocks: 1000, ipamhandles: 1000, networkpolicies: 100, globalnetworkpolicies: 10}
//! faults: {crash_loop: [{image: "*calico/node:v3.27.5", nodes: [w2]}]}
//! timing: {time_scale: 0.01}
//! wait_ready: true
//! ```
//!
//! [`Scenario::start`] creates what `kubeadm init`/`join` leave (nodes with addresses and
//! roles, `kube-dns` with CoreDNS, kube-proxy, the kubeadm-config ConfigMap), installs Calico
//! as `kubectl apply -f calico.yaml` would (client-side apply's field manager and
//! last-applied annotation), or through the Tigera operator as its quickstart does
//! (`kubectl create -f operator-crds.yaml` from 3.30, `kubectl create -f tigera-operator.yaml`,
//! `kubectl create -f custom-resources.yaml`; the emulated operator then renders
//! `calico-system`), and, with `wait_ready`, returns once everything is Ready (operator
//! installs: once TigeraStatus `calico` is Available).

use crate::pointer::At;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_calico::catalog::InstallMethod;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::server::{Handle, Server, ServerConfig};
use crate::sim::{SimFaults, Timing};
use crate::version::KubeVersion;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The simulated Kubernetes version.
    #[serde(default = "default_version")]
    pub kubernetes_version: String,
    /// The nodes.
    #[serde(default)]
    pub nodes: Nodes,
    /// A Calico install, if any.
    #[serde(default)]
    pub calico: Option<CalicoInstall>,
    /// Other CNIs' workloads.
    #[serde(default)]
    pub other_cni: Vec<String>,
    /// Calico resources in bulk.
    #[serde(default)]
    pub bulk: BTreeMap<String, usize>,
    /// Faults from the start.
    #[serde(default)]
    pub faults: SimFaults,
    /// Timing.
    #[serde(default)]
    pub timing: Option<Timing>,
    /// Return from [`Scenario::start`] only when every workload is Ready.
    #[serde(default = "yes")]
    pub wait_ready: bool,
}

fn default_version() -> String {
    "v1.27.16".into()
}

fn yes() -> bool {
    true
}

/// The nodes of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Nodes {
    /// `control_plane` control-plane nodes `cp1..`, then workers `w1..`.
    Count {
        /// All nodes.
        count: usize,
        /// How many of them are control-plane nodes.
        #[serde(default = "one")]
        control_plane: usize,
    },
    /// Each node.
    List(Vec<NodeSpec>),
}

fn one() -> usize {
    1
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes::Count {
            count: 3,
            control_plane: 1,
        }
    }
}

/// One node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Name (and hostname).
    pub name: String,
    /// A control-plane node (labelled and tainted as kubeadm does).
    #[serde(default)]
    pub control_plane: bool,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra taints.
    #[serde(default)]
    pub taints: Vec<Value>,
    /// `kubernetes.io/arch`.
    #[serde(default = "amd64")]
    pub arch: String,
}

fn amd64() -> String {
    "amd64".into()
}

/// How Calico is installed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalicoInstall {
    /// `manifest` or `operator`.
    #[serde(default = "manifest")]
    pub method: String,
    /// The release.
    pub version: String,
    /// The IPv4 pool.
    #[serde(default = "pool")]
    pub pool_cidr: String,
    /// calico-node environment variables set or overridden (manifest installs).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `calico-config` data set or overridden (manifest installs).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Manifest installs: the file installed, `calico.yaml` or `calico-typha.yaml` (upstream's
    /// choice above 50 nodes: calico.yaml plus the calico-typha Deployment, Service and
    /// PodDisruptionBudget).
    #[serde(default = "calico_yaml")]
    pub manifest: String,
    /// `kubernetes` or `etcd`.
    #[serde(default = "kubernetes")]
    pub datastore: String,
    /// Operator installs: fields merged (JSON merge patch) into `Installation default`'s spec
    /// of custom-resources.yaml (`registry`, `calicoNetwork`, `controlPlaneReplicas`, ...).
    #[serde(default)]
    pub installation: Option<Value>,
}

fn manifest() -> String {
    "manifest".into()
}

fn calico_yaml() -> String {
    "calico.yaml".into()
}

fn pool() -> String {
    "192.168.0.0/16".into()
}

fn kubernetes() -> String {
    "kubernetes".into()
}

impl CalicoInstall {
    /// The install method.
    pub fn method(&self) -> Result<InstallMethod> {
        match self.method.as_str() {
            "manifest" => Ok(InstallMethod::Manifest),
            "operator" => Ok(InstallMethod::Operator),
            other => bail!("calico.method must be manifest or operator, got {other}"),
        }
    }
}

impl Scenario {
    /// Parses a scenario.
    pub fn from_yaml(text: &str) -> Result<Self> {
        serde_saphyr::from_str(text).map_err(|e| anyhow!("invalid scenario: {e}"))
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| path.display().to_string())
    }

    /// Starts a server with this scenario and the default server settings.
    pub fn start(self) -> Result<Handle> {
        self.start_with(ServerConfig::default())
    }

    /// Starts a server with this scenario over `config` (port, TLS, kubeconfig path...).
    pub fn start_with(self, mut config: ServerConfig) -> Result<Handle> {
        config.version = KubeVersion::parse(&self.kubernetes_version)
            .map_err(|e| anyhow!("kubernetes_version: {e}"))?;
        if let Some(t) = &self.timing {
            config.sim.timing = t.clone();
        }
        config.sim.faults = self.faults.clone();
        if let Some(c) = &self.calico {
            c.method()?;
        }
        let handle = Server::start(config)?;
        self.populate(handle.cluster())?;
        if self.wait_ready {
            wait_ready(handle.cluster(), Duration::from_secs(120))?;
        }
        Ok(handle)
    }

    fn node_specs(&self) -> Vec<NodeSpec> {
        match &self.nodes {
            Nodes::List(l) => l.clone(),
            Nodes::Count {
                count,
                control_plane,
            } => (0..*count)
                .map(|i| NodeSpec {
                    name: if i < *control_plane {
                        format!("cp{}", i + 1)
                    } else {
                        format!("w{}", i + 1 - control_plane)
                    },
                    control_plane: i < *control_plane,
                    labels: BTreeMap::new(),
                    taints: Vec::new(),
                    arch: amd64(),
                })
                .collect(),
        }
    }

    fn populate(&self, c: &Cluster) -> Result<()> {
        let kubeadm = WriteOptions::manager("kubeadm");
        let version = c.version().to_string();
        for (i, n) in self.node_specs().iter().enumerate() {
            let mut labels = json!({"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": n.arch,
                "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": n.arch});
            let mut taints = n.taints.clone();
            if n.control_plane {
                labels["node-role.kubernetes.io/control-plane"] = json!("");
                labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
                taints.push(
                    json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
                );
            }
            for (k, v) in &n.labels {
                labels[k] = json!(v);
            }
            let ip = node_address(i).to_string();
            c.create(
                "v1",
                "nodes",
                None,
                json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n.name, "labels": labels,
                        "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock"}},
                    "spec": {"taints": taints, "podCIDR": format!("10.244.{i}.0/24")},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": n.name}],
                        "nodeInfo": {"kubeletVersion": version},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}}),
                &kubeadm,
            )
            .map_err(|e| anyhow!("node {}: {e}", n.name))?;
        }
        let pod_subnet = self
            .calico
            .as_ref()
            .map(|c| c.pool_cidr.clone())
            .unwrap_or_else(|| "10.244.0.0/16".into());
        c.create("v1", "configmaps", Some("kube-system"), json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": format!("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: {version}\nnetworking:\n  podSubnet: {pod_subnet}\n  serviceSubnet: 10.96.0.0/12\n  dnsDomain: cluster.local\n")}}), &kubeadm)
            .map_err(|e| anyhow!("kubeadm-config: {e}"))?;

        if let Some(calico) = &self.calico {
            install_calico(c, calico)?;
        }
        for cni in &self.other_cni {
            c.create(
                "apps/v1",
                "daemonsets",
                Some(other_cni_namespace(c, cni)?.as_str()),
                other_cni_daemonset(cni)?,
                &kubeadm,
            )
            .map_err(|e| anyhow!("{cni}: {e}"))?;
        }
        bulk(c, &self.bulk)?;

        // What kubeadm deploys: kube-proxy on every node, CoreDNS behind kube-dns.
        c.create("apps/v1", "daemonsets", Some("kube-system"), json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
            "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}}, "spec": {"hostNetwork": true, "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}], "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "kube-proxy", "image": format!("registry.k8s.io/kube-proxy:{version}"), "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"]}]}}}}), &kubeadm)
            .map_err(|e| anyhow!("kube-proxy: {e}"))?;
        c.create("v1", "services", Some("kube-system"), json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}, {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}), &kubeadm)
            .map_err(|e| anyhow!("kube-dns: {e}"))?;
        c.create("apps/v1", "deployments", Some("kube-system"), json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}}, "spec": {"priorityClassName": "system-cluster-critical",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.10.1", "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"}, {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 10}}]}}}}), &kubeadm)
            .map_err(|e| anyhow!("coredns: {e}"))?;
        Ok(())
    }
}

/// Applies objects as `kubectl apply` (client side) does on first use: created, with the
/// last-applied annotation and kubectl's field manager. CRDs first, waited until served.
/// The InternalIP of the `i`-th node of a scenario: 10.0.0.10 onwards, 240 hosts per /24
/// (.10 to .249), so every address is a distinct, valid host address (up to 61,440 nodes).
fn node_address(i: usize) -> std::net::Ipv4Addr {
    let third = u8::try_from(i / 240).unwrap_or(u8::MAX);
    std::net::Ipv4Addr::new(10, 0, third, 10 + (i % 240) as u8)
}

pub fn kubectl_apply(c: &Cluster, objects: &[Value]) -> Result<()> {
    create_in_order(c, objects, "kubectl-client-side-apply", |o| {
        let mut obj = o.clone();
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!(o.to_string());
        obj
    })
}

/// Creates `objects` under `manager`, CRDs first and every other object once its type is
/// served, each as `prepare` makes it.
fn create_in_order(
    c: &Cluster,
    objects: &[Value],
    manager: &str,
    prepare: impl Fn(&Value) -> Value,
) -> Result<()> {
    let opts = WriteOptions::manager(manager);
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    for o in crds.iter().chain(rest.iter()) {
        if o["kind"] != "CustomResourceDefinition" {
            wait_served(c, o)?;
        }
        let api = o["apiVersion"].as_str().unwrap_or("v1");
        let kind = o["kind"].as_str().unwrap_or("");
        let ns = o.at("/metadata/namespace").and_then(Value::as_str);
        c.create(api, kind, ns, prepare(o), &opts).map_err(|e| {
            anyhow!(
                "{kind} {}: {e}",
                o.at("/metadata/name").and_then(Value::as_str).unwrap_or("")
            )
        })?;
    }
    Ok(())
}

fn wait_served(c: &Cluster, o: &Value) -> Result<()> {
    let api = o["apiVersion"].as_str().unwrap_or("v1");
    let kind = o["kind"].as_str().unwrap_or("");
    let until = Instant::now() + Duration::from_secs(10);
    while c.resolve(api, kind).is_err() {
        if Instant::now() > until {
            bail!("{api} {kind} is not served (its CRD never became Established)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Creates objects as `kubectl create -f` does (no last-applied annotation, kubectl-create's
/// field manager). CRDs first, waited until served.
pub fn kubectl_create(c: &Cluster, objects: &[Value]) -> Result<()> {
    create_in_order(c, objects, "kubectl-create", Value::clone)
}

/// The operator quickstart: the operator (and from 3.30 its CRDs) with `kubectl create`, then
/// custom-resources.yaml with the scenario's pool and Installation fields.
fn install_operator(c: &Cluster, calico: &CalicoInstall) -> Result<()> {
    if calico.datastore != "kubernetes" {
        bail!(
            "calico.datastore {}: operator installs use the Kubernetes API datastore only",
            calico.datastore
        );
    }
    if calico.manifest != "calico.yaml" {
        bail!(
            "calico.manifest {} is for manifest installs; operator installs render typha themselves",
            calico.manifest
        );
    }
    if !calico.env.is_empty() || !calico.config.is_empty() {
        bail!(
            "calico.env and calico.config are for manifest installs; give operator installs calico.installation (Installation spec fields)"
        );
    }
    let v: k8s_calico::version::Version = calico
        .version
        .parse()
        .map_err(|e| anyhow!("calico.version: {e}"))?;
    for (file, text) in crate::calico::manifest_files(&calico.version, InstallMethod::Operator)? {
        if file == "custom-resources.yaml" {
            continue;
        }
        let objects = crate::calico::parse_yaml(&text).map_err(|e| anyhow!("{file}: {e}"))?;
        kubectl_create(c, &objects).map_err(|e| anyhow!("kubectl create -f {file}: {e}"))?;
    }
    let mut resources = crate::calico::custom_resources(&v, &calico.pool_cidr);
    if let Some(extra) = &calico.installation
        && let Some(inst) = resources.iter_mut().find(|o| o["kind"] == "Installation")
    {
        merge_patch(&mut inst["spec"], extra);
    }
    kubectl_create(c, &resources)
        .map_err(|e| anyhow!("kubectl create -f custom-resources.yaml: {e}"))
}

/// RFC 7386 merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch.as_object() {
        Some(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    target.as_object_mut().map(|t| t.remove(k));
                } else {
                    merge_patch(&mut target[k], v);
                }
            }
        }
        None => *target = patch.clone(),
    }
}

fn install_calico(c: &Cluster, calico: &CalicoInstall) -> Result<()> {
    let method = calico.method()?;
    if method == InstallMethod::Operator {
        return install_operator(c, calico);
    }
    if calico.installation.is_some() {
        bail!("calico.installation is for operator installs");
    }
    let mut objects = crate::calico::manifest_flavour_objects(&calico.version, &calico.manifest)
        .map_err(|e| anyhow!("calico.manifest: {e}"))?;
    for o in objects.iter_mut() {
        if o["kind"] == "ConfigMap" && o.at("/metadata/name") == Some(&json!("calico-config")) {
            for (k, v) in &calico.config {
                o["data"][k] = json!(v);
            }
        }
        if o["kind"] == "DaemonSet" && o.at("/metadata/name") == Some(&json!("calico-node")) {
            let env = &mut o["spec"]["template"]["spec"]["containers"][0]["env"];
            let mut set = calico.env.clone();
            set.insert("CALICO_IPV4POOL_CIDR".into(), calico.pool_cidr.clone());
            if calico.datastore == "etcd" {
                set.insert("DATASTORE_TYPE".into(), "etcdv3".into());
            }
            if let Some(list) = env.as_array_mut() {
                for (k, v) in set {
                    match list.iter_mut().find(|e| e["name"] == k.as_str()) {
                        Some(e) => *e = json!({"name": k, "value": v}),
                        None => list.push(json!({"name": k, "value": v})),
                    }
                }
            }
        }
    }
    // calico-node creates the default pool from CALICO_IPV4POOL_CIDR when it first starts;
    // made here before any pod needs an address.
    let (crds, rest): (Vec<Value>, Vec<Value>) = objects
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    kubectl_apply(c, &crds)?;
    let pool = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": calico.pool_cidr, "blockSize": 26, "ipipMode": "Always", "vxlanMode": "Never", "natOutgoing": true, "nodeSelector": "all()"}});
    wait_served(c, &pool)?;
    c.create(
        "crd.projectcalico.org/v1",
        "IPPool",
        None,
        pool,
        &WriteOptions::manager("calico-node"),
    )
    .map_err(|e| anyhow!("default IPPool: {e}"))?;
    kubectl_apply(c, &rest)?;
    Ok(())
}

fn other_cni_namespace(c: &Cluster, cni: &str) -> Result<String> {
    let ns = match cni {
        "flannel" => "kube-flannel",
        _ => "kube-system",
    };
    if ns != "kube-system" {
        let _ = c.create(
            "v1",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            &WriteOptions::manager("kubectl"),
        );
    }
    Ok(ns.into())
}

fn other_cni_daemonset(cni: &str) -> Result<Value> {
    let (name, label, image) = match cni {
        "flannel" => (
            "kube-flannel-ds",
            json!({"app": "flannel", "k8s-app": "flannel"}),
            "docker.io/flannel/flannel:v0.24.2",
        ),
        "canal" => (
            "canal",
            json!({"k8s-app": "canal"}),
            "docker.io/calico/node:v3.26.4",
        ),
        "cilium" => (
            "cilium",
            json!({"k8s-app": "cilium"}),
            "quay.io/cilium/cilium:v1.15.6",
        ),
        "weave" => (
            "weave-net",
            json!({"name": "weave-net"}),
            "ghcr.io/weaveworks/launcher/weave-kube:2.8.1",
        ),
        "kube-router" => (
            "kube-router",
            json!({"k8s-app": "kube-router"}),
            "docker.io/cloudnativelabs/kube-router:v2.1.3",
        ),
        "antrea" => (
            "antrea-agent",
            json!({"app": "antrea", "component": "antrea-agent"}),
            "antrea/antrea-agent-ubuntu:v2.0.0",
        ),
        "multus" => (
            "kube-multus-ds",
            json!({"app": "multus", "name": "multus"}),
            "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.0.2",
        ),
        other => bail!(
            "other_cni: unknown CNI {other}; known: flannel, canal, cilium, weave, kube-router, antrea, multus"
        ),
    };
    Ok(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "labels": label},
        "spec": {"selector": {"matchLabels": label}, "template": {"metadata": {"labels": label},
            "spec": {"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": name, "image": image}]}}}}))
}

fn bulk(c: &Cluster, bulk: &BTreeMap<String, usize>) -> Result<()> {
    let opts = WriteOptions::manager("calico-node");
    for (kind, count) in bulk {
        let (plural, make): (&str, Box<dyn Fn(usize) -> Value>) = match kind.as_str() {
            "ipamblocks" => (
                "ipamblocks",
                Box::new(|i| {
                    // Block i is the i-th /26 from 10.0.0.0, so names stay unique at any count.
                    let base = std::net::Ipv4Addr::from((10u32 << 24).wrapping_add(i as u32 * 64));
                    let [a, b, c, d] = base.octets();
                    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                "metadata": {"name": format!("{a}-{b}-{c}-{d}-26")},
                "spec": {"cidr": format!("{base}/26"), "affinity": format!("host:w{}", i % 100), "allocations": [0, null], "unallocated": [1, 2, 3], "attributes": [{"handle_id": format!("k8s-pod-network.{i}")}]}})
                }),
            ),
            "ipamhandles" => (
                "ipamhandles",
                Box::new(|i| {
                    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
                "metadata": {"name": format!("k8s-pod-network.{i:08x}")}, "spec": {"handleID": format!("k8s-pod-network.{i:08x}"), "block": {"10.100.0.0/26": 1}}})
                }),
            ),
            "networkpolicies" => (
                "networkpolicies",
                Box::new(|i| {
                    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("policy-{i}"), "namespace": "default"}, "spec": {"selector": format!("app == 'app-{i}'"), "types": ["Ingress"], "ingress": [{"action": "Allow"}]}})
                }),
            ),
            "globalnetworkpolicies" => (
                "globalnetworkpolicies",
                Box::new(|i| {
                    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": format!("global-{i}")}, "spec": {"selector": "all()", "order": i, "types": ["Ingress"], "ingress": [{"action": "Allow"}]}})
                }),
            ),
            other => bail!(
                "bulk: unknown kind {other}; known: ipamblocks, ipamhandles, networkpolicies, globalnetworkpolicies"
            ),
        };
        let sample = make(0);
        wait_served(c, &sample)?;
        for i in 0..*count {
            let o = make(i);
            let ns = o
                .at("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            c.create("crd.projectcalico.org/v1", plural, ns.as_deref(), o, &opts)
                .map_err(|e| anyhow!("bulk {kind} {i}: {e}"))?;
        }
    }
    Ok(())
}

/// Waits until every DaemonSet and Deployment is rolled out and Ready.
pub fn wait_ready(c: &Cluster, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for ds in c
            .list("apps/v1", "daemonsets", None, &Default::default())
            .unwrap_or_default()
        {
            let s = |k: &str| {
                ds.at(&format!("/status/{k}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(-1)
            };
            let desired = s("desiredNumberScheduled");
            if desired < 0 || s("numberReady") != desired || s("updatedNumberScheduled") != desired
            {
                waiting.push(format!(
                    "DaemonSet {}",
                    ds.at("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ));
            }
        }
        for d in c
            .list("apps/v1", "deployments", None, &Default::default())
            .unwrap_or_default()
        {
            let want = d.at("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            if d.at("/status/availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                < want
            {
                waiting.push(format!(
                    "Deployment {}",
                    d.at("/metadata/name").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        // Operator installs: the operator reports through TigeraStatus.
        let installed = |kind: &str| {
            c.get("operator.tigera.io/v1", kind, None, "default")
                .is_ok()
        };
        for (cr, component) in [("installations", "calico"), ("apiservers", "apiserver")] {
            if !installed(cr) {
                continue;
            }
            let available = c
                .get("operator.tigera.io/v1", "tigerastatuses", None, component)
                .ok()
                .and_then(|t| t.at("/status/conditions").cloned())
                .and_then(|cs| cs.as_array().cloned())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Available" && c["status"] == "True")
                });
            if !available {
                waiting.push(format!("TigeraStatus {component}"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "the scenario did not become ready in {timeout:?}: waiting for {}",
                waiting.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::node_address;

    #[test]
    fn node_addresses_are_distinct_host_addresses_at_any_scale() {
        let addrs: std::collections::BTreeSet<_> = (0..5000).map(node_address).collect();
        assert_eq!(addrs.len(), 5000);
        assert!(addrs.iter().all(|a| (10..250).contains(&a.octets()[3])));
        assert_eq!(node_address(0).to_string(), "10.0.0.10");
        assert_eq!(node_address(246).to_string(), "10.0.1.16");
    }
}
