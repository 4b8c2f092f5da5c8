//! Scenario tests: a small cluster shaped like calico_nettest's workloads (agnhost servers on
//! every node, host-network servers, probes, a Service, a NodePort, cluster DNS), addressed by
//! the IPAM, then probed under faults and NetworkPolicies.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::*;

const AGN: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";
const NS: &str = "calico-nettest-x";
const NODES: [(&str, &str); 4] = [
    ("cp1", "172.18.0.10"),
    ("w1", "172.18.0.11"),
    ("w2", "172.18.0.12"),
    ("w3", "172.18.0.13"),
];

fn node(name: &str, ip: &str) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name});
    if name.starts_with("cp") {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

struct Cluster {
    ipam: Ipam,
    objects: Vec<Value>,
}

impl Cluster {
    fn new() -> Cluster {
        let ipam = Ipam::new(vec![
            IpPool::new("default-ipv4-ippool", "10.244.0.0/16", None).unwrap(),
        ]);
        let mut c = Cluster {
            ipam,
            objects: NODES.iter().map(|(n, ip)| node(n, ip)).collect(),
        };
        c.add(json!({"kind": "Namespace", "metadata": {"name": NS, "labels": {"app.kubernetes.io/managed-by": "calico_nettest"}}}));
        c.add(json!({"kind": "Namespace", "metadata": {"name": "kube-system"}}));
        c.add(json!({"kind": "Namespace", "metadata": {"name": "default"}}));
        c.add(json!({"kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "x"}}}));
        c.add(json!({"kind": "Namespace", "metadata": {"name": "plain"}}));
        for (n, _) in NODES {
            let tcp = json!({"name": "http", "image": AGN, "args": ["serve-hostname", "--port=8080"],
                              "ports": [{"name": "http", "containerPort": 8080}]});
            let udp = json!({"name": "udp", "image": AGN, "args": ["serve-hostname", "--http=false", "--udp", "--port=8081"],
                              "ports": [{"name": "udp", "containerPort": 8081, "protocol": "UDP"}]});
            c.pod(
                NS,
                &format!("nt-server-{n}"),
                n,
                &[("role", "server")],
                json!({"containers": [tcp, udp]}),
            );
            c.pod(NS, &format!("probe-{n}"), n, &[("role", "probe")], json!({"containers": [{"name": "probe", "image": AGN, "command": ["bash", "-c", "probe.sh"]}]}));
            let host =
                json!({"name": "h", "image": AGN, "args": ["serve-hostname", "--port=31080"]});
            c.pod(NS, &format!("host-server-{n}"), n, &[("role", "host-server")], json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": [host]}));
            c.pod(NS, &format!("host-probe-{n}"), n, &[("role", "host-probe")], json!({"hostNetwork": true, "containers": [{"name": "p", "image": AGN, "command": ["bash"]}]}));
        }
        for (i, n) in ["cp1", "w1"].iter().enumerate() {
            let dns = json!({"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.11.1", "ports": [
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}, {"name": "dns-tcp", "containerPort": 53}]});
            c.pod(
                "kube-system",
                &format!("coredns-{i}"),
                n,
                &[("k8s-app", "kube-dns")],
                json!({"containers": [dns]}),
            );
        }
        c.pod(
            "other",
            "client",
            "w1",
            &[("role", "client")],
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        );
        c.pod(
            "plain",
            "client",
            "w1",
            &[("role", "client")],
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        );
        c.service(
            "default",
            "kubernetes",
            "10.96.0.1",
            None,
            json!([{"name": "https", "port": 443, "targetPort": 6443}]),
            "ClusterIP",
        );
        c.service("kube-system", "kube-dns", "10.96.0.10", Some(json!({"k8s-app": "kube-dns"})),
            json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}, {"name": "dns-tcp", "port": 53, "targetPort": 53}]), "ClusterIP");
        c.service(NS, "nt-server", "10.96.0.50", Some(json!({"role": "server"})),
            json!([{"name": "http", "port": 80, "targetPort": "http"}, {"name": "udp", "port": 90, "protocol": "UDP", "targetPort": "udp"}]), "ClusterIP");
        c.service(
            NS,
            "nt-server-np",
            "10.96.0.51",
            Some(json!({"role": "server"})),
            json!([{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]),
            "NodePort",
        );
        c.service(NS, "empty", "10.96.0.52", Some(json!({"role": "nobody"})),
            json!([{"name": "http", "port": 80, "targetPort": 8080}, {"name": "u", "port": 81, "protocol": "UDP"}]), "ClusterIP");
        c
    }

    fn add(&mut self, v: Value) {
        self.objects.push(v);
    }

    fn pod(&mut self, ns: &str, name: &str, node: &str, labels: &[(&str, &str)], spec: Value) {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        let host = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
        let ip = if host {
            NODES
                .iter()
                .find(|(n, _)| *n == node)
                .map(|(_, ip)| ip.to_string())
                .unwrap()
        } else {
            let node_labels =
                Labels::from([("kubernetes.io/hostname".to_string(), node.to_string())]);
            self.ipam
                .allocate(&format!("{ns}/{name}"), node, &node_labels)
                .unwrap()
                .to_string()
        };
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.add(json!({
            "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": spec,
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
        }));
    }

    fn service(
        &mut self,
        ns: &str,
        name: &str,
        ip: &str,
        selector: Option<Value>,
        ports: Value,
        kind: &str,
    ) {
        let mut spec = json!({"clusterIP": ip, "ports": ports, "type": kind});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        self.add(
            json!({"kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}),
        );
    }

    fn policy(&mut self, ns: &str, name: &str, spec: Value) {
        self.add(json!({"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1", "metadata": {"namespace": ns, "name": name}, "spec": spec}));
    }

    fn view(&self) -> ClusterView {
        self.view_with(ViewOptions::default())
    }

    fn view_with(&self, options: ViewOptions) -> ClusterView {
        let v = ClusterView::build(
            &ClusterObjects::from_objects(self.objects.iter()),
            options,
            &Agnhost,
        );
        assert!(v.warnings().is_empty(), "{:?}", v.warnings());
        v
    }
}

fn pod<'a>(name: &'a str) -> Source<'a> {
    Source::Pod {
        namespace: NS,
        name,
    }
}

fn ip_of(v: &ClusterView, name: &str) -> String {
    v.pod_ip(NS, name).unwrap().to_string()
}

fn http(v: &ClusterView, f: &Faults, from: Source<'_>, host: &str, port: u16) -> Outcome {
    connect(v, f, from, &Target::new(host, port, Protocol::Http))
}

fn udp(v: &ClusterView, f: &Faults, from: Source<'_>, host: &str, port: u16) -> Outcome {
    connect(v, f, from, &Target::new(host, port, Protocol::Udp))
}

fn ok_from(o: &Outcome, answer: &str) {
    assert_eq!(
        (o.verdict, o.answer.as_deref()),
        (Verdict::Ok, Some(answer)),
        "{o:?}"
    );
}

fn verdict(o: &Outcome, v: Verdict, detail_has: &str) {
    assert_eq!(o.verdict, v, "{o:?}");
    assert!(
        o.detail.contains(detail_has),
        "detail {:?} lacks {detail_has:?}",
        o.detail
    );
}

fn healthy() -> Faults {
    Faults::default()
}

#[test]
fn pod_addresses_come_from_per_node_blocks() {
    let c = Cluster::new();
    let v = c.view();
    let blocks = c.ipam.blocks();
    for b in &blocks {
        let node = b.affinity.as_deref().unwrap();
        for p in ["nt-server", "probe"] {
            let ip: Ipv4Addr = ip_of(&v, &format!("{p}-{node}")).parse().unwrap();
            assert!(
                b.cidr.contains(ip),
                "{p}-{node} {ip} outside its node's block {}",
                b.cidr
            );
        }
    }
    assert_eq!(blocks.len(), 4, "one /26 per node: {blocks:?}");
    assert_eq!(
        v.pod_ip(NS, "host-server-w2"),
        Some("172.18.0.12".parse().unwrap()),
        "hostNetwork pods have the node address"
    );
}

#[test]
fn pod_to_pod_same_and_cross_node() {
    let v = Cluster::new().view();
    let f = healthy();
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w1"), 8080),
        "nt-server-w1",
    );
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
    ok_from(
        &udp(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w3"), 8081),
        "nt-server-w3",
    );
    let o = connect(
        &v,
        &f,
        pod("probe-w1"),
        &Target::new(&ip_of(&v, "nt-server-w2"), 8080, Protocol::Tcp),
    );
    assert_eq!(
        (o.verdict, o.answer.clone()),
        (Verdict::Ok, None),
        "an HTTP server sends no greeting: {o:?}"
    );
    assert_eq!(
        o.backend,
        Some(Endpoint::Pod {
            namespace: NS.into(),
            name: "nt-server-w2".into(),
            node: "w2".into()
        })
    );
}

#[test]
fn nothing_listening_and_nobody_home() {
    let v = Cluster::new().view();
    let f = healthy();
    let server = ip_of(&v, "nt-server-w2");
    verdict(
        &http(&v, &f, pod("probe-w1"), &server, 9999),
        Verdict::Refused,
        "connection refused",
    );
    verdict(
        &udp(&v, &f, pod("probe-w1"), &server, 9999),
        Verdict::Refused,
        "ICMP port unreachable",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.244.200.7", 8080),
        Verdict::Timeout,
        "no host has address",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "203.0.113.9", 443),
        Verdict::Timeout,
        "no host",
    );
    // The raw serve-hostname UDP server does not speak HTTP on TCP 8081: nothing listens there.
    verdict(
        &http(&v, &f, pod("probe-w1"), &server, 8081),
        Verdict::Refused,
        "",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "fd00::1", 80),
        Verdict::Other,
        "IPv6",
    );
    verdict(
        &http(&v, &f, pod("missing"), &server, 8080),
        Verdict::Other,
        "source pod",
    );
}

