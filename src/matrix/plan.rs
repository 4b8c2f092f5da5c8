//! Planning: which Calico suits a Kubernetes version, and the safe path from what runs now.
//!
//! Pure functions over the catalog, shared by `calico_matrix` (which reports the plan) and
//! `calico_upgrade` (which carries it out).

use serde::Serialize;
use serde_json::{Value, json};

use super::overrides::MatrixOverride;
use crate::catalog::{Catalog, seed};
use crate::version::{KubernetesVersion, Minor, Version};

/// How to get from the running Calico to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One hop per Calico minor, each tested on the running Kubernetes minor.
    Stepwise,
    /// Straight to the target (upstream documents upgrades from any 3.x, but tests fewer paths).
    Direct,
}

impl Strategy {
    /// Parses the argument value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "stepwise" => Ok(Strategy::Stepwise),
            "direct" => Ok(Strategy::Direct),
            other => Err(format!("strategy must be stepwise or direct, got {other}")),
        }
    }
}

/// A pinned Calico target: an exact release or a minor (meaning its latest installable patch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalicoTarget {
    /// Exactly this release.
    Release(Version),
    /// The latest installable patch of this minor.
    Minor(Minor),
}

impl CalicoTarget {
    /// Parses `3.28.5`, `v3.28.5` or `3.28`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(v) = s.parse::<Version>() {
            return Ok(CalicoTarget::Release(v));
        }
        s.parse::<Minor>()
            .map(CalicoTarget::Minor)
            .map_err(|_| format!("'{s}' is not a Calico version such as 3.28.5, v3.28.5 or 3.28"))
    }

    /// The catalog release this target names: the release itself, or the latest installable
    /// patch of the minor. The error reads after the parameter's name ("v4.0.0 is not ...").
    pub fn resolve(&self, c: &Catalog) -> Result<Version, String> {
        let target = match self {
            CalicoTarget::Minor(m) => {
                return c
                    .latest_installable(*m)
                    .map(|r| r.version.clone())
                    .ok_or_else(|| {
                        format!(
                            "{m} is not a Calico minor the catalog knows ({} to {})",
                            c.oldest_release().version.minor(),
                            c.newest_release().version.minor()
                        )
                    });
            }
            CalicoTarget::Release(v) => v.clone(),
        };
        if c.release(&target).is_some() {
            return Ok(target);
        }
        let known: Vec<String> = c
            .releases_of(target.minor())
            .map(|r| r.version.to_string())
            .collect();
        Err(if known.is_empty() {
            format!(
                "{target} is not a Calico release the catalog knows ({} to {})",
                c.oldest_release().version,
                c.newest_release().version
            )
        } else {
            format!(
                "{target} is not a Calico release; {} has {}",
                target.minor(),
                known.join(", ")
            )
        })
    }
}

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The Kubernetes version the cluster runs.
    pub kubernetes: KubernetesVersion,
    /// A planned Kubernetes upgrade, if any.
    pub target_kubernetes: Option<KubernetesVersion>,
    /// The Calico running now, if known.
    pub current: Option<Version>,
    /// A pinned target instead of the recommendation.
    pub target: Option<CalicoTarget>,
    /// A user matrix in the seed's format.
    pub matrix: Option<MatrixOverride>,
    /// Stepwise or direct.
    pub strategy: Strategy,
    /// Plan anyway where upstream has not tested a combination (each one is named in warnings).
    pub allow_untested: bool,
}

/// One release to install on the way.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hop {
    /// The Calico release.
    pub version: Version,
    /// The operator that ships it.
    pub operator_version: Version,
    /// Whether upstream tests it on the Kubernetes minor it will run on.
    pub tested: bool,
}

