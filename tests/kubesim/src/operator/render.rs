//! What the operator makes of `Installation default` (and `APIServer default`): the defaults it
//! writes back into the spec (`fillDefaults`), the validation it refuses a spec with, and the
//! objects it renders in `calico-system` (`pkg/render`: node, typha, kube-controllers,
//! csi-node-driver, apiserver), with images `<registry><imagePath>/<prefix><name>:<version>`.

use k8s_calico::version::{Minor, Version};
use serde_json::{Value, json};

/// Where the operator puts Calico.
pub const CALICO_NS: &str = "calico-system";

/// The registry images come from when `spec.registry` is empty (`components.CalicoRegistry`).
pub fn default_registry(calico: &Version) -> String {
    format!("{}/", crate::calico::registry(calico))
}

/// `fillDefaults`: the defaults the operator writes into `Installation.spec`. `pod_cidr` is the
/// cluster's pod network (kubeadm's `podSubnet`), used when no IP pool is given.
pub fn fill_defaults(spec: &Value, pod_cidr: Option<&str>) -> Value {
    let mut spec = if spec.is_object() {
        spec.clone()
    } else {
        json!({})
    };
    let set = |v: &mut Value, key: &str, default: Value| {
        if v.get(key).is_none_or(Value::is_null) {
            v[key] = default;
        }
    };
    set(&mut spec, "variant", json!("Calico"));
    if let Some(r) = spec.get("registry").and_then(Value::as_str)
        && !r.is_empty()
        && !r.ends_with('/')
    {
        spec["registry"] = json!(format!("{r}/"));
    }
    set(&mut spec, "cni", json!({}));
    set(&mut spec["cni"], "type", json!("Calico"));
    set(&mut spec["cni"], "ipam", json!({"type": "Calico"}));
    set(&mut spec, "calicoNetwork", json!({}));
    let net = &mut spec["calicoNetwork"];
    set(net, "bgp", json!("Enabled"));
    set(net, "linuxDataplane", json!("Iptables"));
    set(net, "hostPorts", json!("Enabled"));
    set(net, "multiInterfaceMode", json!("None"));
    set(
        net,
        "ipPools",
        json!([{"cidr": pod_cidr.unwrap_or("192.168.0.0/16")}]),
    );
    let bgp = net["bgp"] == "Enabled";
    let mut v4 = false;
    if let Some(pools) = net["ipPools"].as_array_mut() {
        for (i, p) in pools.iter_mut().enumerate() {
            let is_v6 = p["cidr"].as_str().is_some_and(|c| c.contains(':'));
            v4 |= !is_v6;
            set(
                p,
                "name",
                json!(match (i, is_v6) {
                    (_, true) => "default-ipv6-ippool".to_string(),
                    (0, false) => "default-ipv4-ippool".to_string(),
                    (n, false) => format!("default-ipv4-ippool-{n}"),
                }),
            );
            set(
                p,
                "encapsulation",
                json!(if is_v6 {
                    "None"
                } else if bgp {
                    "IPIP"
                } else {
                    "VXLAN"
                }),
            );
            set(p, "natOutgoing", json!("Enabled"));
            set(p, "nodeSelector", json!("all()"));
            set(p, "blockSize", json!(if is_v6 { 122 } else { 26 }));
        }
    }
    if v4 {
        set(
            net,
            "nodeAddressAutodetectionV4",
            json!({"firstFound": true}),
        );
    }
    set(&mut spec, "controlPlaneReplicas", json!(2));
    set(
        &mut spec,
        "nodeUpdateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
    );
    set(
        &mut spec,
        "flexVolumePath",
        json!("/usr/libexec/kubernetes/kubelet-plugins/volume/exec/"),
    );
    set(
        &mut spec,
        "kubeletVolumePluginPath",
        json!("/var/lib/kubelet"),
    );
    set(&mut spec, "nonPrivileged", json!("Disabled"));
    spec
}

/// `validateCustomResource`, the checks that matter here.
pub fn validate(spec: &Value) -> Result<(), String> {
    let net = &spec["calicoNetwork"];
    let bgp = net["bgp"] == "Enabled";
    for p in net["ipPools"].as_array().into_iter().flatten() {
        let cidr = p["cidr"].as_str().unwrap_or("");
        if crate::network::IpPool::new("check", cidr, None).is_err() {
            return Err(format!("ipPool.CIDR({cidr}) is invalid"));
        }
        let enc = p["encapsulation"].as_str().unwrap_or("");
        if enc.starts_with("IPIP") && !bgp {
            return Err(format!(
                "IPPool {cidr} uses IPIP encapsulation, but BGP is disabled: IPIP requires BGP to be enabled"
            ));
        }
        if !matches!(
            enc,
            "IPIP" | "IPIPCrossSubnet" | "VXLAN" | "VXLANCrossSubnet" | "None"
        ) {
            return Err(format!("IPPool {cidr} has invalid encapsulation {enc}"));
        }
    }
    if let Some(mtu) = net["mtu"].as_i64()
        && !(1000..=9000).contains(&mtu)
    {
        return Err(format!("calicoNetwork.mtu {mtu} is out of range"));
    }
    Ok(())
}

