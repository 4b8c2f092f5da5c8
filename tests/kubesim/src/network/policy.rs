//! Kubernetes NetworkPolicy (networking.k8s.io/v1), compiled once and evaluated per connection.
//!
//! Rules relied on, from the Kubernetes documentation page "Network Policies"
//! (kubernetes/website `content/en/docs/concepts/services-networking/network-policies.md`) and
//! the `NetworkPolicySpec`/`NetworkPolicyIngressRule`/`NetworkPolicyPort`/`NetworkPolicyPeer`
//! API reference:
//! - "A pod is isolated for egress [ingress] if there is any NetworkPolicy that both selects the
//!   pod and has 'Egress' ['Ingress'] in its policyTypes"; isolation per direction is independent.
//! - "If no policyTypes are specified on a NetworkPolicy then by default Ingress will always be
//!   set and Egress will be set if the NetworkPolicy has any egress rules."
//! - Rules of all policies applying to a pod in a direction combine additively (a union).
//! - A rule allows traffic matching both its peers and its ports; an empty or missing `from`/`to`
//!   matches all peers, an empty or missing `ports` matches all ports.
//! - A peer with only `podSelector` selects pods in the policy's namespace; with only
//!   `namespaceSelector` all pods in the selected namespaces; with both, the selected pods in the
//!   selected namespaces; `ipBlock` is a CIDR minus its `except` list.
//! - A port's protocol defaults to TCP; a missing port matches every port of that protocol; a
//!   named port is resolved against the destination pod's container ports; `endPort` makes a
//!   numeric range.
//! - "traffic to and from the node where a Pod is running is always allowed" and "a pod cannot
//!   block access to itself" (handled by the caller, which knows the topology).
//! - hostNetwork pods: "ignores hostNetwork pods when matching podSelector and namespaceSelector
//!   ... (This is the most common implementation.)" — Calico is such an implementation, since a
//!   hostNetwork pod has no workload endpoint; their traffic is node traffic (ipBlock can match).
//!
//! Calico applies `ipBlock` to every address, pod addresses included (it compiles ipBlock to a
//! CIDR match), so an ipBlock covering the pod CIDR admits pods here too.

use crate::pointer::At;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::cidr::{CidrError, Ipv4Cidr};
use super::labels::{Labels, Selector};
use super::listen::Transport;

/// A compiled NetworkPolicy.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    pub ns: String,
    pub name: String,
    pub selector: Selector,
    /// `Some` when the policy applies to ingress (the rules may be empty: deny all).
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when the policy applies to egress.
    pub egress: Option<Vec<Rule>>,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// `None`: every peer.
    peers: Option<Vec<Peer>>,
    /// `None`: every port.
    ports: Option<Vec<PortMatch>>,
}

#[derive(Debug, Clone)]
enum Peer {
    Pods {
        namespaces: NsMatch,
        pods: Selector,
    },
    Block {
        cidr: Ipv4Cidr,
        except: Vec<Ipv4Cidr>,
    },
    /// A peer that can match nothing here (an IPv6 ipBlock, or an invalid one).
    Nothing,
}

#[derive(Debug, Clone)]
enum NsMatch {
    /// The policy's own namespace.
    Own,
    Selected(Selector),
}

#[derive(Debug, Clone)]
struct PortMatch {
    transport: Transport,
    spec: PortSpec,
}

#[derive(Debug, Clone)]
enum PortSpec {
    Any,
    Range(u16, u16),
    Named(String),
}

/// The other end of a connection, as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerView<'a> {
    pub ip: Ipv4Addr,
    /// Set only for pod-network pods: (namespace, pod labels, namespace labels).
    pub pod: Option<(&'a str, &'a Labels, &'a Labels)>,
}

/// The destination port, with the destination pod's named container ports (empty when the
/// destination is not a pod-network pod, so named ports match nothing).
#[derive(Debug, Clone, Copy)]
pub(super) struct DstPort<'a> {
    pub port: u16,
    pub transport: Transport,
    pub named: &'a [(String, Transport, u16)],
}

