//! CustomResourceDefinition lifecycle: a new CRD is accepted and, after a configurable delay
//! (a real server needs a moment too), gets `NamesAccepted` and `Established` and its kinds
//! are served; a changed CRD re-derives its served type; a deleted CRD takes its objects and
//! its endpoints with it.

use crate::pointer::At;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Cluster;
use super::write::meta_str;
use crate::catalog::{GroupResource, type_from_crd};
use crate::clock;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::store::{ObjectKey, StoreState, StoredObject};

const CRDS: (&str, &str) = ("apiextensions.k8s.io", "customresourcedefinitions");

fn crd_gr() -> GroupResource {
    GroupResource::new(CRDS.0, CRDS.1)
}

fn is_established(crd: &Value) -> bool {
    crd.at("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Established")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

fn served_gr(crd: &Value) -> Option<GroupResource> {
    Some(GroupResource::new(
        crd.at("/spec/group")?.as_str()?,
        crd.at("/spec/names/plural")?.as_str()?,
    ))
}

impl Cluster {
    /// Rejects a CRD whose plural is already served by another CRD or a built-in type.
    pub(super) fn check_crd_names(&self, state: &StoreState, crd: &Value) -> ApiResult<()> {
        let Some(gr) = served_gr(crd) else {
            return Ok(());
        };
        if let Some(existing) = state.catalog.get(&gr)
            && existing.builtin
        {
            return Err(ApiError::invalid(
                CRDS.0,
                "CustomResourceDefinition",
                meta_str(crd, "name").unwrap_or_default(),
                vec![FieldCause::invalid(
                    "spec.group",
                    &Value::String(gr.group.clone()),
                    "is a built-in API group",
                )],
            ));
        }
        Ok(())
    }

    /// Keeps the served type in step with a written CRD, and schedules establishment.
    pub(super) fn on_crd_written(&self, state: &mut StoreState, stored: &Arc<StoredObject>) {
        let crd = &stored.value;
        if meta_str(crd, "deletionTimestamp").is_some() {
            return;
        }
        if is_established(crd) {
            if let Ok(t) = type_from_crd(crd) {
                state.catalog.insert(t);
            }
            return;
        }
        let name = meta_str(crd, "name").unwrap_or_default().to_string();
        let uid = stored.uid().to_string();
        let delay = self.inner.crd_establish_delay;
        match (&self.inner.runtime, delay.is_zero()) {
            (Some(rt), false) => {
                let cluster = self.clone();
                rt.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut state = cluster.store().write();
                    cluster.establish(&mut state, &name, &uid);
                });
            }
            _ => self.establish(state, &name, &uid),
        }
    }

    /// Writes the NamesAccepted and Established conditions, which makes the type served.
    fn establish(&self, state: &mut StoreState, name: &str, uid: &str) {
        let key = ObjectKey::new(None, name);
        let Some(current) = state.get(&crd_gr(), &key) else {
            return;
        };
        if current.uid() != uid || is_established(&current.value) {
            return;
        }
        if type_from_crd(&current.value).is_err() {
            return;
        }
        let mut crd = current.value.clone();
        let now = clock::now_rfc3339();
        let mut names = crd.at("/spec/names").cloned().unwrap_or_else(|| json!({}));
        let stored_versions: Vec<Value> = crd
            .at("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| v.get("name").cloned())
            .collect();
        if let Some(m) = names.as_object_mut() {
            m.entry("singular").or_insert_with(|| {
                Value::String(
                    crd.at("/spec/names/kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                )
            });
        }
        crd["status"] = json!({
            "acceptedNames": names,
            "conditions": [
                {"lastTransitionTime": now, "message": "no conflicts found", "reason": "NoConflicts",
                 "status": "True", "type": "NamesAccepted"},
                {"lastTransitionTime": now, "message": "the initial names have been accepted",
                 "reason": "InitialNamesAccepted", "status": "True", "type": "Established"}
            ],
            "storedVersions": stored_versions,
        });
        let stored = state.put(&crd_gr(), key, crd);
        if let Ok(t) = type_from_crd(&stored.value) {
            state.catalog.insert(t);
        }
    }

    /// Removes everything a CRD served: its objects (watchers see them DELETED), then the
    /// type and its watch channel.
    pub(super) fn on_crd_removed(&self, state: &mut StoreState, crd: &Value) {
        let Some(gr) = served_gr(crd) else {
            return;
        };
        if state.catalog.get(&gr).is_some_and(|t| t.builtin) {
            return;
        }
        let keys: Vec<ObjectKey> = state
            .table(&gr)
            .map(|t| t.objects.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            state.remove(&gr, &k);
        }
        state.catalog.remove(&gr);
        state.drop_table(&gr);
    }
}
