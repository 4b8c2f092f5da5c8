//! Reachability: what a client in the cluster sees when it connects somewhere.
//!
//! A connection is followed the way the packets go in a kubeadm cluster running Calico and
//! kube-proxy, and the first thing that stops it decides the verdict:
//! 1. the source's name resolution (cluster DNS, or the node's resolver);
//! 2. kube-proxy on the sending node: a Service IP is translated to one ready endpoint; a Service
//!    port without endpoints is rejected there (refused), before any other check;
//! 3. the source pod's egress policy, evaluated after kube-proxy's DNAT (Calico sees the backend
//!    pod address and target port), except for the node's own address and the pod itself;
//! 4. the path between nodes: partitions, blocked UDP, large packets;
//! 5. the destination pod's ingress policy (replies of an allowed connection are allowed, so
//!    only the opening direction is checked);
//! 6. the listener: nothing listening is refused (TCP reset; for UDP the kernel's ICMP port
//!    unreachable, which `agnhost connect` reports as REFUSED because it reads on a connected
//!    socket), a listener answers according to what it speaks.
//!
//! Policy drops and path faults are silent drops: the client times out.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::listen::{Listener, Reply, Speaks, Transport};
use super::policy::{DstPort, PeerView};
use super::view::{Backend, ClusterView, Owner, PodDns, ProxyMode};

/// The verdicts of the probe contract (`docs/probe-contract.md`), minus `wrong_backend`, which
/// the caller derives by comparing [`Outcome::answer`] with what it expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Connected (and, for UDP and HTTP, got an answer).
    Ok,
    /// No answer in time: the packets were dropped somewhere.
    Timeout,
    /// Actively refused: nothing listens, or a Service without endpoints.
    Refused,
    /// The name did not resolve.
    Dns,
    /// Anything else: HTTP error status, protocol mismatch, bad input.
    Other,
}

impl Verdict {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Timeout => "timeout",
            Verdict::Refused => "refused",
            Verdict::Dns => "dns",
            Verdict::Other => "other",
        }
    }
}

/// Who finally handled a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoint {
    /// A pod-network pod.
    Pod {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its node.
        node: String,
    },
    /// A node's host network (kubelet, API server, hostNetwork pods).
    Node {
        /// The node.
        name: String,
    },
    /// A registered host outside the cluster.
    External {
        /// Its first name.
        name: String,
    },
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// What the server answered: HTTP body, TCP greeting, UDP reply, or the resolved address
    /// for [`lookup`]. `None` when nothing came back.
    pub answer: Option<String>,
    /// Why, for humans: "dropped by NetworkPolicy ns/deny-all (ingress to pod ns/x)".
    pub detail: String,
    /// The address connected to (after DNS), when known.
    pub address: Option<Ipv4Addr>,
    /// Who the connection reached or was sent to, when known (the chosen Service backend even
    /// when it then timed out).
    pub backend: Option<Endpoint>,
}

impl Outcome {
    fn new(verdict: Verdict, answer: Option<String>, detail: String) -> Outcome {
        Outcome {
            verdict,
            answer,
            detail,
            address: None,
            backend: None,
        }
    }
    fn timeout(detail: String) -> Outcome {
        Outcome::new(Verdict::Timeout, None, detail)
    }
    fn refused(detail: String) -> Outcome {
        Outcome::new(Verdict::Refused, None, detail)
    }
    fn other(detail: String) -> Outcome {
        Outcome::new(Verdict::Other, None, detail)
    }
    pub(super) fn dns(detail: String) -> Outcome {
        Outcome::new(Verdict::Dns, None, detail)
    }
}

/// Which UDP traffic a fault drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpBlock {
    /// UDP works.
    #[default]
    None,
    /// UDP between different nodes is dropped (e.g. a firewall on the VXLAN port).
    BetweenNodes,
    /// All UDP is dropped, on the same node too (and so is DNS over UDP).
    Everywhere,
}

