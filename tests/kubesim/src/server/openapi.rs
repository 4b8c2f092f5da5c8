//! OpenAPI documents, as much as kubectl needs: `/openapi/v2` and the `/openapi/v3` index and
//! group-version documents with every served kind's GroupVersionKind, the PATCH parameters
//! that tell kubectl the server validates fields, and CRDs' own schemas.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, ResourceType};
use crate::version::KubeVersion;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn definition_name(rt: &ResourceType, version: &str) -> String {
    if rt.builtin {
        let g = if rt.group.is_empty() {
            "core".to_string()
        } else {
            rt.group.split('.').next().unwrap_or_default().to_string()
        };
        format!("io.k8s.api.{g}.{version}.{}", rt.kind)
    } else {
        let rev: Vec<&str> = rt.group.split('.').rev().collect();
        format!("{}.{version}.{}", rev.join("."), rt.kind)
    }
}

fn schema_for(rt: &ResourceType, version: &str) -> Value {
    let gvk = json!([{"group": rt.group, "version": version, "kind": rt.kind}]);
    let mut schema = rt
        .version(version)
        .and_then(|v| v.schema.clone())
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(m) = schema.as_object_mut() {
        m.insert("x-kubernetes-group-version-kind".into(), gvk);
        // CRD schemas omit the standard fields; kubectl's validation needs them known.
        let props = m
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|p| {
                for f in ["apiVersion", "kind"] {
                    p.entry(f).or_insert_with(|| json!({"type": "string"}));
                }
                p.entry("metadata").or_insert_with(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
            });
        let _ = props;
    }
    schema
}

fn params() -> Value {
    json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        {"name": "force", "in": "query", "schema": {"type": "boolean"}, "uniqueItems": true}
    ])
}

fn operations(rt: &ResourceType, version: &str, def: &str) -> (String, Value) {
    let base = gv_path(&rt.group, version);
    let path = if rt.namespaced {
        format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
    } else {
        format!("/{base}/{}/{{name}}", rt.plural)
    };
    let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
    let reference = json!({"$ref": format!("#/components/schemas/{def}")});
    let op = |verb: &str, action: &str| {
        json!({
            "operationId": format!("{verb}{}", rt.kind),
            "parameters": params(),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    (
        path,
        json!({
            "get": op("read", "get"),
            "put": op("replace", "put"),
            "patch": op("patch", "patch"),
            "delete": op("delete", "delete"),
        }),
    )
}

/// The OpenAPI v3 document of one group version.
pub fn v3_group_version(
    catalog: &Catalog,
    version_info: &KubeVersion,
    group: &str,
    version: &str,
) -> Option<Value> {
    let types = catalog.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for rt in &types {
        let def = definition_name(rt, version);
        schemas.insert(def.clone(), schema_for(rt, version));
        let (p, ops) = operations(rt, version, &def);
        paths.insert(p, ops);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": version_info.to_string()},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A stable hash of a document, for the `?hash=` URLs of the v3 index.
pub fn hash_of(doc: &Value) -> String {
    let d = Sha256::digest(serde_json::to_vec(doc).unwrap_or_default());
    d.iter().take(32).map(|b| format!("{b:02X}")).collect()
}

/// The v3 documents of one catalog revision, built once: kubectl fetches the index on every
/// apply, and hashing every group version each time would cost more than the apply.
#[derive(Default)]
pub struct V3Cache {
    key: Option<(u64, KubeVersion)>,
    index: Value,
    docs: std::collections::HashMap<String, Value>,
}

impl V3Cache {
    fn refresh(&mut self, catalog: &Catalog, version_info: &KubeVersion) {
        let key = (catalog.revision(), *version_info);
        if self.key == Some(key) {
            return;
        }
        let mut paths = Map::new();
        self.docs.clear();
        let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
        for (g, vs) in catalog.groups() {
            for v in vs {
                gvs.push((g.clone(), v));
            }
        }
        for (g, v) in gvs {
            if let Some(doc) = v3_group_version(catalog, version_info, &g, &v) {
                let p = gv_path(&g, &v);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(&doc))}),
                );
                self.docs.insert(p, doc);
            }
        }
        self.index = json!({"paths": paths});
        self.key = Some(key);
    }

    /// The index.
    pub fn index(&mut self, catalog: &Catalog, version_info: &KubeVersion) -> Value {
        self.refresh(catalog, version_info);
        self.index.clone()
    }

    /// One group version's document (`api/v1`, `apis/apps/v1`).
    pub fn document(
        &mut self,
        catalog: &Catalog,
        version_info: &KubeVersion,
        path: &str,
    ) -> Option<Value> {
        self.refresh(catalog, version_info);
        self.docs.get(path).cloned()
    }
}

/// The `/openapi/v2` document: every kind's definition with its GroupVersionKind.
pub fn v2(catalog: &Catalog, version_info: &KubeVersion) -> Value {
    let mut defs = Map::new();
    let mut paths = Map::new();
    for rt in catalog.all() {
        for v in &rt.versions {
            let def = definition_name(rt, &v.name);
            defs.insert(def.clone(), schema_for(rt, &v.name));
            let (p, mut ops) = operations(rt, &v.name, &def);
            // Swagger 2 keeps parameters flat and references definitions.
            if let Some(m) = ops.as_object_mut() {
                for op in m.values_mut() {
                    op["parameters"] = json!([
                        {"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true},
                        {"name": "fieldManager", "in": "query", "type": "string", "uniqueItems": true},
                        {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
                        {"name": "force", "in": "query", "type": "boolean", "uniqueItems": true}
                    ]);
                    op["responses"] = json!({"200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{def}")}}});
                }
            }
            paths.insert(p, ops);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version_info.to_string()},
        "paths": paths,
        "definitions": defs,
    })
}
