//! Schema-aware walks over objects for server-side apply: the field set a configuration sets,
//! merging a configuration into a live object, comparing two objects, and removing fields.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::PatchError;
use super::fieldpath::{FieldPath, FieldSet, PathElement};
use super::schema::{ListType, MapType, Schema, Step};

/// What changed between two versions of an object, as field sets.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

fn error_at(fpath: &[PathElement], msg: String) -> PatchError {
    PatchError::BadRequest(format!("{}: {msg}", FieldPath(fpath.to_vec())))
}

/// The path element of a list item, or an error saying why the item cannot be keyed.
fn item_element(item: &Value, lt: &ListType) -> Result<PathElement, String> {
    match lt {
        ListType::Atomic => Err("atomic list items have no identity".into()),
        ListType::Set => match item {
            Value::Object(_) | Value::Array(_) => Err("values in a set must be scalars".into()),
            other => Ok(PathElement::value(other)),
        },
        ListType::Map(keys) => {
            let Value::Object(m) = item else {
                return Err("associative list with keys may not have non-map elements".into());
            };
            let mut fields = Vec::with_capacity(keys.len());
            for k in keys {
                match m
                    .get(&k.name)
                    .filter(|v| !v.is_null())
                    .or(k.default.as_ref())
                {
                    Some(v) => fields.push((k.name.clone(), v.clone())),
                    None => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                            k.name
                        ));
                    }
                }
            }
            Ok(PathElement::key(fields))
        }
    }
}

/// Path elements for the items of a stored list. Stored objects may hold items a schema would
/// reject (duplicates, missing keys, written by non-apply requests); those fall back to their
/// index so that they are kept but never match a configuration item.
fn live_elements(items: &[Value], lt: &ListType) -> Vec<PathElement> {
    let mut seen: HashSet<String> = HashSet::with_capacity(items.len());
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item_element(item, lt) {
            Ok(pe) if seen.insert(pe.encode()) => pe,
            _ => PathElement::Index(i),
        })
        .collect()
}

fn granular_map(schema: &dyn Schema, steps: &[Step<'_>]) -> bool {
    steps.is_empty() || schema.map_type(steps) == MapType::Granular
}

/// The fields a configuration sets: every scalar, atomic list or map, associative list item,
/// set value, empty object and free-form map entry. Errors on configurations the real server
/// rejects (list items without their keys, duplicate keys).
pub(crate) fn to_field_set(config: &Value, schema: &dyn Schema) -> Result<FieldSet, PatchError> {
    let mut set = FieldSet::new();
    set_walk(config, &mut Vec::new(), &mut Vec::new(), schema, &mut set)?;
    Ok(set)
}

fn set_walk<'a>(
    v: &'a Value,
    steps: &mut Vec<Step<'a>>,
    fpath: &mut Vec<PathElement>,
    schema: &dyn Schema,
    set: &mut FieldSet,
) -> Result<(), PatchError> {
    match v {
        Value::Object(m) if granular_map(schema, steps) => {
            if m.is_empty() {
                set.insert(fpath);
            }
            for (k, child) in m {
                steps.push(Step::Field(k));
                fpath.push(PathElement::Field(k.clone()));
                if child.is_null() || schema.is_map_entry(steps) {
                    set.insert(fpath);
                }
                let r = set_walk(child, steps, fpath, schema, set);
                steps.pop();
                fpath.pop();
                r?;
            }
        }
        Value::Array(items) => {
            let lt = schema.list_type(steps);
            if lt == ListType::Atomic {
                set.insert(fpath);
                return Ok(());
            }
            let mut seen: HashSet<String> = HashSet::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let pe = item_element(item, &lt)
                    .map_err(|e| error_at(fpath, format!("element {i}: {e}")))?;
                if !seen.insert(pe.encode()) {
                    return Err(error_at(fpath, format!("duplicate entries for key {pe}")));
                }
                steps.push(Step::Item);
                fpath.push(pe);
                set.insert(fpath);
                let r = if matches!(lt, ListType::Map(_)) {
                    set_walk(item, steps, fpath, schema, set)
                } else {
                    Ok(())
                };
                steps.pop();
                fpath.pop();
                r?;
            }
        }
        _ => set.insert(fpath),
    }
    Ok(())
}

/// Merges an apply configuration into the live object: granular maps merge key by key,
/// associative lists and sets merge by item identity, everything else is replaced. Keys set
/// to `null` in the configuration are removed.
pub(crate) fn merge(
    live: &Value,
    config: &Value,
    schema: &dyn Schema,
) -> Result<Value, PatchError> {
    merge_walk(Some(live), config, &mut Vec::new(), &mut Vec::new(), schema)
}

