//! Upgrade advisories: upstream caveats that apply when a path crosses a given release.

use serde::{Deserialize, Serialize};

use crate::version::Version;

/// How much an advisory matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// calico_upgrade stops when its cluster check finds affected objects, unless forced.
    Blocking,
    /// Worth a warning.
    Warning,
    /// Context the user should know.
    Info,
}

/// One upgrade advisory from the catalog.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Advisory {
    /// A stable identifier, e.g. `owner-references-v3-uids`.
    pub id: String,
    /// Applies when a path goes from below this release to at or above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crosses: Option<Version>,
    /// Applies when the path starts inside this inclusive range and ends above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_range: Option<[Version; 2]>,
    /// Applies when any release on the path is below this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<Version>,
    /// How much it matters.
    pub severity: Severity,
    /// The cluster inspection calico_upgrade runs for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The install methods it concerns; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// What to do, for humans.
    pub message: String,
    /// Where upstream says so.
    pub source: String,
}

impl Advisory {
    /// Whether it applies to a path from `from` (unknown: `None`) through `hops` (the releases
    /// installed, in order; the last is the target).
    pub fn applies(&self, from: Option<&Version>, hops: &[Version]) -> bool {
        let Some(to) = hops.last() else { return false };
        if let Some(x) = &self.crosses {
            // With the starting release unknown, any path ending at or above it may cross it.
            if to >= x && from.is_none_or(|f| f < x) {
                return true;
            }
        }
        if let (Some([lo, hi]), Some(f)) = (&self.from_range, from)
            && f >= lo
            && f <= hi
            && to > hi
        {
            return true;
        }
        self.below
            .as_ref()
            .is_some_and(|b| hops.iter().any(|h| h < b))
    }

    /// Whether it concerns this install method.
    pub fn concerns(&self, method: Option<&str>) -> bool {
        match method {
            Some(m) => self.methods.is_empty() || self.methods.iter().any(|x| x == m),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::catalog;
    use crate::version::Version;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn ids(from: Option<&str>, hops: &[&str]) -> Vec<String> {
        let from = from.map(v);
        let hops: Vec<Version> = hops.iter().map(|h| v(h)).collect();
        catalog()
            .advisories()
            .iter()
            .filter(|a| a.applies(from.as_ref(), &hops))
            .map(|a| a.id.clone())
            .collect()
    }

    #[test]
    fn advisories_apply_to_the_paths_that_cross_them() {
        assert_eq!(
            ids(Some("v3.27.5"), &["v3.28.5"]),
            ["owner-references-v3-uids"]
        );
        assert!(ids(Some("v3.28.2"), &["v3.28.5"]).is_empty());
        assert_eq!(
            ids(Some("v3.29.2"), &["v3.29.7"]),
            ["default-tier-policy-rename"]
        );
        assert!(ids(Some("v3.29.4"), &["v3.29.7"]).is_empty());
        assert_eq!(ids(Some("v3.29.7"), &["v3.30.7"]), ["operator-crds-split"]);
        assert_eq!(
            ids(Some("v3.31.7"), &["v3.32.1"]),
            ["admin-network-policy-removed"]
        );
        assert_eq!(
            ids(Some("v3.22.5"), &["v3.23.5"]),
            ["archive-manifests-last-patch"]
        );
        assert!(ids(None, &["v3.27.5"]).is_empty());
        assert_eq!(ids(None, &["v3.28.5"]), ["owner-references-v3-uids"]);
    }
}
