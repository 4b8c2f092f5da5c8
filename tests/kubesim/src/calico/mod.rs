//! Small but faithful Calico manifests for any release in the product's catalog, so tests and
//! the demo install and upgrade Calico without the (large) upstream files.
//!
//! Faithful where the product and kubectl look: the same file names per release
//! ([`k8s_calico::catalog::Catalog::install_files`]), every `crd.projectcalico.org` CRD the
//! minor has (with permissive schemas), the same object names, labels, namespaces, images
//! (`docker.io/calico/*` until 3.30, `quay.io/calico/*` from 3.31, the operator from
//! `quay.io/tigera/operator` at the version the catalog pairs with the release), update
//! strategies, tolerations and the `calico-config` keys users customise. Left out: RBAC rules'
//! detail, probes' commands and the CNI binaries' configuration.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use k8s_calico::catalog::{InstallMethod, catalog};
use k8s_calico::version::{Minor, Version};
use serde_json::{Value, json};

/// The manifest flavours upstream publishes for Kubernetes-datastore manifest installs:
/// `calico.yaml`, and `calico-typha.yaml` (the docs' choice above 50 nodes: the same objects
/// plus the calico-typha Deployment, Service and PodDisruptionBudget, and
/// `typha_service_name: calico-typha` in calico-config).
pub const MANIFEST_FLAVOURS: [&str; 2] = ["calico.yaml", "calico-typha.yaml"];

/// The objects of one manifest flavour ([`MANIFEST_FLAVOURS`]) of a release.
pub fn manifest_flavour_objects(version: &str, file: &str) -> Result<Vec<Value>> {
    let v: Version = version.parse().map_err(|e| anyhow!("{version}: {e}"))?;
    catalog()
        .release(&v)
        .ok_or_else(|| anyhow!("Calico {v} is not in the catalog"))?;
    match file {
        "calico.yaml" => Ok(calico_yaml(&v, false)),
        "calico-typha.yaml" => Ok(calico_yaml(&v, true)),
        other => Err(anyhow!(
            "no generator for {other}; manifest flavours: {}",
            MANIFEST_FLAVOURS.join(", ")
        )),
    }
}

/// The files of one release, as (file name, YAML text), in the order the catalog applies them.
/// Operator installs also get `custom-resources.yaml` (what a user applies once at install).
pub fn manifest_files(version: &str, method: InstallMethod) -> Result<Vec<(String, String)>> {
    let v: Version = version.parse().map_err(|e| anyhow!("{version}: {e}"))?;
    let release = catalog()
        .release(&v)
        .ok_or_else(|| anyhow!("Calico {v} is not in the catalog"))?;
    let mut files = Vec::new();
    for file in catalog().install_files(method, &v) {
        let objects = match file {
            "calico.yaml" => calico_yaml(&v, false),
            "tigera-operator.yaml" => tigera_operator_yaml(&v, &release.pinned_operator),
            "operator-crds.yaml" => operator_crds(&v),
            other => return Err(anyhow!("no generator for {other}")),
        };
        files.push((file.to_string(), to_yaml(&objects)?));
    }
    if method == InstallMethod::Operator {
        files.push((
            "custom-resources.yaml".into(),
            to_yaml(&custom_resources(&v, "192.168.0.0/16"))?,
        ));
    }
    Ok(files)
}

/// The objects of one file of a release, parsed (for in-process installs).
pub fn manifest_objects(version: &str, method: InstallMethod) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for (_, text) in manifest_files(version, method)? {
        all.extend(parse_yaml(&text)?);
    }
    Ok(all)
}

