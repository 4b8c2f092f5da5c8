//! Discovery documents: `/api`, `/apis`, `/apis/<group>`, the per-group-version resource
//! lists, and aggregated discovery (`apidiscovery.k8s.io` v2beta1 from 1.26, v2 from 1.30)
//! where the simulated version has it.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http::{self, MediaRange, Resp};
use crate::catalog::{Catalog, ResourceType};
use crate::version::KubeVersion;

/// The storage version hash the real server publishes: a short digest of group/version/kind.
fn storage_version_hash(rt: &ResourceType) -> String {
    let sv = rt.storage_version();
    let digest = Sha256::digest(format!("{}/{}/{}", rt.group, sv.name, rt.kind).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `GET /api`.
pub fn api_versions(host: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]
    })
}

fn group_entry(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or_default();
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `GET /apis`.
pub fn api_group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`, `None` when the group is not served.
pub fn api_group(catalog: &Catalog, group: &str) -> Option<Value> {
    let (name, versions) = catalog.groups().into_iter().find(|(g, _)| g == group)?;
    let mut e = group_entry(&name, &versions);
    let m = e.as_object_mut()?;
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.extend(std::mem::take(m));
    Some(Value::Object(out))
}

/// `GET /api/v1` or `/apis/<group>/<version>`, `None` when not served.
pub fn resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let types = catalog.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in &types {
        let mut main = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs,
        });
        if !rt.short_names.is_empty() {
            main["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            main["categories"] = json!(rt.categories);
        }
        main["storageVersionHash"] = json!(storage_version_hash(rt));
        resources.push(main);
        for sub in rt
            .version(version)
            .map(|v| v.subresources.clone())
            .unwrap_or_default()
        {
            let (g, v, k) = &sub.response_kind;
            let mut e = json!({
                "name": format!("{}/{}", rt.plural, sub.name),
                "singularName": "",
                "namespaced": rt.namespaced,
            });
            if g != group || v != version {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            e["kind"] = json!(k);
            e["verbs"] = json!(sub.verbs);
            resources.push(e);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

fn discovery_resources(catalog: &Catalog, group: &str, version: &str) -> Vec<Value> {
    catalog
        .in_group_version(group, version)
        .iter()
        .map(|rt| {
            let mut r = json!({
                "resource": rt.plural,
                "responseKind": {"group": rt.group, "version": version, "kind": rt.kind},
                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": rt.singular,
                "verbs": rt.verbs,
            });
            if !rt.short_names.is_empty() {
                r["shortNames"] = json!(rt.short_names);
            }
            if !rt.categories.is_empty() {
                r["categories"] = json!(rt.categories);
            }
            let subs: Vec<Value> = rt
                .version(version)
                .map(|v| v.subresources.clone())
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let (g, v, k) = &s.response_kind;
                    json!({
                        "subresource": s.name,
                        "responseKind": {"group": g, "version": v, "kind": k},
                        "verbs": s.verbs,
                    })
                })
                .collect();
            if !subs.is_empty() {
                r["subresources"] = Value::Array(subs);
            }
            r
        })
        .collect()
}

/// The aggregated discovery document for `/api` (core) or `/apis` (groups).
pub fn aggregated(catalog: &Catalog, core: bool, api_version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{
                "version": "v1",
                "resources": discovery_resources(catalog, "", "v1"),
                "freshness": "Current",
            }]
        })]
    } else {
        catalog
            .groups()
            .iter()
            .map(|(g, versions)| {
                json!({
                    "metadata": {"name": g, "creationTimestamp": null},
                    "versions": versions.iter().map(|v| json!({
                        "version": v,
                        "resources": discovery_resources(catalog, g, v),
                        "freshness": "Current",
                    })).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{api_version}"),
        "metadata": {},
        "items": items,
    })
}

/// Which aggregated discovery version to answer with, if the client asks for one the
/// simulated version serves (first acceptable in the client's order).
pub fn wants_aggregated(accept: &[MediaRange], version: &KubeVersion) -> Option<&'static str> {
    for m in accept {
        if m.param("as") != Some("APIGroupDiscoveryList")
            || m.param("g") != Some("apidiscovery.k8s.io")
        {
            if m.param("as").is_none() && (m.mime == "application/json" || m.mime == "*/*") {
                return None;
            }
            continue;
        }
        match m.param("v") {
            Some("v2") if version.has_aggregated_discovery_v2() => return Some("v2"),
            Some("v2beta1") if version.has_aggregated_discovery_v2beta1() && version.minor < 33 => {
                return Some("v2beta1");
            }
            _ => continue,
        }
    }
    None
}

/// Renders an aggregated discovery response with the content type clients look for.
pub fn aggregated_response(doc: &Value, api_version: &str) -> Resp {
    let mut r = http::json_bytes(
        200,
        bytes::Bytes::from(serde_json::to_vec(doc).unwrap_or_default()),
        &format!("application/json;g=apidiscovery.k8s.io;v={api_version};as=APIGroupDiscoveryList"),
    );
    r.headers_mut().insert(
        ::http::header::VARY,
        ::http::HeaderValue::from_static("Accept"),
    );
    r
}
