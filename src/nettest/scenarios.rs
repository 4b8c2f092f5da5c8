//! The network-test scenarios, their selection, and the probe targets each one produces.
//!
//! Target generation is pure: given the nodes, the server pods and the Service, it says exactly
//! which node probes what, so tests can check coverage without a cluster.

use std::collections::BTreeMap;

use serde::Serialize;

/// A scenario and whether it runs unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Its id, as used in `scenarios` patterns.
    pub id: &'static str,
    /// Runs by default.
    pub default: bool,
    /// What it proves.
    pub description: &'static str,
}

/// Every scenario, in the order they are reported.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "control_plane",
        default: true,
        description: "Calico healthy through the API: TigeraStatus, Installation, calico-node, kube-controllers, typha, node conditions",
    },
    Scenario {
        id: "pod_to_pod_same_node",
        default: true,
        description: "a pod reaches a pod on its own node",
    },
    Scenario {
        id: "pod_to_pod_cross_node",
        default: true,
        description: "a pod reaches pods on other nodes (TCP and UDP)",
    },
    Scenario {
        id: "pod_to_service",
        default: true,
        description: "a pod reaches a ClusterIP Service over TCP and UDP, and every backend answers",
    },
    Scenario {
        id: "dns",
        default: true,
        description: "cluster DNS resolves a Service name and kubernetes.default",
    },
    Scenario {
        id: "node_to_pod",
        default: true,
        description: "a node (host network) reaches pods",
    },
    Scenario {
        id: "pod_to_node",
        default: true,
        description: "a pod reaches host-network listeners on nodes",
    },
    Scenario {
        id: "pod_to_apiserver",
        default: true,
        description: "a pod reaches the API server through the kubernetes Service",
    },
    Scenario {
        id: "mtu",
        default: true,
        description: "payloads larger than the tunnel MTU cross nodes",
    },
    Scenario {
        id: "network_policy",
        default: false,
        description: "a default-deny ingress policy blocks, an allow rule admits",
    },
    Scenario {
        id: "nodeport",
        default: false,
        description: "a NodePort Service answers on every node",
    },
    Scenario {
        id: "external",
        default: false,
        description: "user-given external targets answer (off by default: air-gapped clusters have none)",
    },
];

/// Shell-style glob with `*` and `?`, as users write scenario patterns.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Resolves `scenarios` patterns (`['!nodeport']`, `['pod_to_*', 'network_policy']`): with no
/// positive pattern the defaults run; positive patterns select (optional ones included when
/// named); `!pattern` excludes and wins. Unknown patterns are an error naming the ids.
pub fn select(patterns: &[String]) -> Result<Vec<&'static str>, String> {
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for p in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (list, pat) = match p.strip_prefix('!') {
            Some(rest) => (&mut exclude, rest),
            None => (&mut include, p),
        };
        if !SCENARIOS.iter().any(|s| glob(pat, s.id)) {
            let ids: Vec<&str> = SCENARIOS.iter().map(|s| s.id).collect();
            return Err(format!(
                "scenarios: '{p}' matches no scenario; scenarios are: {}",
                ids.join(", ")
            ));
        }
        list.push(pat.to_string());
    }
    Ok(SCENARIOS
        .iter()
        .filter(|s| {
            if include.is_empty() {
                s.default
            } else {
                include.iter().any(|p| glob(p, s.id))
            }
        })
        .filter(|s| !exclude.iter().any(|p| glob(p, s.id)))
        .map(|s| s.id)
        .collect())
}

/// A probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP connect (and greeting).
    Tcp,
    /// HTTP GET or POST.
    Http,
    /// UDP datagram and reply.
    Udp,
    /// DNS resolution.
    Dns,
}

impl Protocol {
    /// The word the probe script reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Udp => "udp",
            Protocol::Dns => "dns",
        }
    }
}