/// Faults that break the data plane. `Faults::default()` is a healthy cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Groups of nodes cut off from every node outside their group: traffic between a node
    /// inside and a node outside times out, traffic within a node or within a group works.
    /// A group of one is an isolated node.
    pub partitions: Vec<BTreeSet<String>>,
    /// When true, partitioned nodes still reach the API server (control-plane nodes' API port,
    /// directly or through the `kubernetes` Service), as when only the pod network is broken;
    /// when false (the default), a partition cuts them off from it too.
    pub partition_keeps_apiserver: bool,
    /// Dropped UDP.
    pub udp_blocked: UdpBlock,
    /// Payloads (HTTP body, UDP datagram, TCP data) above this many bytes are dropped between
    /// nodes, as with a broken tunnel MTU; traffic within a node is unaffected.
    pub max_cross_node_payload: Option<u32>,
    /// Cluster DNS answers nothing: every name gives the `dns` verdict.
    pub dns_down: bool,
    /// Nodes treated as NotReady. Their pods keep forwarding traffic (the data plane does not
    /// depend on the kubelet's heartbeat), but their pods leave Service endpoints that the model
    /// derives itself, as the node lifecycle controller marks them not ready and the endpoint
    /// controller drops them. Endpoints read from EndpointSlices are taken as given.
    pub not_ready_nodes: BTreeSet<String>,
}

impl Faults {
    /// Faults with one group of isolated nodes.
    pub fn partition<I, S>(nodes: I) -> Faults
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Faults {
            partitions: vec![nodes.into_iter().map(Into::into).collect()],
            ..Faults::default()
        }
    }

    fn group_of(&self, node: &str) -> Option<usize> {
        self.partitions.iter().position(|g| g.contains(node))
    }
}

/// Where a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A pod, on the pod network or the host network (decided by its spec).
    Pod {
        /// Namespace.
        namespace: &'a str,
        /// Name.
        name: &'a str,
    },
    /// A node's host network namespace (e.g. the kubelet), resolving names like the node does.
    Node(&'a str),
}

/// The probe contract's protocols for connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Connect (and read a greeting if the server sends one).
    Tcp,
    /// Send a datagram, read the reply.
    Udp,
    /// HTTP over TCP: GET, or POST of the payload.
    Http,
}

impl Protocol {
    /// Parses `tcp`, `udp` or `http`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "http" => Some(Protocol::Http),
            _ => None,
        }
    }

    /// The transport it runs on.
    pub fn transport(self) -> Transport {
        match self {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp | Protocol::Http => Transport::Tcp,
        }
    }
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// An IPv4 address or a DNS name.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// Bytes sent (HTTP body, UDP datagram, TCP data); 0 for none.
    pub payload_bytes: u32,
    /// The request: HTTP path (default `/`), UDP datagram text (default `hostname`, like
    /// `agnhost connect`), or TCP data. Only echo and netexec listeners look at it.
    pub request: &'a str,
    /// Distinguishes otherwise identical connections (think source port): kube-proxy's
    /// endpoint choice hashes it, so callers vary it to reach every backend.
    pub flow: u64,
}

impl<'a> Target<'a> {
    /// A target with no payload, the default request and flow 0.
    pub fn new(host: &'a str, port: u16, protocol: Protocol) -> Target<'a> {
        Target {
            host,
            port,
            protocol,
            payload_bytes: 0,
            request: "",
            flow: 0,
        }
    }

    /// With a payload of `bytes`.
    pub fn payload(mut self, bytes: u32) -> Target<'a> {
        self.payload_bytes = bytes;
        self
    }

    /// With a request (HTTP path or datagram text).
    pub fn request(mut self, request: &'a str) -> Target<'a> {
        self.request = request;
        self
    }

    /// With a flow number.
    pub fn flow(mut self, flow: u64) -> Target<'a> {
        self.flow = flow;
        self
    }
}

/// The resolved source of a connection.
#[derive(Debug, Clone)]
pub(super) struct Src<'v> {
    pub node: usize,
    pub ip: Ipv4Addr,
    /// The pod-network pod sending (policy subject), if any.
    pub pod: Option<usize>,
    /// The namespace of the sending pod (DNS search path), if a pod.
    pub ns: Option<&'v str>,
    pub dns: &'v PodDns,
}

/// Who the destination sees as the sender (differs from the source after masquerading).
#[derive(Debug, Clone, Copy)]
struct Sender {
    node: usize,
    ip: Ipv4Addr,
    pod: Option<usize>,
    /// Traffic originates in a node's host network namespace.
    host: bool,
}

static NODE_DNS: PodDns = PodDns::Node;

