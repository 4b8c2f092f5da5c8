//! The `control_plane` scenario: Calico's health as the API shows it, with no pods deployed.

use anyhow::Result;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::catalog::InstallMethod;
use crate::cluster::detect::{self, operator_resource};
use crate::version::Version;

/// One control-plane check: (check name, passed, detail).
pub type Finding = (String, bool, String);

fn condition(obj: &DynamicObject, t: &str) -> String {
    obj.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| c["type"] == t))
        .map(|c| {
            format!(
                "{} {}",
                c["status"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .unwrap_or_else(|| "missing".into())
}

/// Runs the checks.
pub async fn check(client: &Client, expected: Option<&Version>) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let d = detect::detect(client).await?;
    let Some(install) = d.install else {
        out.push((
            "calico_installed".into(),
            false,
            "no Calico install found (no tigera-operator, no calico-node DaemonSet)".into(),
        ));
        return Ok(out);
    };
    out.push((
        "calico_installed".into(),
        true,
        format!(
            "{} install in {}",
            install.method.as_str(),
            install.namespace
        ),
    ));

    if let Some(want) = expected {
        let wrong: Vec<String> = install
            .running
            .iter()
            .filter(|(v, _)| *v != want)
            .map(|(v, n)| format!("{v} on {}", n.join(", ")))
            .collect();
        out.push(if wrong.is_empty() && !install.running.is_empty() {
            (
                "calico_version".into(),
                true,
                format!("every calico-node runs {want}"),
            )
        } else {
            (
                "calico_version".into(),
                false,
                format!(
                    "expected {want}, found {}",
                    if wrong.is_empty() {
                        "no calico-node pods".into()
                    } else {
                        wrong.join("; ")
                    }
                ),
            )
        });
    }

    if install.method == InstallMethod::Operator {
        let ts: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &operator_resource("TigeraStatus", "tigerastatuses"),
        );
        match ts.get_opt("calico").await? {
            Some(s) => {
                let available = condition(&s, "Available");
                let progressing = condition(&s, "Progressing");
                let degraded = condition(&s, "Degraded");
                let ok = available.starts_with("True")
                    && !progressing.starts_with("True")
                    && !degraded.starts_with("True");
                out.push((
                    "tigerastatus".into(),
                    ok,
                    format!("calico Available={available}; Progressing={progressing}; Degraded={degraded}"),
                ));
            }
            None => out.push((
                "tigerastatus".into(),
                false,
                "TigeraStatus calico does not exist".into(),
            )),
        }
        if let Some(want) = expected {
            let got = install
                .installation_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into());
            out.push((
                "installation_version".into(),
                got == want.to_string(),
                format!("Installation status.calicoVersion {got}"),
            ));
        }
    }

    let ns = install.namespace.as_str();
    match Api::<DaemonSet>::namespaced(client.clone(), ns)
        .get_opt("calico-node")
        .await?
    {
        Some(ds) => {
            let st = ds.status.unwrap_or_default();
            let desired = st.desired_number_scheduled;
            let ok = st.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0)
                && st.updated_number_scheduled.unwrap_or(0) == desired
                && st.number_ready == desired
                && st.number_available.unwrap_or(0) == desired;
            out.push((
                "calico_node_rollout".into(),
                ok,
                format!(
                    "desired {desired}, updated {}, ready {}, available {}",
                    st.updated_number_scheduled.unwrap_or(0),
                    st.number_ready,
                    st.number_available.unwrap_or(0)
                ),
            ));
        }
        None => out.push((
            "calico_node_rollout".into(),
            false,
            format!("DaemonSet {ns}/calico-node not found"),
        )),
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("k8s-app=calico-node"))
        .await?;
    let unready: Vec<String> = pods
        .items
        .iter()
        .filter(|p| {
            !p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| {
            format!(
                "{} on {}",
                p.name_any(),
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default()
            )
        })
        .collect();
    out.push((
        "calico_node_ready".into(),
        unready.is_empty(),
        if unready.is_empty() {
            format!("{} pods Ready", pods.items.len())
        } else {
            format!("not Ready: {}", unready.join(", "))
        },
    ));

    for name in ["calico-kube-controllers", "calico-typha"] {
        if let Some(d) = Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
        {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let have = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            out.push((
                format!("{name}_available"),
                have >= want,
                format!("{have}/{want} available"),
            ));
        }
    }

    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let unavailable: Vec<String> = nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
                })
        })
        .map(|n| n.name_any())
        .collect();
    out.push((
        "node_network".into(),
        unavailable.is_empty(),
        if unavailable.is_empty() {
            "no node reports NetworkUnavailable".into()
        } else {
            format!("NetworkUnavailable on {}", unavailable.join(", "))
        },
    ));
    Ok(out)
}
