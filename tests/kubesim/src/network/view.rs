//! The cluster as the data plane sees it, built once from Kubernetes objects and indexed so that
//! each connection is answered with a handful of hash look-ups.

use crate::pointer::At;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::labels::{Labels, Selector, labels_of, string_map};
use super::listen::{
    Behaviours, Listener, Reply, Speaks, Transport, declared_listeners, node_hostname, pod_hostname,
};
use super::policy::Policy;

/// The objects a view is built from, by kind. Entries are borrowed: collecting references is
/// cheap even for 100,000 objects.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects<'a> {
    /// v1 Node.
    pub nodes: Vec<&'a Value>,
    /// v1 Pod.
    pub pods: Vec<&'a Value>,
    /// v1 Service.
    pub services: Vec<&'a Value>,
    /// discovery.k8s.io/v1 EndpointSlice (optional: endpoints are derived from selectors).
    pub endpoint_slices: Vec<&'a Value>,
    /// v1 Endpoints (optional, used when a Service has no EndpointSlice).
    pub endpoints: Vec<&'a Value>,
    /// v1 Namespace (for namespaceSelector; a missing namespace still has its name label).
    pub namespaces: Vec<&'a Value>,
    /// networking.k8s.io/v1 NetworkPolicy.
    pub network_policies: Vec<&'a Value>,
}

impl<'a> ClusterObjects<'a> {
    /// Sorts a mixed list by `kind`; other kinds are ignored.
    pub fn from_objects(objects: impl IntoIterator<Item = &'a Value>) -> ClusterObjects<'a> {
        let mut o = ClusterObjects::default();
        for obj in objects {
            let list = match obj.get("kind").and_then(Value::as_str) {
                Some("Node") => &mut o.nodes,
                Some("Pod") => &mut o.pods,
                Some("Service") => &mut o.services,
                Some("EndpointSlice") => &mut o.endpoint_slices,
                Some("Endpoints") => &mut o.endpoints,
                Some("Namespace") => &mut o.namespaces,
                Some("NetworkPolicy") => &mut o.network_policies,
                _ => continue,
            };
            list.push(obj);
        }
        o
    }
}

/// How kube-proxy is configured; it decides what a Service IP does on a port it does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// kubeadm's default. An undeclared port of a ClusterIP matches no rule, so the packet is
    /// routed nowhere and the client times out (sig-network, kubernetes/enhancements#3824).
    #[default]
    Iptables,
    /// Cluster IPs sit on the `kube-ipvs0` dummy device, so the local stack answers an
    /// undeclared port with a reset: refused (kubernetes/kubernetes#72236).
    Ipvs,
    /// Rejects undeclared ports of active cluster IPs (kubernetes/kubernetes#122692): refused.
    Nftables,
}

/// Where pods' DNS queries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsMode {
    /// Through the cluster DNS Service (`dns_service`) when the view has it: the query must reach
    /// one of its endpoints (policies, partitions and UDP faults apply). Without that Service,
    /// names resolve as if DNS were perfect.
    #[default]
    ThroughService,
    /// Names resolve as if DNS were perfect; only the `dns_down` fault breaks it.
    Direct,
}

/// A host outside the cluster that can be reached (air-gapped clusters have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalHost {
    /// DNS names that resolve to it (lower case, without a trailing dot).
    pub names: Vec<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// What it listens on.
    pub listeners: Vec<Listener>,
}

/// Settings of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewOptions {
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// kube-proxy's mode.
    pub proxy_mode: ProxyMode,
    /// How DNS queries travel.
    pub dns: DnsMode,
    /// The cluster DNS Service (namespace, name): kubeadm's `kube-system/kube-dns`.
    pub dns_service: (String, String),
    /// The API server's port on control-plane nodes (6443).
    pub apiserver_port: u16,
    /// The kubelet's port on every node (10250), or none.
    pub kubelet_port: Option<u16>,
    /// Hosts outside the cluster that resolve and answer.
    pub external_hosts: Vec<ExternalHost>,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            cluster_domain: "cluster.local".into(),
            proxy_mode: ProxyMode::default(),
            dns: DnsMode::default(),
            dns_service: ("kube-system".into(), "kube-dns".into()),
            apiserver_port: 6443,
            kubelet_port: Some(10250),
            external_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct NodeRec {
    pub name: String,
    /// The host name its host-network processes see ([`node_hostname`]).
    pub hostname: String,
    pub ip: Option<Ipv4Addr>,
    pub ready: bool,
    pub control_plane: bool,
    /// Host-network listeners: kubelet, API server, hostNetwork pods.
    pub listeners: Vec<Listener>,
    /// hostPort mappings: (transport, hostPort) -> (pod, containerPort).
    pub host_ports: HashMap<(Transport, u16), (usize, u16)>,
}