fn merge_walk<'a>(
    live: Option<&Value>,
    config: &'a Value,
    steps: &mut Vec<Step<'a>>,
    fpath: &mut Vec<PathElement>,
    schema: &dyn Schema,
) -> Result<Value, PatchError> {
    match config {
        Value::Object(c) if granular_map(schema, steps) => {
            let mut out = match live {
                Some(Value::Object(l)) => l.clone(),
                _ => Map::new(),
            };
            for (k, v) in c {
                if v.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                steps.push(Step::Field(k));
                fpath.push(PathElement::Field(k.clone()));
                let merged = merge_walk(out.get(k), v, steps, fpath, schema);
                steps.pop();
                fpath.pop();
                out.insert(k.clone(), merged?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(c) => {
            let lt = schema.list_type(steps);
            if lt == ListType::Atomic {
                return Ok(config.clone());
            }
            let l: &[Value] = match live {
                Some(Value::Array(l)) => l,
                _ => &[],
            };
            merge_list(l, c, &lt, steps, fpath, schema).map(Value::Array)
        }
        other => Ok(other.clone()),
    }
}

/// Merges list items the way structured-merge-diff orders them: live-only items keep their
/// place, shared items follow the configuration's order, and new items are inserted where the
/// configuration puts them relative to the shared ones.
fn merge_list<'a>(
    live: &[Value],
    config: &'a [Value],
    lt: &ListType,
    steps: &mut Vec<Step<'a>>,
    fpath: &mut Vec<PathElement>,
    schema: &dyn Schema,
) -> Result<Vec<Value>, PatchError> {
    let mut cfg_pes = Vec::with_capacity(config.len());
    let mut cfg_index: HashMap<String, usize> = HashMap::with_capacity(config.len());
    for (i, item) in config.iter().enumerate() {
        let pe =
            item_element(item, lt).map_err(|e| error_at(fpath, format!("element {i}: {e}")))?;
        if cfg_index.insert(pe.encode(), i).is_some() {
            return Err(error_at(fpath, format!("duplicate entries for key {pe}")));
        }
        cfg_pes.push(pe);
    }
    let live_pes = live_elements(live, lt);
    let live_index: HashMap<String, usize> = live_pes
        .iter()
        .enumerate()
        .map(|(i, pe)| (pe.encode(), i))
        .collect();
    let shared: Vec<String> = cfg_pes
        .iter()
        .map(PathElement::encode)
        .filter(|k| live_index.contains_key(k))
        .collect();
    let mut next_shared = shared.into_iter().peekable();
    let mut merged_cfg: Vec<bool> = vec![false; config.len()];
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut li, mut ri) = (0, 0);

    let merge_item = |lv: Option<&Value>,
                      ci: usize,
                      steps: &mut Vec<Step<'a>>,
                      fpath: &mut Vec<PathElement>|
     -> Result<Value, PatchError> {
        steps.push(Step::Item);
        fpath.push(cfg_pes[ci].clone());
        let r = merge_walk(lv, &config[ci], steps, fpath, schema);
        steps.pop();
        fpath.pop();
        r
    };

    while li < live.len() || ri < config.len() {
        if li < live.len() && ri < config.len() {
            let lkey = live_pes[li].encode();
            let rkey = cfg_pes[ri].encode();
            if lkey == rkey {
                out.push(merge_item(Some(&live[li]), ri, steps, fpath)?);
                merged_cfg[ri] = true;
                if next_shared.peek() == Some(&rkey) {
                    next_shared.next();
                }
                li += 1;
                ri += 1;
                continue;
            }
            // A shared item that the configuration places later: it is emitted when the
            // configuration reaches it.
            if cfg_index.contains_key(&lkey) && next_shared.peek().is_some_and(|n| *n != lkey) {
                li += 1;
                continue;
            }
        }
        if li < live.len() {
            let lkey = live_pes[li].encode();
            match cfg_index.get(&lkey) {
                None => {
                    out.push(live[li].clone());
                    li += 1;
                    continue;
                }
                Some(&ci) if merged_cfg[ci] => {
                    li += 1;
                    continue;
                }
                Some(_) => {}
            }
        }
        if ri < config.len() {
            let rkey = cfg_pes[ri].encode();
            let lv = live_index.get(&rkey).map(|&i| &live[i]);
            out.push(merge_item(lv, ri, steps, fpath)?);
            merged_cfg[ri] = true;
            if next_shared.peek() == Some(&rkey) {
                next_shared.next();
            }
            ri += 1;
        }
    }
    Ok(out)
}

/// Compares two versions of an object (absent = empty). New or removed maps, lists and list
/// items count as added or removed nodes themselves, as in structured-merge-diff.
/// `metadata.managedFields` is never compared: no manager owns it, and leaving it out spares
/// callers a copy of each object without it.
pub(crate) fn compare(lhs: &Value, rhs: &Value, schema: &dyn Schema) -> Comparison {
    let mut c = Comparison::default();
    compare_walk(
        Some(lhs),
        Some(rhs),
        &mut Vec::new(),
        &mut Vec::new(),
        schema,
        &mut c,
    );
    c
}

fn compare_walk<'a>(
    lhs: Option<&'a Value>,
    rhs: Option<&'a Value>,
    steps: &mut Vec<Step<'a>>,
    fpath: &mut Vec<PathElement>,
    schema: &dyn Schema,
    c: &mut Comparison,
) {
    // Equal subtrees add nothing; most writes change a few fields of a large object.
    if let (Some(a), Some(b)) = (lhs, rhs)
        && super::value::json_eq(a, b)
    {
        return;
    }
    let is_map = |v: Option<&Value>| v.is_none_or(Value::is_object);
    let is_list = |v: Option<&Value>| v.is_none_or(Value::is_array);
    let any_map = lhs.is_some_and(Value::is_object) || rhs.is_some_and(Value::is_object);
    let any_list = lhs.is_some_and(Value::is_array) || rhs.is_some_and(Value::is_array);
    let node = |c: &mut Comparison, fpath: &[PathElement]| {
        if lhs.is_none() {
            c.added.insert(fpath);
        } else if rhs.is_none() {
            c.removed.insert(fpath);
        }
    };
    if any_map && is_map(lhs) && is_map(rhs) && granular_map(schema, steps) {
        node(c, fpath);
        let l = lhs.and_then(Value::as_object);
        let r = rhs.and_then(Value::as_object);
        let mut keys: Vec<&'a String> = l.map(|m| m.keys().collect()).unwrap_or_default();
        if let Some(r) = r {
            keys.extend(r.keys().filter(|k| !l.is_some_and(|l| l.contains_key(*k))));
        }
        let in_metadata = matches!(steps.as_slice(), [Step::Field("metadata")]);
        for k in keys {
            if in_metadata && k == "managedFields" {
                continue;
            }
            steps.push(Step::Field(k));
            fpath.push(PathElement::Field(k.clone()));
            compare_walk(
                l.and_then(|m| m.get(k)),
                r.and_then(|m| m.get(k)),
                steps,
                fpath,
                schema,
                c,
            );
            steps.pop();
            fpath.pop();
        }
        return;
    }
    if any_list && is_list(lhs) && is_list(rhs) {
        let lt = schema.list_type(steps);
        if lt != ListType::Atomic {
            node(c, fpath);
            let l: &[Value] = lhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let r: &[Value] = rhs
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let lp = live_elements(l, &lt);
            let rp = live_elements(r, &lt);
            let index = |pes: &[PathElement]| -> HashMap<String, usize> {
                pes.iter()
                    .enumerate()
                    .map(|(i, pe)| (pe.encode(), i))
                    .collect()
            };
            let (lidx, ridx) = (index(&lp), index(&rp));
            let mut order: Vec<&PathElement> = lp.iter().collect();
            order.extend(rp.iter().filter(|pe| !lidx.contains_key(&pe.encode())));
            for pe in order {
                let key = pe.encode();
                let li = lidx.get(&key).map(|&i| &l[i]);
                let ri = ridx.get(&key).map(|&i| &r[i]);
                steps.push(Step::Item);
                fpath.push(pe.clone());
                if matches!(lt, ListType::Map(_)) {
                    compare_walk(li, ri, steps, fpath, schema, c);
                } else {
                    leaf(li, ri, fpath, c);
                }
                steps.pop();
                fpath.pop();
            }
            return;
        }
    }
    leaf(lhs, rhs, fpath, c);
}

