//! The schema abstraction: how the list or map at a path merges, for strategic merge patch and
//! server-side apply alike.

use serde_json::Value;

use super::builtin::BuiltinSchema;

/// One step from a node to a child: a named field (or map key), or any item of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A field of an object, or a key of a free-form map.
    Field(&'a str),
    /// An element of a list (which one does not matter to a schema).
    Item,
}

/// One key field of an associative list.
#[derive(Clone, Debug, PartialEq)]
pub struct MapKey {
    /// The field name, such as `name` or `containerPort`.
    pub name: String,
    /// The value an item omitting the field is keyed by (`protocol` defaults to `TCP`).
    pub default: Option<Value>,
}

/// What kind of list a path holds, in server-side apply terms (`x-kubernetes-list-type`).
#[derive(Clone, Debug, PartialEq)]
pub enum ListType {
    /// Replaced as a whole and owned as one field.
    Atomic,
    /// A set of scalars; each value is owned separately (`v:` in managedFields).
    Set,
    /// An associative list keyed by these fields (`k:` in managedFields).
    Map(Vec<MapKey>),
}

impl ListType {
    /// An associative list keyed by fields without defaults.
    pub fn map_keyed_by(keys: &[&str]) -> Self {
        ListType::Map(
            keys.iter()
                .map(|k| MapKey {
                    name: (*k).to_string(),
                    default: None,
                })
                .collect(),
        )
    }
}

/// Whether a map (or object) at a path merges field by field or is replaced as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// Fields are merged and owned separately.
    Granular,
    /// Replaced and owned as one field (`x-kubernetes-map-type: atomic`, `+structType=atomic`).
    Atomic,
}

/// How a strategic merge patch treats a list (`patchStrategy` / `patchMergeKey` tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchStrategy {
    /// The patch list replaces the live list.
    Replace,
    /// Items are maps merged by this key.
    MergeByKey(String),
    /// Items are scalars, merged as a set.
    MergePrimitives,
}