impl Policy {
    /// Compiles a NetworkPolicy object; problems that the API server would have rejected are
    /// returned as warnings and make the affected part match nothing.
    pub fn compile(obj: &Value, warnings: &mut Vec<String>) -> Policy {
        let ns = obj
            .at("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = obj
            .at("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let id = format!("NetworkPolicy {ns}/{name}");
        let mut warn = |what: String| warnings.push(format!("{id}: {what}"));
        let selector =
            selector_or_nothing(spec.get("podSelector").unwrap_or(&Value::Null), &mut warn);
        let egress_rules = spec.get("egress").and_then(Value::as_array);
        let (mut applies_in, mut applies_out) = (false, false);
        match spec.get("policyTypes").and_then(Value::as_array) {
            Some(types) if !types.is_empty() => {
                for t in types {
                    match t.as_str() {
                        Some("Ingress") => applies_in = true,
                        Some("Egress") => applies_out = true,
                        other => warn(format!("unknown policyType {other:?} ignored")),
                    }
                }
            }
            _ => {
                applies_in = true;
                applies_out = egress_rules.is_some_and(|e| !e.is_empty());
            }
        }
        let mut rules = |key: &str, peer_key: &str| -> Vec<Rule> {
            let list = spec.get(key).and_then(Value::as_array);
            list.into_iter()
                .flatten()
                .map(|r| compile_rule(r, peer_key, &mut warn))
                .collect()
        };
        let ingress = applies_in.then(|| rules("ingress", "from"));
        let egress = applies_out.then(|| rules("egress", "to"));
        Policy {
            ns,
            name,
            selector,
            ingress,
            egress,
        }
    }
}

impl Rule {
    /// Whether this rule admits `peer` on `dst`. `policy_ns` resolves peers without a
    /// namespaceSelector.
    pub fn allows(&self, policy_ns: &str, peer: &PeerView<'_>, dst: &DstPort<'_>) -> bool {
        let port_ok = match &self.ports {
            None => true,
            Some(ports) if ports.is_empty() => true,
            Some(ports) => ports.iter().any(|p| p.matches(dst)),
        };
        if !port_ok {
            return false;
        }
        match &self.peers {
            None => true,
            Some(peers) if peers.is_empty() => true,
            Some(peers) => peers.iter().any(|p| p.matches(policy_ns, peer)),
        }
    }
}

impl PortMatch {
    fn matches(&self, dst: &DstPort<'_>) -> bool {
        if self.transport != dst.transport {
            return false;
        }
        match &self.spec {
            PortSpec::Any => true,
            PortSpec::Range(lo, hi) => (*lo..=*hi).contains(&dst.port),
            PortSpec::Named(name) => dst
                .named
                .iter()
                .any(|(n, t, p)| n == name && *t == dst.transport && *p == dst.port),
        }
    }
}

impl Peer {
    fn matches(&self, policy_ns: &str, peer: &PeerView<'_>) -> bool {
        match self {
            Peer::Pods { namespaces, pods } => {
                let Some((ns, labels, ns_labels)) = peer.pod else {
                    return false;
                };
                let ns_ok = match namespaces {
                    NsMatch::Own => ns == policy_ns,
                    NsMatch::Selected(sel) => sel.matches(ns_labels),
                };
                ns_ok && pods.matches(labels)
            }
            Peer::Block { cidr, except } => {
                cidr.contains(peer.ip) && !except.iter().any(|e| e.contains(peer.ip))
            }
            Peer::Nothing => false,
        }
    }
}

fn selector_or_nothing(v: &Value, warn: &mut impl FnMut(String)) -> Selector {
    Selector::from_label_selector(v).unwrap_or_else(|e| {
        warn(format!("{e}; the selector matches nothing"));
        Selector::nothing()
    })
}

fn compile_rule(r: &Value, peer_key: &str, warn: &mut impl FnMut(String)) -> Rule {
    let peers = r
        .get(peer_key)
        .and_then(Value::as_array)
        .map(|list| list.iter().map(|p| compile_peer(p, warn)).collect());
    let ports = r
        .get("ports")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|p| compile_port(p, warn)).collect());
    Rule { peers, ports }
}

fn compile_peer(p: &Value, warn: &mut impl FnMut(String)) -> Peer {
    if let Some(block) = p.get("ipBlock").filter(|b| !b.is_null()) {
        let cidr_s = block.get("cidr").and_then(Value::as_str).unwrap_or("");
        let cidr = match Ipv4Cidr::parse(cidr_s) {
            Ok(c) => c,
            Err(CidrError::Ipv6(_)) => return Peer::Nothing,
            Err(e) => {
                warn(format!("ipBlock: {e}; it matches nothing"));
                return Peer::Nothing;
            }
        };
        let except = block
            .get("except")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|s| match Ipv4Cidr::parse(s) {
                Ok(c) => Some(c),
                Err(CidrError::Ipv6(_)) => None,
                Err(e) => {
                    warn(format!("ipBlock except: {e}; ignored"));
                    None
                }
            })
            .collect();
        return Peer::Block { cidr, except };
    }
    let pod_sel = p.get("podSelector").filter(|v| !v.is_null());
    let ns_sel = p.get("namespaceSelector").filter(|v| !v.is_null());
    match (pod_sel, ns_sel) {
        (None, None) => {
            warn(
                "a peer with neither podSelector, namespaceSelector nor ipBlock matches nothing"
                    .into(),
            );
            Peer::Nothing
        }
        (pods, namespaces) => Peer::Pods {
            pods: pods
                .map(|s| selector_or_nothing(s, warn))
                .unwrap_or_else(Selector::everything),
            namespaces: match namespaces {
                Some(s) => NsMatch::Selected(selector_or_nothing(s, warn)),
                None => NsMatch::Own,
            },
        },
    }
}

