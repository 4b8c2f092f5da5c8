//! API errors as the real server words them, and their rendering as `Status` objects.
//!
//! Every failure a client can see goes through [`ApiError`], so codes, reasons, `details` and
//! messages stay consistent between HTTP and the in-process API.

use serde_json::{Value, json};

/// One `details.causes` entry of an Invalid error: a field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldCause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueForbidden` or `FieldValueTooLong`, as the real server reports.
    pub reason: &'static str,
    /// The field path, such as `spec.selector` or `metadata.name`.
    pub field: String,
    /// The message part after the field path, such as `Required value`.
    pub message: String,
}

impl FieldCause {
    /// A missing required field.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// A present but unacceptable value; `value` is rendered as the real server quotes it.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", render_value(value)),
        }
    }

    /// A value outside an enumeration.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                list.join(", ")
            ),
        }
    }

    /// A field that may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// A duplicate entry in a list that must be unique.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", render_value(value)),
        }
    }

    fn full(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(_) | Value::Array(_) => {
            // The real server prints Go structs here; a compact JSON rendering reads as well.
            serde_json::to_string(v).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// The group and resource an error is about, as `details` names them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subject {
    /// API group, empty for the core group.
    pub group: String,
    /// Plural resource name (`pods`), or the Kind for Invalid errors as the real server does.
    pub kind: String,
    /// Object name, when there is one.
    pub name: String,
}

impl Subject {
    /// The subject of an error about `name` of `resource` in `group`.
    pub fn new(group: &str, kind: &str, name: &str) -> Self {
        Self {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// `pods` or `daemonsets.apps`: how messages qualify a resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// An error answered to a client: HTTP code, `reason`, message and `details`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason`, such as `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// What the error is about, when it is about one object or resource.
    pub subject: Option<Box<Subject>>,
    /// Field causes of an Invalid error.
    pub causes: Vec<FieldCause>,
    /// Seconds a client should wait, sent as `Retry-After` and `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Results of store and API operations.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            subject: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    /// 404 for a named object: `pods "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let subject = Subject::new(group, resource, name);
        let mut e = Self::plain(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", subject.qualified()),
        );
        e.subject = Some(Box::new(subject));
        e
    }

    /// 404 for a path the server does not serve.
    pub fn no_such_resource() -> Self {
        let mut e = Self::plain(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.subject = Some(Box::default());
        e
    }

    /// 409 for a create of an existing name.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let subject = Subject::new(group, resource, name);
        let mut e = Self::plain(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", subject.qualified()),
        );
        e.subject = Some(Box::new(subject));
        e
    }

    /// 409 for a write whose `resourceVersion` (or uid precondition) is stale.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let subject = Subject::new(group, resource, name);
        let mut e = Self::plain(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                subject.qualified()
            ),
        );
        e.subject = Some(Box::new(subject));
        e
    }

    /// The stale-`resourceVersion` Conflict, worded exactly as the real server words it.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict from server-side apply, carrying the conflicting fields as causes.
    pub fn apply_conflict(message: String, causes: Vec<FieldCause>) -> Self {
        let mut e = Self::plain(409, "Conflict", message);
        e.causes = causes;
        e
    }

    /// 422 with field causes: `Kind.group "name" is invalid: field: message`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldCause>) -> Self {
        let subject = Subject::new(group, kind, name);
        let list = if causes.len() == 1 {
            causes[0].full()
        } else {
            let parts: Vec<String> = causes.iter().map(FieldCause::full).collect();
            format!("[{}]", parts.join(", "))
        };
        let mut e = Self::plain(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", subject.qualified()),
        );
        e.subject = Some(Box::new(subject));
        e.causes = causes;
        e
    }

    /// 400 for a request the server cannot understand.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 410 Expired: a compacted `resourceVersion` or continue token.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::plain(410, "Expired", message)
    }

    /// 410 Gone, the reason some list paths use for a too-old `resourceVersion`.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::plain(410, "Gone", message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::plain(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.retry_after = Some(retry_after);
        e.subject = Some(Box::default());
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::plain(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 401 for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::plain(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with a message.
    pub fn forbidden(group: &str, resource: &str, name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::plain(403, "Forbidden", message);
        e.subject = Some(Box::new(Subject::new(group, resource, name)));
        e
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::plain(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        e.subject = Some(Box::default());
        e
    }

    /// 406 when the client accepts no representation the server has.
    pub fn not_acceptable() -> Self {
        Self::plain(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }

    /// 415 for a body in a media type this endpoint does not take.
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 413 for a body over the 3 MiB limit.
    pub fn too_large(limit: usize) -> Self {
        Self::plain(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// An arbitrary code, for injected faults: the reason follows the code as the real server
    /// maps them.
    pub fn from_code(code: u16, message: Option<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => return Self::too_many_requests(1),
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let message = message.unwrap_or_else(|| match code {
            500 => "Internal error occurred: injected fault".to_string(),
            503 => "the server is currently unable to handle the request".to_string(),
            504 => "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
            _ => format!("injected fault ({code})"),
        });
        Self::plain(code, reason, message)
    }

    /// The `Status` object a client receives.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        let mut details = serde_json::Map::new();
        if let Some(s) = &self.subject {
            if !s.name.is_empty() {
                details.insert("name".into(), json!(s.name));
            }
            if !s.group.is_empty() {
                details.insert("group".into(), json!(s.group));
            }
            if !s.kind.is_empty() {
                details.insert("kind".into(), json!(s.kind));
            }
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        if self.subject.is_some() || !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status["code"] = json!(self.code);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_real_server() {
        assert_eq!(
            ApiError::not_found("", "pods", "x").message,
            "pods \"x\" not found"
        );
        assert_eq!(
            ApiError::not_found("apps", "daemonsets", "x").message,
            "daemonsets.apps \"x\" not found"
        );
        let e = ApiError::invalid(
            "apps",
            "Deployment",
            "d",
            vec![FieldCause::required("spec.selector")],
        );
        assert_eq!(
            e.message,
            "Deployment.apps \"d\" is invalid: spec.selector: Required value"
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][0]["field"], "spec.selector");
        assert_eq!(s["code"], 422);
    }
}