#[test]
fn cluster_ip_service_reaches_every_backend_and_maps_named_ports() {
    let v = Cluster::new().view();
    let f = healthy();
    let mut seen = BTreeSet::new();
    for flow in 0..64 {
        let o = connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new("10.96.0.50", 80, Protocol::Http).flow(flow),
        );
        assert_eq!(o.verdict, Verdict::Ok, "{o:?}");
        let Some(Endpoint::Pod { name, .. }) = &o.backend else {
            panic!("{o:?}")
        };
        assert_eq!(
            o.answer.as_deref(),
            Some(name.as_str()),
            "the answer names the backend"
        );
        seen.insert(name.clone());
    }
    let all: BTreeSet<String> = NODES
        .iter()
        .map(|(n, _)| format!("nt-server-{n}"))
        .collect();
    assert_eq!(seen, all);
    let o = udp(&v, &f, pod("probe-w2"), "10.96.0.50", 90);
    assert!(
        o.verdict == Verdict::Ok
            && o.answer
                .as_deref()
                .is_some_and(|a| a.starts_with("nt-server-")),
        "{o:?}"
    );
    assert!(
        o.detail.contains(":8081)"),
        "UDP port 90 maps to the named target port udp (8081): {o:?}"
    );
    // Deterministic: the same flow always picks the same backend.
    let a = connect(
        &v,
        &f,
        pod("probe-w3"),
        &Target::new("10.96.0.50", 80, Protocol::Http).flow(7),
    );
    let b = connect(
        &v,
        &f,
        pod("probe-w3"),
        &Target::new("10.96.0.50", 80, Protocol::Http).flow(7),
    );
    assert_eq!(a, b);
}

