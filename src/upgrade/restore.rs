//! Putting a backup back, and proving it is back.
//!
//! Configuration is restored exactly (replace, not merge: fields the failed version added must
//! go), in the backup's order: CRDs, namespaces, RBAC, configuration, workloads, then Calico's
//! own objects. Runtime state is not restored — IPAM blocks, handles and affinities belong to
//! pods that exist now, and status objects are rewritten by Calico itself — but it is listed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde::Serialize;
use serde_json::Value;

use super::backup::{FileEntry, Index, read_objects};
use crate::cluster::apply::api_error;
use crate::cluster::objects::{self, intent, reference};

/// Kinds holding runtime state or status: never restored, not expected to match.
pub const RUNTIME_KINDS: &[&str] = &[
    "IPAMBlock",
    "IPAMHandle",
    "BlockAffinity",
    "TigeraStatus",
    "CalicoNodeStatus",
    "ClusterInformation",
];

/// What a restore did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RestoreReport {
    /// Objects replaced with their backed-up version.
    pub replaced: Vec<String>,
    /// Objects re-created because they were gone.
    pub created: Vec<String>,
    /// Objects already identical.
    pub unchanged: u64,
    /// Kinds skipped as runtime state.
    pub runtime_kinds_skipped: Vec<String>,
}

/// One object that differs from its backup.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// `Kind namespace/name`.
    pub object: String,
    /// What differs (first few paths), or that it is missing.
    pub detail: String,
}

fn resource(entry: &FileEntry) -> ApiResource {
    let (group, version) = match entry.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), entry.api_version.clone()),
    };
    ApiResource {
        group,
        version,
        api_version: entry.api_version.clone(),
        kind: entry.kind.clone(),
        plural: entry.resource.clone(),
    }
}

fn api(client: &Client, entry: &FileEntry, obj: &Value) -> Api<DynamicObject> {
    let ar = resource(entry);
    match objects::namespace(obj) {
        Some(ns) if entry.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Restores a backup; with `dry_run` the server validates every write without storing it.
pub async fn restore(
    client: &Client,
    path: &Path,
    index: &Index,
    dry_run: bool,
) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let params = PostParams {
        dry_run,
        field_manager: Some(crate::cluster::apply::FIELD_MANAGER.into()),
    };
    for entry in &index.files {
        if RUNTIME_KINDS.contains(&entry.kind.as_str()) {
            report.runtime_kinds_skipped.push(entry.kind.clone());
            continue;
        }
        for obj in read_objects(path, entry)? {
            let api = api(client, entry, &obj);
            let name = objects::name(&obj).to_string();
            let reference = reference(&obj);
            let mut body = intent(&obj);
            match api
                .get_opt(&name)
                .await
                .map_err(|e| anyhow!("reading {reference}: {}", api_error(&e)))?
            {
                Some(live) => {
                    let live = serde_json::to_value(&live)?;
                    if intent(&live) == body || entry.kind == "Namespace" {
                        report.unchanged += 1;
                        continue;
                    }
                    if let Some(rv) = live.pointer("/metadata/resourceVersion").cloned() {
                        body["metadata"]["resourceVersion"] = rv;
                    }
                    let dynamic = objects::to_dynamic(&body)?;
                    api.replace(&name, &params, &dynamic)
                        .await
                        .map_err(|e| anyhow!("restoring {reference}: {}", api_error(&e)))?;
                    report.replaced.push(reference);
                }
                None => {
                    let dynamic = objects::to_dynamic(&body)?;
                    api.create(&params, &dynamic)
                        .await
                        .map_err(|e| anyhow!("re-creating {reference}: {}", api_error(&e)))?;
                    report.created.push(reference);
                }
            }
        }
    }
    Ok(report)
}

/// Compares every backed-up configuration object with the cluster.
pub async fn compare(client: &Client, path: &Path, index: &Index) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    for entry in &index.files {
        if RUNTIME_KINDS.contains(&entry.kind.as_str()) {
            continue;
        }
        let backed: Vec<Value> = read_objects(path, entry)?;
        if backed.is_empty() {
            continue;
        }
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource(entry));
        let mut live: HashMap<(String, String), Value> = HashMap::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = all
                .list(&params)
                .await
                .map_err(|e| anyhow!("listing {}: {}", entry.resource, api_error(&e)))?;
            for o in page.items {
                let key = (
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default(),
                );
                live.insert(key, serde_json::to_value(&o)?);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(t) => params = ListParams::default().limit(500).continue_token(&t),
                None => break,
            }
        }
        for obj in backed {
            let key = (
                objects::namespace(&obj).unwrap_or_default().to_string(),
                objects::name(&obj).to_string(),
            );
            let mut want = intent(&obj);
            let Some(have) = live.get(&key) else {
                out.push(Difference {
                    object: reference(&obj),
                    detail: "missing from the cluster".into(),
                });
                continue;
            };
            let mut have = intent(have);
            // List items lack apiVersion/kind; the backup has them.
            for v in [&mut want, &mut have] {
                if let Some(m) = v.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            let paths = diff_paths(&want, &have, "", 3);
            if !paths.is_empty() {
                out.push(Difference {
                    object: reference(&obj),
                    detail: paths.join(", "),
                });
            }
        }
    }
    Ok(out)
}

/// Up to `limit` JSON paths where two values differ.
pub fn diff_paths(a: &Value, b: &Value, at: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk(a, b, at, limit, &mut out);
    out
}

fn walk(a: &Value, b: &Value, at: &str, limit: usize, out: &mut Vec<String>) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = format!("{at}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => walk(p, q, &path, limit, out),
                    (Some(_), None) => out.push(format!("{path} removed")),
                    (None, Some(_)) => out.push(format!("{path} added")),
                    (None, None) => {}
                }
                if out.len() >= limit {
                    return;
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(p, q, &format!("{at}[{i}]"), limit, out);
            }
        }
        _ => {
            let show = |v: &Value| {
                let s = v.to_string();
                if s.len() > 60 {
                    format!("{}...", &s[..60])
                } else {
                    s
                }
            };
            out.push(format!("{at}: {} became {}", show(a), show(b)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_their_paths() {
        let a = json!({"spec": {"template": {"spec": {"containers": [{"image": "calico/node:v3.25.2"}]}}}, "x": 1});
        let b = json!({"spec": {"template": {"spec": {"containers": [{"image": "calico/node:v3.28.5"}]}}}, "y": 2});
        let d = diff_paths(&a, &b, "", 5);
        assert_eq!(
            d,
            vec![
                ".spec.template.spec.containers[0].image: \"calico/node:v3.25.2\" became \"calico/node:v3.28.5\"".to_string(),
                ".x removed".into(),
                ".y added".into()
            ]
        );
        assert!(diff_paths(&a, &a, "", 5).is_empty());
    }
}
