//! Merge rules of the built-in kinds, as data: a table keyed by kind and field path.
//!
//! The rules mirror the Go type tags of k8s.io/api: `patchStrategy`/`patchMergeKey` for strategic
//! merge, and `+listType`/`+listMapKey`/`+mapType`/`+structType` for server-side apply (which falls
//! back to the patch tags where a list has no list type). Anything not listed is a granular map
//! or an atomic list, which is also what the real OpenAPI says for the remaining fields.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::schema::{ListType, MapKey, MapType, PatchStrategy, Schema, Step};

/// Key fields of an associative list, each with the default an item omitting it is keyed by.
type Keys = &'static [(&'static str, Option<&'static str>)];

#[derive(Clone, Copy, Debug)]
enum Rule {
    /// `patchStrategy:"merge"` with `patchMergeKey:smp`; apply keys by `ssa`.
    Keyed { smp: &'static str, ssa: Keys },
    /// An associative list for apply only; strategic merge replaces it.
    MapList(Keys),
    /// Scalars merged as a set (`patchStrategy:"merge"`, `+listType=set`).
    Set,
    /// `+mapType=atomic` or `+structType=atomic`.
    AtomicMap,
    /// A map merged key by key; the default, listed where the brief asks for coverage.
    GranularMap,
    /// The rules of a named fragment apply below this path.
    Include(&'static str),
}

use Rule::{AtomicMap, GranularMap, Include, Keyed, MapList, Set};

const NAME: Keys = &[("name", None)];
const TYPE: Keys = &[("type", None)];
const IP: Keys = &[("ip", None)];

const fn by(key: &'static str, ssa: Keys) -> Rule {
    Keyed { smp: key, ssa }
}

/// Reusable types, by field path relative to the type. `x[]` steps into the items of list `x`.
static FRAGMENTS: &[(&str, &[(&str, Rule)])] = &[
    (
        "ObjectMeta",
        &[
            ("finalizers", Set),
            ("ownerReferences", by("uid", &[("uid", None)])),
            ("labels", GranularMap),
            ("annotations", GranularMap),
        ],
    ),
    (
        "PodTemplateSpec",
        &[
            ("metadata", Include("ObjectMeta")),
            ("spec", Include("PodSpec")),
        ],
    ),
    (
        "PodSpec",
        &[
            ("containers", by("name", NAME)),
            ("containers[]", Include("Container")),
            ("initContainers", by("name", NAME)),
            ("initContainers[]", Include("Container")),
            ("ephemeralContainers", by("name", NAME)),
            ("ephemeralContainers[]", Include("Container")),
            ("volumes", by("name", NAME)),
            ("imagePullSecrets", by("name", NAME)),
            ("hostAliases", by("ip", IP)),
            (
                "topologySpreadConstraints",
                by(
                    "topologyKey",
                    &[("topologyKey", None), ("whenUnsatisfiable", None)],
                ),
            ),
            ("topologySpreadConstraints[].labelSelector", AtomicMap),
            ("schedulingGates", by("name", NAME)),
            ("resourceClaims", by("name", NAME)),
            ("nodeSelector", AtomicMap),
            (
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
                AtomicMap,
            ),
            ("overhead", GranularMap),
        ],
    ),
    (
        "Container",
        &[
            ("env", by("name", NAME)),
            ("env[].valueFrom.configMapKeyRef", AtomicMap),
            ("env[].valueFrom.secretKeyRef", AtomicMap),
            ("env[].valueFrom.fieldRef", AtomicMap),
            ("env[].valueFrom.resourceFieldRef", AtomicMap),
            (
                "ports",
                by(
                    "containerPort",
                    &[("containerPort", None), ("protocol", Some("TCP"))],
                ),
            ),
            ("volumeMounts", by("mountPath", &[("mountPath", None)])),
            ("volumeDevices", by("devicePath", &[("devicePath", None)])),
            ("resources.claims", MapList(NAME)),
            ("resources.limits", GranularMap),
            ("resources.requests", GranularMap),
        ],
    ),
    (
        "Workload",
        &[
            ("spec.selector", AtomicMap),
            ("spec.template", Include("PodTemplateSpec")),
            ("status.conditions", by("type", TYPE)),
        ],
    ),
];

/// Rules per kind; every kind also gets `metadata` as ObjectMeta.
static KINDS: &[(&str, &[(&str, Rule)])] = &[
    (
        "Pod",
        &[
            ("spec", Include("PodSpec")),
            ("status.conditions", by("type", TYPE)),
            ("status.podIPs", by("ip", IP)),
            ("status.hostIPs", by("ip", IP)),
            ("status.resourceClaimStatuses", by("name", NAME)),
        ],
    ),
    ("PodTemplate", &[("template", Include("PodTemplateSpec"))]),
    (
        "ReplicationController",
        &[
            ("spec.selector", AtomicMap),
            ("spec.template", Include("PodTemplateSpec")),
            ("status.conditions", by("type", TYPE)),
        ],
    ),
    ("Deployment", &[("", Include("Workload"))]),
    ("DaemonSet", &[("", Include("Workload"))]),
    ("ReplicaSet", &[("", Include("Workload"))]),
    ("StatefulSet", &[("", Include("Workload"))]),
    ("Job", &[("", Include("Workload"))]),
    (
        "CronJob",
        &[
            ("spec.jobTemplate.metadata", Include("ObjectMeta")),
            ("spec.jobTemplate.spec.selector", AtomicMap),
            ("spec.jobTemplate.spec.template", Include("PodTemplateSpec")),
        ],
    ),
    (
        "Service",
        &[
            (
                "spec.ports",
                by("port", &[("port", None), ("protocol", Some("TCP"))]),
            ),
            ("spec.selector", AtomicMap),
            ("status.conditions", by("type", TYPE)),
        ],
    ),
    (
        "Node",
        &[
            ("spec.podCIDRs", Set),
            ("status.conditions", by("type", TYPE)),
            ("status.addresses", by("type", TYPE)),
            ("status.capacity", GranularMap),
            ("status.allocatable", GranularMap),
        ],
    ),
    ("Namespace", &[("status.conditions", by("type", TYPE))]),
    (
        "ConfigMap",
        &[("data", GranularMap), ("binaryData", GranularMap)],
    ),
    (
        "Secret",
        &[("data", GranularMap), ("stringData", GranularMap)],
    ),
    ("ServiceAccount", &[("secrets", by("name", NAME))]),
    (
        "PodDisruptionBudget",
        &[
            ("spec.selector", AtomicMap),
            ("status.conditions", by("type", TYPE)),
            ("status.disruptedPods", GranularMap),
        ],
    ),
    ("NetworkPolicy", &[("spec.podSelector", AtomicMap)]),
    (
        "CustomResourceDefinition",
        &[("status.conditions", by("type", TYPE))],
    ),
];

#[derive(Debug, Default)]
struct Node {
    fields: HashMap<&'static str, Node>,
    item: Option<Box<Node>>,
    rule: Option<Rule>,
}

impl Node {
    fn descend(&mut self, path: &'static str) -> &mut Node {
        let mut node = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let (name, items) = match seg.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (seg, false),
            };
            node = node.fields.entry(name).or_default();
            if items {
                node = node.item.get_or_insert_with(Box::default);
            }
        }
        node
    }

