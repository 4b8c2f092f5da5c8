//! List with selectors, `limit`/`continue` pagination and `resourceVersion` semantics.
//!
//! Pages are read by key from the continue token, never by re-sorting. Every page of a
//! paginated list shows the state at the first page's resourceVersion: the store's history
//! reconstructs it, and a token older than compacted history gets 410 as on a real server.

use crate::pointer::At;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::{Cluster, ListOptions, ListPage, Resolved};
use crate::error::{ApiError, ApiResult};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{ObjectKey, StoredObject};

/// What a continue token carries: the snapshot resourceVersion and the last key returned.
struct ContinueToken {
    rv: u64,
    after: ObjectKey,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let start = format!("{}/{}", self.after.namespace, self.after.name);
        let raw = json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": start});
        base64::engine::general_purpose::URL_SAFE.encode(raw.to_string())
    }

    fn decode(token: &str) -> ApiResult<Self> {
        let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(token)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
            .map_err(|_| bad("not base64"))?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
        if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        let rv = v
            .get("rv")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no rv"))?;
        let start = v
            .get("start")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no start"))?;
        let (ns, name) = start.split_once('/').ok_or_else(|| bad("bad start"))?;
        Ok(Self {
            rv,
            after: ObjectKey::new(Some(ns), name),
        })
    }
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Parses a `resourceVersion` parameter (400 when it is not a number).
pub fn parse_resource_version(s: &str) -> ApiResult<u64> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// The real server's answer to a resourceVersion newer than it has.
pub(crate) fn too_large_rv() -> ApiError {
    let mut e = ApiError::from_code(504, Some("Too large resource version".to_string()));
    e.causes = vec![crate::error::FieldCause {
        reason: "ResourceVersionTooLarge",
        field: String::new(),
        message: "Too large resource version".into(),
    }];
    e
}

impl Cluster {
    /// Lists a resolved type; the HTTP front end serializes the page from cached bytes.
    pub fn list_resolved(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListPage> {
        let labels = LabelSelector::parse(opts.label_selector.as_deref().unwrap_or_default())?;
        let fields = FieldSelector::parse(
            opts.field_selector.as_deref().unwrap_or_default(),
            &r.rt.group,
            &r.rt.plural,
        )?;
        let namespace = namespace.filter(|n| !n.is_empty());
        if namespace.is_some() && !r.rt.namespaced {
            return Err(ApiError::no_such_resource());
        }
        let rv_param = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let rv_match = opts
            .resource_version_match
            .as_deref()
            .filter(|s| !s.is_empty());
        let token = opts
            .continue_token
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(ContinueToken::decode)
            .transpose()?;
        if token.is_some() && rv_param.is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        if rv_match.is_some() && rv_param.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if let Some(m) = rv_match
            && m != "Exact"
            && m != "NotOlderThan"
        {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
        let limit = opts.limit.filter(|l| *l > 0);
        let gr = r.gr();
        let state = self.store().read();
        let current = state.current_rv();
        let (at, after) = match (&token, rv_param, rv_match) {
            (Some(t), _, _) => (t.rv, Some(t.after.clone())),
            (None, Some(rv), Some("Exact")) => {
                let rv = parse_resource_version(rv)?;
                if rv > current {
                    return Err(too_large_rv());
                }
                (rv, None)
            }
            (None, Some(rv), _) if rv != "0" => {
                if parse_resource_version(rv)? > current {
                    return Err(too_large_rv());
                }
                (current, None)
            }
            _ => (current, None),
        };
        let Some(table) = state.table(&gr) else {
            return Ok(ListPage {
                items: Vec::new(),
                resource_version: at,
                continue_token: None,
                remaining_item_count: None,
            });
        };
        let wanted = |o: &Arc<StoredObject>| {
            (labels.is_empty() || labels.matches(&o.value))
                && (fields.is_empty() || fields.matches(&o.value))
        };
        let selective = !labels.is_empty() || !fields.is_empty();
        let mut items = Vec::new();
        let mut continue_token = None;
        let mut remaining = None;
        if at == current {
            let mut iter = table.range(namespace, after.as_ref());
            for (key, o) in iter.by_ref() {
                if wanted(o) {
                    items.push(o.clone());
                    if limit.is_some_and(|l| items.len() >= l) {
                        let rest = iter.count() as u64;
                        if rest > 0 {
                            continue_token = Some(
                                ContinueToken {
                                    rv: at,
                                    after: key.clone(),
                                }
                                .encode(),
                            );
                            remaining = (!selective).then_some(rest);
                        }
                        break;
                    }
                }
            }
        } else {
            let snapshot = table
                .snapshot(at, namespace, after.as_ref())
                .map_err(|floor| {
                    if token.is_some() {
                        ApiError::expired(CONTINUE_EXPIRED)
                    } else {
                        crate::store::too_old(at, floor)
                    }
                })?;
            let total = snapshot.len();
            for (i, o) in snapshot.into_iter().enumerate() {
                if wanted(&o) {
                    let key = ObjectKey::new(
                        o.value.at("/metadata/namespace").and_then(Value::as_str),
                        o.value
                            .at("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    );
                    items.push(o);
                    if limit.is_some_and(|l| items.len() >= l) {
                        let rest = (total - i - 1) as u64;
                        if rest > 0 {
                            continue_token = Some(ContinueToken { rv: at, after: key }.encode());
                            remaining = (!selective).then_some(rest);
                        }
                        break;
                    }
                }
            }
        }
        Ok(ListPage {
            items,
            resource_version: at,
            continue_token,
            remaining_item_count: remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken {
            rv: 42,
            after: ObjectKey::new(Some("ns"), "a"),
        };
        let back = ContinueToken::decode(&t.encode()).unwrap();
        assert_eq!(back.rv, 42);
        assert_eq!(back.after, ObjectKey::new(Some("ns"), "a"));
        assert_eq!(ContinueToken::decode("!!!").err().unwrap().code, 400);
    }
}
