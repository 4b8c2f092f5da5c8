//! The resource endpoints: every verb on collections, objects and subresources, mapped onto
//! the in-process API, with the real server's status codes and list/Table renderings.

use crate::pointer::At;
use std::sync::Arc;

use ::http::Method;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::Shared;
use super::http::{self, Query, Rendering, Resp};
use super::table;
use super::watch;
use crate::cluster::{
    DeleteOptions, ListOptions, ListPage, PatchType, Propagation, Resolved, WriteOptions,
};
use crate::error::{ApiError, ApiResult};

/// A parsed resource URL.
#[derive(Clone, Debug)]
pub struct Target {
    /// The type and requested version.
    pub r: Resolved,
    /// Namespace from the URL (`None` for cluster-scoped or all-namespaces requests).
    pub namespace: Option<String>,
    /// Object name, for object and subresource URLs.
    pub name: Option<String>,
    /// Subresource name.
    pub sub: Option<String>,
}

impl Target {
    /// `pods`, `daemonsets.apps`, `pods/status`: how counters and fault filters name it.
    pub fn label(&self) -> String {
        let base = if self.r.rt.group.is_empty() {
            self.r.rt.plural.clone()
        } else {
            format!("{}.{}", self.r.rt.plural, self.r.rt.group)
        };
        match &self.sub {
            Some(s) => format!("{base}/{s}"),
            None => base,
        }
    }
}

/// The Kubernetes verb of a request.
pub fn verb_of(method: &Method, target: &Target, query: &Query) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", false) if query.flag("watch") => "watch",
        ("GET", true) if query.flag("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

/// Decodes a JSON or YAML request body; other media types get 415.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request is empty"));
    }
    match ct.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): {e}",
                "the requested kind"
            ))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("error decoding YAML: invalid UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => Err(ApiError::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ])),
    }
}

fn write_options(query: &Query, user_agent: Option<&str>) -> ApiResult<WriteOptions> {
    Ok(WriteOptions {
        dry_run: query.dry_run()?,
        field_manager: query.get("fieldManager").map(str::to_string),
        user_agent: user_agent.map(str::to_string),
        force: query.flag("force"),
        field_validation: query.get("fieldValidation").map(str::to_string),
    })
}

fn delete_options(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        dry_run: query.dry_run()?,
        ..DeleteOptions::default()
    };
    let mut policy = query.get("propagationPolicy").map(str::to_string);
    let mut grace = query.get("gracePeriodSeconds").map(str::to_string);
    let mut orphan = query.get("orphanDependents").map(|v| v == "true");
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        }
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            grace = Some(g.to_string());
        }
        if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
            orphan = Some(o);
        }
        if let Some(p) = v.get("preconditions") {
            opts.precondition_uid = p.get("uid").and_then(Value::as_str).map(str::to_string);
            opts.precondition_resource_version = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            opts.dry_run = true;
        }
    }
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        opts.propagation = Some(Propagation::parse(&p).ok_or_else(|| {
            ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::error::FieldCause::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            )
        })?);
    } else if orphan == Some(true) {
        opts.propagation = Some(Propagation::Orphan);
    }
    if let Some(g) = grace {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    Ok(opts)
}

fn list_options(query: &Query) -> ApiResult<ListOptions> {
    Ok(ListOptions {
        label_selector: query.get("labelSelector").map(str::to_string),
        field_selector: query.get("fieldSelector").map(str::to_string),
        limit: match query.get("limit").filter(|l| !l.is_empty()) {
            Some(l) => Some(
                l.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
                    .max(0) as usize,
            ),
            None => None,
        },
        continue_token: query.get("continue").map(str::to_string),
        resource_version: query.get("resourceVersion").map(str::to_string),
        resource_version_match: query.get("resourceVersionMatch").map(str::to_string),
    })
}

fn list_meta(page: &ListPage) -> Value {
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining_item_count {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// Renders a list page: objects from cached bytes, a Table, or metadata only.
fn list_response(r: &Resolved, page: &ListPage, rendering: Rendering, query: &Query) -> Resp {
    match rendering {
        Rendering::Object => {
            let head = json!({
                "kind": r.rt.list_kind,
                "apiVersion": r.api_version(),
                "metadata": list_meta(page),
            });
            let head = serde_json::to_vec(&head).unwrap_or_default();
            let total: usize = page.items.iter().map(|o| o.json.len() + 1).sum();
            let mut b = BytesMut::with_capacity(head.len() + total + 16);
            b.put_slice(&head[..head.len() - 1]);
            b.put_slice(b",\"items\":[");
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    b.put_u8(b',');
                }
                if r.is_storage_version() {
                    b.put_slice(&o.json);
                } else {
                    b.put_slice(&serde_json::to_vec(&r.present(o)).unwrap_or_default());
                }
            }
            b.put_slice(b"]}");
            http::json_bytes(200, b.freeze(), "application/json")
        }
        Rendering::Table => {
            let values: Vec<Value> = page.items.iter().map(|o| r.present(o)).collect();
            let t = table::build(
                &r.rt,
                &r.version,
                &values,
                query.get("includeObject").unwrap_or("Metadata"),
                true,
                list_meta(page),
            );
            http::json(200, &t)
        }
        Rendering::Metadata => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| metadata_only(&r.present(o)))
                .collect();
            http::json(
                200,
                &json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta(page),
                    "items": items,
                }),
            )
        }
    }
}

