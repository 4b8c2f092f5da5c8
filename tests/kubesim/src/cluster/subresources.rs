//! Subresources with their own semantics: `pods/eviction` (PodDisruptionBudgets decide),
//! `pods/binding` (the scheduler's way to set `spec.nodeName` once) and `*/scale`.

use crate::pointer::At;
use serde_json::{Value, json};

use super::write::{Scope, meta_mut, meta_str};
use super::{Cluster, DeleteOptions, Resolved, WriteOptions, WriteOutcome, object_key};
use crate::catalog::GroupResource;
use crate::clock;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::selectors::LabelSelector;
use crate::store::ObjectKey;

impl Cluster {
    /// Evicts a pod as the eviction subresource does: terminal, pending or already deleting
    /// pods go at once; otherwise the one PodDisruptionBudget selecting the pod must allow a
    /// disruption, which the eviction consumes. 429 when it does not.
    pub fn evict(&self, namespace: &str, name: &str, opts: &DeleteOptions) -> ApiResult<()> {
        let pods = self.resolve("v1", "pods")?;
        let key = ObjectKey::new(Some(namespace), name);
        let mut state = self.store().write();
        let pod = state
            .get(&pods.gr(), &key)
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let phase = pod.value.at("/status/phase").and_then(Value::as_str);
        let ignore_pdb = matches!(
            phase,
            Some("Succeeded") | Some("Failed") | Some("Pending") | None
        ) || meta_str(&pod.value, "deletionTimestamp").is_some();
        if !ignore_pdb {
            let pdb_gr = GroupResource::new("policy", "poddisruptionbudgets");
            let matching: Vec<_> = state
                .table(&pdb_gr)
                .map(|t| {
                    t.range(Some(namespace), None)
                        .filter(|(_, p)| {
                            p.value
                                .at("/spec/selector")
                                .and_then(|s| LabelSelector::from_object(s).ok())
                                .is_some_and(|s| !s.is_empty() && s.matches(&pod.value))
                        })
                        .map(|(k, p)| (k.clone(), p.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if matching.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some((pdb_key, pdb)) = matching.into_iter().next() {
                let pdb_name = pdb_key.name.clone();
                let generation = pdb
                    .value
                    .at("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let observed = pdb
                    .value
                    .at("/status/observedGeneration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let allowed = pdb
                    .value
                    .at("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if observed < generation || allowed <= 0 {
                    let healthy = pdb
                        .value
                        .at("/status/currentHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let desired = pdb
                        .value
                        .at("/status/desiredHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let mut e = ApiError::too_many_requests(10);
                    e.message =
                        "Cannot evict pod as it would violate the pod's disruption budget.".into();
                    e.causes = vec![FieldCause {
                        reason: "DisruptionBudget",
                        field: String::new(),
                        message: format!(
                            "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
                        ),
                    }];
                    e.retry_after = None;
                    return Err(e);
                }
                if !opts.dry_run {
                    let mut new = pdb.value.clone();
                    if !new.get("status").is_some_and(Value::is_object) {
                        new["status"] = json!({});
                    }
                    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                    let now = clock::now_rfc3339();
                    let dp = new["status"].as_object_mut().map(|s| {
                        s.entry("disruptedPods")
                            .or_insert_with(|| json!({}))
                            .clone()
                    });
                    if let Some(mut dp) = dp {
                        if !dp.is_object() {
                            dp = json!({});
                        }
                        dp[name] = json!(now);
                        new["status"]["disruptedPods"] = dp;
                    }
                    state.put(&pdb_gr, pdb_key, new);
                }
            }
        }
        let rt = pods.rt.clone();
        self.delete_locked(&mut state, &rt, &key, opts).map(|_| ())
    }

    /// Binds a pod to a node (`pods/binding`): sets `spec.nodeName` once and the PodScheduled
    /// condition, as the scheduler's binding does.
    pub fn bind(&self, namespace: &str, name: &str, node: &str) -> ApiResult<()> {
        let pods = self.resolve("v1", "pods")?;
        let key = ObjectKey::new(Some(namespace), name);
        let mut state = self.store().write();
        let pod = state
            .get(&pods.gr(), &key)
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let current = pod
            .value
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !current.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if meta_str(&pod.value, "deletionTimestamp").is_some() {
            return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
        }
        let mut new = pod.value.clone();
        new["spec"]["nodeName"] = json!(node);
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        let conds = new["status"]
            .as_object_mut()
            .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = conds {
            list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            list.push(
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": clock::now_rfc3339()}),
            );
        }
        let _ = meta_mut(&mut new);
        state.put(&pods.gr(), key, new);
        Ok(())
    }

    /// The `autoscaling/v1` Scale of a workload.
    pub fn get_scale(&self, r: &Resolved, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let stored = self.get_stored(r, namespace, name)?;
        Ok(scale_of(&stored.value))
    }

    /// Sets a workload's replicas through its Scale (PUT or the result of a PATCH on Scale).
    pub fn set_scale(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        name: &str,
        scale: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        let replicas = scale
            .at("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![FieldCause::required("spec.replicas")],
                )
            })?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![FieldCause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let key = object_key(r, namespace, name)?;
        let mut state = self.store().write();
        let old = state
            .get(&r.gr(), &key)
            .ok_or_else(|| ApiError::not_found(&r.rt.group, &r.rt.plural, name))?;
        if let Some(rv) = scale
            .at("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && rv != old.rv.to_string()
        {
            return Err(ApiError::stale(&r.rt.group, &r.rt.plural, name));
        }
        let mut new = r.present(&old);
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        new["spec"]["replicas"] = json!(replicas);
        let WriteOutcome {
            object, changed, ..
        } = self.update_locked(&mut state, r, &key, &old, new, Scope::Main, opts, "Update")?;
        Ok((scale_of(&object), changed))
    }
}

/// Builds a Scale from a workload object.
pub fn scale_of(obj: &Value) -> Value {
    let sel = obj
        .at("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.at("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.at("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": sel,
        },
    })
}