/// One `kubeadm upgrade` step of a planned Kubernetes upgrade.
#[derive(Debug, Clone, Serialize)]
pub struct KubernetesStep {
    /// The minor the control plane leaves.
    pub from: Minor,
    /// The minor it moves to.
    pub to: Minor,
    /// The Calico release that must run before the control plane moves, counted from the release
    /// running when the step starts (for the first step: the release running now). Null only
    /// when that release is already tested on both minors; otherwise the latest installable
    /// patch of the newest Calico minor tested on both, at or above it.
    pub bridge_version: Option<Version>,
    /// Its operator.
    pub bridge_operator_version: Option<Version>,
    /// The bridge is not tested on both minors: none is, and `allow_untested` planned it anyway.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bridge_untested: bool,
    /// The Calico release to move to once the step is done.
    pub recommended_version: Version,
    /// Its operator.
    pub operator_version: Version,
}

/// The resolved matrix row for a Kubernetes minor.
#[derive(Debug, Clone)]
pub struct Row {
    /// Recommended release.
    pub recommended: Version,
    /// Minimum release.
    pub minimum: Version,
    /// Operator of the recommended release.
    pub operator: Version,
    /// Calico minors tested on the Kubernetes minor.
    pub tested_minors: Vec<Minor>,
    /// `builtin` or `override`.
    pub source: &'static str,
}

/// The plan, with everything `calico_matrix` reports.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The running Kubernetes version.
    pub kubernetes: KubernetesVersion,
    /// The matrix row for its minor.
    pub row: Row,
    /// The Calico running now, if known.
    pub current: Option<Version>,
    /// The release the plan ends at (the pin, or the recommendation).
    pub target: Version,
    /// The target's operator.
    pub target_operator: Version,
    /// Stepwise or direct.
    pub strategy: Strategy,
    /// The releases to install, in order (empty when nothing is to be done or current unknown).
    pub path: Vec<Hop>,
    /// Calico minors a stepwise path passes over, with the reason.
    pub skipped_minors: Vec<Value>,
    /// The planned Kubernetes target, if any.
    pub target_kubernetes: Option<KubernetesVersion>,
    /// One entry per kubeadm minor step.
    pub kubernetes_path: Vec<KubernetesStep>,
    /// Advisories that apply to the releases this plan installs.
    pub advisories: Vec<crate::catalog::Advisory>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether the running release is tested on the running Kubernetes minor.
    pub fn current_supported(&self, c: &Catalog) -> Option<bool> {
        self.current
            .as_ref()
            .map(|v| c.is_tested(v.minor(), self.kubernetes.minor))
    }

    /// Whether the running release is older than the target.
    pub fn upgrade_needed(&self) -> Option<bool> {
        self.current.as_ref().map(|v| v < &self.target)
    }

    /// Whether the running release is older than the minimum for the running Kubernetes minor.
    pub fn upgrade_required(&self) -> Option<bool> {
        self.current.as_ref().map(|v| v < &self.row.minimum)
    }

    /// The bridge for the first Kubernetes step.
    pub fn bridge(&self) -> Option<&KubernetesStep> {
        self.kubernetes_path.first()
    }

    /// The `ansible_facts.calico_matrix` object.
    pub fn facts(&self, c: &Catalog) -> Value {
        let advisories: Vec<Value> = self
            .advisories
            .iter()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .collect();
        json!({
            "kubernetes_version": self.kubernetes.plain(),
            "kubernetes_minor": self.kubernetes.minor.to_string(),
            "recommended_version": self.row.recommended,
            "minimum_version": self.row.minimum,
            "operator_version": self.row.operator,
            "tested_calico_minors": self.row.tested_minors,
            "matrix_source": self.row.source,
            "current_version": self.current,
            "current_supported": self.current_supported(c),
            "upgrade_needed": self.upgrade_needed(),
            "upgrade_required": self.upgrade_required(),
            "target_version": self.target,
            "target_operator_version": self.target_operator,
            "strategy": self.strategy,
            "upgrade_path": self.path,
            "skipped_minors": self.skipped_minors,
            "target_kubernetes_version": self.target_kubernetes.as_ref().map(|k| k.plain()),
            "target_kubernetes_minor": self.target_kubernetes.as_ref().map(|k| k.minor.to_string()),
            "bridge_version": self.bridge().and_then(|s| s.bridge_version.clone()),
            "bridge_operator_version": self.bridge().and_then(|s| s.bridge_operator_version.clone()),
            "kubernetes_path": self.kubernetes_path,
            "advisories": advisories,
            "seed_differences": seed::seed_differences(c, self.kubernetes.minor),
        })
    }

    /// One line for `msg`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "Kubernetes {}: recommended Calico {} (operator {})",
            self.kubernetes.plain(),
            self.row.recommended,
            self.row.operator
        );
        match (&self.current, self.upgrade_needed()) {
            (Some(cur), Some(true)) => {
                let hops: Vec<String> = self.path.iter().map(|h| h.version.to_string()).collect();
                s.push_str(&format!(
                    "; upgrade {cur} -> {} in {} hop{} ({})",
                    self.target,
                    hops.len(),
                    if hops.len() == 1 { "" } else { "s" },
                    hops.join(", ")
                ));
            }
            (Some(cur), _) => s.push_str(&format!("; {cur} needs no upgrade")),
            (None, _) => {}
        }
        if let Some(step) = self.bridge() {
            match (&step.bridge_version, &self.current) {
                (Some(b), _) if step.bridge_untested => s.push_str(&format!(
                    "; before Kubernetes {}: Calico {b}, untested on {} or {} (no release is tested on both)",
                    step.to, step.from, step.to
                )),
                (Some(b), _) => s.push_str(&format!("; before Kubernetes {}: Calico {b}", step.to)),
                (None, Some(cur)) => s.push_str(&format!(
                    "; Kubernetes {} needs no Calico bridge ({cur} is tested on {} and {})",
                    step.to, step.from, step.to
                )),
                (None, None) => s.push_str(&format!(
                    "; give the running Calico to know the bridge before Kubernetes {}",
                    step.to
                )),
            }
        }
        s
    }
}

