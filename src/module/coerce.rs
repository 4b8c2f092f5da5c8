//! Ansible's lenient type coercion.
//!
//! Values do not always arrive with the type the task author meant: ad-hoc `k=v` arguments are all
//! strings, ansible-core 2.16 renders templated values as strings, and YAML turns `yes` into a
//! boolean. `AnsibleModule` coerces them (module_utils/common/validation.py, `check_type_*`); the
//! rules here are the same, so a task behaves alike whether it calls a Python module or ours.

use serde_json::{Map, Value};

use super::spec::ParamType;

/// Ansible's `BOOLEANS_TRUE`, compared after lower-casing and trimming.
const TRUE_WORDS: &[&str] = &["y", "yes", "on", "1", "true", "t"];
/// Ansible's `BOOLEANS_FALSE`.
const FALSE_WORDS: &[&str] = &["n", "no", "off", "0", "false", "f"];

/// The JSON type name used in error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Coerces `value` to `kind`, or explains in one line why it cannot be.
pub fn coerce(value: &Value, kind: ParamType) -> Result<Value, String> {
    match kind {
        ParamType::Raw => Ok(value.clone()),
        ParamType::Str => to_str(value).map(Value::String),
        ParamType::Path => to_str(value).map(|s| Value::String(expand_path(&s))),
        ParamType::Bool => to_bool(value).map(Value::Bool),
        ParamType::Int => to_int(value).map(Value::from),
        ParamType::Float => to_float(value).map(Value::from),
        ParamType::List => to_list(value).map(Value::Array),
        ParamType::Dict => to_dict(value).map(Value::Object),
    }
}

fn to_str(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("a {} cannot be used as a string", type_name(other))),
    }
}

fn to_bool(value: &Value) -> Result<bool, String> {
    let word = match value {
        Value::Bool(b) => return Ok(*b),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => return Err(format!("a {} is not a boolean", type_name(other))),
    };
    let word = word.strip_suffix(".0").unwrap_or(&word);
    if TRUE_WORDS.contains(&word) {
        Ok(true)
    } else if FALSE_WORDS.contains(&word) {
        Ok(false)
    } else {
        Err(format!(
            "the value '{word}' is not a valid boolean; valid booleans include: yes, no, true, false, on, off, 1, 0"
        ))
    }
}

fn to_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                    _ => Err(format!("{n} is not a whole number")),
                }
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("'{s}' is not a whole number")),
        other => Err(format!("a {} is not a whole number", type_name(other))),
    }
}

fn to_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("'{s}' is not a number")),
        other => Err(format!("a {} is not a number", type_name(other))),
    }
}

fn to_list(value: &Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(a) => Ok(a.clone()),
        // Ansible splits on commas without trimming; trimming is kinder and loses nothing here.
        Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(s
            .split(',')
            .map(|p| Value::String(p.trim().to_string()))
            .collect()),
        Value::Number(n) => Ok(vec![Value::String(n.to_string())]),
        other => Err(format!("a {} cannot be used as a list", type_name(other))),
    }
}

fn to_dict(value: &Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(m) => Ok(m.clone()),
        Value::String(s) if s.trim().is_empty() => Ok(Map::new()),
        Value::String(s) if s.trim_start().starts_with('{') => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("'{s}' is not a JSON object")),
        },
        Value::String(s) => {
            let mut m = Map::new();
            for pair in s.split(',') {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(format!("'{s}' is neither a JSON object nor k=v pairs"));
                };
                m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            Ok(m)
        }
        other => Err(format!(
            "a {} cannot be used as a dictionary",
            type_name(other)
        )),
    }
}

/// Expands `~` and `$VAR`/`${VAR}` the way Ansible's `path` type does.
pub fn expand_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match std::env::var(name) {
            Ok(v) if !name.is_empty() => out.push_str(&v),
            // Unknown variables stay as written, as os.path.expandvars leaves them.
            _ => out.push_str(&rest[i..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    if (out == "~" || out.starts_with("~/"))
        && let Some(home) = std::env::var_os("HOME")
    {
        return format!("{}{}", home.to_string_lossy(), &out[1..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_like_ansible() {
        for t in [
            json!(true),
            json!("yes"),
            json!("on"),
            json!("1"),
            json!(1),
            json!("TRUE"),
            json!(" y "),
        ] {
            assert_eq!(coerce(&t, ParamType::Bool).unwrap(), json!(true), "{t}");
        }
        for f in [
            json!(false),
            json!("no"),
            json!("off"),
            json!("0"),
            json!(0),
            json!("False"),
            json!("n"),
        ] {
            assert_eq!(coerce(&f, ParamType::Bool).unwrap(), json!(false), "{f}");
        }
        let e = coerce(&json!("maybe"), ParamType::Bool).unwrap_err();
        assert!(e.contains("'maybe' is not a valid boolean"), "{e}");
        assert!(coerce(&json!([1]), ParamType::Bool).is_err());
    }

    #[test]
    fn numbers_given_as_strings() {
        assert_eq!(coerce(&json!("300"), ParamType::Int).unwrap(), json!(300));
        assert_eq!(coerce(&json!(" 42 "), ParamType::Int).unwrap(), json!(42));
        assert_eq!(coerce(&json!(5.0), ParamType::Int).unwrap(), json!(5));
        assert!(
            coerce(&json!("5m"), ParamType::Int)
                .unwrap_err()
                .contains("'5m' is not a whole number")
        );
        assert!(coerce(&json!(2.5), ParamType::Int).is_err());
        assert_eq!(coerce(&json!("2.5"), ParamType::Float).unwrap(), json!(2.5));
    }

    #[test]
    fn lists_from_comma_separated_strings() {
        assert_eq!(
            coerce(&json!("a, b,c"), ParamType::List).unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(coerce(&json!(""), ParamType::List).unwrap(), json!([]));
        assert_eq!(
            coerce(&json!(["x"]), ParamType::List).unwrap(),
            json!(["x"])
        );
        assert!(coerce(&json!({"a": 1}), ParamType::List).is_err());
    }

    #[test]
    fn dicts_from_json_or_pairs() {
        assert_eq!(
            coerce(&json!("{\"a\": 1}"), ParamType::Dict).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            coerce(&json!("a=1, b=two"), ParamType::Dict).unwrap(),
            json!({"a": "1", "b": "two"})
        );
        assert!(coerce(&json!("nonsense"), ParamType::Dict).is_err());
        assert!(coerce(&json!([1]), ParamType::Dict).is_err());
    }

    #[test]
    fn strings_from_scalars_only() {
        assert_eq!(coerce(&json!(5), ParamType::Str).unwrap(), json!("5"));
        assert_eq!(coerce(&json!(true), ParamType::Str).unwrap(), json!("true"));
        assert!(coerce(&json!(["a"]), ParamType::Str).is_err());
    }

    #[test]
    fn paths_expand_home_and_variables() {
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(expand_path("~/x"), format!("{home}/x"));
        assert_eq!(expand_path("$HOME/y"), format!("{home}/y"));
        assert_eq!(expand_path("${HOME}/z"), format!("{home}/z"));
        assert_eq!(
            expand_path("/a/$K8S_CALICO_SURELY_UNSET/b"),
            "/a/$K8S_CALICO_SURELY_UNSET/b"
        );
        assert_eq!(expand_path("/plain"), "/plain");
    }
}