    fn expand(&mut self, rules: &[(&'static str, Rule)], depth: usize) {
        // The table has no cycles; the bound only keeps a future typo from recursing forever.
        if depth > 8 {
            return;
        }
        for (path, rule) in rules {
            let node = self.descend(path);
            match rule {
                Include(name) => {
                    if let Some((_, inner)) = FRAGMENTS.iter().find(|(n, _)| n == name) {
                        node.expand(inner, depth + 1);
                    }
                }
                other => node.rule = Some(*other),
            }
        }
    }
}

fn tables() -> &'static HashMap<&'static str, Node> {
    static TABLES: OnceLock<HashMap<&'static str, Node>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut out = HashMap::new();
        let meta: &[(&str, Rule)] = &[("metadata", Include("ObjectMeta"))];
        let mut bare = Node::default();
        bare.expand(meta, 0);
        out.insert("", bare);
        for (kind, rules) in KINDS {
            let mut root = Node::default();
            root.expand(meta, 0);
            root.expand(rules, 0);
            out.insert(*kind, root);
        }
        out
    })
}

/// The merge rules of one built-in kind (by `kind` name: `Pod`, `Deployment`, `Service`...).
///
/// A kind missing from the table still gets the ObjectMeta rules, with every other list atomic
/// and every map granular; strategic merge stays supported, as for any built-in kind.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinSchema {
    root: &'static Node,
}

impl BuiltinSchema {
    /// The rules for `kind`.
    pub fn for_kind(kind: &str) -> Self {
        let t = tables();
        let root = t
            .get(kind)
            .or_else(|| t.get(""))
            .unwrap_or_else(|| empty_node());
        BuiltinSchema { root }
    }

    fn rule(&self, path: &[Step<'_>]) -> Option<Rule> {
        let mut node = self.root;
        for step in path {
            node = match step {
                Step::Field(name) => node.fields.get(name)?,
                Step::Item => node.item.as_deref()?,
            };
        }
        node.rule
    }
}

fn empty_node() -> &'static Node {
    static EMPTY: OnceLock<Node> = OnceLock::new();
    EMPTY.get_or_init(Node::default)
}

fn keys(k: Keys) -> ListType {
    ListType::Map(
        k.iter()
            .map(|(name, default)| MapKey {
                name: (*name).to_string(),
                default: default.map(|d| Value::String(d.to_string())),
            })
            .collect(),
    )
}

