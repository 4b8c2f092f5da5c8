//! Deletion: preconditions, graceful pod termination, finalizers (the object stays with
//! `deletionTimestamp` until they are gone), propagation policies and ownerReference garbage
//! collection, done synchronously inside the deleting write so tests never wait on a
//! collector.

use crate::pointer::At;
use std::sync::Arc;

use serde_json::Value;

use super::write::{finalizers, meta_mut, meta_str};
use super::{Cluster, DeleteOptions, ListOptions, Propagation, Resolved, WriteOutcome, object_key};
use crate::admission;
use crate::catalog::{GroupResource, ResourceType};
use crate::clock;
use crate::error::{ApiError, ApiResult};
use crate::store::{ObjectKey, StoreState, StoredObject};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

fn is_core(rt: &ResourceType, plural: &str) -> bool {
    rt.group.is_empty() && rt.plural == plural
}

fn grace_of(obj: &Value) -> i64 {
    obj.at("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

impl Cluster {
    /// Deletes under a resolved type; `gone` tells 200 (removed) from 202 (still finalizing).
    pub fn delete_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<WriteOutcome> {
        if !r.rt.supports("delete") {
            return Err(ApiError::method_not_allowed());
        }
        let key = object_key(r, namespace, name)?;
        let mut state = self.store().write();
        let (obj, gone, changed) = self.delete_locked(&mut state, &r.rt, &key, opts)?;
        let mut object = obj;
        r.relabel(&mut object);
        Ok(WriteOutcome {
            object,
            changed,
            created: false,
            gone,
        })
    }

    /// Deletes every object a list selects (deletecollection); returns the objects as they
    /// were left (gone or finalizing) and how many writes changed state.
    pub fn delete_collection_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<(Vec<Value>, usize)> {
        if !r.rt.supports("deletecollection") {
            return Err(ApiError::method_not_allowed());
        }
        let all = ListOptions {
            limit: None,
            continue_token: None,
            ..list.clone()
        };
        let page = self.list_resolved(r, namespace, &all)?;
        let mut state = self.store().write();
        let mut out = Vec::new();
        let mut changes = 0;
        for o in page.items {
            let key = ObjectKey::new(
                meta_str(&o.value, "namespace"),
                meta_str(&o.value, "name").unwrap_or_default(),
            );
            match self.delete_locked(&mut state, &r.rt, &key, opts) {
                Ok((mut v, _, changed)) => {
                    r.relabel(&mut v);
                    changes += usize::from(changed);
                    out.push(v);
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, changes))
    }

    /// The delete algorithm; returns (object, gone, changed).
    pub(crate) fn delete_locked(
        &self,
        state: &mut StoreState,
        rt: &Arc<ResourceType>,
        key: &ObjectKey,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool, bool)> {
        let gr = rt.group_resource();
        let old = state
            .get(&gr, key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, &key.name))?;
        if let Some(uid) = opts.precondition_uid.as_deref().filter(|u| !u.is_empty())
            && uid != old.uid()
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                &key.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.uid()
                ),
            ));
        }
        if let Some(rv) = opts
            .precondition_resource_version
            .as_deref()
            .filter(|u| !u.is_empty())
            && rv != old.rv.to_string()
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                &key.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.rv
                ),
            ));
        }
        let is_pod = is_core(rt, "pods");
        let is_namespace = is_core(rt, "namespaces");
        let grace = if is_pod {
            let own = old
                .value
                .at("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            let unscheduled = old
                .value
                .at("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty();
            let phase = old.value.at("/status/phase").and_then(Value::as_str);
            let terminal = matches!(phase, Some("Succeeded") | Some("Failed"));
            if unscheduled || terminal {
                0
            } else {
                opts.grace_period_seconds.unwrap_or(own).max(0)
            }
        } else {
            0
        };
        if meta_str(&old.value, "deletionTimestamp").is_some() {
            // A second delete may only shorten a pod's grace period.
            if is_pod && grace < grace_of(&old.value) {
                if opts.dry_run {
                    return Ok((old.value.clone(), false, false));
                }
                let mut new = old.value.clone();
                let meta = meta_mut(&mut new);
                meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
                meta.insert(
                    "deletionTimestamp".into(),
                    Value::String(clock::format_rfc3339(clock::now_unix() + grace)),
                );
                let stored = state.put(&gr, key.clone(), new);
                if self.ready_to_remove(rt, &stored.value) {
                    let tomb = self.remove_now(state, &gr, key);
                    return Ok((
                        tomb.map(|t| t.value.clone()).unwrap_or_default(),
                        true,
                        true,
                    ));
                }
                return Ok((stored.value.clone(), false, true));
            }
            return Ok((old.value.clone(), false, false));
        }
        let policy = opts.propagation.unwrap_or(Propagation::Background);
        let mut fins = finalizers(&old.value);
        if policy == Propagation::Foreground && !fins.iter().any(|f| f == FOREGROUND) {
            fins.push(FOREGROUND.into());
        }
        fins.retain(|f| f != ORPHAN);
        let ns_finalizers = is_namespace
            && old
                .value
                .at("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        let waits = !fins.is_empty() || grace > 0 || ns_finalizers;
        if opts.dry_run {
            let mut v = old.value.clone();
            if waits {
                let meta = meta_mut(&mut v);
                meta.insert(
                    "deletionTimestamp".into(),
                    Value::String(clock::format_rfc3339(clock::now_unix() + grace)),
                );
                meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
            }
            return Ok((v, !waits, false));
        }
        if policy == Propagation::Orphan {
            self.orphan_dependents(state, old.uid());
        }
        if !waits {
            let tomb = self.remove_now(state, &gr, key);
            return Ok((
                tomb.map(|t| t.value.clone()).unwrap_or_default(),
                true,
                true,
            ));
        }
        let mut new = old.value.clone();
        {
            let meta = meta_mut(&mut new);
            meta.insert(
                "deletionTimestamp".into(),
                Value::String(clock::format_rfc3339(clock::now_unix() + grace)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
            if !fins.is_empty() {
                meta.insert("finalizers".into(), Value::from(fins));
            }
            if admission::tracks_generation(rt) {
                let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                meta.insert("generation".into(), Value::from(g + 1));
            }
        }
        if is_namespace {
            new["status"] = serde_json::json!({"phase": "Terminating"});
        }
        let stored = state.put(&gr, key.clone(), new);
        if policy == Propagation::Foreground {
            self.delete_dependents(state, stored.uid(), Propagation::Foreground);
            let uid = stored.uid().to_string();
            self.complete_foreground(state, &uid);
            if let Some(now) = state.get(&gr, key) {
                return Ok((now.value.clone(), false, true));
            }
            return Ok((stored.value.clone(), true, true));
        }
        Ok((stored.value.clone(), false, true))
    }

    /// Whether a deleting object can go: no finalizers, no grace period left, and for
    /// namespaces no `spec.finalizers` either.
    pub(crate) fn ready_to_remove(&self, rt: &ResourceType, obj: &Value) -> bool {
        meta_str(obj, "deletionTimestamp").is_some()
            && finalizers(obj).is_empty()
            && grace_of(obj) == 0
            && !(is_core(rt, "namespaces")
                && obj
                    .at("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    }

    /// Removes an object now and does what its removal implies: garbage collection of its
    /// dependents, completion of foreground deletions waiting on it, and type-specific cleanup.
    pub(crate) fn remove_now(
        &self,
        state: &mut StoreState,
        gr: &GroupResource,
        key: &ObjectKey,
    ) -> Option<Arc<StoredObject>> {
        if gr.group == "apiextensions.k8s.io"
            && gr.resource == "customresourcedefinitions"
            && let Some(crd) = state.get(gr, key)
        {
            self.on_crd_removed(state, &crd.value);
        }
        let tomb = state.remove(gr, key)?;
        if gr.group.is_empty() && gr.resource == "services" {
            for ip in tomb
                .value
                .at("/spec/clusterIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                self.release_service_ip(ip);
            }
        }
        if gr.group.is_empty() && gr.resource == "pods" {
            self.forget_logs(&key.namespace, &key.name);
        }
        let uid = tomb.uid().to_string();
        self.delete_dependents(state, &uid, Propagation::Background);
        let owners: Vec<String> = tomb
            .value
            .at("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("uid").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        for owner in owners {
            self.complete_foreground(state, &owner);
        }
        Some(tomb)
    }

    /// Deletes the dependents of a removed or foreground-deleting owner, unless another of
    /// their owners still exists.
    fn delete_dependents(&self, state: &mut StoreState, owner_uid: &str, policy: Propagation) {
        for (dgr, dkey) in state.dependents_of(owner_uid) {
            let Some(dep) = state.get(&dgr, &dkey) else {
                continue;
            };
            let other_owner_alive = dep
                .value
                .at("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .any(|u| {
                    u != owner_uid
                        && state.locate_uid(u).is_some_and(|(g, k)| {
                            state
                                .get(&g, &k)
                                .is_some_and(|o| meta_str(&o.value, "deletionTimestamp").is_none())
                        })
                });
            if other_owner_alive {
                continue;
            }
            let Some(rt) = state.catalog.get(&dgr).cloned() else {
                continue;
            };
            let opts = DeleteOptions {
                propagation: Some(policy),
                ..DeleteOptions::default()
            };
            // A dependent that is already gone or refuses is the collector's retry in a real
            // cluster; here the next owner event retries, so errors are dropped.
            let _ = self.delete_locked(state, &rt, &dkey, &opts);
        }
    }

    /// Drops the `foregroundDeletion` finalizer of a deleting owner once no dependent with
    /// `blockOwnerDeletion` remains, and removes the owner if nothing else holds it.
    fn complete_foreground(&self, state: &mut StoreState, owner_uid: &str) {
        let Some((gr, key)) = state.locate_uid(owner_uid) else {
            return;
        };
        let Some(owner) = state.get(&gr, &key) else {
            return;
        };
        if meta_str(&owner.value, "deletionTimestamp").is_none()
            || !finalizers(&owner.value).iter().any(|f| f == FOREGROUND)
        {
            return;
        }
        let blocked = state.dependents_of(owner_uid).iter().any(|(dg, dk)| {
            state.get(dg, dk).is_some_and(|d| {
                d.value
                    .at("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|r| {
                        r.get("uid").and_then(Value::as_str) == Some(owner_uid)
                            && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
            })
        });
        if blocked {
            return;
        }
        let mut new = owner.value.clone();
        let rest: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| f != FOREGROUND)
            .collect();
        let meta = meta_mut(&mut new);
        if rest.is_empty() {
            meta.shift_remove("finalizers");
        } else {
            meta.insert("finalizers".into(), Value::from(rest));
        }
        let stored = state.put(&gr, key.clone(), new);
        let Some(rt) = state.catalog.get(&gr).cloned() else {
            return;
        };
        if self.ready_to_remove(&rt, &stored.value) {
            self.remove_now(state, &gr, &key);
        }
    }

    /// Removes owner references to a deleted owner (the Orphan policy).
    fn orphan_dependents(&self, state: &mut StoreState, owner_uid: &str) {
        for (dgr, dkey) in state.dependents_of(owner_uid) {
            let Some(dep) = state.get(&dgr, &dkey) else {
                continue;
            };
            let mut new = dep.value.clone();
            if let Some(refs) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                if refs.is_empty()
                    && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.shift_remove("ownerReferences");
                }
            }
            state.put(&dgr, dkey, new);
        }
    }
}
