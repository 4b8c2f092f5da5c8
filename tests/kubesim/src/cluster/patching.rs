//! PATCH: picks the patch algorithm by content type, then sends the result through the same
//! update (or, for server-side apply of an absent object, create) path as PUT and POST.
//!
//! The algorithms themselves (merge, JSON patch, strategic merge, server-side apply and
//! managedFields) belong to the `patch` module; this file only dispatches to it.

use crate::pointer::At;
use serde_json::Value;

use super::write::Scope;
use super::{Cluster, PatchType, Resolved, WriteOptions, WriteOutcome, object_key};
use crate::clock;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::patch::{self, BuiltinSchema, CrdSchema, FieldManager, PatchError, Schema};

/// Media types a custom resource accepts for PATCH (no strategic merge, as on a real server).
const CR_PATCH_TYPES: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

impl Cluster {
    /// Patches under a resolved type.
    #[allow(clippy::too_many_arguments)]
    pub fn patch_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        if !r.rt.supports("patch") {
            return Err(ApiError::method_not_allowed());
        }
        let scope = Scope::from_subresource(subresource)?;
        if scope == Scope::Status && !r.rt.has_subresource(&r.version, "status") {
            return Err(ApiError::no_such_resource());
        }
        if patch_type == PatchType::StrategicMerge && !r.rt.builtin {
            return Err(ApiError::unsupported_media_type(&CR_PATCH_TYPES));
        }
        let key = object_key(r, namespace, name)?;
        let manager = opts.effective_manager();
        if patch_type == PatchType::Apply && opts.field_manager.as_deref().is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "PATCH requests with apply-patch+yaml content type require a fieldManager parameter",
            ));
        }
        let mut state = self.store().write();
        let old = state.get(&r.gr(), &key);
        match (patch_type, old) {
            (PatchType::Apply, None) => {
                if scope != Scope::Main {
                    return Err(ApiError::not_found(&r.rt.group, &r.rt.plural, name));
                }
                let applied = parse_apply_body(body)?;
                check_apply_identity(r, &applied, name)?;
                let schema = schema_for(r);
                let fm = field_manager(r, schema.as_ref(), None);
                let obj = fm
                    .apply(None, &applied, &manager, opts.force)
                    .map_err(to_api_error)?
                    .object;
                let mut created =
                    self.create_locked_with(&mut state, r, namespace, obj, opts, true)?;
                created.created = true;
                Ok(created)
            }
            (_, None) => Err(ApiError::not_found(&r.rt.group, &r.rt.plural, name)),
            (patch_type, Some(old)) => {
                let current = r.present(&old);
                let schema = schema_for(r);
                let new = match patch_type {
                    PatchType::Apply => {
                        let applied = parse_apply_body(body)?;
                        check_apply_identity(r, &applied, name)?;
                        let sub = (scope == Scope::Status).then_some("status");
                        let fm = field_manager(r, schema.as_ref(), sub);
                        let out = fm
                            .apply(Some(&current), &applied, &manager, opts.force)
                            .map_err(to_api_error)?;
                        if !out.changed {
                            return Ok(WriteOutcome {
                                object: current,
                                changed: false,
                                created: false,
                                gone: false,
                            });
                        }
                        out.object
                    }
                    PatchType::Merge => patch::merge_patch(&current, &parse_json(body)?),
                    PatchType::Json => {
                        patch::json_patch(&current, &parse_json(body)?).map_err(to_api_error)?
                    }
                    PatchType::StrategicMerge => {
                        patch::strategic_merge_patch(&current, &parse_json(body)?, schema.as_ref())
                            .map_err(to_api_error)?
                    }
                };
                let operation = if patch_type == PatchType::Apply {
                    "Apply"
                } else {
                    "Update"
                };
                self.update_locked(&mut state, r, &key, &old, new, scope, opts, operation)
            }
        }
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

fn parse_apply_body(body: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("error decoding YAML: invalid UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// An applied configuration must name the object of the URL and its kind.
fn check_apply_identity(r: &Resolved, applied: &Value, name: &str) -> ApiResult<()> {
    let s = |p: &str| applied.at(p).and_then(Value::as_str).unwrap_or_default();
    if s("/kind").is_empty() || s("/apiVersion").is_empty() {
        return Err(ApiError::bad_request(
            "apiVersion and kind are required in an applied configuration",
        ));
    }
    if s("/kind") != r.rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({})",
            s("/kind"),
            r.rt.kind
        )));
    }
    let n = s("/metadata/name");
    if !n.is_empty() && n != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// The merge schema of a type: built-in tables, or the CRD version's `openAPIV3Schema`.
fn schema_for(r: &Resolved) -> Box<dyn Schema> {
    if r.rt.builtin {
        Box::new(BuiltinSchema::for_kind(&r.rt.kind))
    } else {
        let schema = r
            .rt
            .version(&r.version)
            .and_then(|v| v.schema.clone())
            .unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        Box::new(CrdSchema::new(&schema))
    }
}

/// A field manager for one write: what the endpoint resets is never owned.
fn field_manager<'s>(
    r: &Resolved,
    schema: &'s dyn Schema,
    subresource: Option<&str>,
) -> FieldManager<'s> {
    let fm =
        FieldManager::new(schema, &r.api_version(), &clock::now_rfc3339()).subresource(subresource);
    match subresource {
        Some("status") => fm.ignore(&["spec"]),
        None if r.rt.has_status_subresource() => fm.ignore(&["status"]),
        _ => fm,
    }
}

/// Maps the patch module's errors onto the real server's Status answers.
fn to_api_error(e: PatchError) -> ApiError {
    match e {
        PatchError::BadRequest(m) => ApiError::bad_request(m),
        PatchError::Unprocessable(m) => ApiError::from_code(422, Some(m)),
        PatchError::Internal(m) => ApiError::internal(m),
        PatchError::UnsupportedMediaType => ApiError::unsupported_media_type(&CR_PATCH_TYPES),
        PatchError::Conflicts(ref c) => ApiError::apply_conflict(
            e.message(),
            c.iter()
                .map(|c| FieldCause {
                    reason: "FieldManagerConflict",
                    field: c.field(),
                    message: c.cause_message(),
                })
                .collect(),
        ),
    }
}

/// Records managedFields for a non-apply write (operation `Update`) through the patch module.
pub(crate) fn record_managed_fields(
    r: &Resolved,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) -> ApiResult<()> {
    let schema = schema_for(r);
    let fm = field_manager(r, schema.as_ref(), subresource);
    *new = fm
        .update_owned(old, std::mem::take(new), manager)
        .map_err(to_api_error)?;
    Ok(())
}