/// The message for Kubernetes minors older than the catalog supports.
fn unsupported_kubernetes(c: &Catalog, k: Minor, what: &str) -> String {
    format!(
        "{what} {k} is not supported; supported: {} to {}",
        c.kubernetes_oldest(),
        c.kubernetes_newest()
    )
}

/// Resolves the matrix row for a Kubernetes minor, from the override or the derived matrix.
pub fn row_for(
    c: &Catalog,
    k: Minor,
    matrix: Option<&MatrixOverride>,
    allow_untested: bool,
    warnings: &mut Vec<String>,
) -> Result<Row, String> {
    if k < c.kubernetes_oldest() {
        return Err(unsupported_kubernetes(c, k, "Kubernetes"));
    }
    if let Some(row) = matrix.and_then(|m| m.row(k)) {
        return Ok(Row {
            recommended: row.recommended.clone(),
            minimum: row.minimum.clone(),
            operator: row.operator.clone(),
            tested_minors: c.tested_minors(k),
            source: "override",
        });
    }
    if let Some(m) = matrix
        && !m.is_empty()
    {
        {
            warnings.push(format!(
                "the matrix override has no row for Kubernetes {k}: the built-in row is used"
            ));
        }
    }
    if let Some(row) = c.default_row(k) {
        return Ok(Row {
            recommended: row.recommended.version.clone(),
            minimum: row.minimum.version.clone(),
            operator: row.operator().clone(),
            tested_minors: row.tested_minors,
            source: "builtin",
        });
    }
    let newest = c.kubernetes_newest();
    if !allow_untested {
        return Err(format!(
            "Kubernetes {k} is not in the Calico catalog (it knows {} to {newest}); set allow_untested to plan with the {newest} row anyway",
            c.kubernetes_oldest()
        ));
    }
    warnings.push(format!(
        "Kubernetes {k} is newer than the catalog (newest {newest}): planning with the {newest} row, untested upstream"
    ));
    let row = c
        .default_row(newest)
        .ok_or_else(|| format!("the catalog has no row for {newest}"))?;
    Ok(Row {
        recommended: row.recommended.version.clone(),
        minimum: row.minimum.version.clone(),
        operator: row.operator().clone(),
        tested_minors: Vec::new(),
        source: "builtin",
    })
}

