//! The in-process API: every verb with the real server's semantics, on `serde_json::Value`
//! objects. The HTTP front end and in-process controllers both call it, so a write made by a
//! controller goes through the same resourceVersion, generation, managedFields, finalizer,
//! garbage-collection and watch-event code as a `kubectl` write.
//!
//! Objects are addressed by `apiVersion` (`"v1"`, `"apps/v1"`) and a resource named by plural,
//! kind, singular or short name (`"daemonsets"`, `"DaemonSet"`, `"ds"`).

mod crd;
mod delete;
mod list;
mod options;
mod patching;
mod subresources;
mod subscription;
mod write;

use crate::pointer::At;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

pub use list::parse_resource_version;
pub use options::{
    DeleteOptions, ListOptions, ListPage, PatchType, Propagation, WriteOptions, WriteOutcome,
};
pub use subresources::scale_of;
pub use subscription::Subscription;

use crate::catalog::{Catalog, GroupResource, ResourceType};
use crate::error::{ApiError, ApiResult};
use crate::store::{ObjectKey, Store, StoreLimits, StoredObject};
use crate::version::KubeVersion;

/// A resource type resolved for one request: the type and the version the client speaks.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// The version named in the request.
    pub version: String,
}

impl Resolved {
    /// The storage key.
    pub fn gr(&self) -> GroupResource {
        self.rt.group_resource()
    }

    /// The request's `apiVersion`.
    pub fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }

    /// An object as the client's version shows it: stored objects carry the storage version's
    /// `apiVersion`, which multi-version CRDs rewrite.
    pub fn present(&self, stored: &StoredObject) -> Value {
        let mut v = stored.value.clone();
        self.relabel(&mut v);
        v
    }

    /// Sets `apiVersion` to the request's version.
    pub fn relabel(&self, v: &mut Value) {
        if let Some(m) = v.as_object_mut() {
            let want = self.api_version();
            if m.get("apiVersion").and_then(Value::as_str) != Some(want.as_str()) {
                m.insert("apiVersion".into(), Value::String(want));
            }
        }
    }

    /// Whether stored objects can be sent as their cached bytes (same version as stored).
    pub fn is_storage_version(&self) -> bool {
        self.rt.storage_version().name == self.version
    }
}

/// Settings of the simulated cluster that API semantics depend on.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The simulated Kubernetes version.
    pub version: KubeVersion,
    /// How long a new CRD takes to become Established and served.
    pub crd_establish_delay: Duration,
    /// The service CIDR ClusterIPs are allocated from (`10.96.0.0/12`).
    pub service_cidr: String,
    /// Store limits.
    pub limits: StoreLimits,
    /// Simulation timing and faults.
    pub sim: crate::sim::SimConfig,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            version: KubeVersion::DEFAULT,
            crd_establish_delay: Duration::from_millis(200),
            service_cidr: "10.96.0.0/12".into(),
            limits: StoreLimits::default(),
            sim: crate::sim::SimConfig::default(),
        }
    }
}

/// Container logs, written by whatever plays the kubelet and read through `pods/log`.
type LogKey = (String, String, String);

struct ClusterInner {
    store: Store,
    version: RwLock<KubeVersion>,
    crd_establish_delay: Duration,
    service_ips: Mutex<ServiceIpAllocator>,
    logs: Mutex<HashMap<LogKey, String>>,
    runtime: Option<tokio::runtime::Handle>,
    sim: Arc<crate::sim::Sim>,
}