/// One probe: who sends it, what it targets, and what answer proves success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Unique id within the run: `scenario/source->dest/protocol[/n]`.
    pub id: String,
    /// The scenario it belongs to.
    pub scenario: &'static str,
    /// The node whose probe sends it.
    pub source_node: String,
    /// Whether the sender runs on the host network (node → pod).
    pub host_network: bool,
    /// The node the target lives on, when it is a node's pod or address.
    pub dest_node: Option<String>,
    /// Protocol.
    pub protocol: Protocol,
    /// Address or name.
    pub host: String,
    /// Port (0 for DNS).
    pub port: u16,
    /// Glob the answer must match; `-` for any.
    pub expect: String,
    /// Bytes to send.
    pub payload: u32,
    /// For Service probes: the backend group whose every member must answer at least once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_group: Option<String>,
    /// The probe must NOT get through (a NetworkPolicy should block it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub must_fail: bool,
}

impl Target {
    /// The line of the targets file (see docs/probe-contract.md).
    pub fn line(&self) -> String {
        let port = if self.port == 0 {
            "-".to_string()
        } else {
            self.port.to_string()
        };
        let payload = if self.payload == 0 {
            "-".to_string()
        } else {
            self.payload.to_string()
        };
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.id,
            self.protocol.as_str(),
            self.host,
            port,
            self.expect,
            payload
        )
    }
}

/// A server pod (one per node).
#[derive(Debug, Clone)]
pub struct Server {
    /// Its node.
    pub node: String,
    /// Pod name (what serve-hostname answers).
    pub pod: String,
    /// Pod IP.
    pub ip: String,
}

/// Everything target generation needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Nodes under test, sorted.
    pub nodes: Vec<String>,
    /// Node addresses (InternalIP).
    pub node_ips: BTreeMap<String, String>,
    /// Pod-network servers by node.
    pub servers: BTreeMap<String, Server>,
    /// Host-network servers' nodes (they answer with the node's hostname).
    pub host_servers: BTreeMap<String, Server>,
    /// The ClusterIP Service name, namespace and address.
    pub service: (String, String, String),
    /// The NodePort, when the nodeport scenario runs.
    pub node_port: Option<u16>,
    /// The port servers listen on (TCP/HTTP and UDP).
    pub server_port: u16,
    /// The port host-network servers listen on.
    pub host_server_port: u16,
    /// The Service port.
    pub service_port: u16,
    /// The API server's Service address (kubernetes.default).
    pub apiserver: String,
    /// Peers per node for cross-node scenarios (0: all).
    pub max_peers: usize,
    /// Bytes that do not fit the tunnel MTU.
    pub mtu_payload: u32,
    /// External targets (`host:port`).
    pub external: Vec<String>,
}

impl Layout {
    /// The peers a node probes across nodes: all others, or `max_peers` of them chosen so that
    /// every node is probed by the same number of peers (a rotation, not a random sample).
    pub fn peers(&self, node: &str) -> Vec<&String> {
        let n = self.nodes.len();
        let Some(i) = self.nodes.iter().position(|x| x == node) else {
            return Vec::new();
        };
        let k = if self.max_peers == 0 {
            n.saturating_sub(1)
        } else {
            self.max_peers.min(n.saturating_sub(1))
        };
        (1..=k).map(|d| &self.nodes[(i + d) % n]).collect()
    }
}

// The arguments mirror the fields of a targets-file line, in order.
#[allow(clippy::too_many_arguments)]
fn t(
    scenario: &'static str,
    src: &str,
    host_network: bool,
    dest: Option<&str>,
    proto: Protocol,
    host: &str,
    port: u16,
    expect: &str,
    payload: u32,
) -> Target {
    let dest_part = dest.unwrap_or(host);
    Target {
        id: format!("{scenario}/{src}->{dest_part}/{}", proto.as_str()),
        scenario,
        source_node: src.to_string(),
        host_network,
        dest_node: dest.map(str::to_string),
        protocol: proto,
        host: host.to_string(),
        port,
        expect: expect.to_string(),
        payload,
        backend_group: None,
        must_fail: false,
    }
}

