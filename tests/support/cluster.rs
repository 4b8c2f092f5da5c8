//! Simulated clusters for the module tests: a kubesim scenario started in-process, the Calico
//! manifests a `manifest_dir` would hold, and reads of the cluster afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_calico::catalog::InstallMethod;
use kubesim::cluster::{ListOptions, PatchType, WriteOptions};
use kubesim::scenario::Scenario;
use kubesim::server::Handle;
use serde_json::{Value, json};

/// A running simulated cluster with a folder for manifests and backups.
pub struct SimCluster {
    /// The server.
    pub handle: Handle,
    /// Scratch space: `manifests/`, `backups/`.
    pub dir: tempfile::TempDir,
}

impl SimCluster {
    /// Starts `scenario` (YAML) and writes the calico.yaml manifests of `releases` under
    /// `manifests/`.
    pub fn start(scenario: &str, releases: &[&str]) -> Self {
        Self::start_with(scenario, releases, InstallMethod::Manifest)
    }

    /// Starts `scenario` and writes the manifests of `releases` for `method` under `manifests/`.
    pub fn start_with(scenario: &str, releases: &[&str], method: InstallMethod) -> Self {
        let handle = Scenario::from_yaml(scenario)
            .unwrap()
            .start()
            .unwrap_or_else(|e| panic!("scenario did not start: {e:#}"));
        let dir = tempfile::tempdir().unwrap();
        kubesim::calico::write_manifest_dir(&dir.path().join("manifests"), releases, method)
            .unwrap();
        SimCluster { handle, dir }
    }

    /// The kubeconfig a module is given.
    pub fn kubeconfig(&self) -> String {
        self.handle.kubeconfig_path().display().to_string()
    }

    /// The `manifest_dir` argument.
    pub fn manifest_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// The `backup_dir` argument.
    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// `calico_upgrade`'s arguments for this cluster, with `extra` merged in.
    pub fn upgrade_args(&self, extra: Value) -> Value {
        let mut args = json!({
            "kubeconfig": self.kubeconfig(),
            "manifest_dir": self.manifest_dir(),
            "backup_dir": self.backup_dir(),
            "timeout": 60,
        });
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    }

    /// Runs `calico_upgrade` with `upgrade_args(extra)` where it must be refused: exit 1, a
    /// one-line message (returned), not one write to the cluster and no backup.
    pub fn refused_upgrade(&self, extra: Value) -> String {
        self.handle.faults().reset_counters();
        let (out, code) = super::module::run(
            env!("CARGO_BIN_EXE_calico_upgrade"),
            &self.upgrade_args(extra),
        );
        assert_eq!((code, &out["failed"]), (1, &json!(true)), "{out:#}");
        let counters = self.handle.faults().counters();
        assert_eq!(counters.total_writes, 0, "{:#?}", counters.writes);
        assert!(self.backups().is_empty());
        let msg = out["msg"].as_str().unwrap().to_string();
        assert!(!msg.contains('\n'), "{msg}");
        msg
    }

    /// One object, or `None` when it does not exist.
    pub fn get(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.handle
            .cluster()
            .get(api_version, resource, ns, name)
            .ok()
    }

    /// Every object of a type, all namespaces.
    pub fn list(&self, api_version: &str, resource: &str) -> Vec<Value> {
        self.handle
            .cluster()
            .list(api_version, resource, None, &ListOptions::default())
            .unwrap()
    }

    /// The calico-node image each node runs, from the pods (what really runs), whichever
    /// namespace the install uses.
    pub fn calico_node_images(&self) -> BTreeMap<String, String> {
        self.list("v1", "pods")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["k8s-app"] == "calico-node")
            .filter(|p| {
                ["kube-system", "calico-system"]
                    .contains(&p["metadata"]["namespace"].as_str().unwrap_or(""))
            })
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Writes an object as a user's `kubectl apply` would have.
    pub fn create(&self, api_version: &str, resource: &str, ns: Option<&str>, object: Value) {
        self.handle
            .cluster()
            .create(
                api_version,
                resource,
                ns,
                object,
                &WriteOptions::manager("kubectl"),
            )
            .unwrap();
    }

    /// Changes an object as `kubectl edit` would (a merge patch).
    pub fn edit(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        patch: Value,
    ) {
        self.handle
            .cluster()
            .patch(
                api_version,
                resource,
                ns,
                name,
                PatchType::Merge,
                &serde_json::to_vec(&patch).unwrap(),
                None,
                &WriteOptions::manager("kubectl-edit"),
            )
            .unwrap();
    }

    /// The backup folders written so far.
    pub fn backups(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.backup_dir())
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// The versions of the hops a `calico_upgrade` result reports done.
pub fn hops(result: &Value) -> Vec<String> {
    result["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_str().unwrap().to_string())
        .collect()
}

/// A backup folder's `index.json`.
pub fn backup_index(backup: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(backup.join("index.json")).expect("index.json in the backup"),
    )
    .unwrap()
}

/// Every object a backup folder holds, by `kind namespace/name`, without the fields the server
/// owns, for comparing with the cluster.
pub fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "managedFields",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    o
}

/// Whether a path exists and is a non-empty file.
pub fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
}