fn metadata_only(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or_default(),
    })
}

fn object_response(code: u16, r: &Resolved, o: Value, rendering: Rendering, query: &Query) -> Resp {
    match rendering {
        Rendering::Object => http::json(code, &o),
        Rendering::Metadata => http::json(code, &metadata_only(&o)),
        Rendering::Table => {
            let rv = o
                .at("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            http::json(
                code,
                &table::build(
                    &r.rt,
                    &r.version,
                    &[o],
                    query.get("includeObject").unwrap_or("Metadata"),
                    true,
                    json!({"resourceVersion": rv}),
                ),
            )
        }
    }
}

/// Request details the handlers need besides the target.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// Query parameters.
    pub query: &'a Query,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `User-Agent`, for default field managers.
    pub user_agent: Option<&'a str>,
    /// Requested rendering.
    pub rendering: Rendering,
    /// Request body.
    pub body: Bytes,
}

/// Serves a resource request and counts the writes that changed state.
pub async fn handle(shared: Arc<Shared>, t: Target, p: RequestParts<'_>) -> ApiResult<Resp> {
    let c = &shared.cluster;
    let r = &t.r;
    let ns = t.namespace.as_deref();
    let label = t.label();
    let verb = verb_of(p.method, &t, p.query);
    let rt = &r.rt;
    if let Some(sub) = &t.sub
        && !rt.has_subresource(&r.version, sub)
    {
        return Err(ApiError::no_such_resource());
    }
    if verb != "unknown" && t.sub.is_none() && !rt.supports(verb) {
        return Err(ApiError::method_not_allowed());
    }
    let count = |n: usize| shared.faults.count_write(verb, &label, n as u64);
    match (p.method.as_str(), t.name.as_deref(), t.sub.as_deref()) {
        ("GET", None, None) if p.query.flag("watch") => {
            watch::serve(
                shared.clone(),
                r.clone(),
                t.namespace.clone(),
                p.query,
                p.rendering,
            )
            .await
        }
        ("GET", Some(name), None) if p.query.flag("watch") => {
            // Watching one object is a watch with a name field selector.
            let q = name_watch_query(p.query, name);
            watch::serve(
                shared.clone(),
                r.clone(),
                t.namespace.clone(),
                &q,
                p.rendering,
            )
            .await
        }
        ("GET", None, None) => {
            let page = c.list_resolved(r, ns, &list_options(p.query)?)?;
            Ok(list_response(r, &page, p.rendering, p.query))
        }
        ("GET", Some(name), None | Some("status")) => {
            let o = c.get_stored(r, ns, name)?;
            Ok(object_response(200, r, r.present(&o), p.rendering, p.query))
        }
        ("GET", Some(name), Some("scale")) => Ok(http::json(200, &c.get_scale(r, ns, name)?)),
        ("GET", Some(name), Some("log")) => {
            let text = c.read_log(ns.unwrap_or_default(), name, p.query.get("container"))?;
            let text = match p
                .query
                .get("tailLines")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => {
                    let lines: Vec<&str> = text.lines().collect();
                    let start = lines.len().saturating_sub(n);
                    let mut s = lines[start..].join("\n");
                    if !s.is_empty() {
                        s.push('\n');
                    }
                    s
                }
                None => text,
            };
            Ok(http::text(200, text))
        }
        ("POST", None, None) if rt.group == "authorization.k8s.io" => {
            // The simulator's single user is a cluster admin: every review is allowed, and
            // reviews are answered, never stored, as on a real server.
            let mut review = decode_body(p.content_type, &p.body)?;
            if !review.is_object() {
                return Err(ApiError::bad_request("the review must be an object"));
            }
            review["apiVersion"] = json!(r.api_version());
            review["kind"] = json!(rt.kind);
            review["status"] = json!({"allowed": true, "reason": "kubesim grants every request to its admin token"});
            Ok(http::json(201, &review))
        }
        ("POST", Some(name), Some("token")) => {
            let mut req = decode_body(p.content_type, &p.body)?;
            c.get_stored(r, ns, name)?;
            if !req.is_object() {
                return Err(ApiError::bad_request("the TokenRequest must be an object"));
            }
            let seconds = req
                .at("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            req["apiVersion"] = json!("authentication.k8s.io/v1");
            req["kind"] = json!("TokenRequest");
            req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": crate::clock::now_rfc3339()});
            if !req.get("spec").is_some_and(Value::is_object) {
                req["spec"] = json!({});
            }
            req["spec"]["expirationSeconds"] = json!(seconds);
            req["status"] = json!({
                "token": format!("kubesim.{}.{}", name, crate::ids::new_token()),
                "expirationTimestamp": crate::clock::format_rfc3339(crate::clock::now_unix() + seconds),
            });
            Ok(http::json(201, &req))
        }
        ("POST", None, None) => {
            let obj = decode_body(p.content_type, &p.body)?;
            let out = c.create_resolved(r, ns, obj, &write_options(p.query, p.user_agent)?)?;
            count(usize::from(out.changed));
            Ok(object_response(
                201,
                r,
                out.object,
                Rendering::Object,
                p.query,
            ))
        }
        ("POST", Some(name), Some("eviction")) => {
            let body = decode_body(p.content_type, &p.body)?;
            let mut opts = match body.get("deleteOptions") {
                Some(d) => delete_options(p.query, &serde_json::to_vec(d).unwrap_or_default())?,
                None => delete_options(p.query, &[])?,
            };
            opts.dry_run |= p.query.dry_run()?;
            c.evict(ns.unwrap_or_default(), name, &opts)?;
            if !opts.dry_run {
                shared.faults.count_write("create", &label, 1);
            }
            Ok(http::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("POST", Some(name), Some("binding")) => {
            let body = decode_body(p.content_type, &p.body)?;
            let node = body
                .at("/target/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("binding target name is required"))?;
            if !p.query.dry_run()? {
                c.bind(ns.unwrap_or_default(), name, node)?;
                shared.faults.count_write("create", &label, 1);
            }
            Ok(http::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("PUT", Some(name), None | Some("status") | Some("finalize")) => {
            let obj = decode_body(p.content_type, &p.body)?;
            let out = c.update_resolved(
                r,
                ns,
                name,
                obj,
                t.sub.as_deref(),
                &write_options(p.query, p.user_agent)?,
            )?;
            count(usize::from(out.changed));
            Ok(http::json(200, &out.object))
        }
        ("PUT", Some(name), Some("scale")) => {
            let scale = decode_body(p.content_type, &p.body)?;
            let (s, changed) =
                c.set_scale(r, ns, name, &scale, &write_options(p.query, p.user_agent)?)?;
            count(usize::from(changed));
            Ok(http::json(200, &s))
        }
        ("PATCH", Some(name), None | Some("status")) => {
            let pt = PatchType::from_content_type(p.content_type.unwrap_or_default()).ok_or_else(
                || {
                    ApiError::unsupported_media_type(&[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                        "application/apply-patch+yaml",
                    ])
                },
            )?;
            let out = c.patch_resolved(
                r,
                ns,
                name,
                pt,
                &p.body,
                t.sub.as_deref(),
                &write_options(p.query, p.user_agent)?,
            )?;
            count(usize::from(out.changed));
            Ok(http::json(if out.created { 201 } else { 200 }, &out.object))
        }
        ("PATCH", Some(name), Some("scale")) => {
            let pt = PatchType::from_content_type(p.content_type.unwrap_or_default()).ok_or_else(
                || ApiError::unsupported_media_type(&["application/merge-patch+json"]),
            )?;
            let current = c.get_scale(r, ns, name)?;
            let patch: Value = serde_json::from_slice(&p.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let desired = match pt {
                PatchType::Json => {
                    let mut s = current.clone();
                    for op in patch.as_array().into_iter().flatten() {
                        if op.get("path").and_then(Value::as_str) == Some("/spec/replicas")
                            && let Some(v) = op.get("value")
                        {
                            s["spec"]["replicas"] = v.clone();
                        }
                    }
                    s
                }
                _ => {
                    let mut s = current.clone();
                    if let Some(v) = patch.at("/spec/replicas") {
                        s["spec"]["replicas"] = v.clone();
                    }
                    s
                }
            };
            let (s, changed) = c.set_scale(
                r,
                ns,
                name,
                &desired,
                &write_options(p.query, p.user_agent)?,
            )?;
            count(usize::from(changed));
            Ok(http::json(200, &s))
        }
        ("DELETE", Some(name), None) => {
            let opts = delete_options(p.query, &p.body)?;
            let out = c.delete_resolved(r, ns, name, &opts)?;
            count(usize::from(out.changed));
            Ok(http::json(if out.gone { 200 } else { 202 }, &out.object))
        }
        ("DELETE", None, None) => {
            let opts = delete_options(p.query, &p.body)?;
            let (items, changes) =
                c.delete_collection_resolved(r, ns, &list_options(p.query)?, &opts)?;
            count(changes);
            Ok(http::json(
                200,
                &json!({
                    "kind": r.rt.list_kind,
                    "apiVersion": r.api_version(),
                    "metadata": {"resourceVersion": c.current_resource_version().to_string()},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The query of a watch on one object: the original parameters plus a name field selector.
fn name_watch_query(orig: &Query, name: &str) -> Query {
    let mut raw = Vec::new();
    for key in [
        "resourceVersion",
        "resourceVersionMatch",
        "timeoutSeconds",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "labelSelector",
        "includeObject",
    ] {
        if let Some(v) = orig.get(key) {
            raw.push(format!("{key}={}", encode(v)));
        }
    }
    let fs = match orig.get("fieldSelector").filter(|f| !f.is_empty()) {
        Some(f) => format!("{f},metadata.name={name}"),
        None => format!("metadata.name={name}"),
    };
    raw.push(format!("fieldSelector={}", encode(&fs)));
    Query::parse(Some(&raw.join("&")))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