/// Resolves a pinned or recommended target and checks it may be installed on `k`; a pin the
/// cluster already runs (`current`) is no install, so it is not refused for being untested.
fn resolve_target(
    c: &Catalog,
    k: Minor,
    row: &Row,
    pin: Option<&CalicoTarget>,
    current: Option<&Version>,
    allow_untested: bool,
    warnings: &mut Vec<String>,
) -> Result<Version, String> {
    let target = match pin {
        None => return Ok(row.recommended.clone()),
        Some(t) => t
            .resolve(c)
            .map_err(|e| format!("target_calico_version {e}"))?,
    };
    let release = c
        .release(&target)
        .ok_or_else(|| format!("target_calico_version {target} is not in the catalog"))?;
    if let Some(why) = release.refused() {
        return Err(format!(
            "target_calico_version {target} must not be installed: {why}"
        ));
    }
    if let Some(note) = &release.note {
        warnings.push(format!("Calico {target}: {note}"));
    }
    if !c.is_tested(target.minor(), k) {
        let msg = format!(
            "Calico {} is not tested on Kubernetes {k} (tested there: {})",
            target.minor(),
            list(&c.tested_minors(k))
        );
        if current == Some(&target) {
            // Nothing is installed: the pin only says to stay where the cluster already is.
            warnings.push(format!("{msg}; it already runs, so nothing is planned"));
        } else if !allow_untested {
            return Err(format!("{msg}; set allow_untested to plan it anyway"));
        } else {
            warnings.push(format!("{msg}: planned because allow_untested is set"));
        }
    }
    Ok(target)
}

