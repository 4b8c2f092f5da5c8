//! `calico_matrix`: which Calico suits a Kubernetes version, and the safe path from what runs now.
//!
//! It never changes anything (`changed: false`, check mode included). Without
//! `kubernetes_version` it reads the cluster's `/version`.

pub mod overrides;
pub mod plan;

use crate::catalog::catalog;
use crate::cluster::{self, Connection};
use crate::module::{self, Failure, Module, ModuleSpec, Outcome, Param};
use crate::version::{KubernetesVersion, Version};

pub use overrides::MatrixOverride;
pub use plan::{CalicoTarget, Plan, PlanInput, Strategy, plan};

/// The module's arguments.
pub static SPEC: ModuleSpec = ModuleSpec {
    name: "calico_matrix",
    short_description: "Which Calico suits a Kubernetes version, and the safe upgrade path from what runs now",
    params: &[
        Param::str("kubernetes_version")
            .text_only()
            .help("The running Kubernetes version (1.27, 1.27.16, v1.27.16+rke2r1); read from the cluster when omitted"),
        Param::str("target_kubernetes_version")
            .text_only()
            .help("A planned Kubernetes upgrade: adds the bridge release and one step per minor"),
        Param::str("calico_version").text_only().help("The Calico running now (3.28.5 or v3.28.5)"),
        Param::str("target_calico_version")
            .text_only()
            .help("Pin this Calico release (or minor, meaning its latest patch) instead of the recommendation"),
        Param::dict("matrix").help("An override in the seed's calico_version_matrix format, checked against the catalog"),
        Param::str("strategy")
            .default_str("stepwise")
            .choices(&["stepwise", "direct"])
            .help("stepwise: one hop per Calico minor; direct: straight to the target"),
        Param::bool("allow_untested", false).help("Plan combinations upstream has not tested (each one is warned about)"),
        crate::catalog::CATALOG_PARAM,
        cluster::KUBECONFIG,
        cluster::CONTEXT,
        cluster::VALIDATE_CERTS,
    ],
};

fn version_arg<T: std::str::FromStr<Err = String>>(
    m: &Module,
    name: &str,
) -> Result<Option<T>, Failure> {
    m.str(name)
        .map(|s| {
            s.parse::<T>()
                .map_err(|e| Failure::new(format!("{name}: {e}")))
        })
        .transpose()
}

/// Reads the arguments into a plan request; reads `/version` when the Kubernetes version is
/// not given.
pub fn plan_input(m: &mut Module) -> Result<PlanInput, Failure> {
    // First: everything below plans with the catalog the run was given.
    if let Some(path) = m.str("catalog") {
        crate::catalog::use_file(std::path::Path::new(path)).map_err(Failure::new)?;
    }
    let allow_untested = m.bool("allow_untested");
    let target_kubernetes = version_arg::<KubernetesVersion>(m, "target_kubernetes_version")?;
    let current = version_arg::<Version>(m, "calico_version")?;
    let target = m
        .str("target_calico_version")
        .map(|s| {
            CalicoTarget::parse(s).map_err(|e| Failure::new(format!("target_calico_version: {e}")))
        })
        .transpose()?;
    let strategy =
        Strategy::parse(m.str("strategy").unwrap_or("stepwise")).map_err(Failure::new)?;
    let matrix = match m.dict("matrix") {
        Some(raw) if !raw.is_empty() => {
            let (matrix, warnings) =
                MatrixOverride::parse(catalog(), raw, allow_untested).map_err(Failure::new)?;
            warnings.into_iter().for_each(|w| m.warn(w));
            Some(matrix)
        }
        _ => None,
    };
    let mut current = current;
    let kubernetes = match version_arg::<KubernetesVersion>(m, "kubernetes_version")? {
        Some(k) => k,
        None => {
            // Connected anyway: the running Calico is detected too when not given, from the
            // calico-node pods' images (what really runs), as calico_upgrade does.
            let conn = Connection::from_module(m);
            let want_calico = current.is_none();
            let (k, detected) = module::block_on(async {
                let client = cluster::client(&conn).await?;
                let k = cluster::server_version(&client).await?;
                let detected = if want_calico {
                    Some(cluster::detect::detect(&client).await)
                } else {
                    None
                };
                anyhow::Ok((k, detected))
            })?
            .map_err(|e| {
                Failure::new(format!(
                    "kubernetes_version not given and it could not be read from the cluster: {}",
                    Failure::from(e).msg
                ))
            })?;
            match detected {
                Some(Ok(d)) => match d.install.as_ref().and_then(|i| i.current()) {
                    Some(v) => current = Some(v),
                    None => m.warn("no running Calico was found in the cluster: the plan has no upgrade path; give calico_version to plan from a release"),
                },
                Some(Err(e)) => m.warn(format!(
                    "the running Calico could not be detected ({}); give calico_version",
                    Failure::from(e).msg
                )),
                None => {}
            }
            k
        }
    };
    Ok(PlanInput {
        kubernetes,
        target_kubernetes,
        current,
        target,
        matrix,
        strategy,
        allow_untested,
    })
}

/// The module body.
pub fn run(m: &mut Module) -> Result<Outcome, Failure> {
    let input = plan_input(m)?;
    let c = catalog();
    let plan = plan::plan(c, &input).map_err(Failure::new)?;
    for w in &plan.warnings {
        m.warn(w.clone());
    }
    Ok(Outcome::ok(plan.summary()).fact("calico_matrix", plan.facts(c)))
}
