//! What the server serves: every resource type with its group, versions, kind, plural, scope,
//! short names, categories, verbs and subresources, built-in or from a CRD.
//!
//! Built-in types come from one table gated by the simulated version; CRD types are derived
//! from the CRD object when it becomes Established.

use crate::pointer::At;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::version::KubeVersion;

/// A resource type regardless of version: the key objects are stored under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// Builds a key from group and plural.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// A subresource such as `status`, `scale`, `log` or `eviction`.
#[derive(Clone, Debug, PartialEq)]
pub struct Subresource {
    /// `status`, `scale`, `log`, `eviction`, `binding` or `finalize`.
    pub name: String,
    /// Group, version and kind of what the subresource answers with.
    pub response_kind: (String, String, String),
    /// Verbs the subresource supports.
    pub verbs: Vec<String>,
}

/// An additional printer column of a CRD version (and the built-in tables' column form).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    /// Column title.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Optional format such as `name` or `date-time`.
    pub format: String,
    /// Description shown in `kubectl explain`-like places.
    pub description: String,
    /// 0 for default columns, 1 and up for `-o wide`.
    pub priority: i64,
    /// Simple JSONPath such as `.spec.replicas`.
    pub json_path: String,
}

/// One served version of a resource type.
#[derive(Clone, Debug)]
pub struct ServedVersion {
    /// Version name (`v1`).
    pub name: String,
    /// Whether objects are stored in this version.
    pub storage: bool,
    /// Subresources offered in this version.
    pub subresources: Vec<Subresource>,
    /// CRD additional printer columns (empty for built-ins, which have coded tables).
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD's `openAPIV3Schema`, for OpenAPI documents.
    pub schema: Option<Value>,
}

/// Everything about one resource type that discovery, routing and the store need.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Kind of single objects.
    pub kind: String,
    /// Kind of lists (`PodList`).
    pub list_kind: String,
    /// Plural resource name, the URL segment.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`, `ds`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Served versions, the preferred first.
    pub versions: Vec<ServedVersion>,
    /// Built into the server (strategic merge patch, coded tables, validation) or from a CRD.
    pub builtin: bool,
}

impl ResourceType {
    /// The storage key of this type.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    /// `apiVersion` for a version name.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The storage version.
    pub fn storage_version(&self) -> &ServedVersion {
        self.versions
            .iter()
            .find(|v| v.storage)
            .unwrap_or(&self.versions[0])
    }

    /// A served version by name.
    pub fn version(&self, name: &str) -> Option<&ServedVersion> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// Whether a version has the given subresource.
    pub fn has_subresource(&self, version: &str, sub: &str) -> bool {
        self.version(version)
            .is_some_and(|v| v.subresources.iter().any(|s| s.name == sub))
    }

    /// Whether writes to the main resource must leave `status` alone (status subresource in
    /// the storage version, which is what the store enforces).
    pub fn has_status_subresource(&self) -> bool {
        self.storage_version()
            .subresources
            .iter()
            .any(|s| s.name == "status")
    }

    /// Whether the type supports a verb on the main resource.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The verbs of a usual read-write resource.
pub const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A built-in resource type description, terse enough to keep the table readable.
struct Builtin {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    verbs: &'static [&'static str],
}

#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        versions,
        kind,
        plural,
        namespaced,
        short,
        categories,
        subresources,
        verbs: &ALL_VERBS,
    }
}

const NS: bool = true;
const CLUSTER: bool = false;
const V1: &[&str] = &["v1"];

