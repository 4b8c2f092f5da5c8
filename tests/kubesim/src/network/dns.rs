//! Name resolution as a pod's resolver and the cluster DNS (CoreDNS) do it.
//!
//! From the Kubernetes page "DNS for Services and Pods": a pod with `dnsPolicy: ClusterFirst`
//! searches `<ns>.svc.<domain>`, `svc.<domain>` and `<domain>` with `ndots:5`, so `svc`,
//! `svc.ns`, `svc.ns.svc` and the full name all resolve; headless Services resolve to their
//! ready endpoints and `<hostname>.<subdomain>.<ns>.svc.<domain>` to a pod; hostNetwork pods
//! with `ClusterFirst` "fall back to the behavior of the Default policy" (the node's
//! resolv.conf), so cluster names need `ClusterFirstWithHostNet`. kubeadm's Corefile has
//! `pods insecure`, so `a-b-c-d.<ns>.pod.<domain>` answers a.b.c.d. Names outside the cluster
//! domain go upstream; the model's upstream knows only the registered external hosts
//! (air-gapped otherwise).

use std::net::Ipv4Addr;

use super::reach::{Faults, Outcome, Protocol, Src, Target, Verdict, via_cluster_ip_leg};
use super::view::{ClusterView, DnsMode, DnsRecord, PodDns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolver {
    Cluster,
    Node,
}

/// Resolves `name` for `src`, or says why not (a `dns` outcome).
pub(super) fn resolve(
    view: &ClusterView,
    faults: &Faults,
    src: &Src<'_>,
    name: &str,
    flow: u64,
) -> Result<Ipv4Addr, Box<Outcome>> {
    if faults.dns_down {
        return Err(Box::new(Outcome::dns(format!(
            "no DNS answer for {name}: DNS is down (fault)"
        ))));
    }
    let dns_ip = view.dns_service.and_then(|s| view.services[s].cluster_ip);
    let resolver = match src.dns {
        PodDns::Cluster => Resolver::Cluster,
        PodDns::Node => Resolver::Node,
        PodDns::Custom(servers) if servers.is_empty() => {
            return Err(Box::new(Outcome::dns(format!(
                "cannot resolve {name}: dnsPolicy None without nameservers"
            ))));
        }
        PodDns::Custom(servers) if dns_ip.is_some_and(|ip| servers.contains(&ip)) => {
            Resolver::Cluster
        }
        PodDns::Custom(_) => Resolver::Node,
    };
    let lower = name.to_ascii_lowercase();
    let absolute = lower.ends_with('.');
    let base = lower.trim_end_matches('.');
    if base.is_empty() || base.contains("..") {
        return Err(Box::new(Outcome::dns(format!(
            "{name:?} is not a valid name"
        ))));
    }
    let domain = view
        .options
        .cluster_domain
        .trim_matches('.')
        .to_ascii_lowercase();
    if resolver == Resolver::Node {
        return match view.upstream.get(base) {
            Some(ip) => Ok(*ip),
            None => Err(Box::new(Outcome::dns(format!(
                "{name} does not resolve through the node's resolver (host network or dnsPolicy Default): cluster names need dnsPolicy ClusterFirstWithHostNet, and no upstream knows it"
            )))),
        };
    }
    if view.options.dns == DnsMode::ThroughService
        && let (Some(s), Some(ip)) = (view.dns_service, dns_ip)
    {
        let query = Target::new("", 53, Protocol::Udp).flow(flow);
        let o = via_cluster_ip_leg(view, faults, src, s, ip, &query, true);
        if o.verdict != Verdict::Ok {
            return Err(Box::new(Outcome::dns(format!(
                "no answer for {name} from the cluster DNS {ip}:53/UDP: {}",
                o.detail
            ))));
        }
    }
    let search: Vec<String> = match src.ns {
        Some(ns) => vec![
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ],
        None => vec![domain.clone()],
    };
    let mut candidates: Vec<String> = Vec::with_capacity(search.len() + 1);
    let searched = search.iter().map(|s| format!("{base}.{s}"));
    if absolute {
        candidates.push(base.to_string());
    } else if base.matches('.').count() >= 5 {
        candidates.push(base.to_string());
        candidates.extend(searched);
    } else {
        candidates.extend(searched);
        candidates.push(base.to_string());
    }
    for c in &candidates {
        if let Some(ip) = answer(view, &domain, c, flow) {
            return Ok(ip);
        }
    }
    Err(Box::new(Outcome::dns(format!(
        "{name} does not resolve (NXDOMAIN; tried {})",
        candidates.join(", ")
    ))))
}

fn answer(view: &ClusterView, domain: &str, fqdn: &str, flow: u64) -> Option<Ipv4Addr> {
    let in_cluster = fqdn == domain || fqdn.ends_with(&format!(".{domain}"));
    if !in_cluster {
        return view.upstream.get(fqdn).copied();
    }
    match view.dns.get(fqdn) {
        Some(DnsRecord::Addr(ip)) => return Some(*ip),
        Some(DnsRecord::Headless(s)) => {
            let mut ips: Vec<Ipv4Addr> = view.services[*s]
                .ports
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| b.ip))
                .collect();
            ips.sort();
            ips.dedup();
            // Clients take the first A record; CoreDNS shuffles them, the flow stands in for that.
            let n = ips.len() as u64;
            return (n > 0).then(|| ips[usize::try_from(flow % n).unwrap_or(0)]);
        }
        Some(DnsRecord::Cname(target)) => {
            return view.upstream.get(target.trim_end_matches('.')).copied();
        }
        None => {}
    }
    let rest = fqdn.strip_suffix(&format!(".pod.{domain}"))?;
    let (dashed, _ns) = rest.split_once('.')?;
    dashed.replace('-', ".").parse().ok()
}
