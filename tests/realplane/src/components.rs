//! The command lines of the components, as kubeadm's static pod manifests configure them
//! (authorization `Node,RBAC`, `NodeRestriction`, ServiceAccount tokens signed with the
//! plane's key, controller credentials per controller), bound to 127.0.0.1 only, on the
//! ports the launcher picked.

use std::path::Path;

use crate::pki::Pki;

/// The Service range (kubeadm's default).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Where one plane keeps its files.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The plane's directory.
    pub dir: &'a Path,
    /// Its certificates.
    pub pki: &'a Pki,
}

impl Layout<'_> {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn pki(&self, name: &str) -> String {
        self.pki.path(name).display().to_string()
    }

    /// The kubeconfig of a component (`controller-manager.kubeconfig`...).
    pub fn kubeconfig(&self, stem: &str) -> String {
        self.file(&format!("{stem}.kubeconfig"))
    }
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

/// etcd, single member, without fsync (test data; several planes share the disk).
pub fn etcd(l: Layout<'_>, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut args = flags(&[
        ("name", "realplane".into()),
        ("data-dir", l.file("etcd")),
        ("listen-client-urls", client.clone()),
        ("advertise-client-urls", client),
        ("listen-peer-urls", peer.clone()),
        ("initial-advertise-peer-urls", peer.clone()),
        ("initial-cluster", format!("realplane={peer}")),
        ("log-level", "warn".into()),
        ("snapshot-count", "10000".into()),
    ]);
    args.push("--unsafe-no-fsync".into());
    args
}

/// kube-apiserver: TLS with the plane's CA, client certificates and tokens (ServiceAccount
/// and bootstrap), RBAC, the default admission plugins plus kubeadm's NodeRestriction, the
/// audit log of every write.
pub fn apiserver(l: Layout<'_>, port: u16, etcd_port: u16) -> Vec<String> {
    flags(&[
        ("advertise-address", "127.0.0.1".into()),
        ("bind-address", "127.0.0.1".into()),
        ("secure-port", port.to_string()),
        ("etcd-servers", format!("http://127.0.0.1:{etcd_port}")),
        ("allow-privileged", "true".into()),
        ("authorization-mode", "Node,RBAC".into()),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("enable-bootstrap-token-auth", "true".into()),
        ("client-ca-file", l.pki("ca.crt")),
        ("tls-cert-file", l.pki("apiserver.crt")),
        ("tls-private-key-file", l.pki("apiserver.key")),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local".into(),
        ),
        ("service-account-key-file", l.pki("sa.pub")),
        ("service-account-signing-key-file", l.pki("sa.key")),
        ("service-cluster-ip-range", SERVICE_CIDR.into()),
        ("cert-dir", l.file("apiserver-certs")),
        ("audit-policy-file", l.file("audit-policy.json")),
        ("audit-log-path", l.file("audit.log")),
        ("audit-log-format", "json".into()),
        ("audit-log-mode", "blocking".into()),
        ("audit-log-maxsize", "0".into()),
        ("profiling", "false".into()),
        ("v", "1".into()),
    ])
}

/// kube-controller-manager with every default controller and kubeadm's extra two, node CIDRs
/// from `pod_subnet`, per-controller ServiceAccount credentials, no HTTPS endpoint.
pub fn controller_manager(l: Layout<'_>, pod_subnet: &str) -> Vec<String> {
    let kubeconfig = l.kubeconfig("controller-manager");
    flags(&[
        ("kubeconfig", kubeconfig.clone()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig),
        ("bind-address", "127.0.0.1".into()),
        ("secure-port", "0".into()),
        ("controllers", "*,bootstrapsigner,tokencleaner".into()),
        ("leader-elect", "false".into()),
        ("use-service-account-credentials", "true".into()),
        ("service-account-private-key-file", l.pki("sa.key")),
        ("root-ca-file", l.pki("ca.crt")),
        ("client-ca-file", l.pki("ca.crt")),
        ("cluster-signing-cert-file", l.pki("ca.crt")),
        ("cluster-signing-key-file", l.pki("ca.key")),
        ("allocate-node-cidrs", "true".into()),
        ("cluster-cidr", pod_subnet.into()),
        ("service-cluster-ip-range", SERVICE_CIDR.into()),
        ("v", "1".into()),
    ])
}

/// kube-scheduler, no HTTPS endpoint.
pub fn scheduler(l: Layout<'_>) -> Vec<String> {
    let kubeconfig = l.kubeconfig("scheduler");
    flags(&[
        ("kubeconfig", kubeconfig.clone()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig),
        ("bind-address", "127.0.0.1".into()),
        ("secure-port", "0".into()),
        ("leader-elect", "false".into()),
        ("v", "1".into()),
    ])
}

/// kwok's configuration file in the plane's directory: its options and its stages.
pub const KWOK_CONFIG: &str = "kwok.yaml";

/// kwok, managing the nodes the launcher annotates, its lifecycle from its configuration file
/// (the launcher rewrites it and restarts kwok when a test changes the faults).
pub fn kwok(l: Layout<'_>) -> Vec<String> {
    flags(&[
        ("kubeconfig", l.kubeconfig("kwok")),
        ("config", l.file(KWOK_CONFIG)),
        ("manage-all-nodes", "false".into()),
        (
            "manage-nodes-with-annotation-selector",
            "kwok.x-k8s.io/node=fake".into(),
        ),
        ("node-lease-duration-seconds", "40".into()),
    ])
}

/// kwok's options: its documented defaults spelled out (kwok applies them to flags, not to a
/// loaded file), no debugging server.
pub fn kwok_config() -> serde_json::Value {
    serde_json::json!({"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
        "options": {"podPlayStageParallelism": 4, "nodePlayStageParallelism": 4,
            "nodeLeaseParallelism": 4, "podsOnNodeSyncParallelism": 1,
            "enablePodsOnNodeSyncListPager": true, "enablePodsOnNodeSyncStreamWatch": false,
            "enableDebuggingHandlers": false}})
}