fn leaf(lhs: Option<&Value>, rhs: Option<&Value>, fpath: &[PathElement], c: &mut Comparison) {
    match (lhs, rhs) {
        (None, None) => {}
        (None, Some(_)) => c.added.insert(fpath),
        (Some(_), None) => c.removed.insert(fpath),
        (Some(a), Some(b)) => {
            if !super::value::json_eq(a, b) {
                c.modified.insert(fpath);
            }
        }
    }
}

/// Removes the paths of `set` from `v`. Maps and lists that become empty because of the
/// removal go too: built-in types drop empty optional fields when they are stored, and custom
/// resources are kept in the same shape.
pub(crate) fn remove(v: &Value, set: &FieldSet, schema: &dyn Schema) -> Value {
    remove_walk(v, set, &mut Vec::new(), schema)
}

fn remove_walk<'a>(
    v: &'a Value,
    set: &FieldSet,
    steps: &mut Vec<Step<'a>>,
    schema: &dyn Schema,
) -> Value {
    fn emptied(before: &Value, after: &Value) -> bool {
        let len = |v: &Value| match v {
            Value::Object(m) => Some(m.len()),
            Value::Array(a) => Some(a.len()),
            _ => None,
        };
        len(after) == Some(0) && len(before).is_some_and(|n| n > 0)
    }
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        steps.push(Step::Field(k));
                        let nv = remove_walk(child, sub, steps, schema);
                        steps.pop();
                        if !emptied(child, &nv) {
                            out.insert(k.clone(), nv);
                        }
                    }
                    None => {
                        out.insert(k.clone(), child.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let lt = schema.list_type(steps);
            if lt == ListType::Atomic {
                return v.clone();
            }
            let pes = live_elements(items, &lt);
            let mut out = Vec::with_capacity(items.len());
            for (item, pe) in items.iter().zip(&pes) {
                if set.has_member(pe) {
                    continue;
                }
                match set.child(pe) {
                    Some(sub) => {
                        steps.push(Step::Item);
                        out.push(remove_walk(item, sub, steps, schema));
                        steps.pop();
                    }
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

/// The value at a path of field names, for resetting ignored subtrees.
pub(crate) fn get_path<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Sets (or with `None`, removes) the value at a path of field names, creating parents.
pub(crate) fn set_path(v: &mut Value, path: &[String], new: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        let Value::Object(m) = cur else {
            return;
        };
        if new.is_none() && !m.contains_key(k) {
            return;
        }
        cur = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(m) = cur {
        match new {
            Some(n) => {
                m.insert(last.clone(), n);
            }
            None => {
                m.shift_remove(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deploy_schema, f};
    use super::*;
    use serde_json::json;

    #[test]
    fn field_set_of_a_deployment_config() {
        let s = deploy_schema();
        let set = to_field_set(
            &json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                    {"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}}),
            &s,
        )
        .expect("valid");
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                "f:metadata": {"f:labels": {"f:a": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
    }

    #[test]
    fn config_errors_name_the_list() {
        let s = deploy_schema();
        let e = to_field_set(
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            &s,
        )
        .expect_err("missing key");
        assert!(e.message().starts_with(".spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\""), "{e}");
        let e = to_field_set(
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}}),
            &s,
        )
        .expect_err("duplicate");
        assert_eq!(
            e.message(),
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        );
    }

    #[test]
    fn merge_orders_items_like_the_real_server() {
        let s = deploy_schema();
        let c = |names: &[&str]| {
            json!({"spec": {"template": {"spec": {"containers":
            names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}}}})
        };
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| i["name"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let m = merge(&c(&["a", "b", "c"]), &c(&["b", "d"]), &s).expect("merge");
        assert_eq!(names(&m), ["a", "b", "c", "d"]);
        let m = merge(&c(&["a", "b", "c"]), &c(&["c", "a"]), &s).expect("merge");
        assert_eq!(names(&m), ["b", "c", "a"]);
        let m = merge(&c(&["a", "b"]), &c(&["x", "b"]), &s).expect("merge");
        assert_eq!(names(&m), ["a", "x", "b"]);
    }

    #[test]
    fn compare_and_remove() {
        let s = deploy_schema();
        let a = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let b = json!({"spec": {"replicas": 2, "paused": true, "template": {"spec": {"containers": [{"name": "b", "image": "1"}]}}}});
        let cmp = compare(&a, &b, &s);
        let ka = PathElement::key(vec![("name".into(), json!("a"))]);
        let kb = PathElement::key(vec![("name".into(), json!("b"))]);
        let c = |k: &PathElement, rest: &[&str]| {
            let mut p = vec![
                f("spec"),
                f("template"),
                f("spec"),
                f("containers"),
                k.clone(),
            ];
            p.extend(rest.iter().map(|r| f(r)));
            p
        };
        assert!(cmp.modified.has(&[f("spec"), f("replicas")]));
        assert!(cmp.added.has(&[f("spec"), f("paused")]));
        assert!(cmp.removed.has(&c(&ka, &[])) && cmp.removed.has(&c(&ka, &["image"])));
        assert!(cmp.added.has(&c(&kb, &[])));
        let mut gone = FieldSet::new();
        gone.insert(&c(&kb, &[]));
        gone.insert(&[f("spec"), f("paused")]);
        let r = remove(&b, &gone, &s);
        // Maps and lists emptied by the removal go with it.
        assert_eq!(r, json!({"spec": {"replicas": 2}}));
    }
}