/// Hands out ClusterIPs from the service CIDR, lowest free first, as the real allocator does
/// for the `kubernetes` service (first address) and then (in effect) for tests.
struct ServiceIpAllocator {
    base: u32,
    size: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl ServiceIpAllocator {
    fn new(cidr: &str) -> Self {
        let (addr, bits) = cidr.split_once('/').unwrap_or(("10.96.0.0", "12"));
        let base = addr
            .parse::<std::net::Ipv4Addr>()
            .map(u32::from)
            .unwrap_or(0x0a60_0000);
        let bits: u32 = bits.parse().unwrap_or(12).clamp(8, 30);
        Self {
            base,
            size: 1u32 << (32 - bits),
            used: BTreeSet::new(),
            next: 1,
        }
    }

    fn allocate(&mut self) -> Option<String> {
        for _ in 0..self.size {
            let off = self.next;
            self.next = if self.next + 2 >= self.size {
                1
            } else {
                self.next + 1
            };
            if !self.used.contains(&off) {
                self.used.insert(off);
                return Some(std::net::Ipv4Addr::from(self.base + off).to_string());
            }
        }
        None
    }

    fn offset(&self, ip: &str) -> Option<u32> {
        let v = u32::from(ip.parse::<std::net::Ipv4Addr>().ok()?);
        (v > self.base && v < self.base + self.size - 1).then(|| v - self.base)
    }

    fn claim(&mut self, ip: &str) -> bool {
        match self.offset(ip) {
            Some(off) => self.used.insert(off),
            None => false,
        }
    }

    fn contains(&self, ip: &str) -> bool {
        self.offset(ip).is_some()
    }

    fn release(&mut self, ip: &str) {
        if let Some(off) = self.offset(ip) {
            self.used.remove(&off);
        }
    }
}

/// A handle on the simulated cluster's state; cheap to clone, shared by the HTTP server and
/// in-process controllers.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster with the default namespaces, the `kubernetes` service and the system priority
    /// classes, as `kubeadm init` leaves it. Must be called inside a tokio runtime for CRD
    /// establishment to be delayed; outside one CRDs are established at once.
    pub fn new(settings: ClusterSettings) -> Self {
        let cluster = Self {
            inner: Arc::new(ClusterInner {
                store: Store::new(Catalog::builtin(&settings.version), settings.limits),
                version: RwLock::new(settings.version),
                crd_establish_delay: settings.crd_establish_delay,
                service_ips: Mutex::new(ServiceIpAllocator::new(&settings.service_cidr)),
                logs: Mutex::new(HashMap::new()),
                runtime: tokio::runtime::Handle::try_current().ok(),
                sim: Arc::new(crate::sim::Sim::new(&settings.sim)),
            }),
        };
        cluster.seed();
        cluster
    }

