//! What the real server does to objects of built-in kinds before storing them: defaulting
//! (what clients and controllers rely on seeing), validation with field paths, and the
//! per-type rules of generation tracking and initial status.

mod crd_schema;
mod defaults;
mod names;
mod validation;

use serde_json::{Value, json};

use crate::catalog::ResourceType;

pub use crd_schema::{SchemaCheck, check as check_custom_resource};
pub use defaults::default_object;
pub use names::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};
pub use validation::validate;

/// Whether the type keeps `metadata.generation` (the real server's strategies set it for
/// workloads, policies, CRDs and every custom resource, not for core objects).
pub fn tracks_generation(rt: &ResourceType) -> bool {
    if !rt.builtin {
        return true;
    }
    matches!(
        (rt.group.as_str(), rt.plural.as_str()),
        (
            "apps",
            "daemonsets" | "deployments" | "replicasets" | "statefulsets"
        ) | ("batch", _)
            | ("policy", "poddisruptionbudgets")
            | ("networking.k8s.io", "networkpolicies" | "ingresses")
            | ("apiextensions.k8s.io", _)
    )
}

/// The status a new object starts with, for types with a status subresource: `None` means the
/// body's status is dropped, as the real create strategies do. Nodes keep theirs (kubelets
/// register with status).
pub fn initial_status(rt: &ResourceType) -> Option<Value> {
    if !rt.builtin {
        return None;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => Some(json!({"phase": "Active"})),
        ("", "pods") => Some(json!({"phase": "Pending"})),
        ("", "services") => Some(json!({"loadBalancer": {}})),
        ("apps", "daemonsets") => Some(json!({
            "currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 0
        })),
        ("apps", "replicasets") => Some(json!({"replicas": 0})),
        ("apps", "statefulsets") => Some(json!({"replicas": 0, "availableReplicas": 0})),
        ("policy", "poddisruptionbudgets") => Some(json!({
            "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0
        })),
        _ => Some(json!({})),
    }
}

/// Whether `initial_status` applies: nodes keep the status they were created with.
pub fn keeps_status_on_create(rt: &ResourceType) -> bool {
    rt.builtin && rt.group.is_empty() && rt.plural == "nodes"
}
