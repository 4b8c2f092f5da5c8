//! Kubernetes label selectors, compiled once so that matching is a few map look-ups.
//!
//! Semantics follow the `LabelSelector` API reference (meta/v1): `matchLabels` and
//! `matchExpressions` are ANDed; an empty selector matches everything; operators are `In`,
//! `NotIn`, `Exists`, `DoesNotExist`; `NotIn` and `DoesNotExist` match objects without the key.

use crate::pointer::At;
use std::collections::BTreeMap;

use serde_json::Value;

/// Labels of one object.
pub type Labels = BTreeMap<String, String>;

/// The labels in `metadata.labels` of a Kubernetes object (non-string values are skipped,
/// since the API server would have rejected them).
pub fn labels_of(obj: &Value) -> Labels {
    string_map(obj.at("/metadata/labels"))
}

/// A JSON object of strings as a map; anything else is empty.
pub fn string_map(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A compiled label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    reqs: Vec<Req>,
    /// Set for a selector that cannot match (invalid input), so errors fail closed.
    never: bool,
}

impl Selector {
    /// Matches every object.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Matches no object.
    pub fn nothing() -> Selector {
        Selector {
            reqs: Vec::new(),
            never: true,
        }
    }

    /// Compiles a `metav1.LabelSelector` (`{matchLabels, matchExpressions}`); `null` or `{}`
    /// select everything. An unknown operator or a malformed expression is an error: the API
    /// server would have refused such an object, so the caller decides how to fail.
    pub fn from_label_selector(v: &Value) -> Result<Selector, String> {
        if v.is_null() {
            return Ok(Selector::everything());
        }
        let Some(obj) = v.as_object() else {
            return Err(format!("label selector is not an object: {v}"));
        };
        let mut reqs = Vec::new();
        if let Some(ml) = obj.get("matchLabels").filter(|m| !m.is_null()) {
            let Some(ml) = ml.as_object() else {
                return Err("matchLabels is not an object".into());
            };
            for (k, val) in ml {
                let Some(s) = val.as_str() else {
                    return Err(format!("matchLabels.{k} is not a string"));
                };
                reqs.push(Req::Eq(k.clone(), s.to_string()));
            }
        }
        if let Some(exprs) = obj.get("matchExpressions").filter(|m| !m.is_null()) {
            let Some(exprs) = exprs.as_array() else {
                return Err("matchExpressions is not a list".into());
            };
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("matchExpressions entry without key")?;
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .ok_or("matchExpressions entry without operator")?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let key = key.to_string();
                reqs.push(match op {
                    // The API requires a non-empty values list for In/NotIn; an empty In
                    // therefore never matches, which is also what the set arithmetic gives.
                    "In" => Req::In(key, values),
                    "NotIn" => Req::NotIn(key, values),
                    "Exists" => Req::Exists(key),
                    "DoesNotExist" => Req::DoesNotExist(key),
                    other => return Err(format!("unknown selector operator {other:?}")),
                });
            }
        }
        Ok(Selector { reqs, never: false })
    }

    /// Compiles an equality map such as a Service's `spec.selector`.
    pub fn from_map(map: &Labels) -> Selector {
        Selector {
            reqs: map
                .iter()
                .map(|(k, v)| Req::Eq(k.clone(), v.clone()))
                .collect(),
            never: false,
        }
    }

    /// Whether it matches everything (an empty selector).
    pub fn is_everything(&self) -> bool {
        !self.never && self.reqs.is_empty()
    }

    /// The first `key=value` requirement, used to narrow candidates through a label index.
    pub fn first_equality(&self) -> Option<(&str, &str)> {
        self.reqs.iter().find_map(|r| match r {
            Req::Eq(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        if self.never {
            return false;
        }
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_and_null_select_everything() {
        assert!(
            Selector::from_label_selector(&json!({}))
                .unwrap()
                .matches(&l(&[]))
        );
        assert!(
            Selector::from_label_selector(&Value::Null)
                .unwrap()
                .matches(&l(&[("a", "b")]))
        );
        assert!(!Selector::nothing().matches(&l(&[])));
    }

    #[test]
    fn operators() {
        let s = Selector::from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("tier", "a"), ("team", "x")])));
        assert!(s.matches(&l(&[
            ("app", "web"),
            ("tier", "b"),
            ("team", "x"),
            ("env", "dev")
        ])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "c"), ("team", "x")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&l(&[("app", "db"), ("tier", "a"), ("team", "x")])));
        assert_eq!(s.first_equality(), Some(("app", "web")));
    }

    #[test]
    fn bad_operator_is_an_error() {
        assert!(
            Selector::from_label_selector(
                &json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]})
            )
            .is_err()
        );
        assert!(Selector::from_label_selector(&json!("app=web")).is_err());
    }
}
