//! RFC 6902 JSON patch with RFC 6901 pointers, worded like the library kube-apiserver uses.

use serde_json::Value;

use super::PatchError;
use super::value::json_eq;

/// Applies a JSON patch (RFC 6902): `ops` must be an array of operation objects.
///
/// Errors: [`PatchError::BadRequest`] when `ops` is not a list of objects (the real server
/// fails decoding), [`PatchError::Unprocessable`] (422) when an operation does not apply: a
/// missing path, an index out of range, a failed `test`, an unknown `op`. Operations apply in
/// order to a copy; on error nothing is returned, as on the real server.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(list) = ops else {
        return Err(PatchError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_type_name(ops)
        )));
    };
    let mut doc = target.clone();
    for op in list {
        let Value::Object(fields) = op else {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                go_type_name(op)
            )));
        };
        let kind = fields
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let value = fields.get("value").cloned().unwrap_or(Value::Null);
        let path = || -> Result<&str, PatchError> {
            fields.get("path").and_then(Value::as_str).ok_or_else(|| {
                unprocessable(format!(
                    "{kind} operation failed to decode path: missing value"
                ))
            })
        };
        let from = || -> Result<&str, PatchError> {
            fields.get("from").and_then(Value::as_str).ok_or_else(|| {
                unprocessable(format!(
                    "{kind} operation failed to decode from: missing value"
                ))
            })
        };
        match kind {
            "add" => add(&mut doc, path()?, value, "add")?,
            "remove" => {
                remove(&mut doc, path()?, "remove")?;
            }
            "replace" => replace(&mut doc, path()?, value)?,
            "move" => {
                let (from, to) = (from()?, path()?);
                if to != from && to.starts_with(from) && to[from.len()..].starts_with('/') {
                    return Err(unprocessable(format!(
                        "move operation does not apply: from \"{from}\" is a prefix of path \"{to}\""
                    )));
                }
                let moved = remove(&mut doc, from, "move")?;
                add(&mut doc, to, moved, "move")?;
            }
            "copy" => {
                let (from, to) = (from()?, path()?);
                let copied = get(&doc, from).cloned().ok_or_else(|| {
                    unprocessable(format!(
                        "copy operation does not apply: doc is missing from path: {from}: missing value"
                    ))
                })?;
                add(&mut doc, to, copied, "copy")?;
            }
            "test" => {
                let path = path()?;
                let Some(current) = get(&doc, path) else {
                    return Err(unprocessable(format!(
                        "test operation does not apply: is missing path: {path}: missing value"
                    )));
                };
                if !json_eq(current, &value) {
                    return Err(unprocessable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => return Err(unprocessable(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

fn unprocessable(msg: String) -> PatchError {
    PatchError::Unprocessable(msg)
}

fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    }
}

/// Splits an RFC 6901 pointer into unescaped tokens; `None` for a pointer not starting at `/`.
fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    // ~1 first, then ~0, so that "~01" decodes to "~1" and not to "/".
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The index an array token names; negative indexes count from the end, as the patch library
/// kube-apiserver uses allows.
fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, PatchError> {
    let bad = || {
        unprocessable(format!(
            "Unable to access invalid index: {token}: invalid index referenced"
        ))
    };
    let n: i64 = token.parse().map_err(|_| bad())?;
    let len_i = i64::try_from(len).map_err(|_| bad())?;
    let idx = if n < 0 { n + len_i } else { n };
    let limit = if allow_end { len_i } else { len_i - 1 };
    if idx < 0 || idx > limit {
        return Err(bad());
    }
    usize::try_from(idx).map_err(|_| bad())
}

fn get<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens(pointer)? {
        cur = match cur {
            Value::Object(m) => m.get(&t)?,
            Value::Array(a) => a.get(array_index(&t, a.len(), false).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The container holding the last token, and that token.
fn parent_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<(&'a mut Value, String)> {
    let mut toks = tokens(pointer)?;
    let last = toks.pop()?;
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t)?,
            Value::Array(a) => {
                let i = array_index(&t, a.len(), false).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    match cur {
        Value::Object(_) | Value::Array(_) => Some((cur, last)),
        _ => None,
    }
}

fn add(doc: &mut Value, pointer: &str, value: Value, op: &str) -> Result<(), PatchError> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let missing = || {
        unprocessable(format!(
            "{op} operation does not apply: doc is missing path: \"{pointer}\": missing value"
        ))
    };
    let (parent, key) = parent_mut(doc, pointer).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => {
            m.insert(key, value);
        }
        Value::Array(a) => {
            let i = if key == "-" {
                a.len()
            } else {
                array_index(&key, a.len(), true)?
            };
            a.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, pointer: &str, op: &str) -> Result<Value, PatchError> {
    let missing = || {
        let what = if op == "move" { "from path" } else { "path" };
        unprocessable(format!(
            "{op} operation does not apply: doc is missing {what}: \"{pointer}\": missing value"
        ))
    };
    let (parent, key) = parent_mut(doc, pointer).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => m.shift_remove(&key).ok_or_else(|| {
            unprocessable(format!(
                "Unable to remove nonexistent key: {key}: missing value"
            ))
        }),
        Value::Array(a) => {
            let i = array_index(&key, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn replace(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let missing = |what: &str| {
        unprocessable(format!(
            "replace operation does not apply: doc is missing {what}: {pointer}: missing value"
        ))
    };
    let (parent, key) = parent_mut(doc, pointer).ok_or_else(|| missing("path"))?;
    match parent {
        Value::Object(m) => match m.get_mut(&key) {
            Some(slot) => *slot = value,
            None => return Err(missing("key")),
        },
        Value::Array(a) => {
            let i = array_index(&key, a.len(), false)?;
            a[i] = value;
        }
        _ => return Err(missing("path")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(doc: Value, ops: Value) -> Value {
        match json_patch(&doc, &ops) {
            Ok(v) => v,
            Err(e) => panic!("patch failed: {e}"),
        }
    }

    fn err(doc: Value, ops: Value) -> PatchError {
        match json_patch(&doc, &ops) {
            Ok(v) => panic!("patch unexpectedly applied: {v}"),
            Err(e) => e,
        }
    }

    // Cases written from the examples of RFC 6902 appendix A.
    #[test]
    fn rfc_add_object_member_and_array_element() {
        assert_eq!(
            ok(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}])
            ),
            json!({"foo": "bar", "baz": "qux"})
        );
        assert_eq!(
            ok(
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            ),
            json!({"foo": ["bar", "qux", "baz"]})
        );
        assert_eq!(
            ok(
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])
            ),
            json!({"foo": ["bar", ["abc", "def"]]})
        );
        assert_eq!(
            ok(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}])
            ),
            json!({"foo": "bar", "child": {"grandchild": {}}})
        );
    }

    #[test]
    fn rfc_remove_replace_move_copy() {
        assert_eq!(
            ok(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}])
            ),
            json!({"foo": "bar"})
        );
        assert_eq!(
            ok(
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}])
            ),
            json!({"foo": ["bar", "baz"]})
        );
        assert_eq!(
            ok(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}])
            ),
            json!({"baz": "boo", "foo": "bar"})
        );
        assert_eq!(
            ok(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            ),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
        assert_eq!(
            ok(
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])
            ),
            json!({"foo": ["all", "cows", "eat", "grass"]})
        );
        assert_eq!(
            ok(
                json!({"a": {"b": 1}}),
                json!([{"op": "copy", "from": "/a", "path": "/c"}])
            ),
            json!({"a": {"b": 1}, "c": {"b": 1}})
        );
    }

    #[test]
    fn rfc_test_success_and_failure() {
        let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
        assert_eq!(
            ok(
                doc.clone(),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2}
                ])
            ),
            doc
        );
        let e = err(
            json!({"baz": "qux"}),
            json!([{"op": "test", "path": "/baz", "value": "bar"}]),
        );
        assert_eq!(e.status_code(), 422);
        assert_eq!(e.message(), "testing value /baz failed: test failed");
        // Numbers compare by value, not by spelling (A.14 style).
        ok(
            json!({"n": 1}),
            json!([{"op": "test", "path": "/n", "value": 1.0}]),
        );
    }

    #[test]
    fn rfc_escaped_pointers() {
        let doc = json!({"/": 9, "~1": 10});
        assert_eq!(
            ok(
                doc.clone(),
                json!([{"op": "test", "path": "/~01", "value": 10}])
            ),
            doc
        );
        assert_eq!(
            ok(
                json!({"a/b": 1}),
                json!([{"op": "replace", "path": "/a~1b", "value": 2}])
            ),
            json!({"a/b": 2})
        );
        // An annotation key with a slash, the everyday Kubernetes case.
        assert_eq!(
            ok(
                json!({"metadata": {"annotations": {}}}),
                json!([{"op": "add", "path": "/metadata/annotations/example.com~1x", "value": "y"}])
            ),
            json!({"metadata": {"annotations": {"example.com/x": "y"}}})
        );
    }

    #[test]
    fn missing_paths_are_422_with_library_wording() {
        let e = err(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
        );
        assert_eq!(e.status_code(), 422);
        assert_eq!(
            e.message(),
            "add operation does not apply: doc is missing path: \"/baz/bat\": missing value"
        );
        let e = err(json!({"foo": 1}), json!([{"op": "remove", "path": "/bar"}]));
        assert_eq!(
            e.message(),
            "Unable to remove nonexistent key: bar: missing value"
        );
        let e = err(
            json!({"foo": 1}),
            json!([{"op": "replace", "path": "/bar", "value": 2}]),
        );
        assert_eq!(
            e.message(),
            "replace operation does not apply: doc is missing key: /bar: missing value"
        );
        let e = err(
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/5", "value": 2}]),
        );
        assert!(e.message().contains("invalid index"), "{e}");
        let e = err(json!({}), json!([{"op": "frobnicate", "path": "/a"}]));
        assert_eq!(e.message(), "Unexpected kind: frobnicate");
    }

    #[test]
    fn a_failed_operation_discards_earlier_ones() {
        let doc = json!({"a": 1});
        let e = err(
            doc,
            json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 3}]),
        );
        assert_eq!(e.status_code(), 422);
    }

    #[test]
    fn malformed_patch_is_bad_request() {
        assert_eq!(err(json!({}), json!({"op": "add"})).status_code(), 400);
        assert_eq!(err(json!({}), json!([1])).status_code(), 400);
    }

    #[test]
    fn move_into_own_child_is_rejected_and_root_ops_work() {
        let e = err(
            json!({"a": {"b": 1}}),
            json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
        );
        assert_eq!(e.status_code(), 422);
        assert_eq!(
            ok(
                json!({"a": 1}),
                json!([{"op": "replace", "path": "", "value": {"b": 2}}])
            ),
            json!({"b": 2})
        );
        assert_eq!(
            ok(
                json!({"a": [1, 2, 3]}),
                json!([{"op": "remove", "path": "/a/-1"}])
            ),
            json!({"a": [1, 2]})
        );
    }
}
