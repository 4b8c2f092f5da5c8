//! Value helpers shared by the algorithms: Go-like equality and ordering of JSON values.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// Equality as the Go implementations see decoded JSON: every number is a float64 there, so
/// `1` and `1.0` are the same value, which serde_json's `PartialEq` does not agree with.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn number_cmp(x: &Number, y: &Number) -> Ordering {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a.cmp(&b);
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a.cmp(&b);
    }
    let a = x.as_f64().unwrap_or(f64::NAN);
    let b = y.as_f64().unwrap_or(f64::NAN);
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// A total order over values, the one structured-merge-diff uses to sort field paths:
/// numbers < strings < booleans < lists < maps < null.
pub(crate) fn value_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = value_cmp(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xk: Vec<_> = x.iter().collect();
            let mut yk: Vec<_> = y.iter().collect();
            xk.sort_by(|p, q| p.0.cmp(q.0));
            yk.sort_by(|p, q| p.0.cmp(q.0));
            for ((ka, va), (kb, vb)) in xk.iter().zip(&yk) {
                let c = ka.cmp(kb).then_with(|| value_cmp(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xk.len().cmp(&yk.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Integral floats become integers, so that path elements built from `80` and `80.0` are equal
/// and order consistently.
pub(crate) fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        _ => v.clone(),
    }
}

/// Renders a value as structured-merge-diff prints it inside a path (`"x"`, `80`, `true`).
pub(crate) fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_string).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => {
            let mut parts: Vec<(String, String)> =
                m.iter().map(|(k, v)| (k.clone(), go_string(v))).collect();
            parts.sort();
            let parts: Vec<String> = parts.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", parts.join(";"))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_like_go_floats() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!({"a": [1, 2]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert_eq!(normalize(&json!(80.0)), json!(80));
    }

    #[test]
    fn order_is_numbers_strings_bools() {
        assert_eq!(value_cmp(&json!(5), &json!("a")), Ordering::Less);
        assert_eq!(value_cmp(&json!("b"), &json!("a")), Ordering::Greater);
        assert_eq!(value_cmp(&json!(true), &json!("z")), Ordering::Greater);
        assert_eq!(go_string(&json!("calico-node")), "\"calico-node\"");
    }
}