/// Writes `dir/vX.Y.Z/<file>` for each release: what `calico_upgrade`'s `manifest_dir` reads.
/// Manifest installs get every flavour ([`MANIFEST_FLAVOURS`]), as an air-gapped mirror of
/// upstream's `manifests/` folder would hold them.
pub fn write_manifest_dir(dir: &Path, versions: &[&str], method: InstallMethod) -> Result<()> {
    for version in versions {
        let v: Version = version.parse().map_err(|e| anyhow!("{version}: {e}"))?;
        let folder = dir.join(v.to_string());
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let mut files = manifest_files(version, method)?;
        if method == InstallMethod::Manifest {
            for flavour in MANIFEST_FLAVOURS {
                if !files.iter().any(|(f, _)| f == flavour) {
                    files.push((
                        flavour.to_string(),
                        to_yaml(&manifest_flavour_objects(version, flavour)?)?,
                    ));
                }
            }
        }
        for (file, text) in files {
            std::fs::write(folder.join(&file), text)
                .with_context(|| format!("writing {}/{file}", folder.display()))?;
        }
    }
    Ok(())
}

/// Releases worth writing for a cluster that runs `running`: it, and the latest installable
/// patch of every later minor (every release a stepwise or direct upgrade can go through).
pub fn releases_from(running: &str) -> Result<Vec<String>> {
    let v: Version = running.parse().map_err(|e| anyhow!("{running}: {e}"))?;
    let c = catalog();
    let mut out = vec![v.to_string()];
    let mut minor = v.minor();
    while minor < c.newest_release().version.minor() {
        minor = Minor::new(minor.major, minor.minor + 1);
        if let Some(r) = c.latest_installable(minor) {
            out.push(r.version.to_string());
        }
    }
    Ok(out)
}

/// The container registry a release's upstream manifests use.
pub fn registry(v: &Version) -> &'static str {
    if v.minor() >= Minor::new(3, 31) {
        "quay.io"
    } else {
        "docker.io"
    }
}

fn image(v: &Version, name: &str) -> String {
    format!("{}/calico/{name}:{v}", registry(v))
}

/// Multi-document YAML, one object per document.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| anyhow!("{e}"))?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

fn to_yaml(objects: &[Value]) -> Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(out)
}

/// `(plural, kind, namespaced)` of every `crd.projectcalico.org` type a minor serves.
pub fn calico_crds(minor: Minor) -> Vec<(&'static str, &'static str, bool)> {
    let mut v = vec![
        ("bgpconfigurations", "BGPConfiguration", false),
        ("bgppeers", "BGPPeer", false),
        ("blockaffinities", "BlockAffinity", false),
        ("caliconodestatuses", "CalicoNodeStatus", false),
        ("clusterinformations", "ClusterInformation", false),
        ("felixconfigurations", "FelixConfiguration", false),
        ("globalnetworkpolicies", "GlobalNetworkPolicy", false),
        ("globalnetworksets", "GlobalNetworkSet", false),
        ("hostendpoints", "HostEndpoint", false),
        ("ipamblocks", "IPAMBlock", false),
        ("ipamconfigs", "IPAMConfig", false),
        ("ipamhandles", "IPAMHandle", false),
        ("ippools", "IPPool", false),
        ("ipreservations", "IPReservation", false),
        (
            "kubecontrollersconfigurations",
            "KubeControllersConfiguration",
            false,
        ),
        ("networkpolicies", "NetworkPolicy", true),
        ("networksets", "NetworkSet", true),
    ];
    if minor >= Minor::new(3, 26) {
        v.push(("bgpfilters", "BGPFilter", false));
    }
    if minor >= Minor::new(3, 29) {
        v.push(("tiers", "Tier", false));
    }
    if minor >= Minor::new(3, 30) {
        v.push((
            "stagedglobalnetworkpolicies",
            "StagedGlobalNetworkPolicy",
            false,
        ));
        v.push((
            "stagedkubernetesnetworkpolicies",
            "StagedKubernetesNetworkPolicy",
            true,
        ));
        v.push(("stagednetworkpolicies", "StagedNetworkPolicy", true));
    }
    v.sort();
    v
}

/// `(plural, kind)` of the `operator.tigera.io` types an operator release serves.
fn operator_crd_kinds(minor: Minor) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("apiservers", "APIServer"),
        ("imagesets", "ImageSet"),
        ("installations", "Installation"),
        ("tigerastatuses", "TigeraStatus"),
    ];
    if minor >= Minor::new(3, 30) {
        v.extend([
            ("gatewayapis", "GatewayAPI"),
            ("goldmanes", "Goldmane"),
            (
                "managementclusterconnections",
                "ManagementClusterConnection",
            ),
            ("whiskers", "Whisker"),
        ]);
    }
    v.sort();
    v
}