impl Schema for BuiltinSchema {
    fn list_type(&self, path: &[Step<'_>]) -> ListType {
        match self.rule(path) {
            Some(Keyed { ssa, .. }) | Some(MapList(ssa)) => keys(ssa),
            Some(Set) => ListType::Set,
            _ => ListType::Atomic,
        }
    }

    fn map_type(&self, path: &[Step<'_>]) -> MapType {
        match self.rule(path) {
            Some(AtomicMap) => MapType::Atomic,
            _ => MapType::Granular,
        }
    }

    fn is_map_entry(&self, path: &[Step<'_>]) -> bool {
        // Keys under the free-form maps of the table (labels, data, limits...) are entries.
        matches!(path.split_last(), Some((Step::Field(_), parent)) if matches!(self.rule(parent), Some(GranularMap)))
    }

    fn supports_strategic_merge(&self) -> bool {
        true
    }

    fn patch_strategy(&self, path: &[Step<'_>]) -> PatchStrategy {
        match self.rule(path) {
            Some(Keyed { smp, .. }) => PatchStrategy::MergeByKey(smp.to_string()),
            Some(Set) => PatchStrategy::MergePrimitives,
            _ => PatchStrategy::Replace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &'static str) -> Vec<Step<'static>> {
        let mut out = Vec::new();
        for seg in s.split('.') {
            match seg.strip_suffix("[]") {
                Some(n) => {
                    out.push(Step::Field(n));
                    out.push(Step::Item);
                }
                None => out.push(Step::Field(seg)),
            }
        }
        out
    }

    #[test]
    fn pod_templates_share_the_pod_spec_rules() {
        for (kind, prefix) in [
            ("Pod", "spec"),
            ("Deployment", "spec.template.spec"),
            ("DaemonSet", "spec.template.spec"),
            ("ReplicaSet", "spec.template.spec"),
            ("StatefulSet", "spec.template.spec"),
            ("Job", "spec.template.spec"),
            ("CronJob", "spec.jobTemplate.spec.template.spec"),
        ] {
            let s = BuiltinSchema::for_kind(kind);
            let c = |rest: &str| {
                let full: &'static str = Box::leak(format!("{prefix}.{rest}").into_boxed_str());
                p(full)
            };
            assert_eq!(
                s.patch_strategy(&c("containers")),
                PatchStrategy::MergeByKey("name".into()),
                "{kind}"
            );
            assert_eq!(
                s.patch_strategy(&c("initContainers[].env")),
                PatchStrategy::MergeByKey("name".into()),
                "{kind}"
            );
            assert_eq!(
                s.patch_strategy(&c("containers[].volumeMounts")),
                PatchStrategy::MergeByKey("mountPath".into())
            );
            assert_eq!(
                s.patch_strategy(&c("volumes")),
                PatchStrategy::MergeByKey("name".into())
            );
            assert_eq!(s.patch_strategy(&c("tolerations")), PatchStrategy::Replace);
            assert_eq!(s.list_type(&c("tolerations")), ListType::Atomic);
            match s.list_type(&c("containers[].ports")) {
                ListType::Map(k) => {
                    assert_eq!(k[0].name, "containerPort");
                    assert_eq!(k[1].default, Some(json!("TCP")));
                }
                other => panic!("{kind}: {other:?}"),
            }
            assert_eq!(s.map_type(&c("nodeSelector")), MapType::Atomic);
        }
    }

    #[test]
    fn services_nodes_and_metadata() {
        let svc = BuiltinSchema::for_kind("Service");
        assert_eq!(
            svc.patch_strategy(&p("spec.ports")),
            PatchStrategy::MergeByKey("port".into())
        );
        assert_eq!(svc.map_type(&p("spec.selector")), MapType::Atomic);
        let node = BuiltinSchema::for_kind("Node");
        assert_eq!(
            node.patch_strategy(&p("spec.podCIDRs")),
            PatchStrategy::MergePrimitives
        );
        assert_eq!(
            node.patch_strategy(&p("spec.taints")),
            PatchStrategy::Replace
        );
        assert_eq!(
            node.patch_strategy(&p("status.conditions")),
            PatchStrategy::MergeByKey("type".into())
        );
        let any = BuiltinSchema::for_kind("ClusterRole");
        assert_eq!(
            any.patch_strategy(&p("metadata.finalizers")),
            PatchStrategy::MergePrimitives
        );
        assert_eq!(
            any.list_type(&p("metadata.ownerReferences")),
            ListType::map_keyed_by(&["uid"])
        );
        assert_eq!(any.list_type(&p("rules")), ListType::Atomic);
        let dep = BuiltinSchema::for_kind("Deployment");
        assert_eq!(dep.map_type(&p("spec.selector")), MapType::Atomic);
        assert_eq!(
            dep.list_type(&p("spec.template.metadata.finalizers")),
            ListType::Set
        );
        let cm = BuiltinSchema::for_kind("ConfigMap");
        assert!(cm.is_map_entry(&p("data.key")));
        assert!(!cm.is_map_entry(&p("data")));
        assert!(cm.supports_strategic_merge());
    }
}