    fn seed(&self) {
        let opts = WriteOptions::manager("kube-apiserver");
        for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            let _ = self.create(
                "v1",
                "namespaces",
                None,
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &opts,
            );
        }
        let _ = self.create(
            "v1",
            "services",
            Some("default"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
            }),
            &opts,
        );
        for (name, value) in [
            ("system-node-critical", 2_000_001_000i64),
            ("system-cluster-critical", 2_000_000_000),
        ] {
            let _ = self.create(
                "scheduling.k8s.io/v1",
                "priorityclasses",
                None,
                serde_json::json!({
                    "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": value, "globalDefault": false,
                    "preemptionPolicy": "PreemptLowerPriority",
                    "description": "Used for system critical pods that must not be moved from their current node."
                }),
                &opts,
            );
        }
    }

    /// The simulation's timing and faults.
    pub fn sim(&self) -> &Arc<crate::sim::Sim> {
        &self.inner.sim
    }

    /// The simulated Kubernetes version.
    pub fn version(&self) -> KubeVersion {
        *self.inner.version.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the simulated version (for kubeadm upgrade tests): `/version`, discovery and the
    /// version-gated built-in APIs follow; CRD-served types stay.
    pub fn set_version(&self, version: KubeVersion) {
        *self
            .inner
            .version
            .write()
            .unwrap_or_else(|e| e.into_inner()) = version;
        let mut state = self.inner.store.write();
        let custom: Vec<ResourceType> = state
            .catalog
            .all()
            .filter(|t| !t.builtin)
            .map(|t| (**t).clone())
            .collect();
        let mut catalog = Catalog::builtin(&version);
        for t in custom {
            catalog.insert(t);
        }
        state.catalog = catalog;
    }

    /// The underlying store, for the HTTP front end and benchmarks.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The current catalog of served types.
    pub fn catalog(&self) -> Catalog {
        self.inner.store.read().catalog.clone()
    }

    /// The newest resourceVersion.
    pub fn current_resource_version(&self) -> u64 {
        self.inner.store.read().current_rv()
    }

    /// Forgets all change history, as an etcd compaction: later watches or continue tokens
    /// from before now get 410.
    pub fn compact(&self) {
        self.inner.store.write().compact();
    }

    /// Resolves `apiVersion` plus a plural, kind, singular or short name.
    pub fn resolve(&self, api_version: &str, resource: &str) -> ApiResult<Resolved> {
        let (group, version) = split_api_version(api_version);
        let state = self.inner.store.read();
        state
            .catalog
            .find(group, version, resource)
            .map(|rt| Resolved {
                rt: rt.clone(),
                version: version.to_string(),
            })
            .ok_or_else(|| {
                ApiError::not_found(group, resource, "").with_message(format!(
                    "the server could not find the requested resource ({resource} in {api_version})"
                ))
            })
    }

    /// Reads one object.
    pub fn get(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        let stored = self.get_stored(&r, namespace, name)?;
        Ok(r.present(&stored))
    }

    /// Reads one object as stored (shared, with its serialized bytes).
    pub fn get_stored(
        &self,
        r: &Resolved,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Arc<StoredObject>> {
        let key = object_key(r, namespace, name)?;
        self.inner
            .store
            .read()
            .get(&r.gr(), &key)
            .ok_or_else(|| ApiError::not_found(&r.rt.group, &r.rt.plural, name))
    }

    /// Creates an object; the namespace argument wins over `metadata.namespace`.
    pub fn create(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        Ok(self.create_resolved(&r, namespace, object, opts)?.object)
    }

    /// Replaces an object (PUT); `metadata.resourceVersion`, when set, must be current.
    pub fn update(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        let name = object_name(&object)?;
        Ok(self
            .update_resolved(&r, namespace, &name, object, None, opts)?
            .object)
    }

    /// Replaces an object's status through the status subresource: everything else is kept.
    pub fn update_status(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        let name = object_name(&object)?;
        Ok(self
            .update_resolved(&r, namespace, &name, object, Some("status"), opts)?
            .object)
    }

    /// Patches an object (or its status with `subresource = Some("status")`). `patch` is the
    /// raw body in the patch type's format (YAML or JSON for apply).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch: &[u8],
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        Ok(self
            .patch_resolved(&r, namespace, name, patch_type, patch, subresource, opts)?
            .object)
    }

    /// Read-modify-write in one step, under the store lock, so a controller never sees a
    /// Conflict for its own update: `change` gets the current object (as the `api_version`
    /// shows it) and edits it; the result goes through the normal update path (status
    /// isolation, generation, managedFields, finalization). `subresource` is `None` or
    /// `Some("status")`.
    #[allow(clippy::too_many_arguments)]
    pub fn modify(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        change: impl FnOnce(&mut Value),
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        let scope = write::Scope::from_subresource(subresource)?;
        let key = object_key(&r, namespace, name)?;
        let mut state = self.inner.store.write();
        let old = state
            .get(&r.gr(), &key)
            .ok_or_else(|| ApiError::not_found(&r.rt.group, &r.rt.plural, name))?;
        let mut new = r.present(&old);
        change(&mut new);
        Ok(self
            .update_locked(&mut state, &r, &key, &old, new, scope, opts, "Update")?
            .object)
    }

    /// Deletes an object with the real server's finalizer, grace-period and propagation rules.
    /// Returns the object: gone, or still present with `deletionTimestamp` set.
    pub fn delete(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let r = self.resolve(api_version, resource)?;
        Ok(self.delete_resolved(&r, namespace, name, opts)?.object)
    }

    /// Lists objects like [`Cluster::list`], sharing the stored objects instead of copying
    /// them where the requested version is the stored one: what in-process controllers use
    /// to read every pod on every pass.
    pub fn list_shared(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Vec<Arc<StoredObject>>> {
        let r = self.resolve(api_version, resource)?;
        let page = self.list_resolved(&r, namespace, opts)?;
        if r.is_storage_version() {
            return Ok(page.items);
        }
        Ok(page
            .items
            .iter()
            .map(|o| StoredObject::new(r.present(o), o.rv))
            .collect())
    }

    /// Lists objects (all namespaces with `None`), as values in the requested version.
    pub fn list(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Vec<Value>> {
        let r = self.resolve(api_version, resource)?;
        let page = self.list_resolved(&r, namespace, opts)?;
        Ok(page.items.iter().map(|o| r.present(o)).collect())
    }

    /// Subscribes to changes of a type after `resource_version` (`None`: from now on), without
    /// HTTP. Filtering by namespace or labels is the subscriber's business.
    pub fn subscribe(
        &self,
        api_version: &str,
        resource: &str,
        resource_version: Option<u64>,
    ) -> ApiResult<Subscription> {
        let r = self.resolve(api_version, resource)?;
        self.subscribe_resolved(&r, resource_version)
    }

    /// Subscribes to a resolved type.
    pub fn subscribe_resolved(
        &self,
        r: &Resolved,
        resource_version: Option<u64>,
    ) -> ApiResult<Subscription> {
        let gr = r.gr();
        let (backlog, rx) = self.inner.store.write().subscribe(&gr, resource_version)?;
        let start = resource_version.unwrap_or_else(|| self.current_resource_version());
        Ok(Subscription::new(self.clone(), gr, backlog, rx, start))
    }

    /// Appends to a container's log, as a kubelet would; read back through `pods/log`.
    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        let mut logs = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry((namespace.into(), pod.into(), container.into()))
            .or_default()
            .push_str(text);
    }

    /// A container's log (the pod's first container when `container` is `None`).
    pub fn read_log(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> ApiResult<String> {
        let r = self.resolve("v1", "pods")?;
        let stored = self.get_stored(&r, Some(namespace), pod)?;
        let containers: Vec<String> = stored
            .value
            .at("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let container = match container {
            Some(c) => {
                let known = containers.iter().any(|x| x == c)
                    || stored
                        .value
                        .at("/spec/initContainers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|x| x.get("name").and_then(Value::as_str) == Some(c));
                if !known {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {pod}"
                    )));
                }
                c.to_string()
            }
            None if containers.len() == 1 => containers[0].clone(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let logs = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(logs
            .get(&(namespace.into(), pod.into(), container))
            .cloned()
            .unwrap_or_default())
    }

    fn forget_logs(&self, namespace: &str, pod: &str) {
        let mut logs = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.retain(|(ns, p, _), _| !(ns == namespace && p == pod));
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn object_name(object: &Value) -> ApiResult<String> {
    object
        .at("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("name is required"))
}

/// The storage key for a name, checking the namespace fits the type's scope.
fn object_key(r: &Resolved, namespace: Option<&str>, name: &str) -> ApiResult<ObjectKey> {
    let namespace = namespace.filter(|n| !n.is_empty());
    match (r.rt.namespaced, namespace) {
        (true, None) => Err(ApiError::bad_request(format!(
            "the namespace is required for namespaced resource {}",
            r.rt.plural
        ))),
        (false, Some(_)) => Err(ApiError::no_such_resource()),
        (_, ns) => Ok(ObjectKey::new(ns, name)),
    }
}

impl ApiError {
    /// Replaces the message, keeping code, reason and details.
    pub fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}
