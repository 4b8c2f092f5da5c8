//! kubesim's network model: pod addressing, and what a connection between any two points of a
//! simulated cluster would do, under faults and NetworkPolicies.
//!
//! Pure and deterministic: no I/O, no clock, no randomness, no async. Self-contained (std,
//! serde, serde_json only), so it builds and tests on its own.
//!
//! # Public API
//!
//! Addressing ([`Ipam`], Calico IPAM semantics):
//! ```text
//! Ipam::from_objects(ippool_or_installation_objects: impl IntoIterator<Item=&Value>) -> Ipam
//! Ipam::new(pools: Vec<IpPool>) -> Ipam          // IpPool::new(name, "10.244.0.0/16", Some(26))
//! ipam.skipped() -> &[SkippedPool]                // IPv6/invalid pools, with a reason
//! ipam.allocate(handle, node, &node_labels) -> Result<Ipv4Addr, IpamError>
//! ipam.release(handle) -> Option<Ipv4Addr>
//! ipam.release_node(node)                         // Node deleted
//! ipam.assign(handle, node, ip) -> Result<(), IpamError>
//! ipam.restore_pods(pods) -> Vec<String>          // scenario start: keep existing podIPs
//! ipam.restore_blocks(ipamblock_objects) -> Vec<String>
//! ipam.ip_of(handle) / handle_of(ip) / blocks() / pools() / allocated()
//! ```
//! kubesim's kubelet (or CNI emulation) calls `allocate("<ns>/<pod>", node, &labels_of(node))`
//! when a pod-network pod starts, writes the address to `status.podIP(s)`, and calls
//! `release` when the pod is deleted or completes. hostNetwork pods take their node's address
//! ([`node_internal_ip`]) and never touch IPAM.
//!
//! Cluster view (rebuild it whenever objects change; building is cheap):
//! ```text
//! let objects = ClusterObjects::from_objects(all_objects.iter());   // or fill the fields
//! let view = ClusterView::build(&objects, ViewOptions::default(), &Agnhost);
//! view.warnings() -> &[String]
//! view.node_ip(node) / pod_ip(ns, name) / service_ip(ns, name) / service_backends(ns, name, port)
//! view.describe_ip(ip) -> Option<String>
//! ```
//! What containers listen on comes from a [`Behaviours`] implementation: any
//! `Fn(&pod, &container, hostname) -> Option<Vec<Listener>>` works; `None` falls back to the
//! declared `containerPort`s answering the hostname ([`DeclaredPorts`]). [`Agnhost`] models
//! `agnhost serve-hostname` / `netexec` exactly, including the command lines that make the real
//! binary exit ([`agnhost_listeners`] returns that error message for kubesim's container
//! behaviour to report).
//!
//! Reachability:
//! ```text
//! connect(&view, &faults, Source::Pod { namespace, name } | Source::Node(node),
//!         &Target::new(host, port, Protocol::Tcp | Udp | Http).payload(n).request(r).flow(i))
//!     -> Outcome { verdict: Ok|Timeout|Refused|Dns|Other, answer, detail, address, backend }
//! lookup(&view, &faults, source, name) -> Outcome        // the probe contract's `dns` protocol
//! node_reaches_apiserver(&view, &faults, node) -> bool   // may this node's kubelet report?
//! ```
//! [`Faults`] (refer to it as `network::Faults`: kubesim's API-level `faults::Faults` is another
//! type) is a plain struct (serde, snake_case fields, all optional): `partitions`,
//! `partition_keeps_apiserver`, `udp_blocked` (`none`/`between_nodes`/`everywhere`),
//! `max_cross_node_payload`, `dns_down`, `not_ready_nodes`.
//!
//! For the probe contract (`docs/probe-contract.md`): `tcp`/`udp`/`http` targets map to
//! [`connect`], `dns` targets to [`lookup`]; `wrong_backend` is the caller's comparison of
//! [`Outcome::answer`] with `expect`. Vary [`Target::flow`] across repeated probes of a Service
//! to reach every backend, as kube-proxy's random choice would (the DNS query of a connection by
//! name uses the same flow to pick a cluster DNS endpoint; [`lookup`] uses flow 0).
//!
//! The view expects what a real API server holds: the `default/kubernetes` Service (without it
//! `kubernetes.default` does not resolve; its endpoints default to the control-plane nodes'
//! address and `apiserver_port` when no Endpoints/EndpointSlice object exists) and, for DNS
//! through the cluster DNS, the `kube-system/kube-dns` Service with CoreDNS pods (without that
//! Service, names resolve as if DNS were perfect). Objects need their `kind` for
//! [`ClusterObjects::from_objects`].
//!
//! # Modelling decisions (details and sources in each file)
//! - IPAM: blocks of `blockSize` affine to nodes, addresses in block order, released addresses
//!   to the back of the free list, new block when full, borrowing when the pool has no free
//!   block (Calico `libcalico-go/lib/ipam`); the lowest free block instead of a random one.
//! - kube-proxy in iptables mode (kubeadm's default): a Service port without ready endpoints
//!   is REJECTed with ICMP port-unreachable, which TCP and `agnhost connect --protocol=udp`
//!   both report as refused (kubernetes/kubernetes#17359, #97360); an undeclared port of a
//!   cluster IP is dropped (timeout) in iptables mode and refused in ipvs/nftables modes
//!   ([`ProxyMode`]); endpoint choice hashes the flow; `sessionAffinity: ClientIP`,
//!   `internalTrafficPolicy`/`externalTrafficPolicy: Local` are honoured; NodePorts answer on
//!   every node address and masquerade to the node address unless `externalTrafficPolicy: Local`.
//! - Nothing listening: TCP refused; UDP refused too, because the kernel answers ICMP port
//!   unreachable and `agnhost connect` reads on a connected socket (its code maps the resulting
//!   ECONNREFUSED to REFUSED). A listener that stays silent gives a timeout.
//! - NetworkPolicy as the Kubernetes documentation states it (see `policy.rs`), evaluated after
//!   kube-proxy's DNAT as Calico does; traffic from a pod's own node and to itself always
//!   allowed; hostNetwork pods are never selected and count as their node's address.
//! - Faults: a partition cuts traffic between nodes in different groups (within a node always
//!   works); the API server stays reachable from partitioned nodes only with
//!   `partition_keeps_apiserver`. A NotReady node still forwards traffic (the data plane does
//!   not depend on the kubelet); its pods only leave Service endpoints derived here.
//! - DNS goes to the cluster DNS Service when the view has one (so policies, partitions and
//!   UDP faults break it as in a real cluster), and follows each pod's `dnsPolicy`.
//! - IPv4 only: IPv6 pools, addresses and Services are skipped with a reason, never a panic.

mod cidr;
mod dns;
mod ipam;
mod labels;
mod listen;
mod policy;
mod reach;
mod view;

#[cfg(test)]
mod tests;

pub use cidr::{CidrError, Ipv4Cidr};
pub use ipam::{BlockInfo, IpPool, Ipam, IpamError, SkippedPool, pools_from_objects};
pub use labels::{Labels, Selector, labels_of};
pub use listen::{
    Agnhost, Behaviours, DeclaredPorts, Listener, Reply, Speaks, Transport, agnhost_listeners,
    declared_listeners, node_hostname, pod_hostname,
};
pub use reach::{
    Endpoint, Faults, Outcome, Protocol, Source, Target, UdpBlock, Verdict, connect, lookup,
    node_reaches_apiserver,
};
pub use view::{
    ClusterObjects, ClusterView, DnsMode, ExternalHost, ProxyMode, ViewOptions, node_internal_ip,
};