/// The image of a component: `<registry><imagePath>/<imagePrefix><name>:<version>`
/// (`components.GetReference`).
pub fn image(spec: &Value, calico: &Version, name: &str) -> String {
    let registry = spec["registry"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(|r| {
            if r.ends_with('/') {
                r.to_string()
            } else {
                format!("{r}/")
            }
        })
        .unwrap_or_else(|| default_registry(calico));
    let path = spec["imagePath"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or("calico");
    let prefix = spec["imagePrefix"].as_str().unwrap_or("");
    format!("{registry}{path}/{prefix}{name}:{calico}")
}

/// The MTU calico-node ends up with (what it writes to `/var/lib/calico/mtu` and the operator
/// reports as `status.mtu`): the configured one, else 1500 less the encapsulation's overhead.
pub fn effective_mtu(spec: &Value) -> i64 {
    let net = &spec["calicoNetwork"];
    if let Some(m) = net["mtu"].as_i64() {
        return m;
    }
    let overhead = net["ipPools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["encapsulation"].as_str().unwrap_or("") {
            e if e.starts_with("VXLAN") => 50,
            e if e.starts_with("IPIP") => 20,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    1500 - overhead
}

/// `IP_AUTODETECTION_METHOD` from `nodeAddressAutodetectionV4`.
pub fn autodetection(method: &Value) -> Option<String> {
    if method["firstFound"] == true {
        return Some("first-found".into());
    }
    if method["kubernetes"] == "NodeInternalIP" {
        return Some("kubernetes-internal-ip".into());
    }
    for (key, prefix) in [
        ("interface", "interface="),
        ("skipInterface", "skip-interface="),
        ("canReach", "can-reach="),
    ] {
        if let Some(v) = method[key].as_str() {
            return Some(format!("{prefix}{v}"));
        }
    }
    if let Some(cidrs) = method["cidrs"].as_array() {
        let list: Vec<&str> = cidrs.iter().filter_map(Value::as_str).collect();
        return Some(format!("cidr={}", list.join(",")));
    }
    None
}

/// `GetExpectedTyphaScale`: 1 Typha for 1–2 nodes, 2 for 3–4, then one per 200 nodes plus
/// one, at least 3.
pub fn typha_replicas(nodes: usize) -> i64 {
    let n = nodes as i64;
    if n <= 2 {
        1
    } else if n <= 4 {
        2
    } else {
        (n / 200 + 2).max(3)
    }
}

/// Whether this operator release creates the IP pools itself (the IP pool controller, operator
/// v1.34 / Calico 3.28) rather than through calico-node's `CALICO_IPV4POOL_*` environment.
pub fn operator_manages_pools(calico: &Version) -> bool {
    calico.minor() >= Minor::new(3, 28)
}

fn owned(mut obj: Value, owner: &Value) -> Value {
    obj["metadata"]["ownerReferences"] = json!([crate::workloads::owner_ref(owner)]);
    obj
}

/// Everything the core controller renders for an Installation, in creation order.
pub fn calico_objects(installation: &Value, calico: &Version, nodes: usize) -> Vec<Value> {
    let spec = &installation["spec"];
    let ns = CALICO_NS;
    let minor = calico.minor();
    let img = |name: &str| image(spec, calico, name);
    let net = &spec["calicoNetwork"];
    let bgp = net["bgp"] == "Enabled";
    let pools: Vec<&Value> = net["ipPools"].as_array().into_iter().flatten().collect();
    let vxlan = pools.iter().any(|p| {
        p["encapsulation"]
            .as_str()
            .is_some_and(|e| e.starts_with("VXLAN"))
    });
    let mut objs = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"name": ns,
            "pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/enforce-version": "latest"}}})];
    let mut sas = vec!["calico-node", "calico-typha", "calico-kube-controllers"];
    if minor >= Minor::new(3, 26) {
        sas.push("calico-cni-plugin");
    }
    for sa in sas {
        objs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}));
    }
    objs.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "calico-typha", "namespace": ns, "labels": {"k8s-app": "calico-typha"}},
        "spec": {"selector": {"k8s-app": "calico-typha"},
            "ports": [{"name": "calico-typha", "port": 5473, "protocol": "TCP", "targetPort": "calico-typha"}]}}));

    // calico-node.
    let mut env = vec![
        json!({"name": "DATASTORE_TYPE", "value": "kubernetes"}),
        json!({"name": "WAIT_FOR_DATASTORE", "value": "true"}),
        json!({"name": "CLUSTER_TYPE", "value": if bgp { "k8s,operator,bgp" } else { "k8s,operator" }}),
        json!({"name": "CALICO_DISABLE_FILE_LOGGING", "value": "false"}),
        json!({"name": "FELIX_DEFAULTENDPOINTTOHOSTACTION", "value": "ACCEPT"}),
        json!({"name": "FELIX_HEALTHENABLED", "value": "true"}),
        json!({"name": "FELIX_HEALTHPORT", "value": "9099"}),
        json!({"name": "NODENAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}),
        json!({"name": "NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}),
        json!({"name": "FELIX_TYPHAK8SNAMESPACE", "value": ns}),
        json!({"name": "FELIX_TYPHAK8SSERVICENAME", "value": "calico-typha"}),
        json!({"name": "CALICO_MANAGE_CNI", "value": "true"}),
        json!({"name": "CALICO_NETWORKING_BACKEND", "value": if bgp { "bird" } else if vxlan { "vxlan" } else { "none" }}),
        json!({"name": "IP", "value": "autodetect"}),
    ];
    if let Some(m) = autodetection(&net["nodeAddressAutodetectionV4"]) {
        env.push(json!({"name": "IP_AUTODETECTION_METHOD", "value": m}));
    }
    env.push(json!({"name": "IP6", "value": "none"}));
    env.push(json!({"name": "FELIX_IPV6SUPPORT", "value": "false"}));
    if let Some(mtu) = net["mtu"].as_i64() {
        for k in ["FELIX_IPINIPMTU", "FELIX_VXLANMTU", "FELIX_WIREGUARDMTU"] {
            env.push(json!({"name": k, "value": mtu.to_string()}));
        }
    }
    if operator_manages_pools(calico) {
        env.push(json!({"name": "CALICO_NO_DEFAULT_POOLS", "value": "true"}));
    } else if let Some(p) = pools
        .iter()
        .find(|p| !p["cidr"].as_str().unwrap_or("").contains(':'))
    {
        let enc = p["encapsulation"].as_str().unwrap_or("IPIP");
        let mode = |kind: &str| {
            if enc == kind {
                "Always"
            } else if enc == format!("{kind}CrossSubnet") {
                "CrossSubnet"
            } else {
                "Never"
            }
        };
        env.extend([
            json!({"name": "CALICO_IPV4POOL_CIDR", "value": p["cidr"]}),
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": mode("IPIP")}),
            json!({"name": "CALICO_IPV4POOL_VXLAN", "value": mode("VXLAN")}),
            json!({"name": "CALICO_IPV4POOL_NAT_OUTGOING", "value": (p["natOutgoing"] == "Enabled").to_string()}),
            json!({"name": "CALICO_IPV4POOL_BLOCK_SIZE", "value": p["blockSize"].as_i64().unwrap_or(26).to_string()}),
            json!({"name": "CALICO_IPV4POOL_NODE_SELECTOR", "value": p["nodeSelector"]}),
        ]);
    }
    let node_labels = json!({"k8s-app": "calico-node", "app.kubernetes.io/name": "calico-node"});
    objs.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "calico-node", "namespace": ns, "labels": {"k8s-app": "calico-node"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "calico-node"}},
            "updateStrategy": spec["nodeUpdateStrategy"],
            "template": {"metadata": {"labels": node_labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"effect": "NoSchedule", "operator": "Exists"}, {"effect": "NoExecute", "operator": "Exists"}],
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "calico-node",
                    "terminationGracePeriodSeconds": 5,
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "initContainers": [
                        {"name": "flexvol-driver", "image": img("pod2daemon-flexvol"), "imagePullPolicy": "IfNotPresent", "securityContext": {"privileged": true}},
                        {"name": "install-cni", "image": img("cni"), "imagePullPolicy": "IfNotPresent", "command": ["/opt/cni/bin/install"],
                            "env": [{"name": "CNI_CONF_NAME", "value": "10-calico.conflist"}, {"name": "SLEEP", "value": "false"},
                                    {"name": "CNI_NET_DIR", "value": "/etc/cni/net.d"}],
                            "securityContext": {"privileged": true}}
                    ],
                    "containers": [{
                        "name": "calico-node", "image": img("node"), "imagePullPolicy": "IfNotPresent",
                        "env": env,
                        "securityContext": {"privileged": true},
                        "readinessProbe": {"exec": {"command": ["/bin/calico-node", "-bird-ready", "-felix-ready"]}, "periodSeconds": 10, "timeoutSeconds": 5},
                        "livenessProbe": {"httpGet": {"host": "localhost", "path": "/liveness", "port": 9099}, "periodSeconds": 10, "timeoutSeconds": 10}
                    }]
                }}
        }}));

    // calico-typha.
    objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-typha", "namespace": ns, "labels": {"k8s-app": "calico-typha"}},
        "spec": {
            "replicas": typha_replicas(nodes),
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {"k8s-app": "calico-typha"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "100%"}},
            "template": {"metadata": {"labels": {"k8s-app": "calico-typha", "app.kubernetes.io/name": "calico-typha"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "calico-typha",
                    "terminationGracePeriodSeconds": 300,
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                        "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["calico-typha"]}]}}}]}},
                    "containers": [{
                        "name": "calico-typha", "image": img("typha"), "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "calico-typha", "containerPort": 5473, "hostPort": 5473, "protocol": "TCP"}],
                        "env": [{"name": "TYPHA_LOGSEVERITYSCREEN", "value": "info"}, {"name": "TYPHA_DATASTORETYPE", "value": "kubernetes"},
                                {"name": "TYPHA_HEALTHENABLED", "value": "true"}, {"name": "TYPHA_HEALTHPORT", "value": "9098"},
                                {"name": "TYPHA_K8SNAMESPACE", "value": ns}],
                        "readinessProbe": {"httpGet": {"host": "localhost", "path": "/readiness", "port": 9098}, "periodSeconds": 10, "timeoutSeconds": 10},
                        "livenessProbe": {"httpGet": {"host": "localhost", "path": "/liveness", "port": 9098}, "periodSeconds": 10, "timeoutSeconds": 10}
                    }]
                }}
        }}));

    // calico-kube-controllers.
    objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-kube-controllers", "namespace": ns, "labels": {"k8s-app": "calico-kube-controllers"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"name": "calico-kube-controllers", "namespace": ns,
                    "labels": {"k8s-app": "calico-kube-controllers", "app.kubernetes.io/name": "calico-kube-controllers"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}, {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "calico-kube-controllers",
                    "containers": [{
                        "name": "calico-kube-controllers", "image": img("kube-controllers"), "imagePullPolicy": "IfNotPresent",
                        "env": [{"name": "KUBE_CONTROLLERS_CONFIG_NAME", "value": "default"}, {"name": "DATASTORE_TYPE", "value": "kubernetes"},
                                {"name": "ENABLED_CONTROLLERS", "value": "node"}],
                        "readinessProbe": {"exec": {"command": ["/usr/bin/check-status", "-r"]}, "periodSeconds": 10, "timeoutSeconds": 10},
                        "livenessProbe": {"exec": {"command": ["/usr/bin/check-status", "-l"]}, "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10}
                    }]
                }}
        }}));

    // csi-node-driver (Calico 3.25+).
    if minor >= Minor::new(3, 25) {
        objs.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "csi-node-driver", "namespace": ns, "labels": {"k8s-app": "csi-node-driver"}},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "csi-node-driver"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"k8s-app": "csi-node-driver", "app.kubernetes.io/name": "csi-node-driver", "name": "csi-node-driver"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"effect": "NoSchedule", "operator": "Exists"}, {"effect": "NoExecute", "operator": "Exists"}],
                        "serviceAccountName": "csi-node-driver",
                        "containers": [
                            {"name": "calico-csi", "image": img("csi"), "imagePullPolicy": "IfNotPresent", "securityContext": {"privileged": true}},
                            {"name": "csi-node-driver-registrar", "image": img("node-driver-registrar"), "imagePullPolicy": "IfNotPresent", "securityContext": {"privileged": true}}
                        ]
                    }}
            }}));
        objs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "csi-node-driver", "namespace": ns}}));
    }
    objs.into_iter().map(|o| owned(o, installation)).collect()
}

