//! Server-side apply of manifests, the way Calico's upgrade docs require it.
//!
//! Client-side `kubectl apply` cannot carry Calico's CRDs (the Installation CRD alone is over the
//! 262,144-byte annotation limit), so every object is applied with server-side apply under one
//! field manager, forcing conflicts so ownership moves from earlier `kubectl apply` runs.
//! Namespaces and CRDs go first, and new CRDs must be Established before anything uses them.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde::Serialize;
use serde_json::{Value, json};

use super::objects;

/// The field manager every write of the product uses.
pub const FIELD_MANAGER: &str = "k8s-calico";

/// What applying one object did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// `Kind namespace/name`.
    pub reference: String,
    /// `created`, `configured` or `unchanged`, as kubectl says.
    pub action: &'static str,
    #[serde(skip)]
    before: Option<Value>,
    #[serde(skip)]
    after: Value,
}

impl Applied {
    /// Whether the object changed.
    pub fn changed(&self) -> bool {
        self.action != "unchanged"
    }

    /// An Ansible diff entry (before/after as readable YAML-like JSON).
    pub fn diff(&self) -> Value {
        let pretty = |v: &Value| {
            serde_json::to_string_pretty(&objects::canonical(v)).unwrap_or_default() + "\n"
        };
        json!({
            "before_header": self.reference,
            "after_header": self.reference,
            "before": self.before.as_ref().map(pretty).unwrap_or_default(),
            "after": pretty(&self.after),
        })
    }
}

/// Resolves kinds to API resources, once per kind.
#[derive(Clone)]
pub struct Resolver {
    client: Client,
    cache: HashMap<(String, String, String), (ApiResource, ApiCapabilities)>,
}

impl Resolver {
    /// A resolver using the cluster's discovery.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
        }
    }

    /// The API for an object: cluster-scoped, or in its namespace (default `default`).
    pub async fn api_for(&mut self, obj: &Value) -> Result<(Api<DynamicObject>, ApiResource)> {
        let gvk = objects::gvk(obj)?;
        let (ar, caps) = self.resolve(&gvk).await.with_context(|| {
            format!("{} is not served by this cluster", objects::reference(obj))
        })?;
        let api = match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            Scope::Namespaced => Api::namespaced_with(
                self.client.clone(),
                objects::namespace(obj).unwrap_or("default"),
                &ar,
            ),
        };
        Ok((api, ar))
    }

    /// Discovery for one kind.
    pub async fn resolve(
        &mut self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let key = (gvk.group.clone(), gvk.version.clone(), gvk.kind.clone());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        let found = kube::discovery::pinned_kind(&self.client, gvk)
            .await
            .map_err(|e| anyhow!("kind {} of {}/{}: {e}", gvk.kind, gvk.group, gvk.version))?;
        self.cache.insert(key, found.clone());
        Ok(found)
    }

    /// Forgets discovery, after CRDs changed what the server serves.
    pub fn forget(&mut self) {
        self.cache.clear();
    }
}

/// Applies manifests with server-side apply.
pub struct Applier {
    client: Client,
    resolver: Resolver,
    dry_run: bool,
    crd_timeout: Duration,
}

fn rank(obj: &Value) -> u8 {
    match obj.get("kind").and_then(Value::as_str) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    }
}

impl Applier {
    /// An applier; `dry_run` asks the server to validate and answer without storing anything.
    pub fn new(client: Client, dry_run: bool) -> Self {
        Self {
            resolver: Resolver::new(client.clone()),
            client,
            dry_run,
            crd_timeout: Duration::from_secs(120),
        }
    }

    /// Applies objects: namespaces, then CRDs (waiting until Established), then the rest in
    /// manifest order.
    pub async fn apply_all(&mut self, objs: &[Value]) -> Result<Vec<Applied>> {
        let mut ordered: Vec<&Value> = objs.iter().collect();
        ordered.sort_by_key(|o| rank(o));
        let mut out = Vec::with_capacity(objs.len());
        let mut new_crds = Vec::new();
        let mut crds_done = false;
        for obj in ordered {
            if rank(obj) == 2 && !crds_done {
                crds_done = true;
                self.wait_established(&new_crds).await?;
                if !new_crds.is_empty() {
                    self.resolver.forget();
                }
            }
            let applied = self.apply_one(obj).await?;
            if rank(obj) == 1 && applied.changed() {
                new_crds.push(objects::name(obj).to_string());
            }
            out.push(applied);
        }
        if !crds_done {
            self.wait_established(&new_crds).await?;
        }
        Ok(out)
    }

    /// Applies one object.
    pub async fn apply_one(&mut self, obj: &Value) -> Result<Applied> {
        let reference = objects::reference(obj);
        let (api, _) = self.resolver.api_for(obj).await?;
        let name = objects::name(obj);
        let before = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading {reference}"))?
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
        let mut body = obj.clone();
        objects::strip_server_fields(&mut body);
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = self.dry_run;
        let after = api
            .patch(name, &params, &Patch::Apply(&body))
            .await
            .map_err(|e| anyhow!("applying {reference}: {}", api_error(&e)))?;
        let after = serde_json::to_value(after)?;
        let action = match &before {
            None => "created",
            Some(b) if objects::intent(b) == objects::intent(&after) => "unchanged",
            Some(_) => "configured",
        };
        Ok(Applied {
            reference,
            action,
            before: before.map(|b| objects::intent(&b)),
            after: objects::intent(&after),
        })
    }

    async fn wait_established(&self, names: &[String]) -> Result<()> {
        if self.dry_run || names.is_empty() {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in names {
            tokio::time::timeout(
                self.crd_timeout,
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| {
                anyhow!(
                    "CRD {name} was not Established within {}s",
                    self.crd_timeout.as_secs()
                )
            })?
            .map_err(|e| anyhow!("waiting for CRD {name}: {e}"))?;
        }
        Ok(())
    }
}

/// The API server's message for an error, without kube's wrapping.
pub fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}
