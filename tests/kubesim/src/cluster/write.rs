//! Create, update and status update: metadata the server owns, status kept apart from spec,
//! generation rules, defaulting and validation, no-op detection, managedFields, and the
//! finalization an update can trigger.

use crate::pointer::At;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Cluster, Resolved, WriteOptions, WriteOutcome, object_key};
use crate::admission;
use crate::clock;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::ids;
use crate::store::{ObjectKey, StoreState, StoredObject};

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource: status is ignored for types with a status subresource.
    Main,
    /// The status subresource: everything but status is ignored.
    Status,
    /// `namespaces/finalize`: only `spec.finalizers` changes.
    Finalize,
}

impl Scope {
    pub(crate) fn from_subresource(sub: Option<&str>) -> ApiResult<Self> {
        match sub {
            None | Some("") => Ok(Scope::Main),
            Some("status") => Ok(Scope::Status),
            Some("finalize") => Ok(Scope::Finalize),
            Some(_) => Err(ApiError::method_not_allowed()),
        }
    }
}

pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.at("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Checks the body is an object of the resolved type and stamps the storage apiVersion/kind.
pub(crate) fn normalize_type(r: &Resolved, obj: &mut Value) -> ApiResult<()> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    };
    let want_kind = &r.rt.kind;
    if let Some(kind) = m.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != want_kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({want_kind})"
        )));
    }
    if let Some(av) = m.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
    {
        let (g, v) = super::split_api_version(av);
        if g != r.rt.group || r.rt.version(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                r.api_version()
            )));
        }
    }
    // Objects are stored in the storage version; multi-version CRDs convert with None, so the
    // body is the same in every version.
    let storage = r.rt.api_version(&r.rt.storage_version().name);
    m.shift_remove("apiVersion");
    m.shift_remove("kind");
    let rest = std::mem::take(m);
    m.insert("apiVersion".into(), Value::String(storage));
    m.insert("kind".into(), Value::String(want_kind.clone()));
    m.extend(rest);
    Ok(())
}

/// Whether two objects are equal once the top-level fields `skip` are left out and, within
/// `metadata`, the fields `skip_meta`. Compared in place: every write asks this (no-op
/// detection, generation bumps) and copying a pod to ask would cost more than the write.
/// Field order does not matter, as for the maps themselves.
fn equal_except(a: &Value, b: &Value, skip: &[&str], skip_meta: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    fields_equal(a, b, skip, |k, x, y| {
        if k != "metadata" {
            return x == y;
        }
        match (x.as_object(), y.as_object()) {
            (Some(x), Some(y)) => fields_equal(x, y, skip_meta, |_, x, y| x == y),
            _ => x == y,
        }
    })
}

fn fields_equal(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    skip: &[&str],
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let kept = |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, x)| b.get(k).is_some_and(|y| same(k, x, y)))
}

/// The spec side of an object changed (what bumps `metadata.generation`): everything but
/// metadata and type, and the status too where it has no subresource of its own.
fn spec_changed(old: &Value, new: &Value, with_status: bool) -> bool {
    let skip: &[&str] = if with_status {
        &["metadata", "apiVersion", "kind"]
    } else {
        &["metadata", "apiVersion", "kind", "status"]
    };
    !equal_except(old, new, skip, &[])
}

/// What a write to the status subresource stores: the stored object with the sent `status`
/// (and the sent `metadata.managedFields`, which the field manager then recomputes); whatever
/// else was sent is ignored, as on the real server. Fields the sender left as stored are
/// moved out of `sent` rather than copied from the stored object: a status write usually
/// carries the whole object back.
fn status_write(stored: &Value, sent: Value) -> Value {
    let Value::Object(mut sent) = sent else {
        let mut merged = stored.clone();
        if let Some(m) = merged.as_object_mut() {
            m.shift_remove("status");
        }
        return merged;
    };
    let mut merged = Map::new();
    for (k, v) in stored.as_object().into_iter().flatten() {
        let kept = match (k.as_str(), sent.swap_remove(k.as_str())) {
            ("status", Some(status)) => status,
            ("status", None) => continue,
            ("metadata", Some(mut meta)) => {
                let sent_managed = meta.at("/managedFields").is_some();
                if !equal_except(&meta, v, &[], &["managedFields"]) {
                    let managed = meta
                        .as_object_mut()
                        .and_then(|m| m.shift_remove("managedFields"));
                    meta = v.clone();
                    if let (Some(mf), Some(m)) = (managed, meta.as_object_mut()) {
                        m.insert("managedFields".into(), mf);
                    }
                } else if !sent_managed
                    && let (Some(mf), Some(m)) = (v.get("managedFields"), meta.as_object_mut())
                {
                    m.insert("managedFields".into(), mf.clone());
                }
                meta
            }
            (_, Some(mine)) if mine == *v => mine,
            _ => v.clone(),
        };
        merged.insert(k.clone(), kept);
    }
    if let Some(status) = sent.swap_remove("status") {
        merged.insert("status".into(), status);
    }
    Value::Object(merged)
}