/// The DaemonSets and Deployments of the `calico` component, for its status manager.
pub fn calico_monitored(calico: &Version) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut ds = vec!["calico-node"];
    if calico.minor() >= Minor::new(3, 25) {
        ds.push("csi-node-driver");
    }
    (ds, vec!["calico-typha", "calico-kube-controllers"])
}

/// The namespace of the Calico API server: its own until 3.30, calico-system from 3.30.
pub fn apiserver_namespace(calico: &Version) -> &'static str {
    if calico.minor() >= Minor::new(3, 30) {
        CALICO_NS
    } else {
        "calico-apiserver"
    }
}

/// What the API server controller renders for `APIServer default`.
pub fn apiserver_objects(
    apiserver: &Value,
    installation_spec: &Value,
    calico: &Version,
) -> Vec<Value> {
    let ns = apiserver_namespace(calico);
    let replicas = installation_spec["controlPlaneReplicas"]
        .as_i64()
        .unwrap_or(2);
    let mut objs = Vec::new();
    if ns != CALICO_NS {
        objs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"name": ns}}}));
    }
    objs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "calico-apiserver", "namespace": ns}}));
    objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-apiserver", "namespace": ns, "labels": {"k8s-app": "calico-apiserver", "apiserver": "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"apiserver": "true"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"name": "calico-apiserver", "namespace": ns,
                    "labels": {"apiserver": "true", "k8s-app": "calico-apiserver", "app.kubernetes.io/name": "calico-apiserver"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}, {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "serviceAccountName": "calico-apiserver",
                    "containers": [{
                        "name": "calico-apiserver", "image": image(installation_spec, calico, "apiserver"), "imagePullPolicy": "IfNotPresent",
                        "args": ["--secure-port=5443", "--tls-private-key-file=/calico-apiserver-certs/tls.key", "--tls-cert-file=/calico-apiserver-certs/tls.crt"],
                        "env": [{"name": "DATASTORE_TYPE", "value": "kubernetes"}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 5443, "scheme": "HTTPS"}, "periodSeconds": 60, "timeoutSeconds": 5}
                    }]
                }}
        }}));
    objs.into_iter().map(|o| owned(o, apiserver)).collect()
}

