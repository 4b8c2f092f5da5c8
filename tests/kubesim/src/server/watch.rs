//! Watch streams: newline-delimited JSON events over a chunked response, from a
//! resourceVersion or with synthetic ADDED events for the current state, `sendInitialEvents`
//! with its end bookmark, periodic BOOKMARKs, `timeoutSeconds`, selector transitions
//! (an object leaving a selector is DELETED for that watcher), and 410 ERROR events.
//!
//! Event bytes are assembled from each object's cached serialization, so fan-out to many
//! watchers copies bytes instead of re-serializing.

use crate::pointer::At;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Shared;
use super::http::{self, Query, Rendering, Resp, ResponseBody};
use super::table;
use crate::cluster::{Resolved, parse_resource_version};
use crate::error::{ApiError, ApiResult};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{EventType, StoredObject};

/// What a watcher filters on.
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && o.at("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        (self.labels.is_empty() || self.labels.matches(o))
            && (self.fields.is_empty() || self.fields.matches(o))
    }
}

/// Renders one event as a line.
struct Renderer {
    r: Resolved,
    rendering: Rendering,
    include_object: String,
    sent_headers: bool,
}

impl Renderer {
    fn event(&mut self, kind: &str, o: &Arc<StoredObject>) -> Bytes {
        match self.rendering {
            Rendering::Object if self.r.is_storage_version() => {
                let mut b = BytesMut::with_capacity(o.json.len() + 32);
                b.put_slice(b"{\"type\":\"");
                b.put_slice(kind.as_bytes());
                b.put_slice(b"\",\"object\":");
                b.put_slice(&o.json);
                b.put_slice(b"}\n");
                b.freeze()
            }
            Rendering::Object => self.line(kind, self.r.present(o)),
            Rendering::Metadata => self.line(
                kind,
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.value.get("metadata").cloned().unwrap_or_default(),
                }),
            ),
            Rendering::Table => {
                let headers = !self.sent_headers;
                self.sent_headers = true;
                let t = table::build(
                    &self.r.rt,
                    &self.r.version,
                    &[self.r.present(o)],
                    &self.include_object,
                    headers,
                    json!({"resourceVersion": o.rv.to_string()}),
                );
                self.line(kind, t)
            }
        }
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        let mut v =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (api_version, kind) = match self.rendering {
            Rendering::Object => (self.r.api_version(), self.r.rt.kind.clone()),
            Rendering::Metadata => ("meta.k8s.io/v1".into(), "PartialObjectMetadata".into()),
            Rendering::Table => ("meta.k8s.io/v1".into(), "Table".into()),
        };
        self.line(
            "BOOKMARK",
            json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
        )
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Serves a watch request.
pub async fn serve(
    shared: Arc<Shared>,
    r: Resolved,
    namespace: Option<String>,
    query: &Query,
    rendering: Rendering,
) -> ApiResult<Resp> {
    let filter = Filter {
        namespace: namespace.clone(),
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(
            query.get("fieldSelector").unwrap_or_default(),
            &r.rt.group,
            &r.rt.plural,
        )?,
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let rv_param = query.get("resourceVersion").filter(|s| !s.is_empty());
    if send_initial {
        if !shared.cluster.version().serves_send_initial_events() {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![crate::error::FieldCause::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                )],
            ));
        }
        if query.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![crate::error::FieldCause::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true",
                )],
            ));
        }
    }
    let initial = send_initial || matches!(rv_param, None | Some("0"));
    let from = match rv_param {
        Some(rv) if !initial => Some(parse_resource_version(rv)?),
        _ => None,
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let lifetime = match shared.faults.watch_drop_after() {
        Some(d) => d.min(timeout),
        None => timeout,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut renderer = Renderer {
        r: r.clone(),
        rendering,
        include_object: query.get("includeObject").unwrap_or("Metadata").to_string(),
        sent_headers: false,
    };
    let bookmark_every = shared.bookmark_interval;
    let ns = namespace.clone();
    let start = shared.cluster.watch_start(&r, ns.as_deref(), initial, from);
    tokio::spawn(async move {
        let (objects, start_rv, mut sub) = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_line(&e)).await;
                return;
            }
        };
        for o in &objects {
            if filter.matches(&o.value) && tx.send(renderer.event("ADDED", o)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(renderer.bookmark(start_rv, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(renderer.bookmark(sub.last_resource_version(), false)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                next = sub.next() => {
                    let Some(next) = next else { return };
                    let e = match next {
                        Ok(e) => e,
                        Err(err) => {
                            let _ = tx.send(error_line(&err)).await;
                            return;
                        }
                    };
                    let now = filter.matches(&e.object.value);
                    let before = e.prev.as_ref().is_some_and(|p| filter.matches(&p.value));
                    let kind = match (e.event_type, before, now) {
                        (EventType::Added, _, true) => "ADDED",
                        (EventType::Deleted, true, _) => "DELETED",
                        (EventType::Modified, true, true) => "MODIFIED",
                        (EventType::Modified, false, true) => "ADDED",
                        (EventType::Modified, true, false) => "DELETED",
                        _ => continue,
                    };
                    if tx.send(renderer.event(kind, &e.object)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut resp = http::Resp::new(ResponseBody::Stream(rx));
    resp.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        ::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
