//! Checks run before any write, each reported in the result.
//!
//! Blocking checks stop the upgrade unless `force` is set; then each overridden check is named
//! in the warnings. Nothing here writes to the cluster.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::discovery;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::detect::{Detection, Install};
use crate::matrix::Plan;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// A stable name, e.g. `nodes_ready`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Whether a failure stops the upgrade (unless forced).
    pub blocking: bool,
    /// What was found.
    pub detail: String,
    /// Counts or lists, when the check has them.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Check {
    /// The `customizations` entry: what a manifest install's local changes become.
    pub fn customizations(report: &crate::upgrade::customize::Report) -> Self {
        let mut c = Check::new(
            "customizations",
            report.dropped.is_empty(),
            false,
            format!(
                "{} local customisations found: {} carried over, {} cannot be",
                report.carried.len() + report.dropped.len(),
                report.carried.len(),
                report.dropped.len()
            ),
        );
        c.data = json!({"carried": report.carried.len(), "dropped": report.dropped.len()});
        c
    }

    fn new(name: &str, ok: bool, blocking: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            blocking,
            detail: detail.into(),
            data: Value::Null,
        }
    }
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Lists object metadata page by page, calling `f` for each; a kind that is not served is empty.
async fn each_meta(
    client: &Client,
    ar: &ApiResource,
    mut f: impl FnMut(&kube::api::PartialObjectMeta<DynamicObject>),
) -> Result<u64> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut params = ListParams::default().limit(500);
    let mut n = 0;
    loop {
        let page = match api.list_metadata(&params).await {
            Ok(p) => p,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(0),
            Err(e) => return Err(anyhow!("listing {}: {e}", ar.plural)),
        };
        for o in &page.items {
            f(o);
            n += 1;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(t) => params = ListParams::default().limit(500).continue_token(&t),
            None => return Ok(n),
        }
    }
}

/// The served kinds of an API group, or none when it is not served.
async fn served(client: &Client, group: &str) -> Result<Vec<ApiResource>> {
    Ok(crate::cluster::served_group(client, group)
        .await?
        .map(|g| {
            g.recommended_resources()
                .into_iter()
                .filter(|(_, c)| c.supports_operation(discovery::verbs::LIST))
                .map(|(a, _)| a)
                .collect()
        })
        .unwrap_or_default())
}