#[test]
fn service_without_endpoints_is_refused_and_unknown_port_depends_on_proxy_mode() {
    let c = Cluster::new();
    let v = c.view();
    let f = healthy();
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.96.0.52", 80),
        Verdict::Refused,
        "no endpoints for service calico-nettest-x/empty",
    );
    verdict(
        &udp(&v, &f, pod("probe-w1"), "10.96.0.52", 81),
        Verdict::Refused,
        "no endpoints",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.96.0.50", 8080),
        Verdict::Timeout,
        "iptables",
    );
    let nft = c.view_with(ViewOptions {
        proxy_mode: ProxyMode::Nftables,
        ..ViewOptions::default()
    });
    verdict(
        &http(&nft, &f, pod("probe-w1"), "10.96.0.50", 8080),
        Verdict::Refused,
        "rejects",
    );
}

#[test]
fn node_port_on_any_node_address() {
    let v = Cluster::new().view();
    let f = healthy();
    for (n, ip) in NODES {
        let o = http(&v, &f, pod("probe-w1"), ip, 30080);
        assert_eq!(o.verdict, Verdict::Ok, "node port on {n}: {o:?}");
        assert!(
            o.answer
                .as_deref()
                .is_some_and(|a| a.starts_with("nt-server-")),
            "{o:?}"
        );
    }
    // A node port that does not exist is just a closed port on the node.
    verdict(
        &http(&v, &f, pod("probe-w1"), "172.18.0.12", 30081),
        Verdict::Refused,
        "node w2",
    );
}

#[test]
fn pod_to_node_and_node_to_pod() {
    let v = Cluster::new().view();
    let f = healthy();
    ok_from(&http(&v, &f, pod("probe-w1"), "172.18.0.12", 31080), "w2");
    let server = ip_of(&v, "nt-server-w3");
    ok_from(
        &http(&v, &f, Source::Node("w1"), &server, 8080),
        "nt-server-w3",
    );
    ok_from(
        &http(&v, &f, pod("host-probe-w2"), &server, 8080),
        "nt-server-w3",
    );
    ok_from(
        &http(&v, &f, pod("host-probe-w3"), &server, 8080),
        "nt-server-w3",
    );
    // The kubelet listens on every node.
    assert_eq!(
        connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new("172.18.0.13", 10250, Protocol::Tcp)
        )
        .verdict,
        Verdict::Ok
    );
}

#[test]
fn api_server_through_the_kubernetes_service() {
    let v = Cluster::new().view();
    let f = healthy();
    let o = connect(
        &v,
        &f,
        pod("probe-w2"),
        &Target::new("kubernetes.default", 443, Protocol::Tcp),
    );
    assert_eq!(o.verdict, Verdict::Ok, "{o:?}");
    assert_eq!(o.address, Some(Ipv4Addr::new(10, 96, 0, 1)));
    assert_eq!(o.backend, Some(Endpoint::Node { name: "cp1".into() }));
    // Plain HTTP to the API server's TLS port: status 400, which the probe calls `other`.
    verdict(
        &http(&v, &f, pod("probe-w2"), "10.96.0.1", 443),
        Verdict::Other,
        "HTTP 400",
    );
    assert_eq!(
        connect(
            &v,
            &f,
            pod("probe-w2"),
            &Target::new("172.18.0.10", 6443, Protocol::Tcp)
        )
        .verdict,
        Verdict::Ok
    );
}