fn crd(group: &str, plural: &str, kind: &str, namespaced: bool, status: bool) -> Value {
    let singular = kind.to_ascii_lowercase();
    let mut version = json!({
        "name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    });
    if status {
        version["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular},
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "versions": [version]
        }
    })
}

/// calico.yaml, or with `typha` calico-typha.yaml: upstream renders both from one chart, the
/// latter with typha enabled, which adds (in upstream's order) the calico-typha
/// PodDisruptionBudget after kube-controllers', the Service before the calico-node DaemonSet,
/// the Deployment last, and sets `typha_service_name: calico-typha`.
fn calico_yaml(v: &Version, typha: bool) -> Vec<Value> {
    let ns = "kube-system";
    let mut objs = vec![
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "calico-kube-controllers", "namespace": ns, "labels": {"k8s-app": "calico-kube-controllers"}},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}}}}),
    ];
    if typha {
        objs.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "calico-typha", "namespace": ns, "labels": {"k8s-app": "calico-typha"}},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"k8s-app": "calico-typha"}}}}));
    }
    objs.extend([
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "calico-kube-controllers", "namespace": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "calico-node", "namespace": ns}}),
    ]);
    let cni_plugin_sa = v.minor() >= Minor::new(3, 26);
    if cni_plugin_sa {
        objs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "calico-cni-plugin", "namespace": ns}}));
    }
    objs.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "calico-config", "namespace": ns},
        "data": {
            "typha_service_name": if typha { "calico-typha" } else { "none" },
            "calico_backend": "bird",
            "veth_mtu": "0",
            "cni_network_config": "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [{\"type\": \"calico\", \"datastore_type\": \"kubernetes\", \"mtu\": __CNI_MTU__, \"ipam\": {\"type\": \"calico-ipam\"}}, {\"type\": \"portmap\", \"snat\": true, \"capabilities\": {\"portMappings\": true}}]\n}"
        }
    }));
    for (plural, kind, namespaced) in calico_crds(v.minor()) {
        objs.push(crd(
            "crd.projectcalico.org",
            plural,
            kind,
            namespaced,
            false,
        ));
    }
    let mut roles = vec![
        ("calico-kube-controllers", "calico-kube-controllers"),
        ("calico-node", "calico-node"),
    ];
    if cni_plugin_sa {
        roles.push(("calico-cni-plugin", "calico-cni-plugin"));
    }
    for (role, _) in &roles {
        objs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role},
            "rules": [{"apiGroups": ["crd.projectcalico.org"], "resources": ["*"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
                      {"apiGroups": [""], "resources": ["nodes", "pods", "namespaces", "endpoints", "services", "serviceaccounts"], "verbs": ["get", "list", "watch"]}]}));
    }
    for (role, sa) in &roles {
        objs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]}));
    }
    let mut init = vec![
        json!({"name": "upgrade-ipam", "image": image(v, "cni"), "imagePullPolicy": "IfNotPresent",
            "command": ["/opt/cni/bin/calico-ipam", "-upgrade"],
            "env": [{"name": "KUBERNETES_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "securityContext": {"privileged": true}}),
        json!({"name": "install-cni", "image": image(v, "cni"), "imagePullPolicy": "IfNotPresent",
            "command": ["/opt/cni/bin/install"],
            "env": [{"name": "CNI_CONF_NAME", "value": "10-calico.conflist"},
                    {"name": "CNI_NETWORK_CONFIG", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "cni_network_config"}}},
                    {"name": "CNI_MTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                    {"name": "SLEEP", "value": "false"}],
            "securityContext": {"privileged": true}}),
    ];
    if v.minor() >= Minor::new(3, 23) {
        init.push(json!({"name": "mount-bpffs", "image": image(v, "node"), "imagePullPolicy": "IfNotPresent",
            "command": ["calico-node", "-init", "-best-effort"], "securityContext": {"privileged": true}}));
    }
    if typha {
        objs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "calico-typha", "namespace": ns, "labels": {"k8s-app": "calico-typha"}},
            "spec": {"ports": [{"port": 5473, "protocol": "TCP", "targetPort": "calico-typha", "name": "calico-typha"}],
                "selector": {"k8s-app": "calico-typha"}}}));
    }
    objs.push(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "calico-node", "namespace": ns, "labels": {"k8s-app": "calico-node"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "calico-node"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"k8s-app": "calico-node"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "hostNetwork": true,
                    "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}, {"key": "CriticalAddonsOnly", "operator": "Exists"}, {"effect": "NoExecute", "operator": "Exists"}],
                    "serviceAccountName": "calico-node",
                    "terminationGracePeriodSeconds": 0,
                    "priorityClassName": "system-node-critical",
                    "initContainers": init,
                    "containers": [{
                        "name": "calico-node",
                        "image": image(v, "node"),
                        "imagePullPolicy": "IfNotPresent",
                        "envFrom": [{"configMapRef": {"name": "kubernetes-services-endpoint", "optional": true}}],
                        "env": [
                            {"name": "DATASTORE_TYPE", "value": "kubernetes"},
                            {"name": "FELIX_TYPHAK8SSERVICENAME", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "typha_service_name"}}},
                            {"name": "WAIT_FOR_DATASTORE", "value": "true"},
                            {"name": "NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "CALICO_NETWORKING_BACKEND", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "calico_backend"}}},
                            {"name": "CLUSTER_TYPE", "value": "k8s,bgp"},
                            {"name": "IP", "value": "autodetect"},
                            {"name": "CALICO_IPV4POOL_IPIP", "value": "Always"},
                            {"name": "CALICO_IPV4POOL_VXLAN", "value": "Never"},
                            {"name": "CALICO_IPV6POOL_VXLAN", "value": "Never"},
                            {"name": "FELIX_IPINIPMTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                            {"name": "FELIX_VXLANMTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                            {"name": "FELIX_WIREGUARDMTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                            {"name": "CALICO_DISABLE_FILE_LOGGING", "value": "true"},
                            {"name": "FELIX_DEFAULTENDPOINTTOHOSTACTION", "value": "ACCEPT"},
                            {"name": "FELIX_IPV6SUPPORT", "value": "false"},
                            {"name": "FELIX_HEALTHENABLED", "value": "true"}
                        ],
                        "securityContext": {"privileged": true},
                        "resources": {"requests": {"cpu": "250m"}},
                        "livenessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-live", "-bird-live"]}, "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10},
                        "readinessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-ready", "-bird-ready"]}, "periodSeconds": 10, "timeoutSeconds": 10}
                    }]
                }
            }
        }
    }));
    objs.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-kube-controllers", "namespace": ns, "labels": {"k8s-app": "calico-kube-controllers"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"name": "calico-kube-controllers", "namespace": ns, "labels": {"k8s-app": "calico-kube-controllers"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}, {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "serviceAccountName": "calico-kube-controllers",
                    "priorityClassName": "system-cluster-critical",
                    "containers": [{
                        "name": "calico-kube-controllers",
                        "image": image(v, "kube-controllers"),
                        "imagePullPolicy": "IfNotPresent",
                        "env": [{"name": "ENABLED_CONTROLLERS", "value": "node"}, {"name": "DATASTORE_TYPE", "value": "kubernetes"}],
                        "livenessProbe": {"exec": {"command": ["/usr/bin/check-status", "-l"]}, "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10},
                        "readinessProbe": {"exec": {"command": ["/usr/bin/check-status", "-r"]}, "periodSeconds": 10}
                    }]
                }
            }
        }
    }));
    if typha {
        objs.push(typha_deployment(v));
    }
    objs
}