/// Follows a connection from `source` to `target` and says what the client sees.
pub fn connect(
    view: &ClusterView,
    faults: &Faults,
    source: Source<'_>,
    target: &Target<'_>,
) -> Outcome {
    let src = match resolve_source(view, source) {
        Ok(s) => s,
        Err(o) => return *o,
    };
    let ip = match target.host.parse::<Ipv4Addr>() {
        Ok(ip) => ip,
        Err(_) if target.host.contains(':') => {
            return Outcome::other(format!(
                "{} is IPv6: the network model covers IPv4 only",
                target.host
            ));
        }
        Err(_) => match super::dns::resolve(view, faults, &src, target.host, target.flow) {
            Ok(ip) => ip,
            Err(o) => return *o,
        },
    };
    let mut out = route(view, faults, &src, ip, target);
    out.address = Some(ip);
    out
}

/// Resolves `name` from `source`'s point of view (its DNS policy, namespace search path, the
/// path to the cluster DNS). `ok` carries the address as the answer.
pub fn lookup(view: &ClusterView, faults: &Faults, source: Source<'_>, name: &str) -> Outcome {
    let src = match resolve_source(view, source) {
        Ok(s) => s,
        Err(o) => return *o,
    };
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        // nslookup of an address literal asks for its PTR record; treat it as its own answer.
        let mut o = Outcome::new(
            Verdict::Ok,
            Some(ip.to_string()),
            format!("{ip} is an address"),
        );
        o.address = Some(ip);
        return o;
    }
    match super::dns::resolve(view, faults, &src, name, 0) {
        Ok(ip) => {
            let mut o = Outcome::new(
                Verdict::Ok,
                Some(ip.to_string()),
                format!("{name} resolves to {ip}"),
            );
            o.address = Some(ip);
            o
        }
        Err(o) => *o,
    }
}

/// Whether `node` (its kubelet, its pods) can reach the API server under `faults`. Unknown
/// nodes cannot; a view without control-plane nodes is assumed reachable.
pub fn node_reaches_apiserver(view: &ClusterView, faults: &Faults, node: &str) -> bool {
    if !view.node_by_name.contains_key(node) {
        return false;
    }
    if faults.partition_keeps_apiserver {
        return true;
    }
    let mine = faults.group_of(node);
    let mut cps = view.nodes.iter().filter(|n| n.control_plane).peekable();
    cps.peek().is_none() || cps.any(|cp| faults.group_of(&cp.name) == mine)
}

pub(super) fn resolve_source<'v>(
    view: &'v ClusterView,
    source: Source<'_>,
) -> Result<Src<'v>, Box<Outcome>> {
    match source {
        Source::Pod { namespace, name } => {
            let Some(p) = view.pod_index(namespace, name) else {
                return Err(Box::new(Outcome::other(format!(
                    "source pod {namespace}/{name} is not running on any node"
                ))));
            };
            let pod = &view.pods[p];
            let Some(node) = pod.node else {
                return Err(Box::new(Outcome::other(format!(
                    "source pod {namespace}/{name} has no node"
                ))));
            };
            let Some(ip) = pod.ip else {
                return Err(Box::new(Outcome::other(format!(
                    "source pod {namespace}/{name} has no address yet"
                ))));
            };
            Ok(Src {
                node,
                ip,
                pod: (!pod.host_network).then_some(p),
                ns: Some(pod.ns.as_str()),
                dns: &pod.dns,
            })
        }
        Source::Node(name) => {
            let Some(&n) = view.node_by_name.get(name) else {
                return Err(Box::new(Outcome::other(format!("unknown node {name}"))));
            };
            let Some(ip) = view.nodes[n].ip else {
                return Err(Box::new(Outcome::other(format!(
                    "node {name} has no IPv4 address"
                ))));
            };
            Ok(Src {
                node: n,
                ip,
                pod: None,
                ns: None,
                dns: &NODE_DNS,
            })
        }
    }
}

fn sender_of(src: &Src<'_>) -> Sender {
    Sender {
        node: src.node,
        ip: src.ip,
        pod: src.pod,
        host: src.pod.is_none(),
    }
}