#[test]
fn dns_names_search_path_and_failures() {
    let c = Cluster::new();
    let v = c.view();
    let f = healthy();
    for name in [
        "nt-server",
        "nt-server.calico-nettest-x",
        "nt-server.calico-nettest-x.svc",
        "nt-server.calico-nettest-x.svc.cluster.local",
        "nt-server.calico-nettest-x.svc.cluster.local.",
    ] {
        ok_from(&lookup(&v, &f, pod("probe-w1"), name), "10.96.0.50");
    }
    ok_from(
        &lookup(&v, &f, pod("probe-w1"), "kubernetes.default"),
        "10.96.0.1",
    );
    ok_from(
        &lookup(
            &v,
            &f,
            pod("probe-w1"),
            "10-244-1-5.calico-nettest-x.pod.cluster.local",
        ),
        "10.244.1.5",
    );
    // The short name only works from the Service's namespace.
    verdict(
        &lookup(
            &v,
            &f,
            Source::Pod {
                namespace: "other",
                name: "client",
            },
            "nt-server",
        ),
        Verdict::Dns,
        "NXDOMAIN",
    );
    ok_from(
        &lookup(
            &v,
            &f,
            Source::Pod {
                namespace: "other",
                name: "client",
            },
            "nt-server.calico-nettest-x",
        ),
        "10.96.0.50",
    );
    verdict(
        &lookup(&v, &f, pod("probe-w1"), "no-such-svc"),
        Verdict::Dns,
        "NXDOMAIN",
    );
    verdict(
        &lookup(&v, &f, pod("probe-w1"), "example.com"),
        Verdict::Dns,
        "NXDOMAIN",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "example.com", 443),
        Verdict::Dns,
        "",
    );
    // hostNetwork + ClusterFirst uses the node's resolver; ClusterFirstWithHostNet the cluster's.
    verdict(
        &lookup(&v, &f, pod("host-probe-w1"), "kubernetes.default"),
        Verdict::Dns,
        "ClusterFirstWithHostNet",
    );
    ok_from(
        &lookup(&v, &f, pod("host-server-w1"), "kubernetes.default"),
        "10.96.0.1",
    );
    verdict(
        &lookup(&v, &f, Source::Node("w1"), "kubernetes.default"),
        Verdict::Dns,
        "node's resolver",
    );
    // A connection by name works end to end.
    let by_ip = http(&v, &f, pod("probe-w3"), "10.96.0.50", 80);
    ok_from(
        &http(&v, &f, pod("probe-w3"), "nt-server", 80),
        by_ip.answer.as_deref().unwrap_or("?"),
    );
}

#[test]
fn registered_external_hosts_resolve_and_answer() {
    let c = Cluster::new();
    let ext = ExternalHost {
        names: vec!["mirror.example.com".into()],
        ip: Ipv4Addr::new(192, 0, 2, 10),
        listeners: vec![Listener::http(443, "mirror")],
    };
    let v = c.view_with(ViewOptions {
        external_hosts: vec![ext],
        ..ViewOptions::default()
    });
    let f = healthy();
    ok_from(
        &http(&v, &f, pod("probe-w1"), "mirror.example.com", 443),
        "mirror",
    );
    ok_from(
        &http(&v, &f, Source::Node("w2"), "mirror.example.com", 443),
        "mirror",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "mirror.example.com", 80),
        Verdict::Refused,
        "external host",
    );
}

#[test]
fn fault_partition_cuts_cross_node_traffic_only() {
    let v = Cluster::new().view();
    let f = Faults::partition(["w3"]);
    let (s1, s3) = (ip_of(&v, "nt-server-w1"), ip_of(&v, "nt-server-w3"));
    verdict(
        &http(&v, &f, pod("probe-w1"), &s3, 8080),
        Verdict::Timeout,
        "node w3 is partitioned",
    );
    verdict(
        &http(&v, &f, pod("probe-w3"), &s1, 8080),
        Verdict::Timeout,
        "node w3 is partitioned",
    );
    verdict(
        &http(&v, &f, pod("probe-w3"), "172.18.0.11", 31080),
        Verdict::Timeout,
        "partitioned",
    );
    ok_from(&http(&v, &f, pod("probe-w3"), &s3, 8080), "nt-server-w3");
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
    // The API server (on cp1) is cut off too, unless the fault spares it.
    let api = Target::new("10.96.0.1", 443, Protocol::Tcp);
    verdict(
        &connect(&v, &f, pod("probe-w3"), &api),
        Verdict::Timeout,
        "partitioned",
    );
    assert!(!node_reaches_apiserver(&v, &f, "w3"));
    assert!(node_reaches_apiserver(&v, &f, "w1"));
    let spared = Faults {
        partition_keeps_apiserver: true,
        ..f.clone()
    };
    assert_eq!(
        connect(&v, &spared, pod("probe-w3"), &api).verdict,
        Verdict::Ok
    );
    assert!(node_reaches_apiserver(&v, &spared, "w3"));
    verdict(
        &http(&v, &spared, pod("probe-w3"), &s1, 8080),
        Verdict::Timeout,
        "partitioned",
    );
    // Two nodes in one group still talk to each other.
    let pair = Faults::partition(["w2", "w3"]);
    ok_from(&http(&v, &pair, pod("probe-w2"), &s3, 8080), "nt-server-w3");
    verdict(
        &http(&v, &pair, pod("probe-w2"), &s1, 8080),
        Verdict::Timeout,
        "partitioned",
    );
}

