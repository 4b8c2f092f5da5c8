//! The Calico release catalog: every release v3.22.0 to v3.32.1, the Tigera operator each one
//! ships, the Kubernetes minors each Calico minor is tested on, where its manifests live, which
//! releases must not be installed, and the upgrade advisories.
//!
//! The data is `data/catalog.yaml`, compiled into every module so that air-gapped controllers
//! need nothing else. Everything the modules recommend is derived from it by documented rules
//! ([`matrix`]), never written by hand.
//!
//! ```
//! use k8s_calico::catalog::catalog;
//! use k8s_calico::version::Minor;
//!
//! let row = catalog().default_row(Minor::new(1, 27)).unwrap();
//! assert_eq!(row.recommended.version.to_string(), "v3.28.5");
//! assert_eq!(row.recommended.operator.to_string(), "v1.34.14");
//! ```

mod advisory;
pub mod matrix;
pub mod seed;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::version::{Minor, Version};

pub use advisory::{Advisory, Severity};
pub use matrix::MatrixRow;

/// The catalog source, compiled in.
pub const CATALOG_YAML: &str = include_str!("../../data/catalog.yaml");

/// One Calico release.
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    /// The release, e.g. `v3.28.5`.
    pub version: Version,
    /// Its release date (`YYYY-MM-DD`).
    pub date: String,
    /// The Tigera operator the release pins (the image of `tigera-operator.yaml` at its tag, or
    /// the pairing upstream intended where the tag is stale): `operator` in the catalog file.
    #[serde(rename = "operator")]
    pub pinned_operator: Version,
    /// The Tigera operator the product deploys for it: the newest patch of the release's
    /// operator line (the minor its Calico minor pins) that embeds exactly this release; operator
    /// patches fix the operator without changing the Calico it deploys. Derived when the catalog
    /// is parsed; the pin where no patch embeds the release (releases that are refused).
    #[serde(skip_deserializing, default = "unset_version")]
    pub operator: Version,
    /// The operator the manifests at the git tag pin, when that differs from [`Self::operator`].
    #[serde(default)]
    pub tag_manifests_operator: Option<Version>,
    /// The Calico images the manifests at the git tag deploy, when that differs from the release.
    #[serde(default)]
    pub tag_manifests_calico: Option<Version>,
    #[serde(default)]
    install: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// A caveat worth telling whoever installs it.
    #[serde(default)]
    pub note: Option<String>,
}

impl Release {
    /// Why this release must not be installed, when it must not.
    pub fn refused(&self) -> Option<&str> {
        match self.install.as_deref() {
            Some("refuse") => Some(self.reason.as_deref().unwrap_or("flagged in the catalog")),
            _ => None,
        }
    }

    /// Whether it may be installed.
    pub fn installable(&self) -> bool {
        self.refused().is_none()
    }
}

/// Where a Calico minor's manifests are published.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestSource {
    /// A URL template with `{version}` and `{file}`.
    pub url: String,
    /// For archived minors whose URL serves one release only, that release.
    #[serde(default)]
    pub serves_only: Option<Version>,
}

fn unset_version() -> Version {
    Version::new(0, 0, 0)
}

/// Facts about one Calico minor.
#[derive(Debug, Clone, Deserialize)]
pub struct MinorInfo {
    /// The Kubernetes minors upstream tests it on (the final published list).
    pub k8s_tested: Vec<Minor>,
    /// Where its manifests are.
    pub manifests: ManifestSource,
}

/// How Calico is installed, which decides which upstream files an upgrade applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallMethod {
    /// The Tigera operator manages Calico (`tigera-operator.yaml` + `Installation default`).
    Operator,
    /// Calico was applied from `calico.yaml`.
    Manifest,
}