/// Prunes and validates a custom resource against its version's schema; Strict field
/// validation turns pruned fields into a 400 as on the real server.
fn check_schema(r: &Resolved, obj: &mut Value, opts: &WriteOptions, apply: bool) -> ApiResult<()> {
    if r.rt.builtin {
        return Ok(());
    }
    let Some(schema) = r.rt.version(&r.version).and_then(|v| v.schema.as_ref()) else {
        return Ok(());
    };
    let found = admission::check_custom_resource(schema, obj);
    if !found.causes.is_empty() {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        return Err(ApiError::invalid(
            &r.rt.group,
            &r.rt.kind,
            &name,
            found.causes,
        ));
    }
    if !found.pruned.is_empty() && opts.field_validation.as_deref() == Some("Strict") {
        let message = if apply {
            found
                .pruned
                .iter()
                .map(|p| format!(".{p}: field not declared in schema"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            let list: Vec<String> = found
                .pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            format!("strict decoding error: {}", list.join(", "))
        };
        return Err(ApiError::bad_request(message));
    }
    Ok(())
}

impl Cluster {
    /// Creates under a resolved type; the outcome says whether the store changed.
    pub fn create_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        let mut state = self.store().write();
        self.create_locked(&mut state, r, namespace, object, opts)
    }

    pub(crate) fn create_locked(
        &self,
        state: &mut StoreState,
        r: &Resolved,
        namespace: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        self.create_locked_with(state, r, namespace, obj, opts, false)
    }

    /// Create, where `managed_done` says server-side apply already wrote managedFields.
    pub(crate) fn create_locked_with(
        &self,
        state: &mut StoreState,
        r: &Resolved,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        managed_done: bool,
    ) -> ApiResult<WriteOutcome> {
        if !r.rt.supports("create") {
            return Err(ApiError::method_not_allowed());
        }
        normalize_type(r, &mut obj)?;
        let namespace = namespace.filter(|n| !n.is_empty());
        let body_ns = meta_str(&obj, "namespace")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let ns = if r.rt.namespaced {
            match (namespace, body_ns.as_deref()) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(a), _) => Some(a.to_string()),
                (None, Some(b)) => Some(b.to_string()),
                (None, None) => Some("default".to_string()),
            }
        } else {
            if namespace.is_some() {
                return Err(ApiError::no_such_resource());
            }
            None
        };
        let gr = r.gr();
        {
            let meta = meta_mut(&mut obj);
            match &ns {
                Some(n) => {
                    meta.insert("namespace".into(), Value::String(n.clone()));
                }
                None => {
                    meta.shift_remove("namespace");
                }
            }
            let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                let prefix = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !prefix.is_empty() {
                    // Retry on the unlikely collision instead of answering 409.
                    let mut generated = String::new();
                    for _ in 0..16 {
                        let candidate = format!("{prefix}{}", ids::name_suffix());
                        if state
                            .get(&gr, &ObjectKey::new(ns.as_deref(), &candidate))
                            .is_none()
                        {
                            generated = candidate;
                            break;
                        }
                    }
                    meta.insert("name".into(), Value::String(generated));
                }
            }
            meta.insert("uid".into(), Value::String(ids::new_uid()));
            meta.insert(
                "creationTimestamp".into(),
                Value::String(clock::now_rfc3339()),
            );
            if !managed_done {
                meta.shift_remove("managedFields");
            }
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.shift_remove(f);
            }
            if admission::tracks_generation(&r.rt) {
                meta.insert("generation".into(), Value::from(1));
            } else {
                meta.shift_remove("generation");
            }
        }
        daemonset_template_generation(r, None, &mut obj);
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                &r.rt.group,
                &r.rt.kind,
                "",
                vec![FieldCause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        if let Some(n) = &ns {
            self.admit_namespace(state, &r.rt.group, &r.rt.plural, n, &name)?;
        }
        if r.rt.has_status_subresource() && !admission::keeps_status_on_create(&r.rt) {
            match admission::initial_status(&r.rt) {
                Some(s) => obj["status"] = s,
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.shift_remove("status");
                    }
                }
            }
        }
        admission::default_object(&r.rt, &mut obj, None);
        let allocated = self.allocate_service_ip(&r.rt, &mut obj, None)?;
        let result = self.finish_create(state, r, ns.as_deref(), &name, obj, opts, managed_done);
        if (result.is_err() || opts.dry_run)
            && let Some(ip) = allocated
        {
            self.release_service_ip(&ip);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_create(
        &self,
        state: &mut StoreState,
        r: &Resolved,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
        managed_done: bool,
    ) -> ApiResult<WriteOutcome> {
        check_schema(r, &mut obj, opts, managed_done)?;
        let causes = admission::validate(&r.rt, &obj, None);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&r.rt.group, &r.rt.kind, name, causes));
        }
        if r.rt.group == "apiextensions.k8s.io" {
            self.check_crd_names(state, &obj)?;
        }
        let key = ObjectKey::new(ns, name);
        if state.get(&r.gr(), &key).is_some() {
            return Err(ApiError::already_exists(&r.rt.group, &r.rt.plural, name));
        }
        if !managed_done {
            super::patching::record_managed_fields(
                r,
                None,
                &mut obj,
                &opts.effective_manager(),
                None,
            )?;
        }
        if opts.dry_run {
            r.relabel(&mut obj);
            return Ok(WriteOutcome {
                object: obj,
                changed: false,
                created: true,
                gone: false,
            });
        }
        let stored = state.put(&r.gr(), key, obj);
        self.after_commit(state, r, &stored);
        Ok(WriteOutcome {
            object: r.present(&stored),
            changed: true,
            created: true,
            gone: false,
        })
    }

    /// Refuses creation in a namespace that does not exist or is terminating, as the
    /// NamespaceLifecycle admission plugin does.
    fn admit_namespace(
        &self,
        state: &StoreState,
        group: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
        let gr = crate::catalog::GroupResource::new("", "namespaces");
        match state.get(&gr, &ObjectKey::new(None, ns)) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o) if meta_str(&o.value, "deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(
                    group,
                    resource,
                    name,
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        if group.is_empty() {
                            resource.to_string()
                        } else {
                            format!("{resource}.{group}")
                        }
                    ),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Updates under a resolved type (PUT, or `subresource` `status`/`finalize`).
    pub fn update_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        name: &str,
        object: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        let scope = Scope::from_subresource(subresource)?;
        if scope == Scope::Status && !r.rt.has_subresource(&r.version, "status") {
            return Err(ApiError::no_such_resource());
        }
        if !r.rt.supports("update") {
            return Err(ApiError::method_not_allowed());
        }
        let key = object_key(r, namespace, name)?;
        let mut state = self.store().write();
        let old = state
            .get(&r.gr(), &key)
            .ok_or_else(|| ApiError::not_found(&r.rt.group, &r.rt.plural, name))?;
        self.update_locked(&mut state, r, &key, &old, object, scope, opts, "Update")
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_locked(
        &self,
        state: &mut StoreState,
        r: &Resolved,
        key: &ObjectKey,
        old: &Arc<StoredObject>,
        mut new: Value,
        scope: Scope,
        opts: &WriteOptions,
        operation: &str,
    ) -> ApiResult<WriteOutcome> {
        normalize_type(r, &mut new)?;
        let name = key.name.as_str();
        let (g, plural) = (r.rt.group.as_str(), r.rt.plural.as_str());
        if let Some(n) = meta_str(&new, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(n) = meta_str(&new, "namespace").filter(|n| !n.is_empty())
            && n != key.namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
            && rv != old.rv.to_string()
        {
            return Err(ApiError::stale(g, plural, name));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|s| !s.is_empty())
            && uid != old.uid()
        {
            return Err(ApiError::conflict(
                g,
                plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.uid()
                ),
            ));
        }
        let old_v = &old.value;
        new = match scope {
            Scope::Main => new,
            Scope::Status => status_write(old_v, new),
            Scope::Finalize => {
                let mut merged = old_v.clone();
                let f = new
                    .at("/spec/finalizers")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new()));
                if !merged.get("spec").is_some_and(Value::is_object) {
                    merged["spec"] = Value::Object(Map::new());
                }
                merged["spec"]["finalizers"] = f;
                merged
            }
        };
        if scope == Scope::Main
            && r.rt.builtin
            && r.rt.group.is_empty()
            && r.rt.plural == "namespaces"
        {
            // Namespace spec.finalizers change only through namespaces/finalize.
            match old_v.at("/spec/finalizers") {
                Some(f) => {
                    if !new.get("spec").is_some_and(Value::is_object) {
                        new["spec"] = Value::Object(Map::new());
                    }
                    new["spec"]["finalizers"] = f.clone();
                }
                None => {
                    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.shift_remove("finalizers");
                    }
                }
            }
        }
        if scope == Scope::Main && r.rt.has_status_subresource() {
            match old_v.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.shift_remove("status");
                    }
                }
            }
        }
        // Fields only the server sets come from the stored object.
        {
            let old_meta = old_v.get("metadata").and_then(Value::as_object);
            let meta = meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_meta.and_then(|m| m.get(f)) {
                    Some(v) => {
                        meta.insert(f.into(), v.clone());
                    }
                    None => {
                        meta.shift_remove(f);
                    }
                }
            }
            meta.shift_remove("selfLink");
            meta.insert("resourceVersion".into(), Value::String(old.rv.to_string()));
        }
        let deleting = meta_str(old_v, "deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(old_v);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    g,
                    &r.rt.kind,
                    name,
                    vec![FieldCause::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            list.join(", ")
                        ),
                    )],
                ));
            }
        }
        admission::default_object(&r.rt, &mut new, Some(old_v));
        self.keep_service_ip(&r.rt, &mut new, old_v);
        check_schema(r, &mut new, opts, operation == "Apply")?;
        let causes = admission::validate(&r.rt, &new, Some(old_v));
        if !causes.is_empty() {
            return Err(ApiError::invalid(g, &r.rt.kind, name, causes));
        }
        if admission::tracks_generation(&r.rt) {
            let with_status = !r.rt.has_status_subresource();
            if spec_changed(old_v, &new, with_status) {
                let gen_ = old_v
                    .at("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), Value::from(gen_ + 1));
            }
        }
        daemonset_template_generation(r, Some(old_v), &mut new);
        if operation == "Update" {
            let sub = match scope {
                Scope::Main => None,
                Scope::Status => Some("status"),
                Scope::Finalize => Some("finalize"),
            };
            super::patching::record_managed_fields(
                r,
                Some(old_v),
                &mut new,
                &opts.effective_manager(),
                sub,
            )?;
        }
        // An apply that only changed ownership is still a write; other writes that change
        // nothing but managedFields timestamps are no-ops.
        let unchanged = if operation == "Apply" {
            equal_except(&new, old_v, &[], &["resourceVersion"])
        } else {
            // managedFields timestamps and the resourceVersion do not make a write a change.
            equal_except(&new, old_v, &[], &["resourceVersion", "managedFields"])
        };
        if unchanged {
            return Ok(WriteOutcome {
                object: r.present(old),
                changed: false,
                created: false,
                gone: false,
            });
        }
        if opts.dry_run {
            r.relabel(&mut new);
            return Ok(WriteOutcome {
                object: new,
                changed: false,
                created: false,
                gone: false,
            });
        }
        let stored = state.put(&r.gr(), key.clone(), new);
        self.after_commit(state, r, &stored);
        if deleting && self.ready_to_remove(&r.rt, &stored.value) {
            let gone = self.remove_now(state, &r.gr(), key);
            if let Some(tomb) = gone {
                return Ok(WriteOutcome {
                    object: r.present(&tomb),
                    changed: true,
                    created: false,
                    gone: true,
                });
            }
        }
        Ok(WriteOutcome {
            object: r.present(&stored),
            changed: true,
            created: false,
            gone: false,
        })
    }

    /// Reacts to a committed write of a type with side effects in the server itself.
    fn after_commit(&self, state: &mut StoreState, r: &Resolved, stored: &Arc<StoredObject>) {
        if r.rt.group == "apiextensions.k8s.io" && r.rt.plural == "customresourcedefinitions" {
            self.on_crd_written(state, stored);
        }
    }

    /// ClusterIP allocation for Services, as the service REST storage does on create.
    fn allocate_service_ip(
        &self,
        rt: &crate::catalog::ResourceType,
        obj: &mut Value,
        _old: Option<&Value>,
    ) -> ApiResult<Option<String>> {
        if !(rt.group.is_empty() && rt.plural == "services") {
            return Ok(None);
        }
        let kind = obj
            .at("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if kind == "ExternalName" {
            return Ok(None);
        }
        let requested = obj
            .at("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if requested == "None" {
            obj["spec"]["clusterIPs"] = Value::from(vec!["None"]);
            return Ok(None);
        }
        let mut alloc = self
            .inner
            .service_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ip = if requested.is_empty() {
            alloc.allocate().ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?
        } else {
            if !alloc.contains(&requested) {
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    meta_str(obj, "name").unwrap_or_default(),
                    vec![FieldCause::invalid(
                        "spec.clusterIPs",
                        &Value::from(vec![requested.clone()]),
                        "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is the service CIDR",
                    )],
                ));
            }
            if !alloc.claim(&requested) {
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    meta_str(obj, "name").unwrap_or_default(),
                    vec![FieldCause::invalid(
                        "spec.clusterIPs",
                        &Value::from(vec![requested.clone()]),
                        &format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    )],
                ));
            }
            requested
        };
        obj["spec"]["clusterIP"] = Value::String(ip.clone());
        obj["spec"]["clusterIPs"] = Value::from(vec![ip.clone()]);
        Ok(Some(ip))
    }

    /// On update a Service keeps its allocated ClusterIP when the body leaves it out.
    fn keep_service_ip(&self, rt: &crate::catalog::ResourceType, new: &mut Value, old: &Value) {
        if !(rt.group.is_empty() && rt.plural == "services") {
            return;
        }
        for f in ["clusterIP", "clusterIPs"] {
            let missing = new.at(&format!("/spec/{f}")).is_none_or(|v| {
                v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty)
            });
            if missing && let Some(v) = old.at(&format!("/spec/{f}")) {
                new["spec"][f] = v.clone();
            }
        }
    }

    pub(crate) fn release_service_ip(&self, ip: &str) {
        self.inner
            .service_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(ip);
    }
}