#[test]
fn fault_udp_blocked_between_nodes_or_everywhere() {
    let v = Cluster::new().view();
    let between = Faults {
        udp_blocked: UdpBlock::BetweenNodes,
        ..Faults::default()
    };
    let (s1, s2) = (ip_of(&v, "nt-server-w1"), ip_of(&v, "nt-server-w2"));
    verdict(
        &udp(&v, &between, pod("probe-w1"), &s2, 8081),
        Verdict::Timeout,
        "UDP between nodes is blocked",
    );
    ok_from(
        &udp(&v, &between, pod("probe-w1"), &s1, 8081),
        "nt-server-w1",
    );
    ok_from(
        &http(&v, &between, pod("probe-w1"), &s2, 8080),
        "nt-server-w2",
    );
    let everywhere = Faults {
        udp_blocked: UdpBlock::Everywhere,
        ..Faults::default()
    };
    verdict(
        &udp(&v, &everywhere, pod("probe-w1"), &s1, 8081),
        Verdict::Timeout,
        "UDP is blocked everywhere",
    );
    // DNS queries are UDP too.
    verdict(
        &lookup(&v, &everywhere, pod("probe-w1"), "nt-server"),
        Verdict::Dns,
        "UDP is blocked",
    );
}

#[test]
fn fault_large_packets_dropped_across_nodes() {
    let v = Cluster::new().view();
    let f = Faults {
        max_cross_node_payload: Some(1400),
        ..Faults::default()
    };
    let (s1, s2) = (ip_of(&v, "nt-server-w1"), ip_of(&v, "nt-server-w2"));
    let big = |host: &str| {
        connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new(host, 8080, Protocol::Http).payload(8000),
        )
    };
    verdict(&big(&s2), Verdict::Timeout, "exceeds the 1400 bytes");
    ok_from(&big(&s1), "nt-server-w1");
    ok_from(
        &connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new(&s2, 8080, Protocol::Http).payload(1400),
        ),
        "nt-server-w2",
    );
    verdict(
        &connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new(&s2, 8081, Protocol::Udp).payload(1500),
        ),
        Verdict::Timeout,
        "MTU",
    );
}

#[test]
fn fault_dns_down() {
    let v = Cluster::new().view();
    let f = Faults {
        dns_down: true,
        ..Faults::default()
    };
    verdict(
        &lookup(&v, &f, pod("probe-w1"), "kubernetes.default"),
        Verdict::Dns,
        "DNS is down",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "nt-server", 80),
        Verdict::Dns,
        "DNS is down",
    );
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
}

#[test]
fn fault_dns_server_unreachable_gives_dns_verdict() {
    let v = Cluster::new().view();
    // CoreDNS runs on cp1 and w1; from an isolated w3 every query times out.
    let f = Faults::partition(["w3"]);
    verdict(
        &lookup(&v, &f, pod("probe-w3"), "nt-server"),
        Verdict::Dns,
        "cluster DNS 10.96.0.10:53/UDP",
    );
    ok_from(&lookup(&v, &f, pod("probe-w2"), "nt-server"), "10.96.0.50");
    // DnsMode::Direct ignores the path to CoreDNS.
    let direct = Cluster::new().view_with(ViewOptions {
        dns: DnsMode::Direct,
        ..ViewOptions::default()
    });
    ok_from(
        &lookup(&direct, &f, pod("probe-w3"), "nt-server"),
        "10.96.0.50",
    );
}

#[test]
fn fault_not_ready_node_keeps_forwarding_but_leaves_service_endpoints() {
    let v = Cluster::new().view();
    let f = Faults {
        not_ready_nodes: BTreeSet::from(["w2".to_string()]),
        ..Faults::default()
    };
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
    for flow in 0..64 {
        let o = connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new("10.96.0.50", 80, Protocol::Http).flow(flow),
        );
        assert_eq!(o.verdict, Verdict::Ok);
        assert_ne!(o.answer.as_deref(), Some("nt-server-w2"), "flow {flow}");
    }
    // A NotReady condition on the Node object has the same effect.
    let mut c = Cluster::new();
    for o in &mut c.objects {
        if o["kind"] == "Node" && o["metadata"]["name"] == "w3" {
            o["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown"}]);
        }
    }
    let v = c.view();
    assert!(
        v.service_backends(NS, "nt-server", 80)
            .iter()
            .all(|(_, _, p)| p.as_deref() != Some("calico-nettest-x/nt-server-w3"))
    );
    assert_eq!(v.service_backends(NS, "nt-server", 80).len(), 3);
}

fn deny_ingress() -> Value {
    json!({"podSelector": {"matchLabels": {"role": "server"}}, "policyTypes": ["Ingress"]})
}