impl InstallMethod {
    /// The name used in arguments and results.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Operator => "operator",
            InstallMethod::Manifest => "manifest",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct FilesFrom {
    from: Minor,
    files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct InstallFiles {
    operator: Vec<FilesFrom>,
    manifest: Vec<FilesFrom>,
}

#[derive(Debug, Clone, Deserialize)]
struct EmbedRange {
    operator: Minor,
    patches: String,
    /// A Calico release, or `master` for an operator tag cut from a development build.
    calico: String,
}

/// What one range of operator tags embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Embedded {
    /// Exactly this Calico release.
    Release(Version),
    /// A development build of Calico (`master`): no release, never deployed by the product.
    Development,
}

/// One inclusive range of patches of an operator minor and what they embed.
#[derive(Debug, Clone)]
struct Embeds {
    operator: Minor,
    first: u64,
    last: u64,
    calico: Embedded,
}

/// A row of the seed document's `calico_version_matrix`.
#[derive(Debug, Clone, Deserialize)]
pub struct SeedRow {
    /// The seed's recommended Calico.
    pub recommended_version: Version,
    /// The seed's minimum Calico.
    pub minimum_version: Version,
    /// The seed's operator.
    pub operator_version: Version,
}

#[derive(Debug, Clone, Deserialize)]
struct KubernetesRange {
    oldest_supported: Minor,
    newest_known: Minor,
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    schema: u32,
    /// When the facts were last checked against upstream (`YYYY-MM-DD`): a catalog given with
    /// the `catalog` parameter must be at least as new as the compiled-in one.
    updated: String,
    kubernetes: KubernetesRange,
    minors: BTreeMap<Minor, MinorInfo>,
    releases: Vec<Release>,
    operator_embeds: Vec<EmbedRange>,
    install_files: InstallFiles,
    advisories: Vec<Advisory>,
    seed_matrix: BTreeMap<Minor, SeedRow>,
}

/// The release catalog. Get it with [`catalog`].
#[derive(Debug)]
pub struct Catalog {
    file: CatalogFile,
    embeds: Vec<Embeds>,
}

/// A catalog file given to this run (the `catalog` parameter), in place of the compiled-in one.
static GIVEN: OnceLock<Catalog> = OnceLock::new();

/// The catalog every part of this run plans with: the file given with the `catalog` parameter
/// ([`use_file`]) when there is one, the compiled-in catalog otherwise.
///
/// A module is one process that handles one task, so one catalog per process is the catalog of
/// the task; a global keeps the planner, the upgrade and the checks from ever disagreeing.
pub fn catalog() -> &'static Catalog {
    GIVEN.get().unwrap_or_else(|| compiled())
}

/// The catalog compiled into the binary, parsed once.
pub fn compiled() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        // The data is part of the binary and a unit test parses it, so failing here is a build
        // defect, not a user error.
        Catalog::parse(CATALOG_YAML).expect("data/catalog.yaml is valid")
    })
}

/// `catalog`: a newer release catalog file, shared by the modules that plan.
pub const CATALOG_PARAM: crate::module::Param = crate::module::Param::path("catalog").help(
    "A release catalog file newer than the compiled-in one (data/catalog.yaml's format), to plan releases published after this build",
);

/// Reads, validates and adopts a catalog file for the rest of the run (see [`catalog`]). The
/// file must parse, hold the compiled-in catalog's invariants, be at least as new (`updated`)
/// and know every release the compiled-in catalog knows. Errors name the parameter.
pub fn use_file(path: &std::path::Path) -> Result<&'static Catalog, String> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("catalog: cannot read {shown}: {e}"))?;
    let given = Catalog::parse(&text).map_err(|e| format!("catalog {shown}: {e}"))?;
    given
        .not_older_than(compiled())
        .map_err(|e| format!("catalog {shown}: {e}"))?;
    // A second call in one process keeps the first file: the run plans with one catalog.
    Ok(GIVEN.get_or_init(|| given))
}

