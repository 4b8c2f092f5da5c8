//! Detecting how Calico is installed and what really runs.
//!
//! The version comes from the calico-node **pods** (each pod runs the image it was created
//! with), not from a binary on some host or the DaemonSet spec alone: a half-finished rollout
//! shows up as mixed versions, with the nodes that run each one.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::InstallMethod;
use crate::version::Version;

/// Where the Tigera operator runs.
pub const OPERATOR_NAMESPACE: &str = "tigera-operator";
/// Where the operator puts Calico.
pub const OPERATOR_CALICO_NAMESPACE: &str = "calico-system";
/// Where calico.yaml puts Calico.
pub const MANIFEST_NAMESPACE: &str = "kube-system";
/// Upstream's manifest for Kubernetes-datastore installs.
pub const CALICO_YAML: &str = "calico.yaml";
/// Upstream's manifest for Kubernetes-datastore installs above 50 nodes: calico.yaml plus the
/// calico-typha Deployment, Service and PodDisruptionBudget, and `typha_service_name:
/// calico-typha` in the calico-config ConfigMap.
pub const CALICO_TYPHA_YAML: &str = "calico-typha.yaml";
/// Upstream's manifest for etcd-datastore installs (which the product refuses to upgrade).
pub const CALICO_ETCD_YAML: &str = "calico-etcd.yaml";
/// The typha Deployment (and Service) calico-typha.yaml creates in kube-system.
pub const TYPHA_NAME: &str = "calico-typha";

/// The Calico datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Datastore {
    /// The Kubernetes API (KDD), the only one the product upgrades.
    Kubernetes,
    /// A separate etcd cluster.
    Etcd,
}

/// A Calico install found on the cluster.
#[derive(Debug, Clone)]
pub struct Install {
    /// Operator or manifest.
    pub method: InstallMethod,
    /// The namespace calico-node runs in.
    pub namespace: String,
    /// The Helm release managing the operator, if any.
    pub helm_release: Option<String>,
    /// The Tigera operator's image version (operator installs).
    pub operator_version: Option<Version>,
    /// `Installation default` `status.calicoVersion` (operator v1.29+, once a rollout finished).
    pub installation_version: Option<Version>,
    /// `Installation default` `spec.registry`.
    pub installation_registry: Option<String>,
    /// The calico-node DaemonSet's template image version.
    pub daemonset_version: Option<Version>,
    /// The image of the calico-node container in the DaemonSet template.
    pub daemonset_image: Option<String>,
    /// calico-node pods by the version they run, with their node names.
    pub running: BTreeMap<Version, Vec<String>>,
    /// calico-node pods whose image carries no version tag.
    pub unversioned_pods: Vec<String>,
    /// The datastore.
    pub datastore: Datastore,
    /// Manifest installs: the upstream file the install was made from, [`CALICO_YAML`] or
    /// [`CALICO_TYPHA_YAML`] (see [`manifest_file`]), [`CALICO_ETCD_YAML`] on the etcd
    /// datastore; `None` for operator installs.
    pub manifest_file: Option<&'static str>,
}

impl Install {
    /// The version to plan from: what every pod runs, or the oldest of mixed versions.
    pub fn current(&self) -> Option<Version> {
        self.running
            .keys()
            .next()
            .cloned()
            .or_else(|| self.installation_version.clone())
            .or_else(|| self.daemonset_version.clone())
    }

    /// Whether pods run more than one version.
    pub fn mixed(&self) -> bool {
        self.running.len() > 1
    }

    /// A JSON summary for results.
    pub fn to_json(&self) -> Value {
        let running: BTreeMap<String, &Vec<String>> = self
            .running
            .iter()
            .map(|(v, n)| (v.to_string(), n))
            .collect();
        json!({
            "method": self.method.as_str(),
            "namespace": self.namespace,
            "helm_release": self.helm_release,
            "operator_version": self.operator_version,
            "installation_version": self.installation_version,
            "daemonset_version": self.daemonset_version,
            "running_versions": running,
            "datastore": self.datastore,
            "manifest_file": self.manifest_file,
        })
    }
}

/// Another CNI (or meta-CNI) found on the cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OtherCni {
    /// flannel, canal, cilium, weave, kube-router, antrea or multus.
    pub name: &'static str,
    /// Where: `DaemonSet kube-flannel/kube-flannel-ds`.
    pub found: String,
}

/// Node readiness, for pre-checks and messages.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Ready condition is True.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Everything detection found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The Calico install, if any.
    pub install: Option<Install>,
    /// Other CNIs.
    pub other_cnis: Vec<OtherCni>,
    /// Every node.
    pub nodes: Vec<NodeState>,
}

/// The `operator.tigera.io/v1` resources the product reads.
pub fn operator_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "operator.tigera.io".into(),
        version: "v1".into(),
        api_version: "operator.tigera.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The image of a named container in a pod spec value.
fn container_image<'a>(
    containers: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Container>,
    name: &str,
) -> Option<String> {
    containers
        .into_iter()
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
}

