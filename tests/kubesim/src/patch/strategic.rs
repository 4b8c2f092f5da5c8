//! Strategic merge patch, as kube-apiserver applies it to built-in kinds.
//!
//! Semantics follow apimachinery's `strategicpatch` in its server mode (parallel deletion lists
//! merged, unmatched nulls ignored): lists merge by their patch merge key or as sets of scalars,
//! `$patch: replace|delete` work in maps and list items, `$retainKeys`,
//! `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>` are honoured, `null` deletes.
//! New list items go first, then live-only items, unless order directives say otherwise: the
//! real server interleaves them that way (its `mergeSortedSlice`).

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{PatchStrategy, Schema, Step};
use super::value::json_eq;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `target` with the merge rules of `schema`.
///
/// Returns [`PatchError::UnsupportedMediaType`] when the schema has no strategic merge (custom
/// resources). Malformed directives are [`PatchError::BadRequest`]; lists of lists are
/// [`PatchError::Unprocessable`]; other merge failures (missing merge key, unknown `$patch`
/// value) are [`PatchError::Internal`], which the real server reports as a 500.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    schema: &dyn Schema,
) -> Result<Value, PatchError> {
    if !schema.supports_strategic_merge() {
        return Err(PatchError::UnsupportedMediaType);
    }
    let Value::Object(p) = patch else {
        return Err(PatchError::BadRequest("invalid JSON document".into()));
    };
    let mut path = Vec::new();
    let merged = merge_map(target.as_object(), p, &mut path, schema)?;
    Ok(Value::Object(merged))
}

fn internal(msg: String) -> PatchError {
    PatchError::Internal(msg)
}

fn merge_map<'a>(
    original: Option<&Map<String, Value>>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get(DIRECTIVE) {
        None => merge_entries(original, patch, path, schema),
        // The patch replaces the map: merge its entries into nothing, so that nested directives
        // vanish instead of being stored.
        Some(Value::String(d)) if d == "replace" => merge_entries(None, patch, path, schema),
        Some(Value::String(d)) if d == "delete" => Ok(Map::new()),
        Some(d) => Err(internal(format!(
            "unknown patch type: {} in map: {}",
            go_fmt(d),
            go_fmt(&Value::Object(patch.clone()))
        ))),
    }
}

fn merge_entries<'a>(
    original: Option<&Map<String, Value>>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Result<Map<String, Value>, PatchError> {
    let mut out = original.cloned().unwrap_or_default();

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let bad = || PatchError::BadRequest("invalid patch format of retainKeys".into());
        let list = retain.as_array().ok_or_else(bad)?;
        let keep = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
        // Every field the patch sets must be retained, or the patch contradicts itself.
        if patch
            .iter()
            .any(|(k, v)| !v.is_null() && !k.starts_with('$') && !keep(k))
        {
            return Err(bad());
        }
        out.retain(|k, _| keep(k));
    }

    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ORDER) else {
            continue;
        };
        let order = order.as_array().ok_or_else(|| {
            PatchError::BadRequest("invalid patch format of setElementOrder list".into())
        })?;
        path.push(Step::Field(field));
        let result = apply_set_order(out.get(field), patch.get(field), order, path, schema);
        path.pop();
        if let Some(list) = result? {
            out.insert(field.to_string(), Value::Array(list));
        }
        ordered.push(field);
    }

    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let doomed = v.as_array().ok_or_else(|| {
                PatchError::BadRequest("invalid patch format of primitive list".into())
            })?;
            if let Some(Value::Array(live)) = out.get_mut(field) {
                live.retain(|item| !doomed.iter().any(|d| json_eq(d, item)));
            }
            continue;
        }
        if ordered.contains(&k.as_str()) {
            continue;
        }
        if v.is_null() {
            out.shift_remove(k);
            continue;
        }
        path.push(Step::Field(k));
        let merged = merge_value(out.get(k), v, path, schema);
        path.pop();
        out.insert(k.clone(), merged?);
    }
    Ok(out)
}

