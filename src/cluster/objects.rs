//! Kubernetes objects as JSON values: parsing manifests, naming objects in messages, and
//! stripping what the API server owns before objects are compared or applied again.

use anyhow::{Result, anyhow};
use kube::api::{DynamicObject, GroupVersionKind};
use serde_json::{Map, Value};

/// Parses a multi-document YAML (or JSON) manifest into objects, expanding `kind: List` and
/// skipping empty documents.
pub fn parse_manifest(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| anyhow!("the manifest is not valid YAML: {e}"))?;
    let mut out = Vec::new();
    for doc in docs {
        push_objects(doc, &mut out)?;
    }
    Ok(out)
}

fn push_objects(doc: Value, out: &mut Vec<Value>) -> Result<()> {
    match doc {
        Value::Null => Ok(()),
        Value::Object(ref m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.contains_key("items") =>
        {
            if let Some(Value::Array(items)) = doc.get("items").cloned() {
                for item in items {
                    push_objects(item, out)?;
                }
            }
            Ok(())
        }
        Value::Object(ref m) => {
            if m.get("apiVersion").and_then(Value::as_str).is_none()
                || m.get("kind").and_then(Value::as_str).is_none()
            {
                return Err(anyhow!(
                    "a manifest document has no apiVersion or kind: {}",
                    short(&doc)
                ));
            }
            out.push(doc);
            Ok(())
        }
        other => Err(anyhow!(
            "a manifest document is not an object: {}",
            short(&other)
        )),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

/// The group/version/kind of an object.
pub fn gvk(obj: &Value) -> Result<GroupVersionKind> {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("object without apiVersion"))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("object without kind"))?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    Ok(GroupVersionKind::gvk(group, version, kind))
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, if any.
pub fn namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `Kind namespace/name` or `Kind name`, as objects are named in messages.
pub fn reference(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("?");
    match namespace(obj) {
        Some(ns) => format!("{kind} {ns}/{}", name(obj)),
        None => format!("{kind} {}", name(obj)),
    }
}

/// Metadata fields the API server sets; they differ between any two reads and never belong in
/// an apply or a comparison.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations written by tools and controllers rather than by whoever owns the object.
const SERVER_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deprecated.daemonset.template.generation",
    // The Deployment controller counts rollouts here; a restore is one more rollout.
    "deployment.kubernetes.io/revision",
];

/// Removes what the server owns (status, server metadata, tool annotations), leaving the intent.
pub fn strip_server_fields(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in SERVER_METADATA {
            meta.remove(*f);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for a in SERVER_ANNOTATIONS {
                ann.remove(*a);
            }
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
        if meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|a| a.is_empty())
        {
            meta.remove("ownerReferences");
        }
    }
}

/// The object without server-owned fields, for comparisons and diffs.
pub fn intent(obj: &Value) -> Value {
    let mut v = obj.clone();
    strip_server_fields(&mut v);
    v
}

/// Converts a JSON object to a kube `DynamicObject`.
pub fn to_dynamic(obj: &Value) -> Result<DynamicObject> {
    serde_json::from_value(obj.clone())
        .map_err(|e| anyhow!("{} is not a valid object: {e}", reference(obj)))
}

/// Sorts map keys recursively, so that two equal objects print the same way in diffs.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_with_lists_comments_and_empty_documents() {
        let text = "---\n# just a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: a}}\n";
        let objs = parse_manifest(text).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(reference(&objs[0]), "Namespace a");
        assert_eq!(reference(&objs[1]), "ConfigMap a/b");
        assert!(
            parse_manifest("metadata: {name: x}\n")
                .unwrap_err()
                .to_string()
                .contains("no apiVersion or kind")
        );
        assert!(parse_manifest("a: [").is_err());
    }

    #[test]
    fn server_fields_are_stripped() {
        let mut o = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "uid": "u", "resourceVersion": "5",
            "generation": 2, "managedFields": [], "annotations": {"deprecated.daemonset.template.generation": "2"}}, "spec": {}, "status": {"numberReady": 1}});
        strip_server_fields(&mut o);
        assert_eq!(
            o,
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}, "spec": {}})
        );
    }

    #[test]
    fn gvk_of_core_and_grouped_kinds() {
        let g = gvk(&json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap();
        assert_eq!(
            (g.group.as_str(), g.version.as_str(), g.kind.as_str()),
            ("", "v1", "ConfigMap")
        );
        let g = gvk(&json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool"})).unwrap();
        assert_eq!(g.group, "crd.projectcalico.org");
    }
}