/// calico-typha.yaml's Deployment: one replica upstream (users scale it, one per 100-200
/// nodes), a 100% surge rolling update, host-networked on port 5473.
fn typha_deployment(v: &Version) -> Value {
    let ns = "kube-system";
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-typha", "namespace": ns, "labels": {"k8s-app": "calico-typha"}},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {"k8s-app": "calico-typha"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"k8s-app": "calico-typha"}, "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 300,
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"effect": "NoSchedule", "operator": "Exists"}, {"effect": "NoExecute", "operator": "Exists"}],
                    "serviceAccountName": "calico-node",
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {"fsGroup": 65534},
                    "containers": [{
                        "name": "calico-typha",
                        "image": image(v, "typha"),
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 5473, "name": "calico-typha", "protocol": "TCP"}],
                        "envFrom": [{"configMapRef": {"name": "kubernetes-services-endpoint", "optional": true}}],
                        "env": [
                            {"name": "TYPHA_LOGSEVERITYSCREEN", "value": "info"},
                            {"name": "TYPHA_LOGFILEPATH", "value": "none"},
                            {"name": "TYPHA_LOGSEVERITYSYS", "value": "none"},
                            {"name": "TYPHA_CONNECTIONREBALANCINGMODE", "value": "kubernetes"},
                            {"name": "TYPHA_DATASTORETYPE", "value": "kubernetes"},
                            {"name": "TYPHA_HEALTHENABLED", "value": "true"},
                            {"name": "TYPHA_SHUTDOWNTIMEOUTSECS", "value": "300"}
                        ],
                        "livenessProbe": {"httpGet": {"path": "/liveness", "port": 9098, "host": "localhost"}, "periodSeconds": 30, "initialDelaySeconds": 30, "timeoutSeconds": 10},
                        "readinessProbe": {"httpGet": {"path": "/readiness", "port": 9098, "host": "localhost"}, "periodSeconds": 10, "timeoutSeconds": 10},
                        "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false}
                    }]
                }
            }
        }
    })
}