fn classify_cni(ds: &DaemonSet) -> Option<&'static str> {
    let name = ds.name_any();
    let labels = ds.labels();
    let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    let containers: Vec<String> = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let has = |c: &str| containers.iter().any(|n| n.contains(c));
    if name == "canal" || (has("calico-node") && has("flannel")) {
        return Some("canal");
    }
    if name.contains("flannel") || label("app") == "flannel" || has("kube-flannel") {
        return Some("flannel");
    }
    if name == "cilium" || label("k8s-app") == "cilium" {
        return Some("cilium");
    }
    if name.starts_with("weave-net") || label("name") == "weave-net" {
        return Some("weave");
    }
    if name.contains("kube-router") || label("k8s-app") == "kube-router" {
        return Some("kube-router");
    }
    if name.starts_with("antrea-agent") || label("app") == "antrea" {
        return Some("antrea");
    }
    if name.contains("multus") || label("app") == "multus" {
        return Some("multus");
    }
    None
}

/// Which upstream manifest a manifest install was made from: calico-typha.yaml when the
/// `calico-typha` Deployment exists in kube-system or calico-config's `typha_service_name`
/// names a service (calico.yaml ships `none`), calico.yaml otherwise. Upgrading a typha
/// install from calico.yaml would leave typha on its old image and take
/// `typha_service_name` for a local change.
pub fn manifest_file(typha_deployment: bool, typha_service_name: Option<&str>) -> &'static str {
    let names_a_service = typha_service_name
        .map(str::trim)
        .is_some_and(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none"));
    if typha_deployment || names_a_service {
        CALICO_TYPHA_YAML
    } else {
        CALICO_YAML
    }
}

/// Reads what [`manifest_file`] decides from.
async fn detect_manifest_file(client: &Client) -> Result<&'static str> {
    let typha = Api::<Deployment>::namespaced(client.clone(), MANIFEST_NAMESPACE)
        .get_opt(TYPHA_NAME)
        .await
        .with_context(|| format!("reading Deployment {MANIFEST_NAMESPACE}/{TYPHA_NAME}"))?;
    let config = Api::<ConfigMap>::namespaced(client.clone(), MANIFEST_NAMESPACE)
        .get_opt("calico-config")
        .await
        .with_context(|| format!("reading ConfigMap {MANIFEST_NAMESPACE}/calico-config"))?;
    let service_name = config
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("typha_service_name"))
        .map(String::as_str);
    Ok(manifest_file(typha.is_some(), service_name))
}

/// Inspects the cluster.
pub async fn detect(client: &Client) -> Result<Detection> {
    let all_ds: Api<DaemonSet> = Api::all(client.clone());
    let daemonsets = all_ds
        .list(&ListParams::default())
        .await
        .context("listing DaemonSets")?
        .items;
    let other_cnis = daemonsets
        .iter()
        .filter_map(|ds| {
            classify_cni(ds).map(|name| OtherCni {
                name,
                found: format!(
                    "DaemonSet {}/{}",
                    ds.namespace().unwrap_or_default(),
                    ds.name_any()
                ),
            })
        })
        .collect();
    let nodes = list_nodes(client).await?;

    let operator = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get_opt("tigera-operator")
        .await
        .context("reading Deployment tigera-operator/tigera-operator")?;
    let installation = get_installation(client).await?;
    let (method, namespace) = match (&operator, &installation) {
        (Some(_), _) | (None, Some(_)) => (InstallMethod::Operator, OPERATOR_CALICO_NAMESPACE),
        _ => (InstallMethod::Manifest, MANIFEST_NAMESPACE),
    };
    let node_ds = daemonsets
        .iter()
        .find(|ds| ds.name_any() == "calico-node" && ds.namespace().as_deref() == Some(namespace));
    if operator.is_none() && installation.is_none() && node_ds.is_none() {
        return Ok(Detection {
            install: None,
            other_cnis,
            nodes,
        });
    }

    let daemonset_image = node_ds.and_then(|ds| {
        ds.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| container_image(&p.containers, "calico-node"))
    });
    let datastore = node_ds.map(datastore_of).unwrap_or(Datastore::Kubernetes);
    let manifest_file = match (method, datastore) {
        (InstallMethod::Operator, _) => None,
        (InstallMethod::Manifest, Datastore::Etcd) => Some(CALICO_ETCD_YAML),
        (InstallMethod::Manifest, Datastore::Kubernetes) => {
            Some(detect_manifest_file(client).await?)
        }
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut running: BTreeMap<Version, Vec<String>> = BTreeMap::new();
    let mut unversioned = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels("k8s-app=calico-node"))
        .await
        .context("listing calico-node pods")?
        .items
    {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "(unscheduled)".into());
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| container_image(&s.containers, "calico-node"));
        match image.as_deref().and_then(Version::from_image) {
            Some(v) => running.entry(v).or_default().push(node),
            None => unversioned.push(format!(
                "{} ({})",
                pod.name_any(),
                image.unwrap_or_default()
            )),
        }
    }
    for nodes in running.values_mut() {
        nodes.sort();
    }

    let operator_version = operator.as_ref().and_then(|d| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.as_deref())
            .and_then(Version::from_image)
    });
    let helm_release = operator.as_ref().and_then(|d| {
        d.annotations()
            .get("meta.helm.sh/release-name")
            .cloned()
            .or_else(|| {
                (d.labels()
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some("Helm"))
                .then(|| "(unnamed)".to_string())
            })
    });
    let installation_version = installation
        .as_ref()
        .and_then(|i| i.data.pointer("/status/calicoVersion"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let installation_registry = installation
        .as_ref()
        .and_then(|i| i.data.pointer("/spec/registry"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);

    Ok(Detection {
        install: Some(Install {
            method,
            namespace: namespace.to_string(),
            helm_release,
            operator_version,
            installation_version,
            installation_registry,
            daemonset_version: daemonset_image.as_deref().and_then(Version::from_image),
            daemonset_image,
            running,
            unversioned_pods: unversioned,
            datastore,
            manifest_file,
        }),
        other_cnis,
        nodes,
    })
}

/// `Installation default`, when the operator's CRD is served and the object exists.
pub async fn get_installation(client: &Client) -> Result<Option<DynamicObject>> {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &operator_resource("Installation", "installations"),
    );
    match api.get_opt("default").await {
        Ok(o) => Ok(o),
        // The CRD is not installed: a manifest install, or no Calico at all.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e).context("reading Installation default"),
    }
}

fn datastore_of(ds: &DaemonSet) -> Datastore {
    let env = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "calico-node"))
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    match env
        .iter()
        .find(|e| e.name == "DATASTORE_TYPE")
        .and_then(|e| e.value.as_deref())
    {
        Some(v) if v.starts_with("etcd") => Datastore::Etcd,
        Some(_) => Datastore::Kubernetes,
        // calico-etcd.yaml sets ETCD_ENDPOINTS rather than DATASTORE_TYPE.
        None if env.iter().any(|e| e.name == "ETCD_ENDPOINTS") => Datastore::Etcd,
        None => Datastore::Kubernetes,
    }
}

