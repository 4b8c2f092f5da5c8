//! Controllers that run inside the server's tokio runtime on top of the in-process API, and
//! the built-in namespace lifecycle controller (what `kubectl delete namespace` waits for).
//!
//! A controller is a function from a [`Cluster`] and a [`Shutdown`] signal to a future. Its
//! writes go through the same code paths as HTTP writes but never count as client writes.

use crate::pointer::At;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::store::EventType;

/// Tells controllers the server is stopping.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }

    /// Resolves once the server stops; use in `tokio::select!` beside the controller's work.
    pub async fn wait(&mut self) {
        while !*self.rx.borrow() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the server is stopping.
    pub fn is_shutting_down(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Starts a controller.
pub type ControllerFn = Box<dyn FnOnce(Cluster, Shutdown) -> BoxFuture<'static, ()> + Send>;

/// A named controller to start with the server.
pub struct ControllerSpec {
    /// Name, for logs and the field manager by convention.
    pub name: String,
    /// The controller's body.
    pub start: ControllerFn,
}

impl ControllerSpec {
    /// Wraps an async function as a controller.
    pub fn new<F, Fut>(name: &str, f: F) -> Self
    where
        F: FnOnce(Cluster, Shutdown) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self {
            name: name.to_string(),
            start: Box::new(move |c, s| Box::pin(f(c, s))),
        }
    }
}

impl std::fmt::Debug for ControllerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// The controllers kubesim always runs (unless disabled): namespace lifecycle,
/// kube-controller-manager's workload controllers (`workloads::controllers()`), which run
/// with or without kubelets, as on a real control plane, and the Tigera operator emulation,
/// which acts only while an operator pod is Ready.
pub fn builtin() -> Vec<ControllerSpec> {
    let mut specs = vec![ControllerSpec::new(
        "namespace-controller",
        namespace_controller,
    )];
    specs.extend(crate::workloads::controllers());
    // Inert until a tigera-operator pod is Running and Ready (see `operator`).
    specs.extend(crate::operator::controllers());
    specs
}

/// The simulation's node side: the scheduler, the kubelets, node heartbeats and lifecycle
/// (started when `ServerConfig.sim.kubelet` is set).
pub fn simulation() -> Vec<ControllerSpec> {
    vec![
        ControllerSpec::new("default-scheduler", crate::kubelet::scheduler::run),
        ControllerSpec::new("kubelet", crate::kubelet::kubelets),
        ControllerSpec::new("node-lifecycle", crate::kubelet::nodes),
    ]
}

const MANAGER: &str = "kube-controller-manager";

/// Gives each new namespace its `default` ServiceAccount and `kube-root-ca.crt` ConfigMap, and
/// empties terminating namespaces, then removes the `kubernetes` finalizer so the namespace
/// goes, as the real namespace controller does.
async fn namespace_controller(cluster: Cluster, mut shutdown: Shutdown) {
    let Ok(mut sub) = cluster.subscribe("v1", "namespaces", None) else {
        return;
    };
    let terminating: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Namespaces that existed before the subscription: make their defaults too.
    if let Ok(existing) = cluster.list("v1", "namespaces", None, &Default::default()) {
        for ns in existing {
            reconcile_namespace(&cluster, &ns, &terminating);
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            next = sub.next() => {
                let Some(Ok(event)) = next else {
                    // Fell behind compacted history: start over from the current state.
                    match cluster.subscribe("v1", "namespaces", None) {
                        Ok(s) => { sub = s; continue; }
                        Err(_) => return,
                    }
                };
                if event.event_type == EventType::Deleted {
                    continue;
                }
                let ns = event.object.value.clone();
                reconcile_namespace(&cluster, &ns, &terminating);
            }
        }
    }
}

fn reconcile_namespace(cluster: &Cluster, ns: &Value, terminating: &Arc<Mutex<HashSet<String>>>) {
    let name = ns
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ns.at("/metadata/deletionTimestamp").is_some() {
        // One cleanup task per namespace: a namespace held by finalizers must not stall the
        // others.
        let fresh = terminating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        if fresh {
            let cluster = cluster.clone();
            let terminating = terminating.clone();
            tokio::spawn(async move {
                empty_namespace(&cluster, &name).await;
                terminating
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
            });
        }
        return;
    }
    let opts = WriteOptions::manager(MANAGER);
    let _ = cluster.create(
        "v1",
        "serviceaccounts",
        Some(&name),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        &opts,
    );
    let _ = cluster.create(
        "v1",
        "configmaps",
        Some(&name),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kube-root-ca.crt",
                            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
               "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nkubesim\n-----END CERTIFICATE-----\n"}}),
        &opts,
    );
}

/// Deletes everything in a terminating namespace and finalizes it once nothing is left.
/// Objects held by finalizers or graceful pod termination keep it Terminating, as on a real
/// cluster; a later change to the namespace (or a periodic retry) finishes the job.
async fn empty_namespace(cluster: &Cluster, name: &str) {
    loop {
        let mut remaining = 0usize;
        let types: Vec<Arc<crate::catalog::ResourceType>> = cluster
            .catalog()
            .all()
            .filter(|t| t.namespaced)
            .cloned()
            .collect();
        for rt in types {
            let version = rt.storage_version().name.clone();
            let av = rt.api_version(&version);
            let Ok(objects) = cluster.list(&av, &rt.plural, Some(name), &Default::default()) else {
                continue;
            };
            for o in objects {
                let obj_name = o
                    .at("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if o.at("/metadata/deletionTimestamp").is_none() {
                    let _ = cluster.delete(
                        &av,
                        &rt.plural,
                        Some(name),
                        obj_name,
                        &DeleteOptions::default(),
                    );
                }
                if cluster.get(&av, &rt.plural, Some(name), obj_name).is_ok() {
                    remaining += 1;
                }
            }
        }
        if remaining == 0 {
            let finalize = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name},
                "spec": {"finalizers": []},
            });
            if let Ok(r) = cluster.resolve("v1", "namespaces") {
                let _ = cluster.update_resolved(
                    &r,
                    None,
                    name,
                    finalize,
                    Some("finalize"),
                    &WriteOptions::manager(MANAGER),
                );
            }
            return;
        }
        // Something is still finalizing (pods in their grace period, finalizers): retry.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match cluster.get("v1", "namespaces", None, name) {
            Ok(ns) if ns.at("/metadata/deletionTimestamp").is_some() => continue,
            _ => return,
        }
    }
}