fn operator_crds(v: &Version) -> Vec<Value> {
    let mut objs: Vec<Value> = operator_crd_kinds(v.minor())
        .into_iter()
        .map(|(plural, kind)| crd("operator.tigera.io", plural, kind, false, true))
        .collect();
    // The operator's CRD bundle also carries Calico's own CRDs.
    for (plural, kind, namespaced) in calico_crds(v.minor()) {
        objs.push(crd(
            "crd.projectcalico.org",
            plural,
            kind,
            namespaced,
            false,
        ));
    }
    objs
}

fn tigera_operator_yaml(v: &Version, operator: &Version) -> Vec<Value> {
    let ns = "tigera-operator";
    let mut objs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"name": ns}}}),
    ];
    if v.minor() < Minor::new(3, 30) {
        objs.extend(operator_crds(v));
    }
    objs.extend([
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tigera-operator", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "tigera-operator"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "tigera-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tigera-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "tigera-operator", "namespace": ns}]}),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "tigera-operator", "namespace": ns, "labels": {"k8s-app": "tigera-operator"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"name": "tigera-operator"}},
                "template": {
                    "metadata": {"labels": {"name": "tigera-operator", "k8s-app": "tigera-operator"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [{"effect": "NoExecute", "operator": "Exists"}, {"effect": "NoSchedule", "operator": "Exists"}],
                        "serviceAccountName": "tigera-operator",
                        "hostNetwork": true,
                        "dnsPolicy": "ClusterFirstWithHostNet",
                        "containers": [{
                            "name": "tigera-operator",
                            "image": format!("quay.io/tigera/operator:{operator}"),
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["operator"],
                            "env": [{"name": "WATCH_NAMESPACE", "value": ""}, {"name": "OPERATOR_NAME", "value": "tigera-operator"},
                                    {"name": "TIGERA_OPERATOR_INIT_IMAGE_VERSION", "value": operator.to_string()}]
                        }]
                    }
                }
            }
        }),
    ]);
    objs
}