#[test]
fn policy_default_deny_ingress_blocks_pods_but_not_the_own_node() {
    let mut c = Cluster::new();
    c.policy(NS, "deny-servers", deny_ingress());
    let v = c.view();
    let f = healthy();
    let (s1, s2) = (ip_of(&v, "nt-server-w1"), ip_of(&v, "nt-server-w2"));
    verdict(
        &http(&v, &f, pod("probe-w1"), &s2, 8080),
        Verdict::Timeout,
        "dropped by NetworkPolicy calico-nettest-x/deny-servers",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), &s1, 8080),
        Verdict::Timeout,
        "ingress to pod calico-nettest-x/nt-server-w1",
    );
    verdict(
        &udp(&v, &f, pod("probe-w1"), &s1, 8081),
        Verdict::Timeout,
        "NetworkPolicy",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.96.0.50", 80),
        Verdict::Timeout,
        "NetworkPolicy",
    );
    // Traffic from the pod's own node is always allowed; from another node's host it is not.
    ok_from(&http(&v, &f, Source::Node("w1"), &s1, 8080), "nt-server-w1");
    ok_from(
        &http(&v, &f, pod("host-probe-w1"), &s1, 8080),
        "nt-server-w1",
    );
    verdict(
        &http(&v, &f, Source::Node("w2"), &s1, 8080),
        Verdict::Timeout,
        "NetworkPolicy",
    );
    // Pods the policy does not select are untouched.
    ok_from(&http(&v, &f, pod("probe-w1"), "172.18.0.12", 31080), "w2");
}

#[test]
fn policy_allow_rule_by_pod_label_admits() {
    let mut c = Cluster::new();
    c.policy(NS, "deny-servers", deny_ingress());
    c.policy(
        NS,
        "allow-probes",
        json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "probe"}}}]}]}),
    );
    let v = c.view();
    let f = healthy();
    let s2 = ip_of(&v, "nt-server-w2");
    ok_from(&http(&v, &f, pod("probe-w1"), &s2, 8080), "nt-server-w2");
    ok_from(&udp(&v, &f, pod("probe-w1"), &s2, 8081), "nt-server-w2");
    // A pod with that label in another namespace is not admitted by a bare podSelector.
    let o = http(
        &v,
        &f,
        Source::Pod {
            namespace: "other",
            name: "client",
        },
        &s2,
        8080,
    );
    verdict(
        &o,
        Verdict::Timeout,
        "deny-servers, calico-nettest-x/allow-probes",
    );
}

#[test]
fn policy_namespace_selector() {
    let mut c = Cluster::new();
    c.policy(NS, "from-team-x", json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}));
    c.policy(NS, "by-name", json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]}]}));
    let v = c.view();
    let f = healthy();
    let s2 = ip_of(&v, "nt-server-w2");
    ok_from(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "other",
                name: "client",
            },
            &s2,
            8080,
        ),
        "nt-server-w2",
    );
    verdict(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "plain",
                name: "client",
            },
            &s2,
            8080,
        ),
        Verdict::Timeout,
        "NetworkPolicy",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), &s2, 8080),
        Verdict::Timeout,
        "NetworkPolicy",
    );
    // The automatic kubernetes.io/metadata.name label selects kube-system.
    ok_from(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "kube-system",
                name: "coredns-1",
            },
            &s2,
            8080,
        ),
        "nt-server-w2",
    );
}

#[test]
fn policy_ip_block_with_except() {
    let mut c = Cluster::new();
    let w2_block = c
        .ipam
        .blocks()
        .into_iter()
        .find(|b| b.affinity.as_deref() == Some("w2"))
        .unwrap()
        .cidr
        .to_string();
    c.policy(
        NS,
        "from-pods-but-w2",
        json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [w2_block]}}]}]}),
    );
    let v = c.view();
    let f = healthy();
    let s3 = ip_of(&v, "nt-server-w3");
    ok_from(&http(&v, &f, pod("probe-w1"), &s3, 8080), "nt-server-w3");
    verdict(
        &http(&v, &f, pod("probe-w2"), &s3, 8080),
        Verdict::Timeout,
        "from-pods-but-w2",
    );
    // Node addresses are outside the block: host-network clients on other nodes are dropped.
    verdict(
        &http(&v, &f, pod("host-probe-w1"), &s3, 8080),
        Verdict::Timeout,
        "NetworkPolicy",
    );
}