/// Answers the merge questions the algorithms ask about the node at a path.
///
/// Paths start at the object root; list items are [`Step::Item`] whatever their key.
pub trait Schema {
    /// The list type at `path` (meaningful when the value there is a list).
    fn list_type(&self, path: &[Step<'_>]) -> ListType;

    /// The map type at `path` (meaningful when the value there is an object).
    fn map_type(&self, path: &[Step<'_>]) -> MapType;

    /// True when the last step of `path` is a key of a free-form map rather than a declared
    /// field: such entries are owned as members even when their value is an object.
    fn is_map_entry(&self, _path: &[Step<'_>]) -> bool {
        false
    }

    /// Whether strategic merge patch is defined for this kind. The real server answers 415 for
    /// custom resources; [`super::strategic_merge_patch`] does the same when this is false.
    fn supports_strategic_merge(&self) -> bool;

    /// The strategic merge strategy of the list at `path`. By default it follows the list type,
    /// the way the OpenAPI falls back from `x-kubernetes-list-type` to patch tags.
    fn patch_strategy(&self, path: &[Step<'_>]) -> PatchStrategy {
        match self.list_type(path) {
            ListType::Atomic => PatchStrategy::Replace,
            ListType::Set => PatchStrategy::MergePrimitives,
            ListType::Map(keys) => match keys.first() {
                Some(k) => PatchStrategy::MergeByKey(k.name.clone()),
                None => PatchStrategy::Replace,
            },
        }
    }
}

/// The schema structured-merge-diff deduces for untyped data: objects merge, lists are atomic,
/// and every object key is a free-form map entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeducedSchema;

impl Schema for DeducedSchema {
    fn list_type(&self, _path: &[Step<'_>]) -> ListType {
        ListType::Atomic
    }
    fn map_type(&self, _path: &[Step<'_>]) -> MapType {
        MapType::Granular
    }
    fn is_map_entry(&self, _path: &[Step<'_>]) -> bool {
        true
    }
    fn supports_strategic_merge(&self) -> bool {
        false
    }
}

/// A custom resource version's `openAPIV3Schema`, read for its merge extensions.
///
/// `metadata` follows the built-in ObjectMeta rules (finalizers as a set, ownerReferences keyed
/// by uid), because the real server merges the CRD schema with ObjectMeta. Paths the schema
/// does not describe (under `x-kubernetes-preserve-unknown-fields`) get the deduced rules.
#[derive(Clone, Debug)]
pub struct CrdSchema {
    root: Value,
    meta: BuiltinSchema,
}

enum Resolved<'a> {
    Node(&'a Value, bool),
    Unknown,
}

impl CrdSchema {
    /// Wraps `openAPIV3Schema` (the value of `spec.versions[].schema.openAPIV3Schema`).
    pub fn new(open_api_v3_schema: &Value) -> Self {
        CrdSchema {
            root: open_api_v3_schema.clone(),
            meta: BuiltinSchema::for_kind(""),
        }
    }

    /// Resolves a path; the flag tells whether the last step went through
    /// `additionalProperties` (a free-form map entry).
    fn resolve(&self, path: &[Step<'_>]) -> Resolved<'_> {
        let mut node = &self.root;
        let mut via_additional = false;
        for step in path {
            let next = match step {
                Step::Field(name) => {
                    if let Some(p) = node.get("properties").and_then(|p| p.get(*name)) {
                        via_additional = false;
                        Some(p)
                    } else if let Some(a) =
                        node.get("additionalProperties").filter(|a| a.is_object())
                    {
                        via_additional = true;
                        Some(a)
                    } else {
                        None
                    }
                }
                Step::Item => {
                    via_additional = false;
                    node.get("items").filter(|i| i.is_object())
                }
            };
            match next {
                Some(n) => node = n,
                None => return Resolved::Unknown,
            }
        }
        Resolved::Node(node, via_additional)
    }

    fn is_meta(path: &[Step<'_>]) -> bool {
        matches!(path.first(), Some(Step::Field("metadata")))
    }
}

impl Schema for CrdSchema {
    fn list_type(&self, path: &[Step<'_>]) -> ListType {
        if Self::is_meta(path) {
            return self.meta.list_type(path);
        }
        let Resolved::Node(node, _) = self.resolve(path) else {
            return ListType::Atomic;
        };
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default();
                if keys.is_empty() {
                    return ListType::Atomic;
                }
                let item_props = node.get("items").and_then(|i| i.get("properties"));
                ListType::Map(
                    keys.into_iter()
                        .map(|k| MapKey {
                            name: k.to_string(),
                            default: item_props
                                .and_then(|p| p.get(k))
                                .and_then(|p| p.get("default"))
                                .cloned(),
                        })
                        .collect(),
                )
            }
            _ => ListType::Atomic,
        }
    }

    fn map_type(&self, path: &[Step<'_>]) -> MapType {
        if Self::is_meta(path) {
            return self.meta.map_type(path);
        }
        match self.resolve(path) {
            Resolved::Node(node, _) => {
                match node.get("x-kubernetes-map-type").and_then(Value::as_str) {
                    Some("atomic") => MapType::Atomic,
                    _ => MapType::Granular,
                }
            }
            Resolved::Unknown => MapType::Granular,
        }
    }

    fn is_map_entry(&self, path: &[Step<'_>]) -> bool {
        if Self::is_meta(path) {
            return self.meta.is_map_entry(path);
        }
        match self.resolve(path) {
            Resolved::Node(_, via_additional) => via_additional,
            Resolved::Unknown => true,
        }
    }

    fn supports_strategic_merge(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> CrdSchema {
        CrdSchema::new(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "pools": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name", "family"],
                            "items": {"type": "object", "properties": {
                                "name": {"type": "string"},
                                "family": {"type": "string", "default": "v4"},
                                "cidr": {"type": "string"}
                            }}
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                        "extra": {"type": "object", "additionalProperties": {"type": "object"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        }))
    }

    #[test]
    fn crd_extensions_are_read() {
        let s = crd();
        let pools = [Step::Field("spec"), Step::Field("pools")];
        match s.list_type(&pools) {
            ListType::Map(keys) => {
                assert_eq!(keys.len(), 2);
                assert_eq!(keys[1].default, Some(json!("v4")));
            }
            other => panic!("pools: {other:?}"),
        }
        assert_eq!(
            s.list_type(&[Step::Field("spec"), Step::Field("tags")]),
            ListType::Set
        );
        assert_eq!(
            s.list_type(&[Step::Field("spec"), Step::Field("args")]),
            ListType::Atomic
        );
        assert_eq!(
            s.map_type(&[Step::Field("spec"), Step::Field("selector")]),
            MapType::Atomic
        );
        assert!(s.is_map_entry(&[Step::Field("spec"), Step::Field("extra"), Step::Field("k")]));
        assert!(!s.is_map_entry(&[Step::Field("spec"), Step::Field("pools")]));
        // Under preserve-unknown-fields: deduced rules.
        let free = [Step::Field("spec"), Step::Field("free"), Step::Field("x")];
        assert_eq!(s.list_type(&free), ListType::Atomic);
        assert!(s.is_map_entry(&free));
        assert!(!s.supports_strategic_merge());
    }

    #[test]
    fn crd_metadata_uses_object_meta_rules() {
        let s = crd();
        assert_eq!(
            s.list_type(&[Step::Field("metadata"), Step::Field("finalizers")]),
            ListType::Set
        );
        assert_eq!(
            s.list_type(&[Step::Field("metadata"), Step::Field("ownerReferences")]),
            ListType::map_keyed_by(&["uid"])
        );
    }
}