/// How a pod resolves names (from `dnsPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PodDns {
    Cluster,
    /// The node's resolv.conf: hostNetwork with ClusterFirst, or `Default`.
    Node,
    /// `None` with explicit nameservers.
    Custom(Vec<Ipv4Addr>),
}

#[derive(Debug, Clone)]
pub(super) struct PodRec {
    pub ns: String,
    pub name: String,
    pub node: Option<usize>,
    pub ip: Option<Ipv4Addr>,
    pub host_network: bool,
    pub labels: Labels,
    pub listeners: Vec<Listener>,
    pub named_ports: Vec<(String, Transport, u16)>,
    pub ingress: Vec<usize>,
    pub egress: Vec<usize>,
    pub dns: PodDns,
    pub ready: bool,
    pub terminating: bool,
    pub hostname: String,
    pub subdomain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub pod: Option<usize>,
    pub node: Option<usize>,
    /// Derived from the selector here (so node NotReady faults remove it, as the node lifecycle
    /// and endpoint controllers would), rather than read from an EndpointSlice/Endpoints.
    pub derived: bool,
}

#[derive(Debug, Clone)]
pub(super) enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone)]
pub(super) struct SvcPort {
    pub name: String,
    pub port: u16,
    pub transport: Transport,
    pub target: TargetPort,
    pub node_port: Option<u16>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone)]
pub(super) struct SvcRec {
    pub ns: String,
    pub name: String,
    pub cluster_ip: Option<Ipv4Addr>,
    pub headless: bool,
    pub external_name: Option<String>,
    pub ports: Vec<SvcPort>,
    pub affinity_client_ip: bool,
    pub internal_local: bool,
    pub external_local: bool,
    /// The `default/kubernetes` Service: traffic to it is API-server traffic.
    pub is_apiserver: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Pod(usize),
    Node(usize),
    External(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DnsRecord {
    Addr(Ipv4Addr),
    /// A headless Service: its ready endpoints.
    Headless(usize),
    /// An ExternalName Service.
    Cname(String),
}

/// The data plane's view of a cluster: addresses, listeners, Services with their endpoints,
/// DNS records and compiled NetworkPolicies. Immutable; rebuild it when objects change.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub(super) options: ViewOptions,
    pub(super) nodes: Vec<NodeRec>,
    pub(super) node_by_name: HashMap<String, usize>,
    pub(super) pods: Vec<PodRec>,
    pub(super) pod_by_name: HashMap<String, HashMap<String, usize>>,
    pub(super) namespaces: HashMap<String, Labels>,
    pub(super) services: Vec<SvcRec>,
    pub(super) svc_by_ip: HashMap<Ipv4Addr, usize>,
    pub(super) node_ports: HashMap<(Transport, u16), (usize, usize)>,
    pub(super) by_ip: HashMap<Ipv4Addr, Owner>,
    pub(super) policies: Vec<Policy>,
    pub(super) dns: HashMap<String, DnsRecord>,
    pub(super) upstream: HashMap<String, Ipv4Addr>,
    pub(super) dns_service: Option<usize>,
    pub(super) empty_labels: Labels,
    warnings: Vec<String>,
}

const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn str_at<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.at(ptr).and_then(Value::as_str)
}