fn route(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    ip: Ipv4Addr,
    t: &Target<'_>,
) -> Outcome {
    let tr = t.protocol.transport();
    if ip.is_loopback() {
        let listeners = match src.pod {
            Some(p) => &view.pods[p].listeners,
            None => &view.nodes[src.node].listeners,
        };
        let l = listeners
            .iter()
            .find(|l| l.transport == tr && l.port == t.port);
        return respond(l, &format!("{ip}"), t, src.ip);
    }
    if let Some(&s) = view.svc_by_ip.get(&ip) {
        return via_cluster_ip(view, faults, src, s, ip, t);
    }
    if let Some(Owner::Node(n)) = view.by_ip.get(&ip)
        && let Some(&(s, sp)) = view.node_ports.get(&(tr, t.port))
    {
        return via_node_port(view, faults, src, *n, s, sp, t);
    }
    let apiserver = matches!(view.by_ip.get(&ip), Some(Owner::Node(n)) if view.nodes[*n].control_plane)
        && tr == Transport::Tcp
        && t.port == view.options.apiserver_port;
    deliver(
        view,
        faults,
        src,
        sender_of(src),
        ip,
        t.port,
        t,
        Leg {
            check_egress: true,
            apiserver,
            from_node: src.node,
            probe_only: false,
        },
    )
}

/// How a packet is delivered after kube-proxy's decisions.
#[derive(Debug, Clone, Copy)]
struct Leg {
    /// Evaluate the source pod's egress policy against this destination.
    check_egress: bool,
    /// API-server traffic (exempt from partitions when `partition_keeps_apiserver`).
    apiserver: bool,
    /// The node the packet leaves from.
    from_node: usize,
    /// Stop once the packet arrives (DNS server reachability): no listener is consulted.
    probe_only: bool,
}

fn fnv(parts: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// kube-proxy's endpoint choice: random in reality, a hash of the flow here so runs repeat.
fn pick<'b>(
    backends: &[&'b Backend],
    src_ip: Ipv4Addr,
    svc_key: u64,
    port: u16,
    flow: u64,
    client_ip_affinity: bool,
) -> Option<&'b Backend> {
    if backends.is_empty() {
        return None;
    }
    let h = if client_ip_affinity {
        fnv(&[u64::from(u32::from(src_ip)), svc_key])
    } else {
        fnv(&[u64::from(u32::from(src_ip)), svc_key, u64::from(port), flow])
    };
    let i = usize::try_from(h % backends.len() as u64).unwrap_or(0);
    backends.get(i).copied()
}

fn live_backends<'v>(
    view: &'v ClusterView,
    faults: &Faults,
    backends: &'v [Backend],
) -> Vec<&'v Backend> {
    backends
        .iter()
        .filter(|b| {
            !(b.derived
                && b.node
                    .is_some_and(|n| faults.not_ready_nodes.contains(&view.nodes[n].name)))
        })
        .collect()
}

fn via_cluster_ip(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    s: usize,
    ip: Ipv4Addr,
    t: &Target<'_>,
) -> Outcome {
    via_cluster_ip_leg(view, faults, src, s, ip, t, false)
}

/// A connection through a cluster IP; with `probe_only` it stops when the packet reaches the
/// chosen endpoint (used for DNS queries, whose server is the endpoint by construction).
pub(super) fn via_cluster_ip_leg(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    s: usize,
    ip: Ipv4Addr,
    t: &Target<'_>,
    probe_only: bool,
) -> Outcome {
    let svc = &view.services[s];
    let tr = t.protocol.transport();
    let id = format!("{}/{}", svc.ns, svc.name);
    let Some(sp) = svc
        .ports
        .iter()
        .find(|p| p.port == t.port && p.transport == tr)
    else {
        let detail = format!("service {id} has no port {}/{}", t.port, tr.as_str());
        return match view.options.proxy_mode {
            ProxyMode::Iptables => Outcome::timeout(format!(
                "{detail}: kube-proxy (iptables) has no rule for it, the packets go nowhere"
            )),
            ProxyMode::Ipvs | ProxyMode::Nftables => {
                Outcome::refused(format!("{detail}: kube-proxy rejects it"))
            }
        };
    };
    let mut live = live_backends(view, faults, &sp.backends);
    if svc.internal_local {
        let any = !live.is_empty();
        live.retain(|b| b.node == Some(src.node));
        if live.is_empty() && any {
            return Outcome::timeout(format!(
                "service {id} has no endpoint on node {} (internalTrafficPolicy: Local): kube-proxy drops the packets",
                view.nodes[src.node].name
            ));
        }
    }
    let svc_key = u64::from(u32::from(ip));
    let Some(b) = pick(
        &live,
        src.ip,
        svc_key,
        t.port,
        t.flow,
        svc.affinity_client_ip,
    ) else {
        // Calico's egress rules run before kube-proxy's REJECT for forwarded pod traffic, and see
        // the untranslated cluster IP.
        if let Err(e) = egress_check(view, src, ip, None, t.port, tr) {
            return Outcome::timeout(e);
        }
        return Outcome::refused(format!(
            "no endpoints for service {id} (port {}/{}): kube-proxy rejects the connection",
            t.port,
            tr.as_str()
        ));
    };
    let leg = Leg {
        check_egress: true,
        apiserver: svc.is_apiserver,
        from_node: src.node,
        probe_only,
    };
    let mut out = deliver(view, faults, src, sender_of(src), b.ip, b.port, t, leg);
    out.detail = format!(
        "service {id} -> {}: {}",
        endpoint_text(view, b.ip, b.port),
        out.detail
    );
    out
}

