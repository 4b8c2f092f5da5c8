//! The default Kubernetes → Calico matrix, derived from the catalog by one rule.
//!
//! For a Kubernetes minor K:
//! - **recommended** = the latest installable patch of the newest Calico minor tested on K;
//! - **minimum** = the first release of the oldest Calico minor tested on K;
//! - **operator** = the Tigera operator the recommended release ships.
//!
//! Deriving instead of hand-writing is the point: the seed document's hand-written table paired
//! every row with an operator two Calico minors off, and recommended releases upstream never
//! tested on that Kubernetes minor.

use super::{Catalog, Release};
use crate::version::{Minor, Version};

/// One derived row.
#[derive(Debug, Clone)]
pub struct MatrixRow<'a> {
    /// The Kubernetes minor.
    pub kubernetes: Minor,
    /// The release to run.
    pub recommended: &'a Release,
    /// The oldest release tested on this minor.
    pub minimum: &'a Release,
    /// The Calico minors upstream tests on it, oldest first.
    pub tested_minors: Vec<Minor>,
}

impl MatrixRow<'_> {
    /// The operator of the recommended release.
    pub fn operator(&self) -> &Version {
        &self.recommended.operator
    }
}

impl Catalog {
    /// The derived row for a Kubernetes minor; `None` when no Calico minor is tested on it.
    pub fn default_row(&self, kubernetes: Minor) -> Option<MatrixRow<'_>> {
        let tested = self.tested_minors(kubernetes);
        let newest = *tested.last()?;
        let oldest = *tested.first()?;
        Some(MatrixRow {
            kubernetes,
            recommended: self.latest_installable(newest)?,
            minimum: self.first_release(oldest)?,
            tested_minors: tested,
        })
    }

    /// The derived matrix for every supported Kubernetes minor.
    pub fn default_matrix(&self) -> Vec<MatrixRow<'_>> {
        self.kubernetes_minors()
            .into_iter()
            .filter_map(|k| self.default_row(k))
            .collect()
    }

    /// The newest installable release tested on both Kubernetes minors, at or above `floor`.
    pub fn newest_tested_on_both(
        &self,
        a: Minor,
        b: Minor,
        floor: Option<&Version>,
    ) -> Option<&Release> {
        self.calico_minors()
            .filter(|m| self.is_tested(*m, a) && self.is_tested(*m, b))
            .filter_map(|m| self.latest_installable(m))
            .filter(|r| floor.is_none_or(|f| &r.version >= f))
            .last()
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::catalog;
    use crate::version::Minor;

    #[test]
    fn every_supported_minor_has_a_row() {
        let rows = catalog().default_matrix();
        assert_eq!(rows.len(), 14);
        assert_eq!(rows[0].kubernetes, Minor::new(1, 23));
        assert_eq!(rows[13].kubernetes, Minor::new(1, 36));
    }

    #[test]
    fn rows_follow_the_rule() {
        let expect = [
            ("1.23", "v3.25.2", "v3.22.0", "v1.29.8"),
            ("1.24", "v3.26.5", "v3.24.0", "v1.30.11"),
            ("1.25", "v3.26.5", "v3.24.0", "v1.30.11"),
            ("1.26", "v3.26.5", "v3.25.0", "v1.30.11"),
            ("1.27", "v3.28.5", "v3.25.0", "v1.34.14"),
            ("1.28", "v3.28.5", "v3.25.0", "v1.34.14"),
            ("1.29", "v3.29.7", "v3.27.0", "v1.36.16"),
            ("1.30", "v3.29.7", "v3.28.0", "v1.36.16"),
            ("1.31", "v3.30.7", "v3.29.0", "v1.38.16"),
            ("1.32", "v3.31.7", "v3.29.0", "v1.40.15"),
            ("1.33", "v3.31.7", "v3.30.0", "v1.40.15"),
            ("1.34", "v3.32.1", "v3.30.0", "v1.42.4"),
            ("1.35", "v3.32.1", "v3.30.0", "v1.42.4"),
            ("1.36", "v3.32.1", "v3.32.0", "v1.42.4"),
        ];
        for (k, rec, min, op) in expect {
            let row = catalog().default_row(k.parse().unwrap()).unwrap();
            assert_eq!(row.recommended.version.to_string(), rec, "{k}");
            assert_eq!(row.minimum.version.to_string(), min, "{k}");
            assert_eq!(row.operator().to_string(), op, "{k}");
        }
    }

    #[test]
    fn unknown_minors_have_no_row() {
        assert!(catalog().default_row(Minor::new(1, 37)).is_none());
        assert!(catalog().default_row(Minor::new(1, 20)).is_none());
    }
}