/// Every node with its readiness.
pub async fn list_nodes(client: &Client) -> Result<Vec<NodeState>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut out: Vec<NodeState> = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .cloned();
            let is_ready = ready.as_ref().is_some_and(|c| c.status == "True");
            let reason = if is_ready {
                None
            } else {
                Some(
                    ready
                        .map(|c| {
                            c.reason
                                .or(c.message)
                                .unwrap_or_else(|| format!("Ready={}", c.status))
                        })
                        .unwrap_or_else(|| "no Ready condition".into()),
                )
            };
            NodeState {
                name: n.name_any(),
                ready: is_ready,
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(ns: &str, name: &str, labels: Value, containers: &[&str]) -> DaemonSet {
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "x"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {}, "template": {"spec": {"containers": containers}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_manifest_flavour_follows_typha() {
        assert_eq!(manifest_file(false, None), CALICO_YAML);
        assert_eq!(manifest_file(false, Some("none")), CALICO_YAML);
        assert_eq!(manifest_file(false, Some("")), CALICO_YAML);
        assert_eq!(manifest_file(true, Some("none")), CALICO_TYPHA_YAML);
        assert_eq!(
            manifest_file(false, Some("calico-typha")),
            CALICO_TYPHA_YAML
        );
        assert_eq!(manifest_file(true, None), CALICO_TYPHA_YAML);
    }

    #[test]
    fn other_cnis_are_recognised() {
        assert_eq!(
            classify_cni(&ds(
                "kube-flannel",
                "kube-flannel-ds",
                json!({"app": "flannel"}),
                &["kube-flannel"]
            )),
            Some("flannel")
        );
        assert_eq!(
            classify_cni(&ds(
                "kube-system",
                "canal",
                json!({}),
                &["calico-node", "kube-flannel"]
            )),
            Some("canal")
        );
        assert_eq!(
            classify_cni(&ds(
                "kube-system",
                "cilium",
                json!({"k8s-app": "cilium"}),
                &["cilium-agent"]
            )),
            Some("cilium")
        );
        assert_eq!(
            classify_cni(&ds(
                "kube-system",
                "kube-multus-ds",
                json!({"app": "multus"}),
                &["kube-multus"]
            )),
            Some("multus")
        );
        assert_eq!(
            classify_cni(&ds(
                "kube-system",
                "weave-net",
                json!({"name": "weave-net"}),
                &["weave"]
            )),
            Some("weave")
        );
        assert_eq!(
            classify_cni(&ds(
                "kube-system",
                "calico-node",
                json!({"k8s-app": "calico-node"}),
                &["calico-node"]
            )),
            None
        );
        assert_eq!(
            classify_cni(&ds("kube-system", "kube-proxy", json!({}), &["kube-proxy"])),
            None
        );
    }

    #[test]
    fn datastore_from_env() {
        let mut d = ds("kube-system", "calico-node", json!({}), &["calico-node"]);
        assert_eq!(datastore_of(&d), Datastore::Kubernetes);
        let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.containers[0].env = Some(vec![
            serde_json::from_value(json!({"name": "DATASTORE_TYPE", "value": "etcdv3"})).unwrap(),
        ]);
        assert_eq!(datastore_of(&d), Datastore::Etcd);
    }
}
