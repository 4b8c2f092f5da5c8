//! JSON Pointer lookups without allocation.
//!
//! `serde_json::Value::pointer` allocates two strings per path segment (it unescapes `~1` and
//! `~0` with `str::replace` whether or not the segment has them). Controllers, kubelets and the
//! network model read a few dozen fields of every object on every pass, so at a few hundred
//! nodes those allocations were most of kubesim's time. [`At::at`] answers exactly as
//! `pointer` does and allocates only for a segment that contains `~`.

use serde_json::Value;

/// An allocation-free `Value::pointer`.
pub trait At {
    /// The value at the RFC 6901 JSON Pointer `ptr` (`""` is the whole value), as
    /// `serde_json::Value::pointer` answers.
    ///
    /// ```
    /// use kubesim::pointer::At;
    /// let pod = serde_json::json!({"metadata": {"annotations": {"a/b": "x"}}, "l": [1, 2]});
    /// assert_eq!(pod.at("/metadata/annotations/a~1b"), Some(&serde_json::json!("x")));
    /// assert_eq!(pod.at("/l/1"), Some(&serde_json::json!(2)));
    /// assert_eq!(pod.at("/l/01"), None);
    /// ```
    fn at(&self, ptr: &str) -> Option<&Value>;
}

impl At for Value {
    fn at(&self, ptr: &str) -> Option<&Value> {
        if ptr.is_empty() {
            return Some(self);
        }
        let rest = ptr.strip_prefix('/')?;
        let mut target = self;
        for token in rest.split('/') {
            target = if token.contains('~') {
                step(target, &token.replace("~1", "/").replace("~0", "~"))?
            } else {
                step(target, token)?
            };
        }
        Some(target)
    }
}

fn step<'v>(target: &'v Value, token: &str) -> Option<&'v Value> {
    match target {
        Value::Object(map) => map.get(token),
        Value::Array(list) => array_index(token).and_then(|i| list.get(i)),
        _ => None,
    }
}

/// An array index as RFC 6901 spells it: digits, no sign, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::At;
    use serde_json::json;

    #[test]
    fn answers_as_serde_json_pointer() {
        let v = json!({
            "a": {"b/c": 1, "d~e": [10, {"f": "g"}], "": {"x": true}},
            "l": [0, 1, 2],
            "s": "str"
        });
        for ptr in [
            "",
            "/",
            "/a",
            "/a/b~1c",
            "/a/d~0e",
            "/a/d~0e/1/f",
            "/a/d~0e/2",
            "/a/",
            "/a//x",
            "/l/0",
            "/l/00",
            "/l/+1",
            "/l/-",
            "/l/3",
            "/s/0",
            "a",
            "/missing",
            "/a/b/c",
            "/a/d~1e",
        ] {
            assert_eq!(v.at(ptr), v.pointer(ptr), "{ptr}");
        }
    }
}