fn via_node_port(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    n: usize,
    s: usize,
    sp: usize,
    t: &Target<'_>,
) -> Outcome {
    let svc = &view.services[s];
    let port = &svc.ports[sp];
    let tr = port.transport;
    let node = &view.nodes[n];
    let Some(node_ip) = node.ip else {
        return Outcome::timeout(format!("node {} has no address", node.name));
    };
    let id = format!("{}/{}", svc.ns, svc.name);
    // Leg 1: to the node. From another node, egress sees the node address and the node port.
    if src.node != n {
        if let Err(e) = egress_check(view, src, node_ip, None, t.port, tr) {
            return Outcome::timeout(e);
        }
        if let Err(e) = path_check(view, faults, src.node, Some(n), tr, t.payload_bytes, false) {
            return Outcome::timeout(e);
        }
    }
    let mut live = live_backends(view, faults, &port.backends);
    if svc.external_local {
        let any = !live.is_empty();
        live.retain(|b| b.node == Some(n));
        if live.is_empty() && any {
            return Outcome::timeout(format!(
                "service {id} has no endpoint on node {} (externalTrafficPolicy: Local): kube-proxy drops the packets",
                node.name
            ));
        }
    }
    let Some(b) = pick(
        &live,
        src.ip,
        u64::from(u32::from(node_ip)) ^ u64::from(t.port),
        t.port,
        t.flow,
        svc.affinity_client_ip,
    ) else {
        return Outcome::refused(format!(
            "no endpoints for service {id} (node port {}/{}): kube-proxy rejects the connection",
            t.port,
            tr.as_str()
        ));
    };
    // externalTrafficPolicy Cluster masquerades to the node's address; Local keeps the client's.
    let sender = if svc.external_local {
        sender_of(src)
    } else {
        Sender {
            node: n,
            ip: node_ip,
            pod: None,
            host: true,
        }
    };
    // When the client is on that node, the DNAT happened before Calico's egress check.
    let leg = Leg {
        check_egress: src.node == n,
        apiserver: false,
        from_node: n,
        probe_only: false,
    };
    let mut out = deliver(view, faults, src, sender, b.ip, b.port, t, leg);
    out.detail = format!(
        "node port {}:{} ({id}) -> {}: {}",
        node.name,
        t.port,
        endpoint_text(view, b.ip, b.port),
        out.detail
    );
    out
}

fn endpoint_text(view: &ClusterView, ip: Ipv4Addr, port: u16) -> String {
    match view.by_ip.get(&ip) {
        Some(o) => format!("{} ({ip}:{port})", view.describe_owner(*o)),
        None => format!("{ip}:{port}"),
    }
}

