//! Plain JSON access to any resource of the API server, by API version and plural resource name
//! (`"apps/v1", "daemonsets"`), the way tests name objects. No discovery and no typed structs:
//! tests compare whole objects as the server returns them.

use http::Request;
use kube::Client;
use serde_json::Value;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{method} {path}: {code} {reason}: {message}")]
    Status {
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status.
        code: u16,
        /// The Status reason (`NotFound`, `Conflict`, `Forbidden`...).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The request did not reach the server or the answer was not JSON.
    #[error("{method} {path}: {source}")]
    Transport {
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// kube's error.
        source: kube::Error,
    },
}

impl Error {
    /// The HTTP status, for errors the server returned.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Status { code, .. } => Some(*code),
            Error::Transport { .. } => None,
        }
    }
}

/// The path of a collection or, with `name`, of one object.
pub fn path(
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> String {
    let mut p = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    if let Some(ns) = namespace {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(resource);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// Sends one request with a JSON body (or none) and returns the JSON answer.
pub async fn request(
    client: &Client,
    method: &str,
    path_and_query: &str,
    content_type: &str,
    body: Option<&Value>,
) -> Result<Value, Error> {
    let builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("Content-Type", content_type)
        .header("Accept", "application/json");
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let req = builder.body(bytes).map_err(|e| Error::Transport {
        method: method.to_string(),
        path: path_and_query.to_string(),
        source: kube::Error::HttpError(e),
    })?;
    match client.request::<Value>(req).await {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(s)) => Err(Error::Status {
            method: method.to_string(),
            path: path_and_query.to_string(),
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        }),
        Err(source) => Err(Error::Transport {
            method: method.to_string(),
            path: path_and_query.to_string(),
            source,
        }),
    }
}

/// One object.
pub async fn get(
    client: &Client,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, Error> {
    let p = path(api_version, resource, namespace, Some(name));
    request(client, "GET", &p, "application/json", None).await
}

/// Every object of a collection (all namespaces when `namespace` is `None` and the resource
/// is namespaced), each with its `apiVersion` and `kind` filled in as a list omits them.
pub async fn list(
    client: &Client,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let p = path(api_version, resource, namespace, None);
    let list = request(client, "GET", &p, "application/json", None).await?;
    let kind = list["kind"]
        .as_str()
        .and_then(|k| k.strip_suffix("List"))
        .unwrap_or("")
        .to_string();
    let mut items = match list.get("items") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    for item in &mut items {
        if let Some(o) = item.as_object_mut() {
            o.entry("apiVersion").or_insert_with(|| api_version.into());
            o.entry("kind").or_insert_with(|| kind.clone().into());
        }
    }
    Ok(items)
}

/// Creates an object (`fieldManager` as given).
pub async fn create(
    client: &Client,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    object: &Value,
    field_manager: &str,
) -> Result<Value, Error> {
    let p = format!(
        "{}?fieldManager={field_manager}",
        path(api_version, resource, namespace, None)
    );
    request(client, "POST", &p, "application/json", Some(object)).await
}

/// A JSON merge patch of the object (or subresource: `.../pods/x/status`) at `object_path`
/// (see [`path`]).
pub async fn merge_patch(
    client: &Client,
    object_path: &str,
    patch: &Value,
    field_manager: &str,
) -> Result<Value, Error> {
    let p = format!("{object_path}?fieldManager={field_manager}");
    request(
        client,
        "PATCH",
        &p,
        "application/merge-patch+json",
        Some(patch),
    )
    .await
}

/// Deletes an object (foreground propagation is left to the caller's `kubectl`).
pub async fn delete(
    client: &Client,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, Error> {
    let p = path(api_version, resource, namespace, Some(name));
    request(client, "DELETE", &p, "application/json", None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        assert_eq!(path("v1", "nodes", None, Some("w1")), "/api/v1/nodes/w1");
        assert_eq!(
            path("apps/v1", "daemonsets", Some("kube-system"), None),
            "/apis/apps/v1/namespaces/kube-system/daemonsets"
        );
    }
}