/// The resources a user applies once to install through the operator.
pub fn custom_resources(v: &Version, pool_cidr: &str) -> Vec<Value> {
    let mut objs = vec![
        json!({"apiVersion": "operator.tigera.io/v1", "kind": "Installation", "metadata": {"name": "default"},
            "spec": {"calicoNetwork": {"ipPools": [{"name": "default-ipv4-ippool", "blockSize": 26, "cidr": pool_cidr,
                "encapsulation": "VXLANCrossSubnet", "natOutgoing": "Enabled", "nodeSelector": "all()"}]}}}),
        json!({"apiVersion": "operator.tigera.io/v1", "kind": "APIServer", "metadata": {"name": "default"}, "spec": {}}),
    ];
    if v.minor() >= Minor::new(3, 30) {
        objs.push(json!({"apiVersion": "operator.tigera.io/v1", "kind": "Goldmane", "metadata": {"name": "default"}}));
        objs.push(json!({"apiVersion": "operator.tigera.io/v1", "kind": "Whisker", "metadata": {"name": "default"}}));
    }
    objs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_the_catalog_and_images_the_release() {
        let files = manifest_files("v3.30.7", InstallMethod::Operator).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "operator-crds.yaml",
                "tigera-operator.yaml",
                "custom-resources.yaml"
            ]
        );
        assert!(
            files[1].1.contains("quay.io/tigera/operator:v1.38.13"),
            "{}",
            files[1].1
        );
        let calico = manifest_objects("v3.25.2", InstallMethod::Manifest).unwrap();
        let ds = calico.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/calico/node:v3.25.2"
        );
        assert_eq!(
            calico
                .iter()
                .filter(|o| o["kind"] == "CustomResourceDefinition")
                .count(),
            17
        );
        let later = manifest_objects("v3.31.7", InstallMethod::Manifest).unwrap();
        assert!(
            later
                .iter()
                .any(|o| o.to_string().contains("quay.io/calico/node:v3.31.7"))
        );
    }

    #[test]
    fn calico_typha_yaml_is_calico_yaml_plus_typha() {
        let plain = manifest_flavour_objects("v3.27.5", "calico.yaml").unwrap();
        let typha = manifest_flavour_objects("v3.27.5", "calico-typha.yaml").unwrap();
        let names = |objs: &[Value]| -> Vec<String> {
            objs.iter()
                .map(|o| format!("{} {}", o["kind"], o["metadata"]["name"]))
                .collect()
        };
        let extra: Vec<String> = names(&typha)
            .into_iter()
            .filter(|n| !names(&plain).contains(n))
            .collect();
        assert_eq!(
            extra,
            [
                "\"PodDisruptionBudget\" \"calico-typha\"",
                "\"Service\" \"calico-typha\"",
                "\"Deployment\" \"calico-typha\""
            ]
        );
        assert_eq!(plain.len() + 3, typha.len());
        let config = |objs: &[Value]| {
            objs.iter()
                .find(|o| o["metadata"]["name"] == "calico-config")
                .unwrap()["data"]["typha_service_name"]
                .clone()
        };
        assert_eq!(config(&plain), "none");
        assert_eq!(config(&typha), "calico-typha");
        let d = typha
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "calico-typha")
            .unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/calico/typha:v3.27.5"
        );
        let later = manifest_flavour_objects("v3.31.7", "calico-typha.yaml").unwrap();
        assert!(
            later
                .iter()
                .any(|o| o.to_string().contains("quay.io/calico/typha:v3.31.7"))
        );
        assert!(manifest_flavour_objects("v3.27.5", "calico-etcd.yaml").is_err());

        let dir = tempfile::tempdir().unwrap();
        write_manifest_dir(dir.path(), &["v3.27.5"], InstallMethod::Manifest).unwrap();
        for file in MANIFEST_FLAVOURS {
            let text = std::fs::read_to_string(dir.path().join("v3.27.5").join(file)).unwrap();
            assert_eq!(
                parse_yaml(&text).unwrap(),
                manifest_flavour_objects("v3.27.5", file).unwrap()
            );
        }
    }

    #[test]
    fn upgrade_paths_have_their_releases() {
        let r = releases_from("v3.25.2").unwrap();
        assert_eq!(&r[..4], ["v3.25.2", "v3.26.5", "v3.27.5", "v3.28.5"]);
    }
}