/// Delivers to an address (no Service translation left): egress, path, ingress, listener.
#[allow(clippy::too_many_arguments)] // the packet's whole context; a struct would only rename it
fn deliver(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    sender: Sender,
    ip: Ipv4Addr,
    port: u16,
    t: &Target<'_>,
    leg: Leg,
) -> Outcome {
    let tr = t.protocol.transport();
    let owner = view.by_ip.get(&ip).copied();
    let dst_pod = match owner {
        Some(Owner::Pod(p)) => Some(p),
        _ => None,
    };
    if leg.check_egress
        && let Err(e) = egress_check(view, src, ip, dst_pod, port, tr)
    {
        let mut o = Outcome::timeout(e);
        o.backend = owner.and_then(|o| endpoint_of(view, o));
        return o;
    }
    let Some(owner) = owner else {
        return Outcome::timeout(format!("no host has address {ip}: the packets are dropped"));
    };
    let dst_node = match owner {
        Owner::Pod(p) => view.pods[p].node,
        Owner::Node(n) => Some(n),
        Owner::External(_) => None,
    };
    if let Err(e) = path_check(
        view,
        faults,
        leg.from_node,
        dst_node,
        tr,
        t.payload_bytes,
        leg.apiserver,
    ) {
        let mut o = Outcome::timeout(e);
        o.backend = endpoint_of(view, owner);
        return o;
    }
    let (pod, listeners, what) = match owner {
        Owner::Pod(p) => (Some(p), &view.pods[p].listeners, view.describe_owner(owner)),
        Owner::Node(n) => match view.nodes[n].host_ports.get(&(tr, port)) {
            // CNI portmap: a hostPort forwards to its pod, keeping the client address.
            Some(&(p, cport)) => {
                let mut o = deliver_to_pod_port(view, sender, p, cport, t, leg.probe_only);
                o.detail = format!("hostPort {}:{port} -> {}", view.nodes[n].name, o.detail);
                return o;
            }
            None => (None, &view.nodes[n].listeners, view.describe_owner(owner)),
        },
        Owner::External(e) => (
            None,
            &view.options.external_hosts[e].listeners,
            view.describe_owner(owner),
        ),
    };
    if let Some(p) = pod {
        return deliver_to_pod_port(view, sender, p, port, t, leg.probe_only);
    }
    let mut o = if leg.probe_only {
        Outcome::new(Verdict::Ok, None, format!("reached {what}"))
    } else {
        let l = listeners
            .iter()
            .find(|l| l.transport == tr && l.port == port);
        respond(l, &format!("{what} ({ip})"), t, sender.ip)
    };
    o.backend = endpoint_of(view, owner);
    o
}

fn deliver_to_pod_port(
    view: &ClusterView,
    sender: Sender,
    p: usize,
    port: u16,
    t: &Target<'_>,
    probe_only: bool,
) -> Outcome {
    let pod = &view.pods[p];
    let tr = t.protocol.transport();
    let what = format!("pod {}/{}", pod.ns, pod.name);
    let mut o = if let Err(e) = ingress_check(view, sender, p, port, tr) {
        Outcome::timeout(e)
    } else if probe_only {
        Outcome::new(Verdict::Ok, None, format!("reached {what}"))
    } else {
        let l = pod
            .listeners
            .iter()
            .find(|l| l.transport == tr && l.port == port);
        let ip = pod.ip.map(|i| i.to_string()).unwrap_or_default();
        respond(l, &format!("{what} ({ip})"), t, sender.ip)
    };
    o.backend = endpoint_of(view, Owner::Pod(p));
    o
}

fn endpoint_of(view: &ClusterView, owner: Owner) -> Option<Endpoint> {
    Some(match owner {
        Owner::Pod(p) => {
            let pod = &view.pods[p];
            Endpoint::Pod {
                namespace: pod.ns.clone(),
                name: pod.name.clone(),
                node: pod
                    .node
                    .map(|n| view.nodes[n].name.clone())
                    .unwrap_or_default(),
            }
        }
        Owner::Node(n) => Endpoint::Node {
            name: view.nodes[n].name.clone(),
        },
        Owner::External(e) => Endpoint::External {
            name: view.options.external_hosts[e]
                .names
                .first()
                .cloned()
                .unwrap_or_default(),
        },
    })
}

/// Partitions, UDP blocking and large packets between `from` and `to` (`None`: outside the
/// cluster, which only cluster-wide UDP blocking affects).
fn path_check(
    view: &ClusterView,
    faults: &Faults,
    from: usize,
    to: Option<usize>,
    tr: Transport,
    payload: u32,
    apiserver: bool,
) -> Result<(), String> {
    let from_name = &view.nodes[from].name;
    if tr == Transport::Udp && faults.udp_blocked == UdpBlock::Everywhere {
        return Err("UDP is blocked everywhere (fault): the datagram is dropped".into());
    }
    let Some(to) = to else { return Ok(()) };
    if to == from {
        return Ok(());
    }
    let to_name = &view.nodes[to].name;
    let (gf, gt) = (faults.group_of(from_name), faults.group_of(to_name));
    if gf != gt && !(apiserver && faults.partition_keeps_apiserver) {
        let cut = if gf.is_some() {
            (from_name, to_name)
        } else {
            (to_name, from_name)
        };
        return Err(format!(
            "node {} is partitioned (cut off from node {}): the packets are dropped",
            cut.0, cut.1
        ));
    }
    if tr == Transport::Udp && faults.udp_blocked == UdpBlock::BetweenNodes {
        return Err(format!(
            "UDP between nodes is blocked (fault): the datagram from node {from_name} to node {to_name} is dropped"
        ));
    }
    if let Some(max) = faults.max_cross_node_payload
        && payload > max
    {
        return Err(format!(
            "a {payload}-byte payload from node {from_name} to node {to_name} exceeds the {max} bytes that cross nodes (large packets dropped: broken tunnel MTU)"
        ));
    }
    Ok(())
}

