//! A user matrix in the seed document's `calico_version_matrix` format, checked against the
//! catalog before it is trusted.
//!
//! ```yaml
//! calico_version_matrix:
//!   "1.27": {recommended_version: v3.28.5, minimum_version: v3.25.0, operator_version: v1.34.13}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::catalog::{Catalog, seed};
use crate::version::{Minor, Version};

/// One checked override row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRow {
    /// Recommended Calico.
    pub recommended: Version,
    /// Minimum Calico.
    pub minimum: Version,
    /// Operator of the recommended release.
    pub operator: Version,
}

/// A checked override matrix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatrixOverride {
    rows: BTreeMap<Minor, OverrideRow>,
}

impl MatrixOverride {
    /// The row for a Kubernetes minor.
    pub fn row(&self, k: Minor) -> Option<&OverrideRow> {
        self.rows.get(&k)
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Parses and checks the `matrix` argument. Every problem is reported at once, one line.
    pub fn parse(
        c: &Catalog,
        raw: &Map<String, Value>,
        allow_untested: bool,
    ) -> Result<(Self, Vec<String>), String> {
        let mut rows = BTreeMap::new();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (key, value) in raw {
            let k = match key.parse::<Minor>() {
                Ok(k) if k.major == 1 && k >= c.kubernetes_oldest() => k,
                Ok(k) if k.major == 1 && k.minor < 10 => {
                    problems.push(format!(
                        "[{key}] Kubernetes {k} is not supported; YAML reads an unquoted 1.30 as 1.3: quote the keys (\"1.30\")"
                    ));
                    continue;
                }
                Ok(k) => {
                    problems.push(format!(
                        "[{key}] Kubernetes {k} is not supported; supported: {} to {}",
                        c.kubernetes_oldest(),
                        c.kubernetes_newest()
                    ));
                    continue;
                }
                Err(_) => {
                    problems.push(format!(
                        "[{key}] is not a Kubernetes minor such as \"1.27\""
                    ));
                    continue;
                }
            };
            match parse_row(c, k, value, allow_untested, &mut warnings) {
                Ok(row) => {
                    rows.insert(k, row);
                }
                Err(p) => problems.extend(p.into_iter().map(|p| format!("[{key}] {p}"))),
            }
        }
        if problems.is_empty() {
            Ok((Self { rows }, warnings))
        } else {
            Err(format!(
                "matrix is not consistent with the Calico releases: {}",
                problems.join("; ")
            ))
        }
    }
}

const FIELDS: [&str; 3] = ["recommended_version", "minimum_version", "operator_version"];

fn parse_row(
    c: &Catalog,
    k: Minor,
    value: &Value,
    allow_untested: bool,
    warnings: &mut Vec<String>,
) -> Result<OverrideRow, Vec<String>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![format!(
            "must be a mapping with {}",
            FIELDS.join(", ")
        )]);
    };
    let mut problems = Vec::new();
    for key in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(format!(
            "unknown field {key} (fields: {})",
            FIELDS.join(", ")
        ));
    }
    let field = |name: &str, problems: &mut Vec<String>| -> Option<Version> {
        match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.parse::<Version>() {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    None
                }
            },
            Some(other) => {
                problems.push(format!(
                    "{name} must be a string such as \"v3.28.5\", got {other}"
                ));
                None
            }
        }
    };
    let recommended = field("recommended_version", &mut problems);
    let minimum = field("minimum_version", &mut problems);
    let operator = field("operator_version", &mut problems);
    let Some(recommended) = recommended else {
        if !obj.contains_key("recommended_version") {
            problems.push("recommended_version is required".to_string());
        }
        return Err(problems);
    };
    let operator = match operator {
        Some(op) => {
            if let Some(why) = seed::operator_mismatch(c, &op, &recommended) {
                problems.push(why);
            }
            op
        }
        None => {
            match c.release(&recommended) {
                Some(r) => {
                    warnings.push(format!("matrix [{k}]: operator_version not given, using {} which ships {recommended}", r.operator));
                    r.operator.clone()
                }
                None => recommended.clone(),
            }
        }
    };
    if let Some(why) = seed::recommendation_problem(c, &recommended, k) {
        let untested_only = c.release(&recommended).is_some_and(|r| r.installable());
        if untested_only && allow_untested {
            warnings.push(format!(
                "matrix [{k}]: {why}: accepted because allow_untested is set"
            ));
        } else if untested_only {
            problems.push(format!(
                "recommended {why}; set allow_untested to accept it"
            ));
        } else {
            problems.push(format!("recommended {why}"));
        }
    }
    let minimum = match minimum {
        Some(m) => {
            if c.release(&m).is_none() {
                problems.push(format!("minimum Calico {m} is not in the catalog"));
            } else if m > recommended {
                problems.push(format!(
                    "minimum {m} is above the recommended {recommended}"
                ));
            } else if !c.is_tested(m.minor(), k) {
                let why = format!(
                    "minimum Calico {} is not tested on Kubernetes {k}",
                    m.minor()
                );
                if allow_untested {
                    warnings.push(format!(
                        "matrix [{k}]: {why}: accepted because allow_untested is set"
                    ));
                } else {
                    problems.push(format!("{why}; set allow_untested to accept it"));
                }
            }
            m
        }
        None => c
            .default_row(k)
            .map(|r| r.minimum.version.clone())
            .unwrap_or_else(|| recommended.clone()),
    };
    if problems.is_empty() {
        Ok(OverrideRow {
            recommended,
            minimum,
            operator,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::catalog;
    use serde_json::json;

    fn parse(v: Value, allow: bool) -> Result<(MatrixOverride, Vec<String>), String> {
        MatrixOverride::parse(catalog(), v.as_object().unwrap(), allow)
    }

    #[test]
    fn the_seed_matrix_is_refused_naming_the_right_operator() {
        let e = parse(
            json!({"1.23": {"recommended_version": "v3.24.6", "minimum_version": "v3.22.0", "operator_version": "v1.30.9"}}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("[1.23] operator v1.30.9 ships Calico v3.26.4; Calico v3.24.6 ships with operator v1.28.15"), "{e}");
        assert!(e.contains("must not be installed"), "{e}");
    }

    #[test]
    fn a_consistent_override_is_accepted() {
        let (m, w) = parse(
            json!({"1.27": {"recommended_version": "v3.27.5", "minimum_version": "v3.26.0", "operator_version": "v1.32.12"}}),
            false,
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(
            m.row(Minor::new(1, 27)).unwrap().recommended.to_string(),
            "v3.27.5"
        );
    }

    #[test]
    fn untested_pairs_need_allow_untested() {
        let row = json!({"1.26": {"recommended_version": "v3.27.4", "minimum_version": "v3.25.0", "operator_version": "v1.32.10"}});
        assert!(
            parse(row.clone(), false)
                .unwrap_err()
                .contains("not tested on Kubernetes 1.26")
        );
        let (_, w) = parse(row, true).unwrap();
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn malformed_rows_are_explained() {
        let e = parse(json!({"1.3": {"recommended_version": "v3.29.7"}, "x": {}, "1.28": {"recommended": "v3.28.5"}}), false).unwrap_err();
        assert!(
            e.contains("[1.3] Kubernetes 1.3 is not supported; YAML reads an unquoted 1.30 as 1.3"),
            "{e}"
        );
        assert!(e.contains("[x] is not a Kubernetes minor"), "{e}");
        assert!(e.contains("[1.28] unknown field recommended"), "{e}");
        assert!(e.contains("[1.28] recommended_version is required"), "{e}");
    }
}