fn builtin_table(version: &KubeVersion) -> Vec<Builtin> {
    let mut t = vec![
        b("", V1, "ConfigMap", "configmaps", NS, &["cm"], &[], &[]),
        b("", V1, "Endpoints", "endpoints", NS, &["ep"], &[], &[]),
        b("", V1, "Event", "events", NS, &["ev"], &[], &[]),
        Builtin {
            verbs: &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            ..b(
                "",
                V1,
                "Namespace",
                "namespaces",
                CLUSTER,
                &["ns"],
                &[],
                &["finalize", "status"],
            )
        },
        b("", V1, "Node", "nodes", CLUSTER, &["no"], &[], &["status"]),
        b(
            "",
            V1,
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            NS,
            &["pvc"],
            &[],
            &["status"],
        ),
        b(
            "",
            V1,
            "PersistentVolume",
            "persistentvolumes",
            CLUSTER,
            &["pv"],
            &[],
            &["status"],
        ),
        b(
            "",
            V1,
            "Pod",
            "pods",
            NS,
            &["po"],
            &["all"],
            &["binding", "eviction", "log", "status"],
        ),
        b(
            "",
            V1,
            "ResourceQuota",
            "resourcequotas",
            NS,
            &["quota"],
            &[],
            &["status"],
        ),
        b("", V1, "Secret", "secrets", NS, &[], &[], &[]),
        b(
            "",
            V1,
            "ServiceAccount",
            "serviceaccounts",
            NS,
            &["sa"],
            &[],
            &["token"],
        ),
        b(
            "",
            V1,
            "Service",
            "services",
            NS,
            &["svc"],
            &["all"],
            &["status"],
        ),
        b(
            "apiregistration.k8s.io",
            V1,
            "APIService",
            "apiservices",
            CLUSTER,
            &[],
            &["api-extensions"],
            &["status"],
        ),
        b(
            "apps",
            V1,
            "ControllerRevision",
            "controllerrevisions",
            NS,
            &[],
            &[],
            &[],
        ),
        Builtin {
            verbs: &["create"],
            ..b(
                "authorization.k8s.io",
                V1,
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
                CLUSTER,
                &[],
                &[],
                &[],
            )
        },
        b(
            "apps",
            V1,
            "DaemonSet",
            "daemonsets",
            NS,
            &["ds"],
            &["all"],
            &["status"],
        ),
        b(
            "apps",
            V1,
            "Deployment",
            "deployments",
            NS,
            &["deploy"],
            &["all"],
            &["scale", "status"],
        ),
        b(
            "apps",
            V1,
            "ReplicaSet",
            "replicasets",
            NS,
            &["rs"],
            &["all"],
            &["scale", "status"],
        ),
        b(
            "apps",
            V1,
            "StatefulSet",
            "statefulsets",
            NS,
            &["sts"],
            &["all"],
            &["scale", "status"],
        ),
        b(
            "batch",
            V1,
            "CronJob",
            "cronjobs",
            NS,
            &["cj"],
            &["all"],
            &["status"],
        ),
        b("batch", V1, "Job", "jobs", NS, &[], &["all"], &["status"]),
        b(
            "coordination.k8s.io",
            V1,
            "Lease",
            "leases",
            NS,
            &[],
            &[],
            &[],
        ),
        b(
            "discovery.k8s.io",
            V1,
            "EndpointSlice",
            "endpointslices",
            NS,
            &[],
            &[],
            &[],
        ),
        b(
            "events.k8s.io",
            V1,
            "Event",
            "events",
            NS,
            &["ev"],
            &[],
            &[],
        ),
        b(
            "networking.k8s.io",
            V1,
            "NetworkPolicy",
            "networkpolicies",
            NS,
            &["netpol"],
            &[],
            &[],
        ),
        b(
            "networking.k8s.io",
            V1,
            "Ingress",
            "ingresses",
            NS,
            &["ing"],
            &[],
            &["status"],
        ),
        b(
            "networking.k8s.io",
            V1,
            "IngressClass",
            "ingressclasses",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        b(
            "policy",
            V1,
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            NS,
            &["pdb"],
            &[],
            &["status"],
        ),
        b(
            "rbac.authorization.k8s.io",
            V1,
            "ClusterRoleBinding",
            "clusterrolebindings",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        b(
            "rbac.authorization.k8s.io",
            V1,
            "ClusterRole",
            "clusterroles",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        b(
            "rbac.authorization.k8s.io",
            V1,
            "RoleBinding",
            "rolebindings",
            NS,
            &[],
            &[],
            &[],
        ),
        b(
            "rbac.authorization.k8s.io",
            V1,
            "Role",
            "roles",
            NS,
            &[],
            &[],
            &[],
        ),
        b(
            "scheduling.k8s.io",
            V1,
            "PriorityClass",
            "priorityclasses",
            CLUSTER,
            &["pc"],
            &[],
            &[],
        ),
        b(
            "storage.k8s.io",
            V1,
            "StorageClass",
            "storageclasses",
            CLUSTER,
            &["sc"],
            &[],
            &[],
        ),
        b(
            "apiextensions.k8s.io",
            V1,
            "CustomResourceDefinition",
            "customresourcedefinitions",
            CLUSTER,
            &["crd", "crds"],
            &["api-extensions"],
            &["status"],
        ),
    ];
    if version.serves_policy_v1beta1() {
        // Before 1.25 the policy group also served v1beta1: PSPs only there, PDBs in both.
        t.push(b(
            "policy",
            &["v1beta1"],
            "PodSecurityPolicy",
            "podsecuritypolicies",
            CLUSTER,
            &["psp"],
            &[],
            &[],
        ));
        for e in t.iter_mut() {
            if e.plural == "poddisruptionbudgets" {
                e.versions = &["v1", "v1beta1"];
            }
        }
    }
    t
}

fn subresource_def(group: &str, version: &str, kind: &str, name: &str) -> Subresource {
    let (g, v, k, verbs): (&str, &str, &str, &[&str]) = match name {
        "status" => (group, version, kind, &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        _ => (group, version, kind, &["get"]),
    };
    Subresource {
        name: name.to_string(),
        response_kind: (g.into(), v.into(), k.into()),
        verbs: strings(verbs),
    }
}

/// The built-in resource types the given version serves.
pub fn builtin_types(version: &KubeVersion) -> Vec<ResourceType> {
    builtin_table(version)
        .into_iter()
        .map(|e| ResourceType {
            group: e.group.into(),
            kind: e.kind.into(),
            list_kind: format!("{}List", e.kind),
            plural: e.plural.into(),
            singular: e.kind.to_ascii_lowercase(),
            namespaced: e.namespaced,
            short_names: strings(e.short),
            categories: strings(e.categories),
            verbs: strings(e.verbs),
            versions: e
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| ServedVersion {
                    name: v.to_string(),
                    storage: i == 0,
                    subresources: e
                        .subresources
                        .iter()
                        .map(|s| subresource_def(e.group, v, e.kind, s))
                        .collect(),
                    printer_columns: Vec::new(),
                    schema: None,
                })
                .collect(),
            builtin: true,
        })
        .collect()
}

/// Derives the served resource type from a CRD object, or explains why it cannot.
pub fn type_from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = crd.get("spec").ok_or("spec missing")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let names = spec.get("names").ok_or("spec.names missing")?;
    let group = s(spec, "group").ok_or("spec.group missing")?;
    let plural = s(names, "plural").ok_or("spec.names.plural missing")?;
    let kind = s(names, "kind").ok_or("spec.names.kind missing")?;
    let list = |v: &Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut versions = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let name = s(v, "name").ok_or("spec.versions[].name missing")?;
        let mut subresources = Vec::new();
        if let Some(sub) = v.get("subresources") {
            if sub.get("scale").is_some() {
                subresources.push(subresource_def(&group, &name, &kind, "scale"));
            }
            if sub.get("status").is_some() {
                subresources.push(subresource_def(&group, &name, &kind, "status"));
            }
        }
        let mut printer_columns: Vec<PrinterColumn> = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: s(c, "name").unwrap_or_default(),
                type_: s(c, "type").unwrap_or_else(|| "string".into()),
                format: s(c, "format").unwrap_or_default(),
                description: s(c, "description").unwrap_or_default(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: s(c, "jsonPath").unwrap_or_default(),
            })
            .collect();
        if printer_columns.is_empty() {
            // The real server adds Age when a CRD declares no columns.
            printer_columns.push(PrinterColumn {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            });
        }
        versions.push(ServedVersion {
            storage: v.get("storage").and_then(Value::as_bool) == Some(true),
            name,
            subresources,
            printer_columns,
            schema: v.at("/schema/openAPIV3Schema").cloned(),
        });
    }
    if versions.is_empty() {
        return Err("no served versions".into());
    }
    // Discovery lists versions by Kubernetes version priority (v2 > v1 > v1beta1 ...).
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
    Ok(ResourceType {
        singular: s(names, "singular").unwrap_or_else(|| kind.to_ascii_lowercase()),
        list_kind: s(names, "listKind").unwrap_or_else(|| format!("{kind}List")),
        namespaced: s(spec, "scope").as_deref() != Some("Cluster"),
        short_names: list(names, "shortNames"),
        categories: list(names, "categories"),
        verbs: strings(&ALL_VERBS),
        group,
        kind,
        plural,
        versions,
        builtin: false,
    })
}