#[test]
fn policy_named_port_and_end_port() {
    let mut c = Cluster::new();
    c.policy(
        NS,
        "http-only",
        json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"ports": [{"port": "http"}]}]}),
    );
    let v = c.view();
    let f = healthy();
    let s2 = ip_of(&v, "nt-server-w2");
    ok_from(&http(&v, &f, pod("probe-w1"), &s2, 8080), "nt-server-w2");
    verdict(
        &udp(&v, &f, pod("probe-w1"), &s2, 8081),
        Verdict::Timeout,
        "http-only",
    );
    // Through the Service too: the policy sees the translated target port.
    ok_from(
        &http(&v, &f, pod("probe-w2"), "10.96.0.50", 80),
        "nt-server-w2",
    );

    let mut c = Cluster::new();
    c.policy(
        NS,
        "udp-range",
        json!({"podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"ports": [{"protocol": "UDP", "port": 8000, "endPort": 8100}]}]}),
    );
    let v = c.view();
    let s2 = ip_of(&v, "nt-server-w2");
    ok_from(&udp(&v, &f, pod("probe-w1"), &s2, 8081), "nt-server-w2");
    verdict(
        &http(&v, &f, pod("probe-w1"), &s2, 8080),
        Verdict::Timeout,
        "udp-range",
    );
}

#[test]
fn policy_egress_deny() {
    let mut c = Cluster::new();
    c.policy(
        NS,
        "probes-no-egress",
        json!({"podSelector": {"matchLabels": {"role": "probe"}}, "policyTypes": ["Egress"]}),
    );
    let v = c.view();
    let f = healthy();
    verdict(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        Verdict::Timeout,
        "egress from pod calico-nettest-x/probe-w1",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.96.0.50", 80),
        Verdict::Timeout,
        "egress",
    );
    verdict(
        &http(&v, &f, pod("probe-w1"), "10.96.0.52", 80),
        Verdict::Timeout,
        "egress",
    );
    // DNS needs egress to CoreDNS too.
    verdict(
        &lookup(&v, &f, pod("probe-w1"), "nt-server"),
        Verdict::Dns,
        "probes-no-egress",
    );
    // Its own node stays reachable.
    assert_eq!(
        connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new("172.18.0.11", 10250, Protocol::Tcp)
        )
        .verdict,
        Verdict::Ok
    );
    verdict(
        &connect(
            &v,
            &f,
            pod("probe-w1"),
            &Target::new("172.18.0.12", 10250, Protocol::Tcp),
        ),
        Verdict::Timeout,
        "egress",
    );
    // Unselected pods in the namespace are free.
    ok_from(
        &http(
            &v,
            &f,
            pod("nt-server-w1"),
            &ip_of(&v, "nt-server-w2"),
            8080,
        ),
        "nt-server-w2",
    );

    // An allow rule to servers plus DNS restores both.
    c.policy(NS, "probes-to-servers", json!({"podSelector": {"matchLabels": {"role": "probe"}}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"podSelector": {"matchLabels": {"role": "server"}}}]},
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"protocol": "UDP", "port": 53}]}
    ]}));
    let v = c.view();
    let by_ip = http(&v, &f, pod("probe-w1"), "10.96.0.50", 80);
    ok_from(
        &http(&v, &f, pod("probe-w1"), "nt-server", 80),
        by_ip.answer.as_deref().unwrap_or("?"),
    );
}

#[test]
fn policy_in_another_namespace_does_not_apply() {
    let mut c = Cluster::new();
    c.policy(
        "other",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let v = c.view();
    let f = healthy();
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
    verdict(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "other",
                name: "client",
            },
            &ip_of(&v, "nt-server-w2"),
            8080,
        ),
        Verdict::Timeout,
        "other/deny-all",
    );
}

#[test]
fn policy_does_not_select_host_network_pods_and_allow_all_wins() {
    let mut c = Cluster::new();
    c.policy(
        NS,
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let v = c.view();
    let f = healthy();
    // hostNetwork pods are not selected: they still send and receive...
    ok_from(
        &http(&v, &f, pod("host-probe-w2"), "172.18.0.13", 31080),
        "w3",
    );
    ok_from(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "other",
                name: "client",
            },
            "172.18.0.12",
            31080,
        ),
        "w2",
    );
    // ...but pod-network pods of the namespace are isolated both ways,
    verdict(
        &http(&v, &f, pod("probe-w1"), "172.18.0.12", 31080),
        Verdict::Timeout,
        "egress",
    );
    verdict(
        &http(
            &v,
            &f,
            pod("host-probe-w2"),
            &ip_of(&v, "nt-server-w3"),
            8080,
        ),
        Verdict::Timeout,
        "ingress",
    );
    // except from their own node.
    ok_from(
        &http(
            &v,
            &f,
            pod("host-probe-w3"),
            &ip_of(&v, "nt-server-w3"),
            8080,
        ),
        "nt-server-w3",
    );
    c.policy(
        NS,
        "allow-all-in",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    c.policy(
        NS,
        "allow-all-out",
        json!({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}),
    );
    let v = c.view();
    ok_from(
        &http(&v, &f, pod("probe-w1"), &ip_of(&v, "nt-server-w2"), 8080),
        "nt-server-w2",
    );
}

#[test]
fn restored_view_keeps_addresses() {
    let c = Cluster::new();
    let pods: Vec<&Value> = c.objects.iter().filter(|o| o["kind"] == "Pod").collect();
    let mut fresh = Ipam::new(vec![
        IpPool::new("default-ipv4-ippool", "10.244.0.0/16", None).unwrap(),
    ]);
    assert!(fresh.restore_pods(pods.iter().rev().copied()).is_empty());
    for p in &pods {
        let key = format!(
            "{}/{}",
            p["metadata"]["namespace"].as_str().unwrap(),
            p["metadata"]["name"].as_str().unwrap()
        );
        assert_eq!(fresh.ip_of(&key), c.ipam.ip_of(&key), "{key}");
    }
    assert_eq!(fresh.blocks(), c.ipam.blocks());
}