fn list(minors: &[Minor]) -> String {
    if minors.is_empty() {
        return "none".to_string();
    }
    minors
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn hop(c: &Catalog, v: &Version, k: Minor) -> Hop {
    let operator = c
        .release(v)
        .map(|r| r.operator.clone())
        .unwrap_or_else(|| v.clone());
    Hop {
        version: v.clone(),
        operator_version: operator,
        tested: c.is_tested(v.minor(), k),
    }
}

/// The releases to install from `current` to `target` on Kubernetes minor `k`.
pub fn upgrade_path(
    c: &Catalog,
    k: Minor,
    current: &Version,
    target: &Version,
    strategy: Strategy,
    skipped: &mut Vec<Value>,
) -> Vec<Hop> {
    if current >= target {
        return Vec::new();
    }
    if strategy == Strategy::Direct || current.minor() == target.minor() {
        return vec![hop(c, target, k)];
    }
    let mut hops = Vec::new();
    for m in c
        .calico_minors()
        .filter(|m| *m > current.minor() && *m < target.minor())
    {
        if !c.is_tested(m, k) {
            skipped.push(json!({"minor": m, "reason": format!("Calico {m} is not tested on Kubernetes {k}")}));
            continue;
        }
        if let Some(r) = c.latest_installable(m) {
            hops.push(hop(c, &r.version, k));
        }
    }
    hops.push(hop(c, target, k));
    hops
}

/// Plans Kubernetes steps from `k` to `target`, one minor at a time, with bridges counted from
/// `running`, the release running now.
fn kubernetes_path(
    c: &Catalog,
    input: &PlanInput,
    k: Minor,
    target: Minor,
    running: Option<Version>,
    warnings: &mut Vec<String>,
) -> Result<Vec<KubernetesStep>, String> {
    let mut steps = Vec::new();
    let mut running = running;
    let mut from = k;
    while from < target {
        let to = from.next();
        let next_row = row_for(c, to, input.matrix.as_ref(), input.allow_untested, warnings)?;
        let (bridge, bridge_untested) = match &running {
            None => (None, false),
            Some(v) => bridge(c, from, to, v, input.allow_untested, warnings)?,
        };
        if let Some(b) = &bridge {
            running = Some(b.clone());
        }
        // Never downgrade: after the step, move up to the recommendation only.
        let after = match &running {
            Some(v) if v > &next_row.recommended => v.clone(),
            _ => next_row.recommended.clone(),
        };
        let operator_of = |v: &Version| c.release(v).map(|r| r.operator.clone());
        steps.push(KubernetesStep {
            from,
            to,
            bridge_operator_version: bridge.as_ref().and_then(operator_of),
            bridge_version: bridge,
            bridge_untested,
            operator_version: operator_of(&after).unwrap_or_else(|| next_row.operator.clone()),
            recommended_version: after.clone(),
        });
        running = Some(after);
        from = to;
    }
    Ok(steps)
}

/// The release that must run before kubeadm moves from `from` to `to` while `running` runs:
/// `None` when `running` is tested on both; else the latest installable patch of the newest
/// Calico minor tested on both, at or above `running`. When there is none that is an error,
/// unless `allow_untested`: then the newest installable release at or above `running` tested on
/// `to` (or `running` itself) is named, flagged untested, and warned about.
fn bridge(
    c: &Catalog,
    from: Minor,
    to: Minor,
    running: &Version,
    allow_untested: bool,
    warnings: &mut Vec<String>,
) -> Result<(Option<Version>, bool), String> {
    if c.is_tested(running.minor(), from) && c.is_tested(running.minor(), to) {
        return Ok((None, false));
    }
    if let Some(r) = c.newest_tested_on_both(from, to, Some(running)) {
        return Ok((Some(r.version.clone()), false));
    }
    let on_both = list(
        &c.calico_minors()
            .filter(|m| c.is_tested(*m, from) && c.is_tested(*m, to))
            .collect::<Vec<_>>(),
    );
    let why = format!(
        "no Calico bridge exists for Kubernetes {from} -> {to}: Calico {running} runs, and no installable release at or above it is tested on both {from} and {to} (tested on both: {on_both}); kubeadm must not move to {to} with this Calico"
    );
    if !allow_untested {
        return Err(format!(
            "{why}; set allow_untested to plan an untested bridge anyway"
        ));
    }
    let fallback = c
        .calico_minors()
        .filter(|m| c.is_tested(*m, to))
        .filter_map(|m| c.latest_installable(m))
        .filter(|r| &r.version >= running)
        .map(|r| r.version.clone())
        .last()
        .unwrap_or_else(|| running.clone());
    warnings.push(format!(
        "{why}: planned {fallback} as the bridge because allow_untested is set"
    ));
    Ok((Some(fallback), true))
}

/// Builds the whole plan.
pub fn plan(c: &Catalog, input: &PlanInput) -> Result<Plan, String> {
    let k = input.kubernetes.minor;
    let mut warnings = Vec::new();
    let row = row_for(
        c,
        k,
        input.matrix.as_ref(),
        input.allow_untested,
        &mut warnings,
    )?;
    let target = resolve_target(
        c,
        k,
        &row,
        input.target.as_ref(),
        input.current.as_ref(),
        input.allow_untested,
        &mut warnings,
    )?;
    let target_operator = c
        .release(&target)
        .map(|r| r.operator.clone())
        .unwrap_or_else(|| row.operator.clone());

    let mut skipped = Vec::new();
    let path = match &input.current {
        Some(cur) => {
            if c.release(cur).is_none() {
                warnings.push(format!(
                    "the running Calico {cur} is not in the catalog ({} to {})",
                    c.oldest_release().version,
                    c.newest_release().version
                ));
            }
            if cur > &target {
                warnings.push(format!(
                    "the running Calico {cur} is newer than the target {target}: it is never downgraded"
                ));
            } else if !c.is_tested(cur.minor(), k) {
                warnings.push(format!(
                    "the running Calico {cur} is not tested on Kubernetes {k} (tested there: {})",
                    list(&row.tested_minors)
                ));
            }
            upgrade_path(c, k, cur, &target, input.strategy, &mut skipped)
        }
        None => Vec::new(),
    };

    let mut kube_path = Vec::new();
    if let Some(tk) = &input.target_kubernetes {
        if tk.minor < c.kubernetes_oldest() {
            return Err(unsupported_kubernetes(
                c,
                tk.minor,
                "target_kubernetes_version",
            ));
        }
        if tk.minor < k {
            return Err(format!(
                "target_kubernetes_version {} is older than the running {}: kubeadm does not downgrade",
                tk.plain(),
                input.kubernetes.plain()
            ));
        }
        kube_path = kubernetes_path(c, input, k, tk.minor, input.current.clone(), &mut warnings)?;
    }

    // Advisories concern every release this plan installs, Calico hops and bridges alike.
    let mut installs: Vec<Version> = path.iter().map(|h| h.version.clone()).collect();
    for s in &kube_path {
        for v in s
            .bridge_version
            .iter()
            .chain(std::iter::once(&s.recommended_version))
        {
            if installs.last().is_none_or(|l| v > l)
                && input.current.as_ref().is_none_or(|cur| v > cur)
            {
                installs.push(v.clone());
            }
        }
    }
    let advisories = if installs.is_empty() || input.current.is_none() {
        Vec::new()
    } else {
        c.advisories()
            .iter()
            .filter(|a| a.applies(input.current.as_ref(), &installs))
            .cloned()
            .collect()
    };

    Ok(Plan {
        kubernetes: input.kubernetes.clone(),
        row,
        current: input.current.clone(),
        target,
        target_operator,
        strategy: input.strategy,
        path,
        skipped_minors: skipped,
        target_kubernetes: input.target_kubernetes.clone(),
        kubernetes_path: kube_path,
        advisories,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::catalog;

    fn input(k: &str) -> PlanInput {
        PlanInput {
            kubernetes: k.parse().unwrap(),
            target_kubernetes: None,
            current: None,
            target: None,
            matrix: None,
            strategy: Strategy::Stepwise,
            allow_untested: false,
        }
    }

    fn versions(p: &[Hop]) -> Vec<String> {
        p.iter().map(|h| h.version.to_string()).collect()
    }

    #[test]
    fn stepwise_goes_one_minor_at_a_time() {
        let mut i = input("1.27.16");
        i.current = Some("v3.25.2".parse().unwrap());
        let p = plan(catalog(), &i).unwrap();
        assert_eq!(versions(&p.path), ["v3.26.5", "v3.27.5", "v3.28.5"]);
        assert!(p.path.iter().all(|h| h.tested));
        assert_eq!(p.upgrade_needed(), Some(true));
        assert_eq!(p.upgrade_required(), Some(false));
        i.strategy = Strategy::Direct;
        assert_eq!(versions(&plan(catalog(), &i).unwrap().path), ["v3.28.5"]);
    }

    #[test]
    fn stepwise_skips_minors_untested_on_the_running_kubernetes() {
        let mut i = input("1.30");
        i.current = Some("v3.26.4".parse().unwrap());
        let p = plan(catalog(), &i).unwrap();
        assert_eq!(versions(&p.path), ["v3.28.5", "v3.29.7"]);
        assert_eq!(p.skipped_minors.len(), 1);
        assert_eq!(p.upgrade_required(), Some(true));
    }

    #[test]
    fn never_downgrades() {
        let mut i = input("1.27");
        i.current = Some("v3.29.7".parse().unwrap());
        let p = plan(catalog(), &i).unwrap();
        assert!(p.path.is_empty());
        assert_eq!(p.upgrade_needed(), Some(false));
        assert!(p.warnings.iter().any(|w| w.contains("never downgraded")));
    }

    #[test]
    fn pins_are_checked() {
        let mut i = input("1.27");
        i.target = Some(CalicoTarget::parse("v3.24.6").unwrap());
        assert!(
            plan(catalog(), &i)
                .unwrap_err()
                .contains("must not be installed")
        );
        i.target = Some(CalicoTarget::parse("3.29").unwrap());
        assert!(
            plan(catalog(), &i)
                .unwrap_err()
                .contains("not tested on Kubernetes 1.27")
        );
        i.allow_untested = true;
        assert_eq!(plan(catalog(), &i).unwrap().target.to_string(), "v3.29.7");
        i.target = Some(CalicoTarget::parse("3.28.9").unwrap());
        assert!(
            plan(catalog(), &i)
                .unwrap_err()
                .contains("3.28 has v3.28.0")
        );
    }

    #[test]
    fn old_and_unknown_kubernetes() {
        assert_eq!(
            plan(catalog(), &input("1.22.17")).unwrap_err(),
            "Kubernetes 1.22 is not supported; supported: 1.23 to 1.36"
        );
        assert!(
            plan(catalog(), &input("1.37"))
                .unwrap_err()
                .contains("set allow_untested")
        );
        let mut i = input("1.37");
        i.allow_untested = true;
        assert_eq!(plan(catalog(), &i).unwrap().target.to_string(), "v3.32.1");
    }

    #[test]
    fn bridges_for_each_kubernetes_upgrade() {
        // (from, to, running, expected bridge)
        let cases = [
            ("1.23", "1.24", "v3.24.5", None),
            ("1.23", "1.24", "v3.22.5", Some("v3.25.2")),
            ("1.24", "1.25", "v3.24.5", None),
            ("1.25", "1.26", "v3.24.5", Some("v3.26.5")),
            ("1.26", "1.27", "v3.26.5", None),
            ("1.26", "1.27", "v3.25.0", None),
            ("1.27", "1.28", "v3.27.5", None),
            ("1.28", "1.29", "v3.26.5", Some("v3.28.5")),
            ("1.29", "1.30", "v3.27.5", Some("v3.29.7")),
            ("1.29", "1.30", "v3.28.2", None),
        ];
        for (from, to, running, bridge) in cases {
            let mut i = input(from);
            i.current = Some(running.parse().unwrap());
            i.target_kubernetes = Some(to.parse().unwrap());
            i.target = Some(CalicoTarget::Release(running.parse().unwrap()));
            i.allow_untested = true;
            let p = plan(catalog(), &i).unwrap();
            let got = p
                .bridge()
                .and_then(|s| s.bridge_version.as_ref())
                .map(|v| v.to_string());
            assert_eq!(got.as_deref(), bridge, "{from}->{to} on {running}");
        }
    }

    #[test]
    fn multi_minor_kubernetes_upgrades_step_through_each_minor() {
        let mut i = input("1.27.16");
        i.current = Some("v3.26.4".parse().unwrap());
        i.target = Some(CalicoTarget::parse("v3.26.4").unwrap());
        i.target_kubernetes = Some("1.30.4".parse().unwrap());
        let p = plan(catalog(), &i).unwrap();
        let steps: Vec<(String, Option<String>, String)> = p
            .kubernetes_path
            .iter()
            .map(|s| {
                (
                    s.to.to_string(),
                    s.bridge_version.as_ref().map(|v| v.to_string()),
                    s.recommended_version.to_string(),
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                ("1.28".to_string(), None, "v3.28.5".to_string()),
                ("1.29".to_string(), None, "v3.29.7".to_string()),
                ("1.30".to_string(), None, "v3.29.7".to_string()),
            ]
        );
        assert!(
            p.advisories
                .iter()
                .any(|a| a.id == "owner-references-v3-uids")
        );
    }

    #[test]
    fn kubernetes_downgrades_are_refused() {
        let mut i = input("1.28");
        i.target_kubernetes = Some("1.27".parse().unwrap());
        assert!(
            plan(catalog(), &i)
                .unwrap_err()
                .contains("kubeadm does not downgrade")
        );
    }
}