/// The Calico IPPool an Installation pool becomes (the IP pool controller, or calico-node's
/// `CALICO_IPV4POOL_*` environment on first start for older releases).
pub fn ippool(pool: &Value) -> Value {
    let enc = pool["encapsulation"].as_str().unwrap_or("IPIP");
    let mode = |kind: &str| {
        if enc == kind {
            "Always"
        } else if enc == format!("{kind}CrossSubnet") {
            "CrossSubnet"
        } else {
            "Never"
        }
    };
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": pool["name"]},
        "spec": {"cidr": pool["cidr"], "blockSize": pool["blockSize"], "ipipMode": mode("IPIP"), "vxlanMode": mode("VXLAN"),
            "natOutgoing": pool["natOutgoing"] == "Enabled", "nodeSelector": pool["nodeSelector"]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_and_images() {
        let spec = fill_defaults(
            &json!({"registry": "registry.example.com"}),
            Some("10.10.0.0/16"),
        );
        assert_eq!(spec["registry"], "registry.example.com/");
        assert_eq!(spec["calicoNetwork"]["ipPools"][0]["cidr"], "10.10.0.0/16");
        assert_eq!(spec["calicoNetwork"]["ipPools"][0]["encapsulation"], "IPIP");
        assert_eq!(
            spec["calicoNetwork"]["nodeAddressAutodetectionV4"]["firstFound"],
            true
        );
        assert_eq!(
            image(&spec, &v("v3.26.4"), "node"),
            "registry.example.com/calico/node:v3.26.4"
        );
        assert_eq!(
            image(&json!({}), &v("v3.31.7"), "typha"),
            "quay.io/calico/typha:v3.31.7"
        );
        assert_eq!(
            image(
                &json!({"imagePath": "mirror", "imagePrefix": "x-"}),
                &v("v3.26.4"),
                "cni"
            ),
            "docker.io/mirror/x-cni:v3.26.4"
        );
        assert_eq!(fill_defaults(&spec, None), spec, "defaults are stable");
    }

    #[test]
    fn typha_scale_as_upstream() {
        let got: Vec<i64> = [1, 2, 3, 4, 5, 200, 400, 800]
            .iter()
            .map(|n| typha_replicas(*n))
            .collect();
        assert_eq!(got, [1, 1, 2, 2, 3, 3, 4, 6]);
    }

    #[test]
    fn ipip_needs_bgp() {
        let spec = fill_defaults(
            &json!({"calicoNetwork": {"bgp": "Disabled", "ipPools": [{"cidr": "10.1.0.0/16", "encapsulation": "IPIP"}]}}),
            None,
        );
        assert!(validate(&spec).unwrap_err().contains("BGP"));
    }
}