/// Merges one patch value into the live value at `path` (which may be absent). Values of
/// different types, and scalars, are replaced by the patch value.
fn merge_value<'a>(
    live: Option<&Value>,
    patch: &'a Value,
    path: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Result<Value, PatchError> {
    match patch {
        Value::Object(p) => Ok(Value::Object(merge_map(
            live.and_then(Value::as_object),
            p,
            path,
            schema,
        )?)),
        Value::Array(p) => {
            let l = live
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            Ok(Value::Array(merge_list(l, p, path, schema)?))
        }
        other => Ok(other.clone()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Map,
    List,
    Str,
    Num,
    Bool,
    Null,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Object(_) => Kind::Map,
        Value::Array(_) => Kind::List,
        Value::String(_) => Kind::Str,
        Value::Number(_) => Kind::Num,
        Value::Bool(_) => Kind::Bool,
        Value::Null => Kind::Null,
    }
}

/// The common element kind of the lists, or the error the real server gives for mixed ones.
fn element_kind(lists: &[&[Value]]) -> Result<Option<Kind>, PatchError> {
    let mut seen = None;
    for list in lists {
        for v in *list {
            let k = kind_of(v);
            if k == Kind::List {
                return Err(PatchError::Unprocessable(
                    "lists of lists are not supported".into(),
                ));
            }
            match seen {
                None => seen = Some(k),
                Some(s) if s != k => {
                    let all: Vec<String> = lists
                        .iter()
                        .map(|l| go_fmt(&Value::Array(l.to_vec())))
                        .collect();
                    return Err(internal(format!(
                        "list element types are not identical: [{}]",
                        all.join(" ")
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Ok(seen)
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    internal(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(item)
    ))
}

fn merge_list<'a>(
    original: &[Value],
    patch: &'a [Value],
    path: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Result<Vec<Value>, PatchError> {
    let strategy = schema.patch_strategy(path);
    if strategy == PatchStrategy::Replace {
        path.push(Step::Item);
        let out = patch
            .iter()
            .map(|v| merge_value(None, v, path, schema))
            .collect();
        path.pop();
        return out;
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(Vec::new());
    }
    let Some(kind) = element_kind(&[original, patch])? else {
        return Ok(Vec::new());
    };
    if kind != Kind::Map {
        // Scalars merge as a set, whatever the declared key.
        let mut merged: Vec<Value> = Vec::new();
        for v in original.iter().chain(patch) {
            if !merged.iter().any(|m| json_eq(m, v)) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only) = partition(merged, patch, None);
        return Ok(normalize_order(
            in_patch,
            server_only,
            patch,
            original,
            None,
        ));
    }
    let PatchStrategy::MergeByKey(key) = strategy else {
        return Err(internal(
            "cannot merge lists without merge key for type map".into(),
        ));
    };
    let key = key.as_str();

    // Special elements first: `$patch: delete` removes live items, `$patch: replace` makes the
    // rest of the patch list the whole list.
    let mut base: Vec<Value> = original.to_vec();
    let mut plain: Vec<&'a Value> = Vec::new();
    let mut replace = false;
    for v in patch {
        let Some(d) = v.get(DIRECTIVE) else {
            plain.push(v);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let k = v.get(key).ok_or_else(|| no_merge_key(v, key))?;
                base.retain(|item| !item.get(key).is_some_and(|ik| json_eq(ik, k)));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(internal(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            _ => {
                return Err(internal(format!(
                    "unknown patch type: {} in map: {}",
                    go_fmt(d),
                    go_fmt(v)
                )));
            }
        }
    }
    path.push(Step::Item);
    let result = (|| {
        if replace {
            let replaced: Vec<Value> = plain
                .iter()
                .map(|v| merge_value(None, v, path, schema))
                .collect::<Result<_, _>>()?;
            return Ok((replaced.clone(), Vec::new(), replaced));
        }
        let mut merged = base.clone();
        for v in &plain {
            let k = v.get(key).ok_or_else(|| no_merge_key(v, key))?;
            let found = merged
                .iter()
                .position(|item| item.get(key).is_some_and(|ik| json_eq(ik, k)));
            match found {
                Some(i) => merged[i] = merge_value(Some(&merged[i]), v, path, schema)?,
                None => merged.push(merge_value(None, v, path, schema)?),
            }
        }
        let order: Vec<Value> = plain.iter().map(|v| (*v).clone()).collect();
        Ok((merged, order, base))
    })();
    path.pop();
    let (merged, patch_order, server_order) = result?;
    for item in merged.iter().chain(&patch_order) {
        if item.get(key).is_none() {
            return Err(no_merge_key(item, key));
        }
    }
    let (in_patch, server_only) = partition(merged, &patch_order, Some(key));
    Ok(normalize_order(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// Processes `$setElementOrder/<field>`: merges the field's patch list (if any) and then orders
/// the result by the directive. `Ok(None)` leaves the field alone (absent on both sides).
fn apply_set_order<'a>(
    live: Option<&Value>,
    patch: Option<&'a Value>,
    order: &[Value],
    path: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Result<Option<Vec<Value>>, PatchError> {
    let live_list = live.and_then(Value::as_array);
    let patch_list = patch.and_then(Value::as_array);
    let key = match schema.patch_strategy(path) {
        PatchStrategy::MergeByKey(k) => Some(k),
        _ => None,
    };
    let key = key.as_deref();
    if let Some(p) = patch_list {
        check_order(p, order, key)?;
    }
    let merged = match (live_list, patch_list) {
        (None, None) => return Ok(None),
        (Some(l), None) => l.clone(),
        (None, Some(_)) | (Some(_), Some(_)) => {
            let p = patch_list.map(Vec::as_slice).unwrap_or(&[]);
            merge_list(live_list.map(Vec::as_slice).unwrap_or(&[]), p, path, schema)?
        }
    };
    if let Some(k) = key {
        for item in merged.iter().chain(order) {
            if item.get(k).is_none() {
                return Err(no_merge_key(item, k));
            }
        }
    }
    let server_order = live_list.cloned().unwrap_or_default();
    let (in_order, server_only) = partition(merged, order, key);
    Ok(Some(normalize_order(
        in_order,
        server_only,
        order,
        &server_order,
        key,
    )))
}

/// The patch items (deletions aside) must appear in the order list, in the same relative order.
fn check_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let mut oi = 0;
    for item in &items {
        while oi < order.len() && !same_item(item, &order[oi], key) {
            oi += 1;
        }
        if oi == order.len() {
            return Err(internal(format!(
                "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
                go_fmt(&Value::Array(patch.to_vec())),
                go_fmt(&Value::Array(order.to_vec()))
            )));
        }
        oi += 1;
    }
    Ok(())
}

fn same_item(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(k) => match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => json_eq(x, y),
            _ => false,
        },
        None => json_eq(a, b),
    }
}

fn index_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|v| same_item(item, v, key))
}

/// Splits `merged` into items present in `by` and the others, keeping their order.
fn partition(merged: Vec<Value>, by: &[Value], key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| index_in(by, v, key).is_some())
}

/// Sorts the patch items by the patch order and the live-only items by the live order, then
/// interleaves them: a live-only item goes before a patch item only when both are in the live
/// list and it came first there. Items new to the list therefore lead.
fn normalize_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    patch_items.sort_by_key(|v| index_in(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_in(server_order, v, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l, key), index_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Formats a value the way Go's `%v` prints decoded JSON, for error messages.
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_fmt).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut parts: Vec<(&String, String)> = m.iter().map(|(k, v)| (k, go_fmt(v))).collect();
            parts.sort();
            let parts: Vec<String> = parts.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}