impl Catalog {
    /// Parses catalog YAML and checks its invariants.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let mut file: CatalogFile =
            serde_saphyr::from_str(yaml).map_err(|e| format!("catalog: {e}"))?;
        if file.schema != 1 {
            return Err(format!("catalog schema {} is not supported", file.schema));
        }
        check_date(&file.updated)?;
        file.releases.sort_by(|a, b| a.version.cmp(&b.version));
        let mut embeds = Vec::new();
        for e in &file.operator_embeds {
            embeds.push(Embeds::parse(e)?);
        }
        let mut c = Catalog { file, embeds };
        c.derive_operators()?;
        c.check()?;
        Ok(c)
    }

    /// Sets every release's [`Release::operator`]: the newest patch of its operator line that
    /// embeds it, or its pin when none does.
    fn derive_operators(&mut self) -> Result<(), String> {
        let mut operators = Vec::with_capacity(self.file.releases.len());
        for r in &self.file.releases {
            let line = self.operator_line(r.version.minor())?;
            let newest = self
                .embeds
                .iter()
                .filter(|e| e.operator == line && e.calico == Embedded::Release(r.version.clone()))
                .map(|e| e.last)
                .max();
            operators.push(match newest {
                Some(p) => Version::new(line.major, line.minor, p),
                None => r.pinned_operator.clone(),
            });
        }
        for (r, op) in self.file.releases.iter_mut().zip(operators) {
            r.operator = op;
        }
        Ok(())
    }

    /// The operator minor a Calico minor's releases pin (one per Calico minor: 3.30 pins v1.38).
    pub fn operator_line(&self, calico: Minor) -> Result<Minor, String> {
        let mut pins = self.releases_of(calico).map(|r| r.pinned_operator.minor());
        let first = pins
            .next()
            .ok_or_else(|| format!("catalog: Calico {calico} has no release"))?;
        match pins.find(|m| *m != first) {
            Some(other) => Err(format!(
                "catalog: releases of Calico {calico} pin operators of two minors ({first} and {other})"
            )),
            None => Ok(first),
        }
    }

    /// Refuses a catalog older than `other`, or one that has lost a release `other` knows.
    fn not_older_than(&self, other: &Catalog) -> Result<(), String> {
        if self.file.updated < other.file.updated {
            return Err(format!(
                "it was updated {}, before the compiled-in catalog ({}): give a newer catalog, or none",
                self.file.updated, other.file.updated
            ));
        }
        if let Some(missing) = other
            .releases()
            .iter()
            .find(|r| self.release(&r.version).is_none())
        {
            return Err(format!(
                "it does not have Calico {}, which the compiled-in catalog has: a newer catalog keeps every release",
                missing.version
            ));
        }
        Ok(())
    }

    /// When the catalog's facts were last checked against upstream (`YYYY-MM-DD`).
    pub fn updated(&self) -> &str {
        &self.file.updated
    }

    fn check(&self) -> Result<(), String> {
        for r in &self.file.releases {
            if !self.file.minors.contains_key(&r.version.minor()) {
                return Err(format!("catalog: {} has no minor entry", r.version));
            }
            if r.installable() && self.operator_embeds(&r.pinned_operator) != Some(&r.version) {
                return Err(format!(
                    "catalog: operator {} of {} does not embed it",
                    r.pinned_operator, r.version
                ));
            }
        }
        Ok(())
    }

    /// Every release, oldest first.
    pub fn releases(&self) -> &[Release] {
        &self.file.releases
    }

    /// The oldest release in the catalog.
    pub fn oldest_release(&self) -> &Release {
        &self.file.releases[0]
    }

    /// The newest release in the catalog.
    pub fn newest_release(&self) -> &Release {
        &self.file.releases[self.file.releases.len() - 1]
    }

    /// A release by version.
    pub fn release(&self, v: &Version) -> Option<&Release> {
        self.file
            .releases
            .binary_search_by(|r| r.version.cmp(v))
            .ok()
            .map(|i| &self.file.releases[i])
    }

    /// Facts about a Calico minor.
    pub fn minor(&self, m: Minor) -> Option<&MinorInfo> {
        self.file.minors.get(&m)
    }

    /// Every Calico minor, oldest first.
    pub fn calico_minors(&self) -> impl Iterator<Item = Minor> + '_ {
        self.file.minors.keys().copied()
    }

    /// The releases of one Calico minor, oldest first.
    pub fn releases_of(&self, m: Minor) -> impl Iterator<Item = &Release> + '_ {
        self.file
            .releases
            .iter()
            .filter(move |r| r.version.minor() == m)
    }

    /// The newest release of a minor that may be installed.
    pub fn latest_installable(&self, m: Minor) -> Option<&Release> {
        self.releases_of(m).filter(|r| r.installable()).last()
    }

    /// The first release of a minor.
    pub fn first_release(&self, m: Minor) -> Option<&Release> {
        self.releases_of(m).next()
    }

    /// Whether upstream tests this Calico minor on this Kubernetes minor.
    pub fn is_tested(&self, calico: Minor, kubernetes: Minor) -> bool {
        self.minor(calico)
            .is_some_and(|i| i.k8s_tested.contains(&kubernetes))
    }

    /// The Calico minors tested on a Kubernetes minor, oldest first.
    pub fn tested_minors(&self, kubernetes: Minor) -> Vec<Minor> {
        self.calico_minors()
            .filter(|m| self.is_tested(*m, kubernetes))
            .collect()
    }

    /// The oldest Kubernetes minor the product supports.
    pub fn kubernetes_oldest(&self) -> Minor {
        self.file.kubernetes.oldest_supported
    }

    /// The newest Kubernetes minor the catalog knows.
    pub fn kubernetes_newest(&self) -> Minor {
        self.file.kubernetes.newest_known
    }

    /// Every supported Kubernetes minor, oldest first.
    pub fn kubernetes_minors(&self) -> Vec<Minor> {
        let (a, b) = (self.kubernetes_oldest(), self.kubernetes_newest());
        (a.minor..=b.minor)
            .map(|m| Minor::new(a.major, m))
            .collect()
    }

    /// The Calico release a Tigera operator release embeds (and therefore deploys).
    pub fn operator_embeds(&self, operator: &Version) -> Option<&Version> {
        let m = operator.minor();
        let p = operator.patch();
        match &self
            .embeds
            .iter()
            .find(|e| e.operator == m && (e.first..=e.last).contains(&p))?
            .calico
        {
            Embedded::Release(v) => Some(v),
            Embedded::Development => None,
        }
    }

    /// Whether the catalog knows this operator tag (also those that embed a development build).
    pub fn knows_operator(&self, operator: &Version) -> bool {
        let (m, p) = (operator.minor(), operator.patch());
        self.embeds
            .iter()
            .any(|e| e.operator == m && (e.first..=e.last).contains(&p))
    }

    /// The upstream files an install method applies for a release, in order.
    pub fn install_files(&self, method: InstallMethod, v: &Version) -> Vec<&str> {
        let table = match method {
            InstallMethod::Operator => &self.file.install_files.operator,
            InstallMethod::Manifest => &self.file.install_files.manifest,
        };
        table
            .iter()
            .rev()
            .find(|e| e.from <= v.minor())
            .map(|e| e.files.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The upstream URL of one manifest file of a release.
    pub fn manifest_url(&self, v: &Version, file: &str) -> Result<String, String> {
        let info = self
            .minor(v.minor())
            .ok_or_else(|| format!("Calico {v} is not in the catalog"))?;
        if let Some(only) = &info.manifests.serves_only
            && only != v
        {
            {
                return Err(format!(
                    "upstream publishes manifests for Calico {} only as {only} (the docs archive serves the last patch of the minor); use {only}, or give manifest_dir with the files of {v}",
                    v.minor()
                ));
            }
        }
        Ok(info
            .manifests
            .url
            .replace("{version}", &v.to_string())
            .replace("{file}", file))
    }

    /// Every advisory.
    pub fn advisories(&self) -> &[Advisory] {
        &self.file.advisories
    }

    /// The seed document's row for a Kubernetes minor, when it has one.
    pub fn seed_row(&self, kubernetes: Minor) -> Option<&SeedRow> {
        self.file.seed_matrix.get(&kubernetes)
    }

    /// The seed document's rows, oldest Kubernetes first.
    pub fn seed_rows(&self) -> impl Iterator<Item = (Minor, &SeedRow)> + '_ {
        self.file.seed_matrix.iter().map(|(k, v)| (*k, v))
    }
}