/// Runs every pre-check.
pub async fn run(
    client: &Client,
    detection: &Detection,
    install: &Install,
    plan: &Plan,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();

    let not_ready: Vec<String> = detection
        .nodes
        .iter()
        .filter(|n| !n.ready)
        .map(|n| format!("{} ({})", n.name, n.reason.clone().unwrap_or_default()))
        .collect();
    checks.push(if not_ready.is_empty() {
        Check::new(
            "nodes_ready",
            true,
            true,
            format!("all {} nodes Ready", detection.nodes.len()),
        )
    } else {
        Check::new(
            "nodes_ready",
            false,
            true,
            format!("nodes not Ready: {}", not_ready.join(", ")),
        )
    });

    let pods: Api<Pod> = Api::namespaced(client.clone(), &install.namespace);
    let list = pods
        .list(&ListParams::default().labels("k8s-app=calico-node"))
        .await
        .map_err(|e| anyhow!("listing calico-node pods: {e}"))?;
    let mut unready = Vec::new();
    for p in &list.items {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            unready.push(format!("{} on {node}", p.name_any()));
        }
    }
    checks.push(if list.items.is_empty() {
        Check::new(
            "calico_node_ready",
            false,
            true,
            format!("no calico-node pods in {}", install.namespace),
        )
    } else if unready.is_empty() {
        Check::new(
            "calico_node_ready",
            true,
            true,
            format!("all {} calico-node pods Ready", list.items.len()),
        )
    } else {
        Check::new(
            "calico_node_ready",
            false,
            true,
            format!("calico-node pods not Ready: {}", unready.join(", ")),
        )
    });

    if install.mixed() {
        let mixed: Vec<String> = install
            .running
            .iter()
            .map(|(v, nodes)| format!("{v} on {}", nodes.join(", ")))
            .collect();
        checks.push(Check::new(
            "single_version",
            false,
            false,
            format!("calico-node runs mixed versions: {}", mixed.join("; ")),
        ));
    }

    let untested: Vec<String> = plan
        .path
        .iter()
        .filter(|h| !h.tested)
        .map(|h| h.version.to_string())
        .collect();
    let hops: Vec<String> = plan.path.iter().map(|h| h.version.to_string()).collect();
    checks.push(if untested.is_empty() {
        Check::new(
            "upgrade_path",
            true,
            true,
            format!(
                "{} tested on Kubernetes {}",
                hops.join(", "),
                plan.kubernetes.minor
            ),
        )
    } else {
        Check::new(
            "upgrade_path",
            false,
            true,
            format!(
                "not tested on Kubernetes {}: {}",
                plan.kubernetes.minor,
                untested.join(", ")
            ),
        )
    });

    // Policy inventory: what the network depends on, counted before anything changes.
    let mut counts = BTreeMap::new();
    counts.insert(
        "networkpolicies.networking.k8s.io".to_string(),
        each_meta(
            client,
            &ar(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            |_| {},
        )
        .await?,
    );
    let calico_kinds = served(client, "crd.projectcalico.org").await?;
    for kind in calico_kinds
        .iter()
        .filter(|a| a.kind.contains("Policy") || a.kind.contains("NetworkSet") || a.kind == "Tier")
    {
        counts.insert(
            format!("{}.{}", kind.plural, kind.group),
            each_meta(client, kind, |_| {}).await?,
        );
    }
    let anp_kinds = served(client, "policy.networking.k8s.io").await?;
    for kind in &anp_kinds {
        counts.insert(
            format!("{}.{}", kind.plural, kind.group),
            each_meta(client, kind, |_| {}).await?,
        );
    }
    let total: u64 = counts.values().sum();
    let mut inventory = Check::new(
        "policy_inventory",
        true,
        false,
        format!("{total} policies and sets"),
    );
    inventory.data = json!(counts);
    checks.push(inventory);

    for advisory in &plan.advisories {
        let Some(check) = advisory.check.as_deref() else {
            continue;
        };
        let blocking = advisory.severity == crate::catalog::Severity::Blocking;
        let found: Vec<String> = match check {
            "owner_references_to_projectcalico_v3" => {
                owner_references(client, &calico_kinds).await?
            }
            "admin_network_policies" => {
                let mut names = Vec::new();
                for kind in anp_kinds
                    .iter()
                    .filter(|k| k.kind.contains("AdminNetworkPolicy"))
                {
                    each_meta(client, kind, |o| {
                        names.push(format!("{} {}", kind.kind, o.name_any()))
                    })
                    .await?;
                }
                names
            }
            "default_tier_policies" => {
                let mut names = Vec::new();
                for kind in calico_kinds
                    .iter()
                    .filter(|k| k.kind.ends_with("NetworkPolicy"))
                {
                    each_meta(client, kind, |o| {
                        if o.name_any().starts_with("default.") {
                            names.push(format!("{} {}", kind.kind, o.name_any()));
                        }
                    })
                    .await?;
                }
                names
            }
            _ => Vec::new(),
        };
        let mut c = if found.is_empty() {
            Check::new(
                &format!("advisory:{}", advisory.id),
                true,
                blocking,
                "nothing affected found",
            )
        } else {
            let shown: Vec<&String> = found.iter().take(10).collect();
            Check::new(
                &format!("advisory:{}", advisory.id),
                false,
                blocking,
                format!(
                    "{} ({} affected: {}{})",
                    advisory.message,
                    found.len(),
                    shown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if found.len() > 10 { ", ..." } else { "" }
                ),
            )
        };
        c.data = json!({"affected": found.len()});
        checks.push(c);
    }
    Ok(checks)
}

/// Objects whose OwnerReferences point at projectcalico.org/v3 objects: those break when 3.28
/// changes the UIDs. Workload kinds and Calico's own kinds are scanned.
async fn owner_references(client: &Client, calico_kinds: &[ApiResource]) -> Result<Vec<String>> {
    let mut kinds = vec![
        ar("", "v1", "Pod", "pods"),
        ar("", "v1", "ConfigMap", "configmaps"),
        ar("", "v1", "Secret", "secrets"),
        ar("", "v1", "Service", "services"),
        ar("apps", "v1", "Deployment", "deployments"),
        ar("apps", "v1", "DaemonSet", "daemonsets"),
        ar("apps", "v1", "StatefulSet", "statefulsets"),
        ar("apps", "v1", "ReplicaSet", "replicasets"),
        ar("batch", "v1", "Job", "jobs"),
        ar(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
    ];
    kinds.extend(calico_kinds.iter().cloned());
    let mut found = Vec::new();
    for kind in &kinds {
        each_meta(client, kind, |o| {
            let refs = o.metadata.owner_references.as_deref().unwrap_or_default();
            if refs
                .iter()
                .any(|r| r.api_version.starts_with("projectcalico.org/"))
            {
                let ns = o
                    .metadata
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                found.push(format!("{} {ns}{}", kind.kind, o.name_any()));
            }
        })
        .await?;
    }
    Ok(found)
}