#[test]
fn warnings_for_inconsistent_objects_and_no_panics_on_junk() {
    let objs = [
        json!({"kind": "Node", "metadata": {"name": "n1"}}),
        json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "ghost"}}),
        json!({"kind": "Pod", "metadata": {"name": "q"}, "spec": {"nodeName": "n1", "containers": "junk"}, "status": {"podIP": "fd00::1"}}),
        json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "fd00::10", "ports": [{"port": 99999}]}}),
        json!({"kind": "NetworkPolicy", "metadata": {"name": "bad"}, "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}}),
        json!({"kind": "EndpointSlice", "metadata": {}}),
        json!(null),
        json!([1, 2]),
    ];
    let v = ClusterView::build(
        &ClusterObjects::from_objects(objs.iter()),
        ViewOptions::default(),
        &DeclaredPorts,
    );
    let w = v.warnings().join("\n");
    for needle in [
        "n1 has no IPv4",
        "unknown node ghost",
        "IPv6 clusterIP",
        "unknown selector operator",
        "no default/kubernetes",
    ] {
        assert!(w.contains(needle), "{needle:?} not in {w}");
    }
    let f = healthy();
    verdict(
        &http(
            &v,
            &f,
            Source::Pod {
                namespace: "default",
                name: "q",
            },
            "1.2.3.4",
            80,
        ),
        Verdict::Other,
        "no address",
    );
    verdict(
        &http(&v, &f, Source::Node("n1"), "1.2.3.4", 80),
        Verdict::Other,
        "no IPv4",
    );
    verdict(
        &lookup(&v, &f, Source::Node("nope"), "x"),
        Verdict::Other,
        "unknown node",
    );
}

#[test]
fn faults_deserialize_from_scenario_yaml_shaped_json() {
    let f: Faults = serde_json::from_value(json!({
        "partitions": [["w3"]], "udp_blocked": "between_nodes", "max_cross_node_payload": 1400, "dns_down": false
    }))
    .unwrap();
    assert_eq!(f.partitions, vec![BTreeSet::from(["w3".to_string()])]);
    assert_eq!(f.udp_blocked, UdpBlock::BetweenNodes);
    assert!(
        serde_json::from_value::<Faults>(json!({"partition": []})).is_err(),
        "typos are rejected"
    );
    let o = serde_json::to_value(Outcome {
        verdict: Verdict::Timeout,
        answer: None,
        detail: "x".into(),
        address: None,
        backend: None,
    })
    .unwrap();
    assert_eq!(o["verdict"], "timeout");
}

/// Correctness at the scale: 1,000 nodes, 10 pods each, one Service over all of them.
/// Speed is measured outside the test suite.
#[test]
fn scale_thousand_nodes() {
    let mut ipam = Ipam::new(vec![IpPool::new("p", "10.0.0.0/8", None).unwrap()]);
    let mut objects = Vec::new();
    for n in 0..1000u32 {
        let name = format!("node-{n}");
        objects.push(node(
            &name,
            &Ipv4Addr::from(0xAC10_0000 + n + 1).to_string(),
        ));
        for i in 0..10 {
            let pname = format!("app-{n}-{i}");
            let ip = ipam
                .allocate(&format!("load/{pname}"), &name, &Labels::new())
                .unwrap();
            objects.push(json!({
                "kind": "Pod",
                "metadata": {"namespace": "load", "name": pname, "labels": {"app": "web", "slot": i.to_string()}},
                "spec": {"nodeName": name, "containers": [{"name": "c", "image": "web", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip.to_string(), "conditions": [{"type": "Ready", "status": "True"}]}
            }));
        }
    }
    objects.push(json!({"kind": "Service", "metadata": {"namespace": "load", "name": "web"},
        "spec": {"clusterIP": "10.96.1.1", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}));
    objects.push(json!({"kind": "NetworkPolicy", "metadata": {"namespace": "load", "name": "slot0-only"},
        "spec": {"podSelector": {"matchLabels": {"slot": "9"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"slot": "0"}}}]}]}}));
    let v = ClusterView::build(
        &ClusterObjects::from_objects(objects.iter()),
        ViewOptions::default(),
        &DeclaredPorts,
    );
    assert_eq!(ipam.blocks().len(), 1000, "ten pods fit one /26 per node");
    let ips: HashSet<Ipv4Addr> = (0..1000)
        .flat_map(|n| (0..10).map(move |i| (n, i)))
        .map(|(n, i)| v.pod_ip("load", &format!("app-{n}-{i}")).unwrap())
        .collect();
    assert_eq!(ips.len(), 10_000);
    assert_eq!(v.service_backends("load", "web", 80).len(), 10_000);
    let f = healthy();
    let from = Source::Pod {
        namespace: "load",
        name: "app-0-0",
    };
    let far = v.pod_ip("load", "app-999-9").unwrap().to_string();
    let o = connect(&v, &f, from, &Target::new(&far, 8080, Protocol::Http));
    assert_eq!(o.answer.as_deref(), Some("app-999-9"), "{o:?}");
    let o = connect(
        &v,
        &f,
        Source::Pod {
            namespace: "load",
            name: "app-5-3",
        },
        &Target::new(&far, 8080, Protocol::Http),
    );
    assert_eq!(o.verdict, Verdict::Timeout, "{o:?}");
    let mut reached = HashSet::new();
    for flow in 0..200 {
        let o = connect(
            &v,
            &f,
            from,
            &Target::new("web.load", 80, Protocol::Http).flow(flow),
        );
        assert_eq!(o.verdict, Verdict::Ok, "{o:?}");
        reached.insert(o.answer.unwrap_or_default());
    }
    assert!(
        reached.len() > 150,
        "flows spread over backends: {}",
        reached.len()
    );
    let part = Faults::partition(["node-999"]);
    assert_eq!(
        connect(&v, &part, from, &Target::new(&far, 8080, Protocol::Http)).verdict,
        Verdict::Timeout
    );
}