fn policy_names(view: &ClusterView, list: &[usize]) -> String {
    list.iter()
        .map(|&i| format!("{}/{}", view.policies[i].ns, view.policies[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The source pod's egress isolation against a destination address (a pod-network pod when
/// `dst_pod` is set, whose labels and named ports then count).
fn egress_check(
    view: &ClusterView,
    src: &Src<'_>,
    ip: Ipv4Addr,
    dst_pod: Option<usize>,
    port: u16,
    tr: Transport,
) -> Result<(), String> {
    let Some(sp) = src.pod else { return Ok(()) };
    let spod = &view.pods[sp];
    if spod.egress.is_empty() || dst_pod == Some(sp) || view.nodes[src.node].ip == Some(ip) {
        // Not isolated; "a pod cannot block access to itself"; traffic to its own node is
        // always allowed.
        return Ok(());
    }
    let peer = match dst_pod {
        Some(d) => {
            let dp = &view.pods[d];
            PeerView {
                ip,
                pod: Some((dp.ns.as_str(), &dp.labels, view.ns_labels(&dp.ns))),
            }
        }
        None => PeerView { ip, pod: None },
    };
    let named = dst_pod.map_or(&[][..], |d| view.pods[d].named_ports.as_slice());
    let dst = DstPort {
        port,
        transport: tr,
        named,
    };
    let allowed = spod.egress.iter().any(|&i| {
        let pol = &view.policies[i];
        pol.egress
            .as_ref()
            .is_some_and(|rules| rules.iter().any(|r| r.allows(&pol.ns, &peer, &dst)))
    });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "dropped by NetworkPolicy {} (egress from pod {}/{} to {ip}:{port}/{})",
            policy_names(view, &spod.egress),
            spod.ns,
            spod.name,
            tr.as_str()
        ))
    }
}

/// The destination pod's ingress isolation against the sender.
fn ingress_check(
    view: &ClusterView,
    sender: Sender,
    dst: usize,
    port: u16,
    tr: Transport,
) -> Result<(), String> {
    let dpod = &view.pods[dst];
    if dpod.ingress.is_empty()
        || sender.pod == Some(dst)
        || (sender.host && dpod.node == Some(sender.node))
    {
        // Not isolated; a pod cannot block itself; traffic from the pod's own node is always
        // allowed.
        return Ok(());
    }
    let peer = match sender.pod {
        Some(s) => {
            let sp = &view.pods[s];
            PeerView {
                ip: sender.ip,
                pod: Some((sp.ns.as_str(), &sp.labels, view.ns_labels(&sp.ns))),
            }
        }
        None => PeerView {
            ip: sender.ip,
            pod: None,
        },
    };
    let dstp = DstPort {
        port,
        transport: tr,
        named: &dpod.named_ports,
    };
    let allowed = dpod.ingress.iter().any(|&i| {
        let pol = &view.policies[i];
        pol.ingress
            .as_ref()
            .is_some_and(|rules| rules.iter().any(|r| r.allows(&pol.ns, &peer, &dstp)))
    });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "dropped by NetworkPolicy {} (ingress to pod {}/{} port {port}/{} from {})",
            policy_names(view, &dpod.ingress),
            dpod.ns,
            dpod.name,
            tr.as_str(),
            sender.ip
        ))
    }
}

fn effective_request(t: &Target<'_>) -> String {
    if !t.request.is_empty() {
        return t.request.to_string();
    }
    if t.payload_bytes > 0 {
        return "x".repeat(usize::try_from(t.payload_bytes.min(65_536)).unwrap_or(0));
    }
    match t.protocol {
        Protocol::Udp => "hostname".into(),
        Protocol::Http => "/".into(),
        Protocol::Tcp => String::new(),
    }
}

fn client_addr(ip: Ipv4Addr, flow: u64) -> String {
    format!("{ip}:{}", 32768 + flow % 28232)
}

