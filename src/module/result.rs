//! What a module returns, and how it is printed.

use serde_json::{Map, Value};

/// A successful run.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Whether anything on a cluster or disk changed (or, in check mode, would change).
    pub changed: bool,
    /// A one-line summary for humans.
    pub msg: String,
    /// Facts set on the host, e.g. `{"calico_matrix": {...}}`.
    pub facts: Map<String, Value>,
    /// Before/after pairs shown under `--diff`.
    pub diff: Vec<Value>,
    /// Other top-level keys of the result.
    pub extra: Map<String, Value>,
}

impl Outcome {
    /// An unchanged result with a message.
    pub fn ok(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            ..Self::default()
        }
    }

    /// Sets `changed`.
    pub fn changed(mut self, changed: bool) -> Self {
        self.changed = changed;
        self
    }

    /// Adds a fact.
    pub fn fact(mut self, name: &str, value: Value) -> Self {
        self.facts.insert(name.to_string(), value);
        self
    }
}

/// A failed run: a one-line message, plus anything worth returning alongside it (partial facts,
/// `rolled_back`, the nodes that were not ready...).
#[derive(Debug, Default, Clone)]
pub struct Failure {
    /// What went wrong, what was expected, and what to do, on one line.
    pub msg: String,
    /// Facts that are still true and useful after the failure.
    pub facts: Map<String, Value>,
    /// Whether something changed before the failure.
    pub changed: bool,
    /// Other top-level keys of the result.
    pub extra: Map<String, Value>,
}

impl Failure {
    /// A failure with only a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: one_line(&msg.into()),
            ..Self::default()
        }
    }

    /// Adds a fact.
    pub fn fact(mut self, name: &str, value: Value) -> Self {
        self.facts.insert(name.to_string(), value);
        self
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // "context: cause: root cause", the shape users know from kubectl.
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let mut parts: Vec<String> = Vec::new();
        for c in chain {
            if !parts.iter().any(|p| p.contains(&c)) {
                parts.push(c);
            }
        }
        Failure::new(parts.join(": "))
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure::new(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Self {
        Failure::new(msg)
    }
}

/// Folds a message onto one line: Ansible shows `msg` in a single `FAILED!` line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str(" | ");
        }
        out.push_str(line);
    }
    out
}

/// Replaces every occurrence of a secret in every string of `value`, keys included, with the
/// placeholder Ansible uses, as `AnsibleModule`'s `remove_values` does.
pub fn scrub(value: &mut Value, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "********");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (mut k, mut v) in old {
                for secret in secrets {
                    if k.contains(secret.as_str()) {
                        k = k.replace(secret.as_str(), "********");
                    }
                }
                scrub(&mut v, secrets);
                m.insert(k, v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anyhow_chains_become_one_line() {
        let e = anyhow::anyhow!("connection refused\nretry later")
            .context("reading /version from https://10.0.0.1:6443");
        let f = Failure::from(e);
        assert_eq!(
            f.msg,
            "reading /version from https://10.0.0.1:6443: connection refused | retry later"
        );
    }

    #[test]
    fn secrets_are_scrubbed_everywhere() {
        let mut v = json!({"msg": "token abc123 rejected", "abc123": ["x abc123"], "n": 1});
        scrub(&mut v, &["abc123".to_string()]);
        assert_eq!(
            v,
            json!({"msg": "token ******** rejected", "********": ["x ********"], "n": 1})
        );
    }
}
