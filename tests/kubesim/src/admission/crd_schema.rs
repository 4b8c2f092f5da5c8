//! Custom resources against their CRD's structural schema, as the real server treats them:
//! unknown fields are pruned (unless `x-kubernetes-preserve-unknown-fields`), and types,
//! enums and required fields are validated with the real messages.

use serde_json::{Map, Value, json};

use crate::error::FieldCause;

/// What checking an object against its schema found.
#[derive(Debug, Default)]
pub struct SchemaCheck {
    /// Validation failures (422).
    pub causes: Vec<FieldCause>,
    /// Fields removed because the schema does not declare them (`spec.foo`).
    pub pruned: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Prunes and validates `obj` (a whole custom resource) against `schema` (`openAPIV3Schema`).
pub fn check(schema: &Value, obj: &mut Value) -> SchemaCheck {
    let mut out = SchemaCheck::default();
    let Some(root) = obj.as_object_mut() else {
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let keys: Vec<String> = root.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if let Some(v) = root.get_mut(&k) {
                    walk(s, v, &k, &mut out);
                }
            }
            None if preserve || props.is_none() => {}
            None => {
                root.shift_remove(&k);
                out.pruned.push(k);
            }
        }
    }
    required(schema, root, "", &mut out);
    out
}

fn required(schema: &Value, obj: &Map<String, Value>, path: &str, out: &mut SchemaCheck) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !obj.contains_key(r) {
            out.causes.push(FieldCause::required(join(path, r)));
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut SchemaCheck) {
    if v.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let actual = type_name(v);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            out.causes.push(FieldCause::invalid(
                path,
                &json!(actual),
                &format!("{path} in body must be of type int-or-string: {actual:?}"),
            ));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let fits = want == actual || (want == "number" && actual == "integer");
        if !fits {
            out.causes.push(FieldCause::invalid(
                path,
                &json!(actual),
                &format!("{path} in body must be of type {want}: {actual:?}"),
            ));
            return;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        let supported: Vec<String> = values
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
        out.causes.push(FieldCause::not_supported(path, v, &refs));
    }
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                if let Some(s) = props.and_then(|p| p.get(&k)) {
                    if let Some(child) = m.get_mut(&k) {
                        walk(s, child, &child_path, out);
                    }
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    if let Some(child) = m.get_mut(&k) {
                        walk(a, child, &child_path, out);
                    }
                } else if preserve
                    || additional.and_then(Value::as_bool) == Some(true)
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                } else if props.is_some() || additional.and_then(Value::as_bool) == Some(false) {
                    m.shift_remove(&k);
                    out.pruned.push(child_path);
                } else if schema.get("type").and_then(Value::as_str) == Some("object") {
                    // An object schema with neither properties nor preservation keeps nothing.
                    m.shift_remove(&k);
                    out.pruned.push(child_path);
                }
            }
            required(schema, m, path, out);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_and_validates_like_the_real_server() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["mode"], "properties": {
                "mode": {"type": "string", "enum": ["A", "B"]},
                "size": {"type": "integer"},
                "port": {"x-kubernetes-int-or-string": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "pools": {"type": "array", "items": {"type": "object", "properties": {"cidr": {"type": "string"}}}}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }});
        let mut ok = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"mode": "A", "size": 3, "port": "http", "labels": {"a": "b"}, "free": {"x": {"y": 1}},
                     "pools": [{"cidr": "10.0.0.0/8", "junk": 1}], "typo": true},
            "extra": 1});
        let c = check(&schema, &mut ok);
        assert!(c.causes.is_empty(), "{:?}", c.causes);
        assert_eq!(c.pruned, ["spec.pools[0].junk", "spec.typo", "extra"]);
        assert!(ok["spec"]["free"]["x"]["y"] == 1);

        let mut bad = json!({"spec": {"mode": "C", "size": "big"}});
        let c = check(&schema, &mut bad);
        let msgs: Vec<String> = c
            .causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"",
                "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
            ]
        );
        let mut missing = json!({"spec": {}});
        assert_eq!(check(&schema, &mut missing).causes[0].field, "spec.mode");
    }
}
