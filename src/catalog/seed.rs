//! Where the seed document's matrix differs from the derived one, and why.
//!
//! The product grew from a document whose `calico_version_matrix` users may still carry in their
//! group_vars. Every difference is explained from catalog facts, so the explanation stays true when
//! the catalog changes.

use serde::Serialize;

use super::Catalog;
use crate::version::{Minor, Version};

/// One field where the seed and the derived matrix disagree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// `recommended_version`, `minimum_version` or `operator_version`.
    pub field: &'static str,
    /// What the seed says.
    pub seed: String,
    /// What the catalog derives.
    pub derived: String,
    /// Why, from catalog facts.
    pub reason: String,
}

/// Why an operator does not go with a Calico release, or `None` when it does.
pub fn operator_mismatch(c: &Catalog, operator: &Version, calico: &Version) -> Option<String> {
    let ships = c.operator_embeds(operator);
    if ships == Some(calico) {
        return None;
    }
    let first = match ships {
        Some(embedded) => format!("operator {operator} ships Calico {embedded}"),
        None => format!("operator {operator} is not a Tigera operator release the catalog knows"),
    };
    let second = match c.release(calico) {
        Some(r) => format!("Calico {calico} ships with operator {}", r.operator),
        None => format!("Calico {calico} is not in the catalog"),
    };
    Some(format!("{first}; {second}"))
}

/// Why a Calico release is not a fit as the recommendation for a Kubernetes minor, or `None`.
pub fn recommendation_problem(c: &Catalog, calico: &Version, kubernetes: Minor) -> Option<String> {
    let Some(release) = c.release(calico) else {
        return Some(format!("Calico {calico} is not in the catalog"));
    };
    if let Some(why) = release.refused() {
        return Some(format!("Calico {calico} must not be installed: {why}"));
    }
    untested(c, calico.minor(), kubernetes)
}

fn untested(c: &Catalog, calico: Minor, kubernetes: Minor) -> Option<String> {
    if c.is_tested(calico, kubernetes) {
        return None;
    }
    let on: Vec<String> = c
        .minor(calico)
        .map(|i| i.k8s_tested.iter().map(|m| m.to_string()).collect())
        .unwrap_or_default();
    Some(format!(
        "Calico {calico} is not tested on Kubernetes {kubernetes} (upstream tests it on {})",
        if on.is_empty() {
            "nothing".to_string()
        } else {
            on.join(", ")
        }
    ))
}

/// The differences between the seed's row for `kubernetes` and the derived row.
pub fn seed_differences(c: &Catalog, kubernetes: Minor) -> Vec<Difference> {
    let (Some(seed), Some(row)) = (c.seed_row(kubernetes), c.default_row(kubernetes)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let newest = row.tested_minors.last().copied().unwrap_or(kubernetes);
    let oldest = row.tested_minors.first().copied().unwrap_or(kubernetes);
    if seed.recommended_version != row.recommended.version {
        let reason = recommendation_problem(c, &seed.recommended_version, kubernetes).unwrap_or_else(|| {
            format!(
                "{} is the latest installable patch of {newest}, the newest Calico minor tested on {kubernetes}",
                row.recommended.version
            )
        });
        out.push(Difference {
            field: "recommended_version",
            seed: seed.recommended_version.to_string(),
            derived: row.recommended.version.to_string(),
            reason,
        });
    }
    if seed.minimum_version != row.minimum.version {
        let reason = untested(c, seed.minimum_version.minor(), kubernetes)
            .map(|why| format!("{why}; the oldest minor tested on {kubernetes} is {oldest}"))
            .unwrap_or_else(|| {
                format!("{oldest} is the oldest Calico minor tested on {kubernetes}")
            });
        out.push(Difference {
            field: "minimum_version",
            seed: seed.minimum_version.to_string(),
            derived: row.minimum.version.to_string(),
            reason,
        });
    }
    if &seed.operator_version != row.operator() {
        let reason = operator_mismatch(c, &seed.operator_version, &seed.recommended_version)
            .map(|why| {
                format!(
                    "{why}; the derived recommendation {} ships with {}",
                    row.recommended.version,
                    row.operator()
                )
            })
            .unwrap_or_else(|| {
                format!("{} ships with {}", row.recommended.version, row.operator())
            });
        out.push(Difference {
            field: "operator_version",
            seed: seed.operator_version.to_string(),
            derived: row.operator().to_string(),
            reason,
        });
    }
    out
}

/// The README's comparison table (Markdown), generated so it cannot drift from the catalog.
pub fn comparison_table(c: &Catalog) -> String {
    let mut s = String::from(
        "| Kubernetes | Recommended | Minimum | Operator | Tested Calico minors | Seed (recommended / minimum / operator) | Why they differ |\n|---|---|---|---|---|---|---|\n",
    );
    for row in c.default_matrix() {
        let tested: Vec<String> = row.tested_minors.iter().map(|m| m.to_string()).collect();
        let (seed, why) = match c.seed_row(row.kubernetes) {
            Some(seed) => {
                let diffs = seed_differences(c, row.kubernetes);
                let why = if diffs.is_empty() {
                    "same".to_string()
                } else {
                    diffs
                        .iter()
                        .map(|d| {
                            format!("**{}**: {}", d.field.trim_end_matches("_version"), d.reason)
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                (
                    format!(
                        "{} / {} / {}",
                        seed.recommended_version, seed.minimum_version, seed.operator_version
                    ),
                    why,
                )
            }
            None => ("—".to_string(), "not in the seed".to_string()),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.kubernetes,
            row.recommended.version,
            row.minimum.version,
            row.operator(),
            tested.join(", "),
            seed,
            why
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::catalog;

    #[test]
    fn every_seed_row_differs_with_reasons() {
        let c = catalog();
        let d = seed_differences(c, Minor::new(1, 23));
        let op = d.iter().find(|d| d.field == "operator_version").unwrap();
        assert!(
            op.reason.starts_with(
                "operator v1.30.9 ships Calico v3.26.4; Calico v3.24.6 ships with operator v1.28.15"
            ),
            "{}",
            op.reason
        );
        let rec = d.iter().find(|d| d.field == "recommended_version").unwrap();
        assert!(
            rec.reason.contains("must not be installed"),
            "{}",
            rec.reason
        );

        let d = seed_differences(c, Minor::new(1, 24));
        let min = d.iter().find(|d| d.field == "minimum_version").unwrap();
        assert!(
            min.reason
                .starts_with("Calico 3.23 is not tested on Kubernetes 1.24"),
            "{}",
            min.reason
        );

        let d = seed_differences(c, Minor::new(1, 26));
        let rec = d.iter().find(|d| d.field == "recommended_version").unwrap();
        assert!(
            rec.reason
                .starts_with("Calico 3.27 is not tested on Kubernetes 1.26"),
            "{}",
            rec.reason
        );

        for (k, _) in c.seed_rows() {
            assert!(
                seed_differences(c, k)
                    .iter()
                    .any(|d| d.field == "operator_version"),
                "{k}"
            );
        }
    }

    #[test]
    fn table_has_a_row_per_minor() {
        let t = comparison_table(catalog());
        assert_eq!(t.lines().count(), 2 + 14);
        assert!(t.contains("| 1.27 | v3.28.5 | v3.25.0 | v1.34.14 |"));
    }
}