/// The network_policy scenario's probes: one per node to a server on another node (or its own
/// on a one-node cluster), expected blocked (`must_fail`) or admitted.
pub fn policy_targets(layout: &Layout, blocked: bool) -> Vec<Target> {
    let phase = if blocked { "deny" } else { "allow" };
    let mut out = Vec::new();
    for node in &layout.nodes {
        let dest = layout.peers(node).into_iter().next().unwrap_or(node);
        let Some(s) = layout.servers.get(dest) else {
            continue;
        };
        let mut x = t(
            "network_policy",
            node,
            false,
            Some(dest),
            Protocol::Http,
            &s.ip,
            layout.server_port,
            &s.pod,
            0,
        );
        x.id = format!("network_policy/{phase}/{node}->{dest}/http");
        x.must_fail = blocked;
        out.push(x);
    }
    out
}

/// More probes of the ClusterIP Service over HTTP, `count` of them from `sources` in turn, each
/// node's numbered after the `first` it already sent: kube-proxy picks a backend at random per
/// connection, so it takes enough answers to hear from every backend.
pub fn more_service_targets(
    layout: &Layout,
    sources: &[String],
    count: usize,
    first: usize,
) -> Vec<Target> {
    if sources.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|j| {
            service_probe(
                layout,
                &sources[j % sources.len()],
                first + j / sources.len(),
            )
        })
        .collect()
}

/// The `i`-th HTTP probe of the ClusterIP Service from `node` (any backend may answer).
fn service_probe(layout: &Layout, node: &str, i: usize) -> Target {
    let (svc_name, _, svc_ip) = &layout.service;
    let mut x = t(
        "pod_to_service",
        node,
        false,
        None,
        Protocol::Http,
        svc_ip,
        layout.service_port,
        "*",
        0,
    );
    x.id = format!("pod_to_service/{node}->{svc_name}/http/{i}");
    x.backend_group = Some("service".into());
    x
}

/// The HTTP probes of the Service each node sends in [`targets`].
pub fn service_probes_per_node(layout: &Layout) -> usize {
    layout.servers.len().clamp(1, 3)
}