impl Embeds {
    fn parse(e: &EmbedRange) -> Result<Self, String> {
        let (a, b) = match e.patches.split_once('-') {
            Some((a, b)) => (a, b),
            None => (e.patches.as_str(), e.patches.as_str()),
        };
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("catalog: bad patch range '{}'", e.patches))
        };
        let calico =
            match e.calico.as_str() {
                "master" => Embedded::Development,
                s => Embedded::Release(s.parse().map_err(|err| {
                    format!("catalog: operator {} embeds '{s}': {err}", e.operator)
                })?),
            };
        let (first, last) = (parse(a)?, parse(b)?);
        if first > last {
            return Err(format!("catalog: bad patch range '{}'", e.patches));
        }
        Ok(Self {
            operator: e.operator,
            first,
            last,
            calico,
        })
    }
}

/// A `YYYY-MM-DD` date, which compares correctly as text.
fn check_date(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
    {
        Ok(())
    } else {
        Err(format!(
            "catalog: updated must be a date such as 2026-08-22, got '{s}'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn the_compiled_catalog_parses_and_covers_every_release() {
        let c = catalog();
        assert_eq!(c.releases().len(), 66);
        assert_eq!(c.oldest_release().version, v("v3.22.0"));
        assert_eq!(c.newest_release().version, v("v3.32.1"));
        assert_eq!(c.calico_minors().count(), 11);
    }

    #[test]
    fn flagged_releases_are_refused_with_a_reason() {
        let c = catalog();
        let refused: Vec<String> = c
            .releases()
            .iter()
            .filter(|r| !r.installable())
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(refused, ["v3.24.6", "v3.26.2", "v3.27.1"]);
        assert!(
            c.release(&v("v3.24.6"))
                .unwrap()
                .refused()
                .unwrap()
                .contains("v3.24.5")
        );
        assert_eq!(
            c.latest_installable(Minor::new(3, 24)).unwrap().version,
            v("v3.24.5")
        );
    }

    #[test]
    fn operators_embed_exactly_one_release() {
        let c = catalog();
        assert_eq!(c.operator_embeds(&v("v1.30.9")), Some(&v("v3.26.4")));
        assert_eq!(c.operator_embeds(&v("v1.32.7")), Some(&v("v3.27.3")));
        assert_eq!(c.operator_embeds(&v("v1.34.3")), Some(&v("v3.28.1")));
        assert_eq!(c.operator_embeds(&v("v1.36.1")), Some(&v("v3.29.0")));
        assert_eq!(c.operator_embeds(&v("v1.38.1")), Some(&v("v3.30.1")));
        assert_eq!(c.operator_embeds(&v("v1.28.13")), Some(&v("v3.24.6")));
        assert_eq!(c.operator_embeds(&v("v1.99.0")), None);
        for r in c.releases().iter().filter(|r| r.installable()) {
            assert_eq!(
                c.operator_embeds(&r.operator),
                Some(&r.version),
                "{}",
                r.version
            );
        }
    }

    #[test]
    fn each_release_deploys_the_newest_operator_patch_that_embeds_it() {
        let c = catalog();
        let deployed = |r: &str| c.release(&v(r)).unwrap().operator.to_string();
        let pinned = |r: &str| c.release(&v(r)).unwrap().pinned_operator.to_string();
        assert_eq!(
            (pinned("v3.30.7"), deployed("v3.30.7")),
            ("v1.38.13".into(), "v1.38.16".into())
        );
        assert_eq!(
            (pinned("v3.32.1"), deployed("v3.32.1")),
            ("v1.42.3".into(), "v1.42.4".into())
        );
        assert_eq!(deployed("v3.32.0"), "v1.42.2");
        // v1.32.0-v1.32.2 and odd v1.31 also embed v3.26.1, but 3.26 is the v1.30 line.
        assert_eq!(deployed("v3.26.1"), "v1.30.6");
        // v1.39.x embeds v3.30.2 too; odd minors are never deployed.
        assert_eq!(deployed("v3.30.2"), "v1.38.5");
        assert_eq!(deployed("v3.31.7"), "v1.40.15");
        // No patch embeds a release that was never published: the pin stays.
        assert_eq!(deployed("v3.26.2"), "v1.30.6");
        assert!(!c.knows_operator(&v("v1.44.0")));
        assert!(c.knows_operator(&v("v1.41.0")));
        assert_eq!(c.operator_embeds(&v("v1.41.0")), None);
    }

    /// The reference file of every upstream operator tag, when this checkout has it.
    fn operator_embeds_reference() -> Option<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/operator-embeds.tsv");
        let text = std::fs::read_to_string(&path).ok();
        if text.is_none() {
            println!("skipping: {} is absent", path.display());
        }
        text
    }

    #[test]
    fn every_operator_tag_of_the_reference_is_in_the_catalog() {
        let Some(text) = operator_embeds_reference() else {
            return;
        };
        let c = catalog();
        let mut rows = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let mut cols = line.split('\t');
            let (Some(op), Some(calico)) = (cols.next(), cols.next()) else {
                continue;
            };
            rows += 1;
            let op = v(op);
            assert!(c.knows_operator(&op), "operator {op} is not in the catalog");
            let embedded = c.operator_embeds(&op).map(|e| e.to_string());
            let want = (calico != "master").then(|| calico.to_string());
            assert_eq!(embedded, want, "operator {op}");
        }
        assert!(rows > 180, "{rows} rows read");
    }

    #[test]
    fn a_given_catalog_must_be_newer_and_keep_every_release() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let older = write(
            "older.yaml",
            &CATALOG_YAML.replace("updated: \"2026-08-22\"", "updated: \"2026-01-01\""),
        );
        let e = use_file(&older).unwrap_err();
        assert!(e.starts_with("catalog "), "{e}");
        assert!(
            e.contains("before the compiled-in catalog (2026-08-22)"),
            "{e}"
        );
        let lost = write(
            "lost.yaml",
            &CATALOG_YAML.replace(
                "  - {version: v3.32.1, date: \"2026-06-24\", operator: v1.42.3}\n",
                "",
            ),
        );
        assert!(
            use_file(&lost)
                .unwrap_err()
                .contains("does not have Calico v3.32.1")
        );
        let bad = write("bad.yaml", "schema: 1\nupdated: yesterday\n");
        assert!(use_file(&bad).unwrap_err().contains("catalog "));
        assert!(
            use_file(&dir.path().join("absent.yaml"))
                .unwrap_err()
                .contains("cannot read")
        );
        let broken = write(
            "broken.yaml",
            &CATALOG_YAML.replace("updated: \"2026-08-22\"", "updated: \"22.08.2026\""),
        );
        assert!(
            use_file(&broken)
                .unwrap_err()
                .contains("updated must be a date")
        );
    }

    #[test]
    fn tested_kubernetes_minors() {
        let c = catalog();
        let minors = |k: (u64, u64)| -> Vec<String> {
            c.tested_minors(Minor::new(k.0, k.1))
                .iter()
                .map(|m| m.to_string())
                .collect()
        };
        assert_eq!(minors((1, 26)), ["3.25", "3.26"]);
        assert_eq!(minors((1, 30)), ["3.28", "3.29"]);
        assert_eq!(minors((1, 36)), ["3.32"]);
        assert!(!c.is_tested(Minor::new(3, 27), Minor::new(1, 26)));
    }

    #[test]
    fn manifest_locations() {
        let c = catalog();
        assert_eq!(
            c.manifest_url(&v("v3.28.5"), "calico.yaml").unwrap(),
            "https://raw.githubusercontent.com/projectcalico/calico/v3.28.5/manifests/calico.yaml"
        );
        assert_eq!(
            c.manifest_url(&v("v3.23.5"), "tigera-operator.yaml")
                .unwrap(),
            "https://docs.tigera.io/archive/v3.23/manifests/tigera-operator.yaml"
        );
        assert!(
            c.manifest_url(&v("v3.22.0"), "calico.yaml")
                .unwrap_err()
                .contains("only as v3.22.5")
        );
    }

    #[test]
    fn install_files_by_version() {
        let c = catalog();
        assert_eq!(
            c.install_files(InstallMethod::Operator, &v("v3.29.7")),
            ["tigera-operator.yaml"]
        );
        assert_eq!(
            c.install_files(InstallMethod::Operator, &v("v3.30.7")),
            ["operator-crds.yaml", "tigera-operator.yaml"]
        );
        assert_eq!(
            c.install_files(InstallMethod::Manifest, &v("v3.31.7")),
            ["calico.yaml"]
        );
    }

    #[test]
    fn bad_catalogs_are_rejected() {
        let broken = CATALOG_YAML.replace("operator: v1.34.13}", "operator: v1.34.12}");
        assert!(
            Catalog::parse(&broken)
                .unwrap_err()
                .contains("does not embed")
        );
        assert!(Catalog::parse("schema: 2").is_err());
    }
}