fn compile_port(p: &Value, warn: &mut impl FnMut(String)) -> Option<PortMatch> {
    let Some(transport) = Transport::from_k8s(p.get("protocol")) else {
        warn(format!(
            "unknown protocol {}; the port entry is ignored",
            p.get("protocol").unwrap_or(&Value::Null)
        ));
        return None;
    };
    let spec = match p.get("port") {
        None | Some(Value::Null) => PortSpec::Any,
        Some(Value::String(s)) => match s.parse::<u16>() {
            // An int-or-string given as a numeric string: the API decodes it as a name, and a
            // name never equals a number, but users mean the number; treat it as the number.
            Ok(n) => PortSpec::Range(n, n),
            Err(_) => PortSpec::Named(s.clone()),
        },
        Some(v) => {
            let Some(lo) = v.as_u64().and_then(|n| u16::try_from(n).ok()) else {
                warn(format!("port {v} is not a port; the entry is ignored"));
                return None;
            };
            let hi = match p.get("endPort").and_then(Value::as_u64) {
                Some(e) => u16::try_from(e).unwrap_or(u16::MAX).max(lo),
                None => lo,
            };
            PortSpec::Range(lo, hi)
        }
    };
    Some(PortMatch { transport, spec })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn compile(v: Value) -> Policy {
        let mut w = Vec::new();
        let p = Policy::compile(&v, &mut w);
        assert!(w.is_empty(), "{w:?}");
        p
    }

    #[test]
    fn policy_types_default() {
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}}}),
        );
        assert!(
            p.ingress.as_ref().is_some_and(Vec::is_empty),
            "ingress isolation, no rules"
        );
        assert!(p.egress.is_none());
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "egress": [{}]}}),
        );
        assert!(p.ingress.is_some() && p.egress.is_some());
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "egress": []}}),
        );
        assert!(
            p.egress.is_none(),
            "an empty egress list does not make the policy an egress one"
        );
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
        );
        assert!(p.ingress.is_none() && p.egress.is_some());
    }

    #[test]
    fn ports_named_range_and_protocol() {
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "ingress": [{"ports": [
                {"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}, {"protocol": "SCTP"}
            ]}]}}),
        );
        let r = &p.ingress.as_ref().unwrap()[0];
        let peer = PeerView {
            ip: Ipv4Addr::new(1, 2, 3, 4),
            pod: None,
        };
        let named = [("http".to_string(), Transport::Tcp, 8080u16)];
        let dst = |port, transport| DstPort {
            port,
            transport,
            named: &named,
        };
        assert!(r.allows("a", &peer, &dst(8080, Transport::Tcp)));
        assert!(!r.allows("a", &peer, &dst(8081, Transport::Tcp)));
        assert!(!r.allows(
            "a",
            &peer,
            &DstPort {
                port: 8080,
                transport: Transport::Tcp,
                named: &[]
            }
        ));
        assert!(r.allows("a", &peer, &dst(5005, Transport::Udp)));
        assert!(!r.allows("a", &peer, &dst(5011, Transport::Udp)));
        assert!(!r.allows("a", &peer, &dst(5005, Transport::Tcp)));
        assert!(r.allows("a", &peer, &dst(1, Transport::Sctp)));
    }

    #[test]
    fn peers() {
        let p = compile(
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"role": "client"}}},
                {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"role": "probe"}}},
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"ipBlock": {"cidr": "fd00::/64"}}
            ]}]}}),
        );
        let r = &p.ingress.as_ref().unwrap()[0];
        let dst = DstPort {
            port: 80,
            transport: Transport::Tcp,
            named: &[],
        };
        let (client, probe, ns_a, ns_x) = (
            l(&[("role", "client")]),
            l(&[("role", "probe")]),
            l(&[]),
            l(&[("team", "x")]),
        );
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert!(r.allows(
            "a",
            &PeerView {
                ip,
                pod: Some(("a", &client, &ns_a))
            },
            &dst
        ));
        assert!(
            !r.allows(
                "a",
                &PeerView {
                    ip,
                    pod: Some(("b", &client, &ns_a))
                },
                &dst
            ),
            "podSelector alone is the policy namespace"
        );
        assert!(r.allows(
            "a",
            &PeerView {
                ip,
                pod: Some(("b", &probe, &ns_x))
            },
            &dst
        ));
        assert!(
            !r.allows(
                "a",
                &PeerView {
                    ip,
                    pod: Some(("b", &client, &ns_x))
                },
                &dst
            ),
            "both selectors are ANDed"
        );
        assert!(r.allows(
            "a",
            &PeerView {
                ip: Ipv4Addr::new(172, 17, 2, 9),
                pod: None
            },
            &dst
        ));
        assert!(
            !r.allows(
                "a",
                &PeerView {
                    ip: Ipv4Addr::new(172, 17, 1, 9),
                    pod: None
                },
                &dst
            ),
            "except"
        );
    }

    #[test]
    fn invalid_parts_warn_and_match_nothing() {
        let mut w = Vec::new();
        let p = Policy::compile(
            &json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}, {}]}]}}),
            &mut w,
        );
        assert_eq!(w.len(), 2, "{w:?}");
        let r = &p.ingress.as_ref().unwrap()[0];
        let dst = DstPort {
            port: 80,
            transport: Transport::Tcp,
            named: &[],
        };
        assert!(!r.allows(
            "a",
            &PeerView {
                ip: Ipv4Addr::new(1, 1, 1, 1),
                pod: None
            },
            &dst
        ));
    }
}
