//! Patch and apply algorithms of kube-apiserver, on `serde_json::Value`.
//!
//! Self-contained: only std and serde_json; the server maps [`PatchError`] to its own `Status`.
//!
//! # Public API
//!
//! | Request | Call | Errors (HTTP code from [`PatchError::status_code`]) |
//! | --- | --- | --- |
//! | `application/merge-patch+json` | [`merge_patch`]`(&target, &patch) -> Value` | none (a non-object patch replaces) |
//! | `application/json-patch+json` | [`json_patch`]`(&target, &ops) -> Result<Value, PatchError>` | 400 malformed ops, 422 missing path / failed `test` |
//! | `application/strategic-merge-patch+json` | [`strategic_merge_patch`]`(&target, &patch, &schema)` | 415 when `schema` has no strategic merge (custom resources), 400/422/500 as the real server |
//! | `application/apply-patch+yaml` | [`FieldManager::apply`]`(live, &config, manager, force) -> Result<Applied, PatchError>` | 409 with [`Conflict`]s, 400 bad config |
//! | every other write (create, update, patch) | [`FieldManager::update`]`(live, &new, manager) -> Result<Value, PatchError>` | 400 bad `managedFields` |
//!
//! Schemas ([`Schema`]) say how lists and maps merge:
//! - [`BuiltinSchema::for_kind`]`("Deployment")`: the built-in table (pod templates, services, nodes,
//!   metadata...). It answers strategic merge questions too.
//! - [`CrdSchema::new`]`(&openapi_v3_schema)`: a custom resource version's `openAPIV3Schema`
//!   (honours `x-kubernetes-list-type`, `-list-map-keys`, `-map-type`, `-preserve-unknown-fields`);
//!   [`Schema::supports_strategic_merge`] is false, so [`strategic_merge_patch`] returns
//!   [`PatchError::UnsupportedMediaType`] (415) as the real server does.
//!
//! Integration, per write:
//! ```text
//! let schema = BuiltinSchema::for_kind(kind);            // or CrdSchema::new(&version_schema)
//! let fm = FieldManager::new(&schema, "apps/v1", now_rfc3339)
//!     .subresource(Some("status"))                        // for /status writes
//!     .ignore(&["status"]);                               // fields reset by this endpoint
//! // PATCH (apply):  let Applied { object, changed } = fm.apply(live, &config, "kubectl", force)?;
//! //                 if !changed { answer with the live object, keep its resourceVersion }
//! // anything else:  let stored = fm.update(live, &new_object, manager_or_default)?;
//! ```
//! `apply` returns the merged object with `metadata.managedFields` already written; `update`
//! returns `new` with `metadata.managedFields` recomputed. Neither touches `resourceVersion`,
//! `generation`, `uid` or timestamps other than the managedFields `time`.
//! The default manager for non-apply writes is the client's user agent name (`kubectl-edit`,
//! `kubectl-client-side-apply`, ...), chosen by the server.
//!
//! Notes for the server:
//! - Pass `live` as stored, managedFields included: ownership is read from it. A live object
//!   without managedFields is treated as owned by `before-first-apply` on its first apply.
//! - Call `update` with the object as it will be stored (after the endpoint reset spec or
//!   status), for creates too (`live = None`), so that later applies can conflict.
//! - [`PatchError::Conflicts`]: 409, reason `Conflict`, message [`PatchError::message`], and one
//!   `details.causes` entry per [`Conflict`]: `type: FieldManagerConflict`,
//!   `message:` [`Conflict::cause_message`], `field:` [`Conflict::field`].
//! - [`PatchError::Internal`] carries the bare error text; the real server's 500 body reads
//!   `Internal error occurred: <text>`.

mod builtin;
mod fieldpath;
mod json_patch;
mod managed;
mod merge_patch;
mod schema;
mod strategic;
mod typed;
mod value;

#[cfg(test)]
mod tests;

pub use builtin::BuiltinSchema;
pub use fieldpath::{FieldPath, FieldSet, PathElement};
pub use json_patch::json_patch;
pub use managed::{Applied, Conflict, FieldManager, ManagedFieldsEntry, Operation};
pub use merge_patch::merge_patch;
pub use schema::{
    CrdSchema, DeducedSchema, ListType, MapKey, MapType, PatchStrategy, Schema, Step,
};
pub use strategic::strategic_merge_patch;

use std::fmt;

/// Why a patch or apply failed, classified the way kube-apiserver answers it.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchError {
    /// The patch document itself is malformed: 400 BadRequest.
    BadRequest(String),
    /// The patch is well-formed but does not apply to this object (JSON patch path missing,
    /// `test` failed, strategic merge list of lists): 422 with reason `Invalid`-less generic body.
    Unprocessable(String),
    /// The real server reports this strategic merge failure as a plain error: 500.
    Internal(String),
    /// Strategic merge patch on a kind without patch metadata (custom resources): 415.
    UnsupportedMediaType,
    /// Server-side apply conflicts: 409 Conflict with one `FieldManagerConflict` cause each.
    Conflicts(Vec<Conflict>),
}

impl PatchError {
    /// The HTTP status code kube-apiserver uses for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
            PatchError::Internal(_) => 500,
            PatchError::UnsupportedMediaType => 415,
            PatchError::Conflicts(_) => 409,
        }
    }

    /// The `Status.message` the real server sends.
    pub fn message(&self) -> String {
        match self {
            PatchError::BadRequest(m) | PatchError::Unprocessable(m) | PatchError::Internal(m) => {
                m.clone()
            }
            PatchError::UnsupportedMediaType => {
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml"
                    .into()
            }
            PatchError::Conflicts(c) => managed::conflict_message(c),
        }
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for PatchError {}