fn ipv4(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// A node's address as kube-proxy and Calico use it: the first IPv4 `InternalIP` in
/// `status.addresses`, else the first IPv4 address of any type.
pub fn node_internal_ip(node: &Value) -> Option<Ipv4Addr> {
    let addrs = node.at("/status/addresses").and_then(Value::as_array)?;
    let typed = |t: Option<&str>| {
        addrs.iter().find_map(|a| {
            let ok = t.is_none_or(|t| a.get("type").and_then(Value::as_str) == Some(t));
            if ok {
                ipv4(a.get("address").and_then(Value::as_str))
            } else {
                None
            }
        })
    };
    typed(Some("InternalIP")).or_else(|| typed(None))
}

fn condition_true(obj: &Value, kind: &str) -> Option<bool> {
    let conds = obj.at("/status/conditions").and_then(Value::as_array)?;
    conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

impl ClusterView {
    /// Builds the view. `behaviours` supplies what containers listen on (see
    /// [`Behaviours`]; [`super::DeclaredPorts`] for the default). Inconsistencies (duplicate
    /// addresses, invalid policies, pods on unknown nodes...) are kept in [`Self::warnings`].
    pub fn build(
        objects: &ClusterObjects<'_>,
        options: ViewOptions,
        behaviours: &dyn Behaviours,
    ) -> ClusterView {
        let mut v = ClusterView {
            options,
            nodes: Vec::with_capacity(objects.nodes.len()),
            node_by_name: HashMap::with_capacity(objects.nodes.len()),
            pods: Vec::with_capacity(objects.pods.len()),
            pod_by_name: HashMap::new(),
            namespaces: HashMap::new(),
            services: Vec::with_capacity(objects.services.len()),
            svc_by_ip: HashMap::new(),
            node_ports: HashMap::new(),
            by_ip: HashMap::with_capacity(objects.nodes.len() + objects.pods.len()),
            policies: Vec::new(),
            dns: HashMap::new(),
            upstream: HashMap::new(),
            dns_service: None,
            empty_labels: Labels::new(),
            warnings: Vec::new(),
        };
        v.add_namespaces(&objects.namespaces);
        v.add_nodes(&objects.nodes);
        v.add_policies(&objects.network_policies);
        v.add_pods(&objects.pods, behaviours);
        v.add_externals();
        v.add_services(objects);
        v.add_dns_records();
        v
    }

    /// Problems noticed while building (the model carries on with a sensible reading).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The settings in use.
    pub fn options(&self) -> &ViewOptions {
        &self.options
    }

    /// A node's address.
    pub fn node_ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.node_by_name.get(node).and_then(|&n| self.nodes[n].ip)
    }

    /// Node names, in the order given.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// A pod's address (its node's for hostNetwork pods).
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.pod_index(namespace, name)
            .and_then(|p| self.pods[p].ip)
    }

    /// A Service's cluster IP.
    pub fn service_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.services
            .iter()
            .find(|s| s.ns == namespace && s.name == name)
            .and_then(|s| s.cluster_ip)
    }

    /// The ready backends of a Service port as `(address, port, pod "ns/name" if any)`.
    pub fn service_backends(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Vec<(Ipv4Addr, u16, Option<String>)> {
        let svc = self
            .services
            .iter()
            .find(|s| s.ns == namespace && s.name == name);
        let ports = svc
            .into_iter()
            .flat_map(|s| s.ports.iter())
            .filter(|p| p.port == port);
        ports
            .flat_map(|p| p.backends.iter())
            .map(|b| {
                (
                    b.ip,
                    b.port,
                    b.pod
                        .map(|i| format!("{}/{}", self.pods[i].ns, self.pods[i].name)),
                )
            })
            .collect()
    }

    /// What owns an address, for messages: `pod ns/name`, `node w1`, `service ns/name`, ...
    pub fn describe_ip(&self, ip: Ipv4Addr) -> Option<String> {
        if let Some(&s) = self.svc_by_ip.get(&ip) {
            return Some(format!(
                "service {}/{}",
                self.services[s].ns, self.services[s].name
            ));
        }
        self.by_ip.get(&ip).map(|o| self.describe_owner(*o))
    }

    pub(super) fn describe_owner(&self, o: Owner) -> String {
        match o {
            Owner::Pod(p) => format!("pod {}/{}", self.pods[p].ns, self.pods[p].name),
            Owner::Node(n) => format!("node {}", self.nodes[n].name),
            Owner::External(e) => format!(
                "external host {}",
                self.options.external_hosts[e]
                    .names
                    .first()
                    .map_or("?", String::as_str)
            ),
        }
    }

    pub(super) fn pod_index(&self, ns: &str, name: &str) -> Option<usize> {
        self.pod_by_name.get(ns).and_then(|m| m.get(name)).copied()
    }

    pub(super) fn ns_labels(&self, ns: &str) -> &Labels {
        self.namespaces.get(ns).unwrap_or(&self.empty_labels)
    }

    fn add_namespaces(&mut self, namespaces: &[&Value]) {
        for ns in namespaces {
            let Some(name) = str_at(ns, "/metadata/name") else {
                continue;
            };
            let mut labels = labels_of(ns);
            // The control plane sets this immutable label on every namespace (1.21+); scenario
            // files often omit it, and namespaceSelectors rely on it.
            labels
                .entry(NAME_LABEL.into())
                .or_insert_with(|| name.to_string());
            self.namespaces.insert(name.to_string(), labels);
        }
    }

    fn ensure_namespace(&mut self, ns: &str) {
        if !self.namespaces.contains_key(ns) {
            let labels = BTreeMap::from([(NAME_LABEL.to_string(), ns.to_string())]);
            self.namespaces.insert(ns.to_string(), labels);
        }
    }

    fn add_nodes(&mut self, nodes: &[&Value]) {
        for node in nodes {
            let Some(name) = str_at(node, "/metadata/name") else {
                continue;
            };
            if self.node_by_name.contains_key(name) {
                self.warnings
                    .push(format!("node {name} listed twice; the first is used"));
                continue;
            }
            let labels = labels_of(node);
            let control_plane = labels.contains_key("node-role.kubernetes.io/control-plane")
                || labels.contains_key("node-role.kubernetes.io/master");
            let ip = node_internal_ip(node);
            let ready = condition_true(node, "Ready").unwrap_or(true);
            let mut listeners = Vec::new();
            if let Some(p) = self.options.kubelet_port {
                listeners.push(Listener {
                    transport: Transport::Tcp,
                    port: p,
                    speaks: Speaks::Tls,
                    reply: Reply::Text("kubelet".into()),
                });
            }
            if control_plane {
                let p = self.options.apiserver_port;
                listeners.push(Listener {
                    transport: Transport::Tcp,
                    port: p,
                    speaks: Speaks::Tls,
                    reply: Reply::Text("kube-apiserver".into()),
                });
            }
            let idx = self.nodes.len();
            match ip {
                Some(ip) => {
                    if let Some(prev) = self.by_ip.insert(ip, Owner::Node(idx)) {
                        self.warnings.push(format!(
                            "node {name} has address {ip} already used by {}",
                            self.describe_owner(prev)
                        ));
                    }
                }
                None => self.warnings.push(format!(
                    "node {name} has no IPv4 address in status.addresses: it is unreachable"
                )),
            }
            self.nodes.push(NodeRec {
                name: name.to_string(),
                hostname: node_hostname(node),
                ip,
                ready,
                control_plane,
                listeners,
                host_ports: HashMap::new(),
            });
            self.node_by_name.insert(name.to_string(), idx);
        }
    }

    fn add_policies(&mut self, policies: &[&Value]) {
        for p in policies {
            let pol = Policy::compile(p, &mut self.warnings);
            self.policies.push(pol);
        }
    }

    fn add_pods(&mut self, pods: &[&Value], behaviours: &dyn Behaviours) {
        // Policies by namespace, so each pod is matched only against its own namespace's.
        let mut pols_by_ns: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in self.policies.iter().enumerate() {
            pols_by_ns.entry(p.ns.clone()).or_default().push(i);
        }
        for pod in pods {
            let phase = str_at(pod, "/status/phase").unwrap_or("Pending");
            if phase == "Succeeded" || phase == "Failed" {
                // The sandbox is gone and Calico released the address.
                continue;
            }
            let Some(node_name) = str_at(pod, "/spec/nodeName") else {
                continue;
            };
            let ns = str_at(pod, "/metadata/namespace")
                .unwrap_or("default")
                .to_string();
            let name = str_at(pod, "/metadata/name").unwrap_or("").to_string();
            let Some(&node) = self.node_by_name.get(node_name) else {
                self.warnings.push(format!(
                    "pod {ns}/{name} is bound to unknown node {node_name}; ignored"
                ));
                continue;
            };
            if self.pod_index(&ns, &name).is_some() {
                self.warnings
                    .push(format!("pod {ns}/{name} listed twice; the first is used"));
                continue;
            }
            let host_network = pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
            let ip = if host_network {
                self.nodes[node].ip
            } else {
                ipv4(str_at(pod, "/status/podIP")).or_else(|| {
                    let ips = pod.at("/status/podIPs").and_then(Value::as_array)?;
                    ips.iter()
                        .find_map(|i| ipv4(i.get("ip").and_then(Value::as_str)))
                })
            };
            let labels = labels_of(pod);
            // A host-network pod shares its node's UTS namespace: agnhost serve-hostname
            // answers with the node's host name, which is not always the node name.
            let hostname = if host_network {
                self.nodes[node].hostname.clone()
            } else {
                pod_hostname(pod)
            };
            let running = |cname: &str| match pod
                .at("/status/containerStatuses")
                .and_then(Value::as_array)
            {
                Some(st) => st
                    .iter()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(cname))
                    .is_some_and(|s| s.at("/state/running").is_some()),
                None => phase == "Running",
            };
            let mut listeners = Vec::new();
            let mut named_ports = Vec::new();
            let containers = pod.at("/spec/containers").and_then(Value::as_array);
            for c in containers.into_iter().flatten() {
                for p in c
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (Some(pname), Some(port), Some(t)) = (
                        p.get("name").and_then(Value::as_str),
                        p.get("containerPort")
                            .and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok()),
                        Transport::from_k8s(p.get("protocol")),
                    ) else {
                        continue;
                    };
                    named_ports.push((pname.to_string(), t, port));
                }
                if !running(c.get("name").and_then(Value::as_str).unwrap_or("")) {
                    continue;
                }
                let ls = behaviours
                    .listeners(pod, c, &hostname)
                    .unwrap_or_else(|| declared_listeners(c, &hostname));
                listeners.extend(ls);
            }
            let ready = condition_true(pod, "Ready").unwrap_or(false);
            let terminating = pod
                .at("/metadata/deletionTimestamp")
                .is_some_and(|t| !t.is_null());
            let dns_policy = str_at(pod, "/spec/dnsPolicy").unwrap_or("ClusterFirst");
            // From "DNS for Services and Pods": hostNetwork pods with ClusterFirst fall back to
            // the Default policy (the node's resolv.conf); ClusterFirstWithHostNet is needed.
            let dns = match dns_policy {
                "Default" => PodDns::Node,
                "None" => PodDns::Custom(
                    pod.at("/spec/dnsConfig/nameservers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| ipv4(s.as_str()))
                        .collect(),
                ),
                "ClusterFirstWithHostNet" => PodDns::Cluster,
                _ if host_network => PodDns::Node,
                _ => PodDns::Cluster,
            };
            let idx = self.pods.len();
            if host_network {
                // Its sockets are the node's; two pods binding one port would fail in reality,
                // the first one keeps it here.
                let taken: Vec<(Transport, u16)> = self.nodes[node]
                    .listeners
                    .iter()
                    .map(|l| (l.transport, l.port))
                    .collect();
                for l in &listeners {
                    if taken.contains(&(l.transport, l.port)) {
                        self.warnings.push(format!(
                            "hostNetwork pod {ns}/{name}: port {}/{} is already bound on node {node_name}",
                            l.port,
                            l.transport.as_str()
                        ));
                    } else {
                        self.nodes[node].listeners.push(l.clone());
                    }
                }
            } else {
                if let Some(ip) = ip
                    && let Some(prev) = self.by_ip.insert(ip, Owner::Pod(idx))
                {
                    self.warnings.push(format!(
                        "pod {ns}/{name} has address {ip} already used by {}",
                        self.describe_owner(prev)
                    ));
                    self.by_ip.insert(ip, prev);
                }
                for c in containers.into_iter().flatten() {
                    for p in c
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let hp = p
                            .get("hostPort")
                            .and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok());
                        let cp = p
                            .get("containerPort")
                            .and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok());
                        if let (Some(hp), Some(cp), Some(t)) = (
                            hp.filter(|h| *h > 0),
                            cp,
                            Transport::from_k8s(p.get("protocol")),
                        ) {
                            self.nodes[node]
                                .host_ports
                                .entry((t, hp))
                                .or_insert((idx, cp));
                        }
                    }
                }
            }
            // hostNetwork pods are not workload endpoints: no policy selects them.
            let (mut ingress, mut egress) = (Vec::new(), Vec::new());
            if !host_network {
                for &pi in pols_by_ns.get(&ns).into_iter().flatten() {
                    let pol = &self.policies[pi];
                    if pol.selector.matches(&labels) {
                        if pol.ingress.is_some() {
                            ingress.push(pi);
                        }
                        if pol.egress.is_some() {
                            egress.push(pi);
                        }
                    }
                }
            }
            self.ensure_namespace(&ns);
            self.pod_by_name
                .entry(ns.clone())
                .or_default()
                .insert(name.clone(), idx);
            self.pods.push(PodRec {
                ns,
                name,
                node: Some(node),
                ip,
                host_network,
                labels,
                listeners,
                named_ports,
                ingress,
                egress,
                dns,
                ready,
                terminating,
                hostname,
                subdomain: str_at(pod, "/spec/subdomain")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            });
        }
    }

    fn add_externals(&mut self) {
        for (i, h) in self.options.external_hosts.iter().enumerate() {
            if let Some(prev) = self.by_ip.get(&h.ip) {
                self.warnings.push(format!(
                    "external host {} uses {} which belongs to {}",
                    h.names.join(","),
                    h.ip,
                    self.describe_owner(*prev)
                ));
                continue;
            }
            self.by_ip.insert(h.ip, Owner::External(i));
            for n in &h.names {
                self.upstream
                    .insert(n.trim_end_matches('.').to_ascii_lowercase(), h.ip);
            }
        }
    }

    fn add_services(&mut self, objects: &ClusterObjects<'_>) {
        // Label index per namespace, so a Service selector scans only pods having its first
        // label pair instead of every pod of the namespace.
        let mut index: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        let mut ns_pods: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in self.pods.iter().enumerate() {
            ns_pods.entry(p.ns.as_str()).or_default().push(i);
            for (k, v) in &p.labels {
                index
                    .entry((p.ns.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        let mut slices: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
        for s in &objects.endpoint_slices {
            if let (Some(ns), Some(svc)) = (
                str_at(s, "/metadata/namespace"),
                str_at(s, "/metadata/labels/kubernetes.io~1service-name"),
            ) {
                slices.entry((ns, svc)).or_default().push(s);
            }
        }
        let mut endpoints: HashMap<(&str, &str), &Value> = HashMap::new();
        for e in &objects.endpoints {
            if let (Some(ns), Some(name)) = (
                str_at(e, "/metadata/namespace"),
                str_at(e, "/metadata/name"),
            ) {
                endpoints.insert((ns, name), e);
            }
        }
        let mut built = Vec::with_capacity(objects.services.len());
        for svc in &objects.services {
            let ns = str_at(svc, "/metadata/namespace").unwrap_or("default");
            let name = str_at(svc, "/metadata/name").unwrap_or("");
            let spec = svc.get("spec").unwrap_or(&Value::Null);
            let cip = str_at(spec, "/clusterIP");
            let headless = cip == Some("None");
            let svc_type = str_at(spec, "/type").unwrap_or("ClusterIP");
            let external_name = (svc_type == "ExternalName").then(|| {
                str_at(spec, "/externalName")
                    .unwrap_or("")
                    .to_ascii_lowercase()
            });
            let cluster_ip = if headless || external_name.is_some() {
                None
            } else {
                ipv4(cip)
            };
            if cluster_ip.is_none()
                && !headless
                && external_name.is_none()
                && cip.is_some_and(|c| c.contains(':'))
            {
                self.warnings.push(format!(
                    "service {ns}/{name}: IPv6 clusterIP {} is not modelled",
                    cip.unwrap_or("")
                ));
            }
            let mut ports = Vec::new();
            for p in spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(port) = p
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                else {
                    continue;
                };
                let Some(transport) = Transport::from_k8s(p.get("protocol")) else {
                    continue;
                };
                let target = match p.get("targetPort") {
                    Some(Value::String(s)) => match s.parse::<u16>() {
                        Ok(n) => TargetPort::Number(n),
                        Err(_) => TargetPort::Name(s.clone()),
                    },
                    Some(v) => TargetPort::Number(
                        v.as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .unwrap_or(port),
                    ),
                    None => TargetPort::Number(port),
                };
                let node_port = matches!(svc_type, "NodePort" | "LoadBalancer")
                    .then(|| {
                        p.get("nodePort")
                            .and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok())
                    })
                    .flatten();
                ports.push(SvcPort {
                    name: p
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    port,
                    transport,
                    target,
                    node_port,
                    backends: Vec::new(),
                });
            }
            let selector = string_map(spec.get("selector"));
            let publish_not_ready = spec
                .get("publishNotReadyAddresses")
                .and_then(Value::as_bool)
                == Some(true);
            let is_apiserver = ns == "default" && name == "kubernetes";
            if let Some(list) = slices.get(&(ns, name)) {
                self.backends_from_slices(ns, &mut ports, list);
            } else if !selector.is_empty() {
                let sel = Selector::from_map(&selector);
                let candidates: &[usize] = match sel.first_equality() {
                    Some((k, val)) => index.get(&(ns, k, val)).map_or(&[], Vec::as_slice),
                    None => ns_pods.get(ns).map_or(&[], Vec::as_slice),
                };
                for &pi in candidates {
                    let pod = &self.pods[pi];
                    // The EndpointSlice controller lists Ready, non-terminating pods with an IP
                    // (all pods with an IP when publishNotReadyAddresses is set).
                    if !sel.matches(&pod.labels)
                        || pod.ip.is_none()
                        || (!publish_not_ready && (!pod.ready || pod.terminating))
                    {
                        continue;
                    }
                    if pod.node.is_some_and(|n| !self.nodes[n].ready) && !publish_not_ready {
                        // The node lifecycle controller marks a NotReady node's pods not ready.
                        continue;
                    }
                    for sp in &mut ports {
                        let tp = match &sp.target {
                            TargetPort::Number(n) => Some(*n),
                            TargetPort::Name(want) => pod
                                .named_ports
                                .iter()
                                .find(|(n, t, _)| n == want && *t == sp.transport)
                                .map(|(_, _, p)| *p),
                        };
                        if let (Some(tp), Some(ip)) = (tp, pod.ip) {
                            sp.backends.push(Backend {
                                ip,
                                port: tp,
                                pod: Some(pi),
                                node: pod.node,
                                derived: true,
                            });
                        }
                    }
                }
            } else if let Some(ep) = endpoints.get(&(ns, name)) {
                self.backends_from_endpoints(ns, &mut ports, ep);
            } else if is_apiserver {
                // The API server maintains these endpoints itself: the control-plane nodes.
                for sp in &mut ports {
                    for (n, node) in self.nodes.iter().enumerate() {
                        if let (true, Some(ip)) = (node.control_plane, node.ip) {
                            sp.backends.push(Backend {
                                ip,
                                port: self.options.apiserver_port,
                                pod: None,
                                node: Some(n),
                                derived: false,
                            });
                        }
                    }
                }
            }
            for sp in &mut ports {
                sp.backends.sort_by_key(|b| (b.ip, b.port));
                sp.backends.dedup();
            }
            built.push(SvcRec {
                ns: ns.to_string(),
                name: name.to_string(),
                cluster_ip,
                headless,
                external_name,
                ports,
                affinity_client_ip: str_at(spec, "/sessionAffinity") == Some("ClientIP"),
                internal_local: str_at(spec, "/internalTrafficPolicy") == Some("Local"),
                external_local: str_at(spec, "/externalTrafficPolicy") == Some("Local"),
                is_apiserver,
            });
        }
        for s in built {
            let idx = self.services.len();
            if let Some(ip) = s.cluster_ip
                && let Some(prev) = self.svc_by_ip.insert(ip, idx)
            {
                self.warnings.push(format!(
                    "service {}/{} reuses cluster IP {ip}; the first keeps it",
                    s.ns, s.name
                ));
                self.svc_by_ip.insert(ip, prev);
            }
            for (pi, p) in s.ports.iter().enumerate() {
                if let Some(np) = p.node_port {
                    self.node_ports
                        .entry((p.transport, np))
                        .or_insert((idx, pi));
                }
            }
            if (s.ns.as_str(), s.name.as_str())
                == (
                    self.options.dns_service.0.as_str(),
                    self.options.dns_service.1.as_str(),
                )
            {
                self.dns_service = Some(idx);
            }
            self.services.push(s);
        }
        if !self.services.iter().any(|s| s.is_apiserver) && !self.services.is_empty() {
            self.warnings
                .push("no default/kubernetes Service: kubernetes.default does not resolve".into());
        }
    }

    fn backend_for(
        &self,
        ns: &str,
        ip: Ipv4Addr,
        target: Option<&Value>,
        node_name: Option<&str>,
    ) -> (Option<usize>, Option<usize>) {
        let pod = target
            .filter(|t| t.get("kind").and_then(Value::as_str) == Some("Pod"))
            .and_then(|t| {
                self.pod_index(
                    t.get("namespace").and_then(Value::as_str).unwrap_or(ns),
                    t.get("name").and_then(Value::as_str)?,
                )
            })
            .or_else(|| match self.by_ip.get(&ip) {
                Some(Owner::Pod(p)) => Some(*p),
                _ => None,
            });
        let node = node_name
            .and_then(|n| self.node_by_name.get(n).copied())
            .or_else(|| pod.and_then(|p| self.pods[p].node))
            .or_else(|| match self.by_ip.get(&ip) {
                Some(Owner::Node(n)) => Some(*n),
                _ => None,
            });
        (pod, node)
    }

    fn backends_from_slices(&self, ns: &str, ports: &mut [SvcPort], slices: &[&Value]) {
        for s in slices {
            if s.get("addressType")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "IPv4")
            {
                continue;
            }
            let sports = s
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for ep in s
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // `ready` nil means ready (discovery/v1 EndpointConditions).
                if ep.at("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let Some(ip) = ep
                    .get("addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| ipv4(a.first().and_then(Value::as_str)))
                else {
                    continue;
                };
                let (pod, node) = self.backend_for(
                    ns,
                    ip,
                    ep.get("targetRef"),
                    ep.get("nodeName").and_then(Value::as_str),
                );
                for sp in ports.iter_mut() {
                    let found = sports.iter().find(|p| {
                        p.get("name").and_then(Value::as_str).unwrap_or("") == sp.name
                            && Transport::from_k8s(p.get("protocol")) == Some(sp.transport)
                    });
                    if let Some(port) = found
                        .and_then(|p| p.get("port"))
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                    {
                        sp.backends.push(Backend {
                            ip,
                            port,
                            pod,
                            node,
                            derived: false,
                        });
                    }
                }
            }
        }
    }

    fn backends_from_endpoints(&self, ns: &str, ports: &mut [SvcPort], ep: &Value) {
        for subset in ep
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let eports = subset
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for a in subset
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(ip) = ipv4(a.get("ip").and_then(Value::as_str)) else {
                    continue;
                };
                let (pod, node) = self.backend_for(
                    ns,
                    ip,
                    a.get("targetRef"),
                    a.get("nodeName").and_then(Value::as_str),
                );
                for sp in ports.iter_mut() {
                    let found = eports.iter().find(|p| {
                        let name_ok = p.get("name").and_then(Value::as_str).unwrap_or("")
                            == sp.name
                            || eports.len() == 1;
                        name_ok && Transport::from_k8s(p.get("protocol")) == Some(sp.transport)
                    });
                    if let Some(port) = found
                        .and_then(|p| p.get("port"))
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                    {
                        sp.backends.push(Backend {
                            ip,
                            port,
                            pod,
                            node,
                            derived: false,
                        });
                    }
                }
            }
        }
    }

    fn add_dns_records(&mut self) {
        let domain = self
            .options
            .cluster_domain
            .trim_matches('.')
            .to_ascii_lowercase();
        let mut headless_by: HashMap<(String, String), usize> = HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let fqdn = format!("{}.{}.svc.{domain}", s.name, s.ns).to_ascii_lowercase();
            let rec = if let Some(cname) = &s.external_name {
                DnsRecord::Cname(cname.clone())
            } else if s.headless {
                headless_by.insert((s.ns.clone(), s.name.clone()), i);
                DnsRecord::Headless(i)
            } else if let Some(ip) = s.cluster_ip {
                DnsRecord::Addr(ip)
            } else {
                continue;
            };
            self.dns.insert(fqdn, rec);
        }
        // Pods with a subdomain get `<hostname>.<subdomain>.<ns>.svc.<domain>` when a headless
        // Service named like the subdomain exists in their namespace ("DNS for Services and
        // Pods").
        let mut records = Vec::new();
        for p in &self.pods {
            let (Some(ip), Some(sub)) = (p.ip, p.subdomain.as_ref()) else {
                continue;
            };
            if headless_by.contains_key(&(p.ns.clone(), sub.clone())) {
                records.push((
                    format!("{}.{sub}.{}.svc.{domain}", p.hostname, p.ns).to_ascii_lowercase(),
                    ip,
                ));
            }
        }
        for (name, ip) in records {
            self.dns.entry(name).or_insert(DnsRecord::Addr(ip));
        }
    }
}
