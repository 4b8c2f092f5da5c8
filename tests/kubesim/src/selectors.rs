//! Label and field selectors with the grammar and supported fields of the real server.

use crate::pointer::At;
use serde_json::Value;

use crate::error::ApiError;

/// One label requirement.
#[derive(Clone, Debug, PartialEq)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed `labelSelector`: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

fn parse_error(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (in label selector {sel:?})"
    ))
}

fn valid_label_key(k: &str) -> bool {
    let name = k.rsplit('/').next().unwrap_or(k);
    !name.is_empty()
        && name.len() <= 63
        && k.matches('/').count() <= 1
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

impl LabelSelector {
    /// Parses the query-string form (`app=x,tier!=db,env in (a,b),!legacy`).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for raw in split_top_level(s) {
            let r = raw.trim();
            if r.is_empty() {
                return Err(parse_error(s, "found ',', expected: identifier"));
            }
            requirements.push(Self::parse_one(s, r)?);
        }
        Ok(Self { requirements })
    }

    fn parse_one(all: &str, r: &str) -> Result<LabelRequirement, ApiError> {
        let key_ok = |k: &str| -> Result<String, ApiError> {
            let k = k.trim();
            if valid_label_key(k) {
                Ok(k.to_string())
            } else {
                Err(parse_error(all, &format!("invalid label key {k:?}")))
            }
        };
        let value_ok = |v: &str| -> Result<String, ApiError> {
            let v = v.trim();
            if valid_label_value(v) {
                Ok(v.to_string())
            } else {
                Err(parse_error(all, &format!("invalid label value: {v:?}")))
            }
        };
        if let Some(k) = r.strip_prefix('!') {
            return Ok(LabelRequirement::NotExists(key_ok(k)?));
        }
        if let Some((k, v)) = r.split_once("!=") {
            return Ok(LabelRequirement::NotEquals(key_ok(k)?, value_ok(v)?));
        }
        if let Some((k, v)) = r.split_once("==") {
            return Ok(LabelRequirement::Equals(key_ok(k)?, value_ok(v)?));
        }
        if let Some((k, v)) = r.split_once('=') {
            return Ok(LabelRequirement::Equals(key_ok(k)?, value_ok(v)?));
        }
        for (op, gt) in [('>', true), ('<', false)] {
            if let Some((k, v)) = r.split_once(op) {
                let n: i64 = v.trim().parse().map_err(|_| {
                    parse_error(
                        all,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                })?;
                let k = key_ok(k)?;
                return Ok(if gt {
                    LabelRequirement::GreaterThan(k, n)
                } else {
                    LabelRequirement::LessThan(k, n)
                });
            }
        }
        let words: Vec<&str> = r.splitn(2, char::is_whitespace).collect();
        if words.len() == 2 {
            let key = key_ok(words[0])?;
            let rest = words[1].trim_start();
            let (op, set) = if let Some(x) = rest.strip_prefix("notin") {
                ("notin", x)
            } else if let Some(x) = rest.strip_prefix("in") {
                ("in", x)
            } else {
                return Err(parse_error(
                    all,
                    &format!("found '{rest}', expected: in, notin, =, ==, !=, gt, lt"),
                ));
            };
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| parse_error(all, "found '', expected: '('"))?;
            let values = inner
                .split(',')
                .map(value_ok)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if op == "in" {
                LabelRequirement::In(key, values)
            } else {
                LabelRequirement::NotIn(key, values)
            });
        }
        Ok(LabelRequirement::Exists(key_ok(r)?))
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels` and `matchExpressions`),
    /// as workloads and PDBs carry it.
    pub fn from_object(sel: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                requirements.push(LabelRequirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .ok_or("matchExpressions[].key missing")?
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let op = e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            requirements.push(match op {
                "In" => LabelRequirement::In(key, values),
                "NotIn" => LabelRequirement::NotIn(key, values),
                "Exists" => LabelRequirement::Exists(key),
                "DoesNotExist" => LabelRequirement::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Tests a `metadata.labels` map (or `None` when the object has no labels).
    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelRequirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }

    /// Tests an object's labels.
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.at("/metadata/labels").and_then(Value::as_object))
    }
}

/// One field requirement: a dotted path and an expected or refused value.
#[derive(Clone, Debug, PartialEq)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed `fieldSelector`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Field selector paths the real server supports beyond `metadata.name`/`metadata.namespace`.
fn supported_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "events") | ("events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=y` and checks the fields are supported for the
    /// resource, answering 400 like the real server otherwise.
    pub fn parse(s: &str, group: &str, resource: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for raw in s.split(',') {
            let r = raw.trim();
            let (field, value, negated) = if let Some((f, v)) = r.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = r.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = r.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{r}'"
                )));
            };
            let field = field.trim();
            let known = field == "metadata.name"
                || field == "metadata.namespace"
                || supported_fields(group, resource).contains(&field);
            if !known {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Tests an object; absent fields compare as the empty string, as the real server's field
    /// sets do (an unscheduled pod has `spec.nodeName=""`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let mut cur = Some(obj);
            for part in r.field.split('.') {
                cur = cur.and_then(|v| v.get(part));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                // `source` of core events is an object; the server selects on its component.
                Some(Value::Object(m)) => m
                    .get("component")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ if r.field == "spec.unschedulable" || r.field == "spec.hostNetwork" => {
                    "false".to_string()
                }
                _ => String::new(),
            };
            (actual == r.value) != r.negated
        })
    }

    /// The value required for `metadata.name`, if the selector pins it (an exact-name watch).
    pub fn pinned_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negated)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn every_label_operator() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app=web, tier in (front)", true),
            ("n>4", true),
            ("n<4", false),
            ("missing notin (x)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app=we b").is_err());
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", "", "pods").unwrap();
        assert!(f.matches(&o));
        assert!(
            !FieldSelector::parse("metadata.name==b", "", "pods")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.nodeName=n1", "", "configmaps").is_err());
    }
}