/// The targets of the selected scenarios, per probing node.
pub fn targets(layout: &Layout, selected: &[&str]) -> Vec<Target> {
    let on = |id: &str| selected.contains(&id);
    let mut out = Vec::new();
    let (svc_name, svc_ns, svc_ip) = &layout.service;
    for node in &layout.nodes {
        if on("pod_to_pod_same_node")
            && let Some(s) = layout.servers.get(node)
        {
            out.push(t(
                "pod_to_pod_same_node",
                node,
                false,
                Some(node),
                Protocol::Http,
                &s.ip,
                layout.server_port,
                &s.pod,
                0,
            ));
            out.push(t(
                "pod_to_pod_same_node",
                node,
                false,
                Some(node),
                Protocol::Udp,
                &s.ip,
                layout.server_port,
                &s.pod,
                0,
            ));
        }
        for peer in layout.peers(node) {
            let Some(s) = layout.servers.get(peer) else {
                continue;
            };
            if on("pod_to_pod_cross_node") {
                out.push(t(
                    "pod_to_pod_cross_node",
                    node,
                    false,
                    Some(peer),
                    Protocol::Http,
                    &s.ip,
                    layout.server_port,
                    &s.pod,
                    0,
                ));
                out.push(t(
                    "pod_to_pod_cross_node",
                    node,
                    false,
                    Some(peer),
                    Protocol::Udp,
                    &s.ip,
                    layout.server_port,
                    &s.pod,
                    0,
                ));
            }
            if on("mtu") {
                out.push(t(
                    "mtu",
                    node,
                    false,
                    Some(peer),
                    Protocol::Http,
                    &s.ip,
                    layout.server_port,
                    &s.pod,
                    layout.mtu_payload,
                ));
            }
            if on("node_to_pod") {
                out.push(t(
                    "node_to_pod",
                    node,
                    true,
                    Some(peer),
                    Protocol::Http,
                    &s.ip,
                    layout.server_port,
                    &s.pod,
                    0,
                ));
            }
            if on("pod_to_node")
                && let (Some(h), Some(ip)) =
                    (layout.host_servers.get(peer), layout.node_ips.get(peer))
            {
                out.push(t(
                    "pod_to_node",
                    node,
                    false,
                    Some(peer),
                    Protocol::Http,
                    ip,
                    layout.host_server_port,
                    &h.pod,
                    0,
                ));
            }
        }
        if on("node_to_pod")
            && let Some(s) = layout.servers.get(node)
        {
            let mut same = t(
                "node_to_pod",
                node,
                true,
                Some(node),
                Protocol::Http,
                &s.ip,
                layout.server_port,
                &s.pod,
                0,
            );
            same.id.push_str("/local");
            out.push(same);
        }
        if on("pod_to_service") {
            for i in 0..service_probes_per_node(layout) {
                out.push(service_probe(layout, node, i));
            }
            let mut u = t(
                "pod_to_service",
                node,
                false,
                None,
                Protocol::Udp,
                svc_ip,
                layout.service_port,
                "*",
                0,
            );
            u.id = format!("pod_to_service/{node}->{svc_name}/udp");
            u.backend_group = Some("service".into());
            out.push(u);
        }
        if on("dns") {
            let fqdn = format!("{svc_name}.{svc_ns}.svc.cluster.local");
            let mut d = t("dns", node, false, None, Protocol::Dns, &fqdn, 0, svc_ip, 0);
            d.id = format!("dns/{node}->{svc_name}");
            out.push(d);
            let mut k = t(
                "dns",
                node,
                false,
                None,
                Protocol::Dns,
                "kubernetes.default",
                0,
                "-",
                0,
            );
            k.id = format!("dns/{node}->kubernetes.default");
            out.push(k);
        }
        if on("pod_to_apiserver") {
            let mut a = t(
                "pod_to_apiserver",
                node,
                false,
                None,
                Protocol::Tcp,
                &layout.apiserver,
                443,
                "-",
                0,
            );
            a.id = format!("pod_to_apiserver/{node}->kubernetes");
            out.push(a);
        }
        if on("nodeport")
            && let Some(np) = layout.node_port
        {
            for peer in layout.peers(node).into_iter().take(1) {
                if let Some(ip) = layout.node_ips.get(peer) {
                    out.push(t(
                        "nodeport",
                        node,
                        false,
                        Some(peer),
                        Protocol::Http,
                        ip,
                        np,
                        "*",
                        0,
                    ));
                }
            }
        }
        if on("external") {
            for (i, e) in layout.external.iter().enumerate() {
                let (h, p) = e.rsplit_once(':').unwrap_or((e.as_str(), "443"));
                let mut x = t(
                    "external",
                    node,
                    false,
                    None,
                    Protocol::Tcp,
                    h,
                    p.parse().unwrap_or(443),
                    "-",
                    0,
                );
                x.id = format!("external/{node}->{e}/{i}");
                out.push(x);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize, max_peers: usize) -> Layout {
        let nodes: Vec<String> = (1..=n).map(|i| format!("w{i}")).collect();
        let servers = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                (
                    node.clone(),
                    Server {
                        node: node.clone(),
                        pod: format!("nt-server-{i}"),
                        ip: format!("10.244.{i}.10"),
                    },
                )
            })
            .collect();
        let host_servers = nodes
            .iter()
            .map(|node| {
                (
                    node.clone(),
                    Server {
                        node: node.clone(),
                        pod: node.clone(),
                        ip: String::new(),
                    },
                )
            })
            .collect();
        Layout {
            node_ips: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("192.168.0.{}", i + 1)))
                .collect(),
            nodes,
            servers,
            host_servers,
            service: (
                "nt-server".into(),
                "calico-nettest-x".into(),
                "10.96.0.50".into(),
            ),
            node_port: Some(30080),
            server_port: 9376,
            host_server_port: 9377,
            service_port: 80,
            apiserver: "10.96.0.1".into(),
            max_peers,
            mtu_payload: 9000,
            external: vec![],
        }
    }

    #[test]
    fn selection_by_patterns() {
        let all_default: Vec<&str> = SCENARIOS
            .iter()
            .filter(|s| s.default)
            .map(|s| s.id)
            .collect();
        assert_eq!(select(&[]).unwrap(), all_default);
        assert!(!select(&["!mtu".into()]).unwrap().contains(&"mtu"));
        assert_eq!(
            select(&["pod_to_pod_*".into()]).unwrap(),
            ["pod_to_pod_same_node", "pod_to_pod_cross_node"]
        );
        assert!(
            select(&["network_policy".into(), "dns".into()])
                .unwrap()
                .contains(&"network_policy")
        );
        assert!(
            select(&["pingpong".into()])
                .unwrap_err()
                .contains("matches no scenario")
        );
    }

    #[test]
    fn every_node_probes_every_other_node() {
        let l = layout(5, 0);
        let ts = targets(&l, &["pod_to_pod_cross_node"]);
        assert_eq!(ts.len(), 5 * 4 * 2);
        let ids: std::collections::HashSet<&String> = ts.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), ts.len(), "ids are unique");
    }

    #[test]
    fn sampling_is_fair() {
        let l = layout(10, 3);
        let ts = targets(&l, &["pod_to_pod_cross_node"]);
        let mut probed: BTreeMap<&str, usize> = BTreeMap::new();
        for t in ts.iter().filter(|t| t.protocol == Protocol::Http) {
            *probed.entry(t.dest_node.as_deref().unwrap()).or_default() += 1;
        }
        assert!(probed.values().all(|&c| c == 3), "{probed:?}");
    }

    #[test]
    fn target_lines_follow_the_contract() {
        let l = layout(2, 0);
        let ts = targets(&l, &["mtu", "dns"]);
        let mtu = ts.iter().find(|t| t.scenario == "mtu").unwrap();
        assert_eq!(
            mtu.line(),
            "mtu/w1->w2/http\thttp\t10.244.1.10\t9376\tnt-server-1\t9000"
        );
        let dns = ts.iter().find(|t| t.scenario == "dns").unwrap();
        assert_eq!(
            dns.line(),
            "dns/w1->nt-server\tdns\tnt-server.calico-nettest-x.svc.cluster.local\t-\t10.96.0.50\t-"
        );
    }

    #[test]
    fn more_service_probes_spread_over_the_sources_with_fresh_ids() {
        let l = layout(3, 0);
        let first = targets(&l, &["pod_to_service"]);
        let sources = vec!["w1".to_string(), "w3".to_string()];
        let more = more_service_targets(&l, &sources, 5, service_probes_per_node(&l));
        assert_eq!(more.len(), 5);
        assert_eq!(more.iter().filter(|t| t.source_node == "w1").count(), 3);
        assert_eq!(more.iter().filter(|t| t.source_node == "w3").count(), 2);
        let mut ids: std::collections::HashSet<&String> = first.iter().map(|t| &t.id).collect();
        for t in &more {
            assert!(ids.insert(&t.id), "duplicate id {}", t.id);
            assert_eq!(t.backend_group.as_deref(), Some("service"));
            assert_eq!((t.host.as_str(), t.port), ("10.96.0.50", 80));
        }
        assert_eq!(more[0].id, "pod_to_service/w1->nt-server/http/3");
        assert_eq!(more[2].id, "pod_to_service/w1->nt-server/http/4");
    }

    #[test]
    fn globs() {
        assert!(glob("pod_*", "pod_to_node"));
        assert!(glob("*node", "pod_to_node"));
        assert!(!glob("pod_?", "pod_to"));
        assert!(glob("dns", "dns"));
    }
}