/// Orders version names as Kubernetes does: GA over beta over alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (stage, minor_str) = if tail.is_empty() {
        return (3, major, 0);
    } else if let Some(m) = tail.strip_prefix("beta") {
        (2, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (1, m)
    } else {
        return (0, 0, 0);
    };
    match minor_str.parse::<u32>() {
        Ok(minor) => (stage, major, minor),
        Err(_) => (0, 0, 0),
    }
}

/// All resource types currently served, with lookups by URL segment, kind and short name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    types: BTreeMap<GroupResource, Arc<ResourceType>>,
    revision: u64,
}

/// Catalog revisions are unique across catalogs, so caches keyed by them survive version
/// switches that rebuild the catalog.
static REVISIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_revision() -> u64 {
    REVISIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The order in which the real server lists built-in groups in `/apis`.
const GROUP_ORDER: &[&str] = &[
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

impl Catalog {
    /// The catalog of built-in types for a version.
    pub fn builtin(version: &KubeVersion) -> Self {
        let mut c = Self::default();
        for t in builtin_types(version) {
            c.insert(t);
        }
        c
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.group_resource(), Arc::new(t));
        self.revision = next_revision();
    }

    /// Changes whenever a type is added, replaced or removed: a cache key for documents
    /// derived from the catalog (OpenAPI).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Removes a type (a deleted CRD).
    pub fn remove(&mut self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.revision = next_revision();
        self.types.remove(gr)
    }

    /// A type by its storage key.
    pub fn get(&self, gr: &GroupResource) -> Option<&Arc<ResourceType>> {
        self.types.get(gr)
    }

    /// The type served at `/apis/<group>/<version>/<plural>`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        self.types
            .get(&GroupResource::new(group, plural))
            .filter(|t| t.version(version).is_some())
    }

    /// Finds a type by group/version and a kind, plural, singular or short name, as in-process
    /// callers and kubectl-like lookups name them.
    pub fn find(&self, group: &str, version: &str, name: &str) -> Option<&Arc<ResourceType>> {
        if let Some(t) = self.lookup(group, version, name) {
            return Some(t);
        }
        let lower = name.to_ascii_lowercase();
        self.types.values().find(|t| {
            t.group == group
                && t.version(version).is_some()
                && (t.kind == name || t.singular == lower || t.short_names.contains(&lower))
        })
    }

    /// Every type, in key order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their served versions (preferred first), built-in groups in the real
    /// server's order, then CRD groups alphabetically. The core group is not included.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            if t.group.is_empty() {
                continue;
            }
            let versions = by_group.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(&v.name) {
                    versions.push(v.name.clone());
                }
            }
        }
        for versions in by_group.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for g in GROUP_ORDER {
            if let Some(v) = by_group.remove(*g) {
                out.push((g.to_string(), v));
            }
        }
        out.extend(by_group);
        out
    }

    /// The types served in one group version, in plural order.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .values()
            .filter(|t| t.group == group && t.version(version).is_some())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psp_only_before_1_25() {
        let old = Catalog::builtin(&KubeVersion::parse("v1.24.17").unwrap());
        let new = Catalog::builtin(&KubeVersion::parse("v1.25.0").unwrap());
        assert!(
            old.lookup("policy", "v1beta1", "podsecuritypolicies")
                .is_some()
        );
        assert!(
            new.lookup("policy", "v1beta1", "podsecuritypolicies")
                .is_none()
        );
        assert!(new.lookup("policy", "v1", "poddisruptionbudgets").is_some());
    }

    #[test]
    fn finds_by_kind_and_short_name() {
        let c = Catalog::builtin(&KubeVersion::DEFAULT);
        assert_eq!(
            c.find("apps", "v1", "DaemonSet").unwrap().plural,
            "daemonsets"
        );
        assert_eq!(c.find("apps", "v1", "ds").unwrap().plural, "daemonsets");
        assert_eq!(c.find("", "v1", "Pod").unwrap().plural, "pods");
    }

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