/// The DaemonSet template generation (`deprecated.daemonset.template.generation`) belongs to
/// the API server (`daemonSetStrategy.PrepareForCreate/PrepareForUpdate`): 1 on create, the old
/// value on update, plus one when the template changed. What a client sends is ignored, so a
/// restore of an older DaemonSet cannot wind it back and make old pods look updated.
fn daemonset_template_generation(r: &Resolved, old: Option<&Value>, new: &mut Value) {
    const KEY: &str = "deprecated.daemonset.template.generation";
    if r.rt.group != "apps" || r.rt.kind != "DaemonSet" {
        return;
    }
    let generation = match old {
        None => 1,
        Some(old) => {
            let before: i64 = old
                .at("/metadata/annotations")
                .and_then(|a| a.get(KEY))
                .and_then(Value::as_str)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            if old.at("/spec/template") != new.at("/spec/template") {
                before + 1
            } else {
                before
            }
        }
    };
    let meta = meta_mut(new);
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if !annotations.is_object() {
        *annotations = Value::Object(Default::default());
    }
    annotations[KEY] = Value::from(generation.to_string());
}

#[cfg(test)]
mod tests {
    use super::status_write;
    use serde_json::json;

    fn stored() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}, "managedFields": [{"manager": "old"}]},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending"}
        })
    }

    #[test]
    fn a_status_write_keeps_everything_but_status_and_managed_fields_as_stored() {
        let mut sent = stored();
        sent["spec"]["nodeName"] = json!("n2");
        sent["metadata"]["labels"]["a"] = json!("2");
        sent["metadata"]["managedFields"] = json!([{"manager": "new"}]);
        sent["status"]["phase"] = json!("Running");
        let mut want = stored();
        want["metadata"]["managedFields"] = json!([{"manager": "new"}]);
        want["status"]["phase"] = json!("Running");
        assert_eq!(status_write(&stored(), sent), want);
    }

    #[test]
    fn a_status_write_without_status_or_managed_fields_removes_status_keeps_ownership() {
        let mut sent = stored();
        sent.as_object_mut().unwrap().remove("status");
        sent["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let mut want = stored();
        want.as_object_mut().unwrap().remove("status");
        assert_eq!(status_write(&stored(), sent), want);
        assert_eq!(
            status_write(&stored(), json!("not an object")),
            want,
            "a body that is not an object sets no status"
        );
    }
}
