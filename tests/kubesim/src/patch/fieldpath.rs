//! Field paths and field sets as structured-merge-diff models them, with the `FieldsV1`
//! encoding of `metadata.managedFields` (`f:`, `k:{...}`, `v:`, `i:`, `.`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use super::value::{go_string, normalize, value_cmp};

/// One step of a field path.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A field of an object or a key of a map: `f:name`, printed `.name`.
    Field(String),
    /// An item of an associative list by its key fields, sorted by name: `k:{"name":"x"}`,
    /// printed `[name="x"]`.
    Key(Vec<(String, Value)>),
    /// An item of a set by its value: `v:"x"`, printed `[="x"]`.
    Value(Value),
    /// An item of a list by position: `i:0`, printed `[0]`. Only read, never produced.
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// A key element from (name, value) pairs; sorts them and normalises numbers.
    pub fn key(fields: Vec<(String, Value)>) -> Self {
        let mut fields: Vec<(String, Value)> = fields
            .into_iter()
            .map(|(k, v)| (k, normalize(&v)))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        PathElement::Key(fields)
    }

    /// A set element, with numbers normalised.
    pub fn value(v: &Value) -> Self {
        PathElement::Value(normalize(v))
    }

    /// The `FieldsV1` object key for this element.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let obj: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(obj))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` object key (`.` is not an element and gives `None`).
    pub fn decode(s: &str) -> Option<Self> {
        let (tag, rest) = s.split_once(':')?;
        match tag {
            "f" => Some(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(m) => Some(PathElement::key(m.into_iter().collect())),
                _ => None,
            },
            "v" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|v| PathElement::value(&v)),
            "i" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b) {
                    let c = an.cmp(bn).then_with(|| value_cmp(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => value_cmp(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", go_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", go_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object root, printed as the real server prints it in conflicts:
/// `.spec.template.spec.containers[name="calico-node"].image`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<PathElement>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of field paths, stored as a tree: the paths owned at this level (`members`) and the
/// subtrees below (`children`). A path can be both, which `FieldsV1` writes as `".": {}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// An empty set.
    pub fn new() -> Self {
        FieldSet::default()
    }

    /// True when the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds a path (an empty path is ignored: the root is never owned).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// True when exactly this path is in the set.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The subset below `pe`, with paths relative to it.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// True when `pe` is a member here.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Paths of this set that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !rest.is_empty() {
                children.insert(pe.clone(), rest);
            }
        }
        FieldSet { members, children }
    }

    /// True when some path is in both sets (what `intersection` would find, without building
    /// it).
    pub fn overlaps(&self, other: &FieldSet) -> bool {
        self.members.iter().any(|m| other.members.contains(m))
            || self
                .children
                .iter()
                .any(|(pe, c)| other.children.get(pe).is_some_and(|o| c.overlaps(o)))
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = c.intersection(o);
                if !both.is_empty() {
                    children.insert(pe.clone(), both);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Removes a path and everything below it.
    pub fn remove_prefix(&mut self, path: &[PathElement]) {
        match path {
            [] => *self = FieldSet::default(),
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove_prefix(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Every path of the set, in the order structured-merge-diff iterates: the members of a
    /// level, then each subtree.
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<FieldPath>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(FieldPath(p));
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set, keys in the real server's order.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode_contents(false))
    }

    fn encode_contents(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            let value = match self.children.get(pe) {
                Some(c) => Value::Object(c.encode_contents(self.members.contains(pe))),
                None => Value::Object(Map::new()),
            };
            out.insert(pe.encode(), value);
        }
        out
    }

    /// Parses a `fieldsV1` object; `None` for anything that is not valid `FieldsV1`.
    pub fn from_fields_v1(v: &Value) -> Option<FieldSet> {
        let obj = v.as_object()?;
        let mut set = FieldSet::default();
        for (k, child) in obj {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let child_obj = child.as_object()?;
            if child_obj.is_empty() || child_obj.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let sub = FieldSet::from_fields_v1(child)?;
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    #[test]
    fn fields_v1_round_trip_keeps_members_and_order() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"calico-node\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}},
                "f:ports": {"k:{\"port\":53,\"protocol\":\"UDP\"}": {".": {}, "f:port": {}}},
                "f:replicas": {}
            },
            "f:metadata2": {"f:finalizers": {".": {}, "v:\"a/b\"": {}}}
        });
        let set = FieldSet::from_fields_v1(&v).expect("valid FieldsV1");
        assert!(set.has(&[f("spec"), f("replicas")]));
        assert!(set.has(&[f("metadata"), f("labels")]));
        assert!(!set.has(&[f("metadata")]));
        let name = PathElement::key(vec![("name".into(), json!("calico-node"))]);
        let image = [
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            name.clone(),
            f("image"),
        ];
        assert!(set.has(&image));
        assert_eq!(
            FieldPath(image.to_vec()).to_string(),
            ".spec.template.spec.containers[name=\"calico-node\"].image"
        );
        let back = set.to_fields_v1();
        // Same content, keys sorted as the real server writes them.
        assert_eq!(FieldSet::from_fields_v1(&back), Some(set.clone()));
        let text = back.to_string();
        assert!(
            text.starts_with("{\"f:metadata\":{\"f:labels\":{\".\":{},\"f:app\":{}}}"),
            "{text}"
        );
        assert!(
            text.contains("\"k:{\\\"port\\\":53,\\\"protocol\\\":\\\"UDP\\\"}\""),
            "{text}"
        );
    }

    #[test]
    fn overlaps_agrees_with_intersection() {
        let set = |paths: &[&[&str]]| {
            let mut s = FieldSet::new();
            for p in paths {
                s.insert(&p.iter().map(|x| f(x)).collect::<Vec<_>>());
            }
            s
        };
        let status = set(&[&["status", "phase"], &["status", "podIP"]]);
        let cases = [
            (set(&[&["status", "phase"]]), true),
            (set(&[&["status", "hostIP"]]), false),
            (set(&[&["status"]]), false),
            (set(&[&["spec", "phase"]]), false),
            (FieldSet::new(), false),
        ];
        for (other, want) in cases {
            assert_eq!(status.overlaps(&other), want, "{other:?}");
            assert_eq!(other.overlaps(&status), want, "{other:?}");
            assert_eq!(!status.intersection(&other).is_empty(), want, "{other:?}");
        }
    }

    #[test]
    fn key_fields_are_sorted_and_numbers_normalised() {
        let a = PathElement::key(vec![
            ("protocol".into(), json!("TCP")),
            ("containerPort".into(), json!(80.0)),
        ]);
        assert_eq!(a.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(a.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(PathElement::decode(&a.encode()), Some(a));
        assert_eq!(PathElement::value(&json!("x")).to_string(), "[=\"x\"]");
        assert!(PathElement::decode("z:1").is_none());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_none());
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("data")]);
        assert!(a.intersection(&b).has(&[f("spec"), f("replicas")]));
        let d = a.difference(&b);
        assert!(!d.has(&[f("spec"), f("replicas")]) && d.has(&[f("spec"), f("paused")]));
        let u = a.union(&b);
        assert_eq!(u.paths().len(), 3);
        assert_eq!(u.paths()[0].to_string(), ".data");
        let mut r = u.clone();
        r.remove_prefix(&[f("spec")]);
        assert_eq!(r.paths().len(), 1);
        assert!(a.difference(&a).is_empty());
    }
}