/// netexec's UDP commands; `None` for an unknown command (it logs and does not answer).
fn netexec_udp(hostname: &str, req: &str, client: &str) -> Option<String> {
    let r = req.trim().to_ascii_lowercase();
    if r == "hostname" {
        Some(hostname.to_string())
    } else if let Some(msg) = r.strip_prefix("echo ") {
        Some(msg.to_string())
    } else if r == "clientip" {
        Some(client.to_string())
    } else {
        None
    }
}

/// netexec's HTTP handlers: `Ok(body)` or `Err(status)`.
fn netexec_http(hostname: &str, path: &str, client: &str) -> Result<String, u16> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    match p {
        // The real handler prints the current time; the model has no clock.
        "/" | "" => Ok("NOW: 0001-01-01 00:00:00 +0000 UTC".into()),
        "/hostname" | "/hostName" => Ok(hostname.to_string()),
        "/clientip" => Ok(client.to_string()),
        "/echo" => Ok(query
            .split('&')
            .find_map(|kv| kv.strip_prefix("msg="))
            .unwrap_or("")
            .to_string()),
        "/healthz" => Ok("ok".into()),
        _ => Err(404),
    }
}

fn respond(l: Option<&Listener>, what: &str, t: &Target<'_>, client_ip: Ipv4Addr) -> Outcome {
    let tr = t.protocol.transport();
    let port = t.port;
    let Some(l) = l else {
        return Outcome::refused(match tr {
            Transport::Udp => {
                format!("nothing listens on {what} port {port}/UDP: ICMP port unreachable")
            }
            _ => format!(
                "nothing listens on {what} port {port}/{}: connection refused",
                tr.as_str()
            ),
        });
    };
    let client = client_addr(client_ip, t.flow);
    let req = effective_request(t);
    let ok = |answer: Option<String>| {
        let d = format!("answered by {what} port {port}/{}", tr.as_str());
        Outcome::new(Verdict::Ok, answer, d)
    };
    match t.protocol {
        Protocol::Udp => {
            if t.payload_bytes > 65_507 {
                return Outcome::other(format!(
                    "a {}-byte datagram is larger than UDP allows: message too long",
                    t.payload_bytes
                ));
            }
            let answer = match &l.reply {
                Reply::Text(s) => Some(s.clone()),
                Reply::Echo => Some(req),
                Reply::Netexec(h) => netexec_udp(h, &req, &client),
                Reply::Silent => None,
            };
            match answer {
                Some(a) => ok(Some(a)),
                None => Outcome::timeout(format!(
                    "{what} port {port}/UDP got the datagram but sent no reply"
                )),
            }
        }
        Protocol::Tcp => {
            let greeting = match (l.speaks, &l.reply) {
                (Speaks::Raw | Speaks::Any, Reply::Text(s)) => Some(s.clone()),
                (Speaks::Raw, Reply::Echo) if !t.request.is_empty() || t.payload_bytes > 0 => {
                    Some(req)
                }
                _ => None,
            };
            ok(greeting)
        }
        Protocol::Http => match (l.speaks, &l.reply) {
            (Speaks::Tls, _) => {
                let mut o = Outcome::other(format!(
                    "HTTP 400 from {what} port {port}: it speaks TLS (client sent an HTTP request to an HTTPS server)"
                ));
                o.answer = Some("Client sent an HTTP request to an HTTPS server.".into());
                o
            }
            (_, Reply::Silent) => Outcome::timeout(format!(
                "{what} port {port} accepted the connection but never answered"
            )),
            (Speaks::Raw, Reply::Text(_)) | (Speaks::Raw, Reply::Netexec(_)) => {
                Outcome::other(format!(
                    "{what} port {port} answered without HTTP framing (curl: Received HTTP/0.9 when not allowed)"
                ))
            }
            (Speaks::Raw, Reply::Echo) => Outcome::other(format!(
                "{what} port {port} echoed the request instead of an HTTP response"
            )),
            (Speaks::Http | Speaks::Any, Reply::Text(s)) => ok(Some(s.clone())),
            (Speaks::Http | Speaks::Any, Reply::Echo) => ok(Some(req)),
            (Speaks::Http | Speaks::Any, Reply::Netexec(h)) => {
                // A POST to netexec's handlers behaves like the GET for the ones modelled.
                let path = if t.request.is_empty() { "/" } else { t.request };
                match netexec_http(h, path, &client) {
                    Ok(body) => ok(Some(body)),
                    Err(code) => {
                        Outcome::other(format!("HTTP {code} from {what} port {port} for {path}"))
                    }
                }
            }
        },
    }
}
