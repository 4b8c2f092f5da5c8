//! One test body, two worlds. End-to-end tests take their cluster as a [`Backend`]: the real
//! control plane ([`RealCluster`], the default world: kube-apiserver 1.34.4 and friends with
//! kwok nodes, `tests/realplane`) or kubesim ([`SimCluster`], for what only it can do: older
//! Kubernetes minors, HTTP fault bursts, dropped watches).
//!
//! Both worlds speak the same vocabulary:
//! - objects are read back as JSON ([`Backend::get`], [`Backend::list`]);
//! - writes are counted from a [`Mark`] ([`Backend::writes_since`]: the writes made with the
//!   kubeconfig the module under test gets; kubesim's counters, the real API server's audit
//!   log);
//! - manifests are installed as users install them ([`Backend::kubectl_apply`],
//!   [`Backend::kubectl_create`]: the real `kubectl` 1.34.4 on the real plane);
//! - faults are kubesim's [`SimFaults`] ([`Backend::inject`]: kwok stages and the probe
//!   runner's network model on the real plane).
//!
//! A test that must run on the real plane gets `None` from [`RealCluster::start`] (and says it
//! skipped) only when the plane's binaries are not built; under `make test` that fails instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use kubesim::sim::SimFaults;
use realplane::{Binaries, Options, RealPlane};
use serde_json::{Value, json};

use super::cluster::SimCluster;

/// Which world a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// kubesim, this project's simulator.
    Sim,
    /// kube-apiserver, controller-manager, scheduler, etcd and kwok.
    Real,
}

/// A point from which writes are counted.
#[derive(Debug, Clone)]
pub enum Mark {
    /// kubesim's counters were reset.
    Sim,
    /// A position in the real API server's audit log.
    Real(realplane::Mark),
}

/// A cluster a test runs against, with scratch space for manifests and backups.
pub trait Backend {
    /// Which world this is.
    fn world(&self) -> World;
    /// The kubeconfig the module under test is given.
    fn kubeconfig(&self) -> PathBuf;
    /// The test's scratch directory (`manifests/`, `backups/`).
    fn scratch(&self) -> &Path;
    /// One object, or `None` when it does not exist.
    fn get(&self, api_version: &str, resource: &str, ns: Option<&str>, name: &str)
    -> Option<Value>;
    /// Every object of a type, all namespaces.
    fn list(&self, api_version: &str, resource: &str) -> Vec<Value>;
    /// Starts counting writes.
    fn mark(&self) -> Mark;
    /// The writes made with [`Backend::kubeconfig`] since `mark` that changed something, one
    /// line each (`verb resource namespace/name`).
    fn writes_since(&self, mark: &Mark) -> Vec<String>;
    /// Runs `kubectl` with [`Backend::kubeconfig`].
    fn kubectl(&self, args: &[&str]) -> Output;
    /// Replaces the faults in force.
    fn inject(&self, faults: SimFaults);

    /// `kubectl apply -f file` (client-side apply, as Calico's manifest install says); panics
    /// with kubectl's output if it fails.
    fn kubectl_apply(&self, file: &Path) {
        let out = self.kubectl(&["apply", "-f", &file.display().to_string()]);
        assert!(
            out.status.success(),
            "kubectl apply -f {}: {}",
            file.display(),
            text(&out)
        );
    }

    /// `kubectl create -f file`; panics with kubectl's output if it fails.
    fn kubectl_create(&self, file: &Path) {
        let out = self.kubectl(&["create", "-f", &file.display().to_string()]);
        assert!(
            out.status.success(),
            "kubectl create -f {}: {}",
            file.display(),
            text(&out)
        );
    }

    /// The `manifest_dir` argument (empty until a test fills it).
    fn manifest_dir(&self) -> PathBuf {
        self.scratch().join("manifests")
    }

    /// The `backup_dir` argument.
    fn backup_dir(&self) -> PathBuf {
        self.scratch().join("backups")
    }

    /// `calico_upgrade`'s arguments for this cluster, with `extra` merged in.
    fn upgrade_args(&self, extra: Value) -> Value {
        let mut args = json!({
            "kubeconfig": self.kubeconfig(),
            "manifest_dir": self.manifest_dir(),
            "backup_dir": self.backup_dir(),
            "timeout": 120,
        });
        for (k, v) in extra.as_object().expect("extra arguments are an object") {
            args[k] = v.clone();
        }
        args
    }

    /// The backup folders written so far.
    fn backups(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.backup_dir())
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The calico-node image each node runs, from the pods (what really runs).
    fn calico_node_images(&self) -> BTreeMap<String, String> {
        self.list("v1", "pods")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["k8s-app"] == "calico-node")
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
                let image = p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (node, image)
            })
            .collect()
    }

    /// Waits until every DaemonSet and Deployment has rolled out (all replicas updated and
    /// available, the controller caught up), panicking with what is still waiting.
    fn wait_rolled_out(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            let waiting: Vec<String> = self
                .list("apps/v1", "daemonsets")
                .iter()
                .chain(self.list("apps/v1", "deployments").iter())
                .filter(|o| !rolled_out(o))
                .map(|o| {
                    format!(
                        "{} {}/{}: {}",
                        o["kind"],
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or(""),
                        o["status"]
                    )
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < until,
                "not rolled out after {timeout:?}: {waiting:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether a DaemonSet or Deployment has rolled out.
pub fn rolled_out(o: &Value) -> bool {
    let s = &o["status"];
    let n = |k: &str| s[k].as_i64().unwrap_or(0);
    let caught_up = n("observedGeneration") >= o["metadata"]["generation"].as_i64().unwrap_or(0);
    if o["kind"] == "DaemonSet" {
        let want = n("desiredNumberScheduled");
        caught_up && n("updatedNumberScheduled") == want && n("numberAvailable") == want
    } else {
        let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
        caught_up
            && n("updatedReplicas") == want
            && n("availableReplicas") == want
            && n("replicas") == want
    }
}

/// A process's output, both streams.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The real control plane with scratch space.
pub struct RealCluster {
    /// The plane.
    pub plane: RealPlane,
    dir: tempfile::TempDir,
}

impl RealCluster {
    /// Starts a plane of `nodes` nodes (`cp1`, `w1`..), or `None` (said on stderr) when its
    /// binaries are not built and the test may skip.
    pub fn start(nodes: usize) -> Option<Self> {
        let binaries = Binaries::for_test()?;
        let options = Options {
            nodes,
            ..Options::default()
        };
        let plane = RealPlane::start_with(binaries, options)
            .unwrap_or_else(|e| panic!("the real plane did not start: {e}"));
        Some(Self {
            plane,
            dir: tempfile::tempdir().expect("a scratch directory"),
        })
    }
}

impl Backend for RealCluster {
    fn world(&self) -> World {
        World::Real
    }

    fn kubeconfig(&self) -> PathBuf {
        self.plane.kubeconfig()
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn get(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.plane.get(api_version, resource, ns, name)
    }

    fn list(&self, api_version: &str, resource: &str) -> Vec<Value> {
        self.plane.list(api_version, resource)
    }

    fn mark(&self) -> Mark {
        Mark::Real(self.plane.mark().unwrap_or_else(|e| panic!("{e}")))
    }

    fn writes_since(&self, mark: &Mark) -> Vec<String> {
        let Mark::Real(m) = mark else {
            panic!("a kubesim mark on the real plane")
        };
        let writes = self
            .plane
            .admin_writes_since(*m)
            .unwrap_or_else(|e| panic!("{e}"));
        writes.iter().map(ToString::to_string).collect()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.plane.kubectl(args).expect("running kubectl")
    }

    fn inject(&self, faults: SimFaults) {
        self.plane
            .set_faults(&faults)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Backend for SimCluster {
    fn world(&self) -> World {
        World::Sim
    }

    fn kubeconfig(&self) -> PathBuf {
        self.handle.kubeconfig_path().to_path_buf()
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn get(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        SimCluster::get(self, api_version, resource, ns, name)
    }

    fn list(&self, api_version: &str, resource: &str) -> Vec<Value> {
        SimCluster::list(self, api_version, resource)
    }

    fn mark(&self) -> Mark {
        self.handle.faults().reset_counters();
        Mark::Sim
    }

    fn writes_since(&self, _mark: &Mark) -> Vec<String> {
        let counters = self.handle.faults().counters();
        counters
            .writes
            .iter()
            .map(|(what, n)| format!("{what} x{n}"))
            .collect()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let kubectl = Binaries::locate()
            .map(|b| b.path("kubectl"))
            .unwrap_or_else(|_| PathBuf::from("kubectl"));
        std::process::Command::new(kubectl)
            .args(args)
            .env("KUBECONFIG", self.handle.kubeconfig_path())
            .env("HOME", self.dir.path())
            .output()
            .expect("running kubectl")
    }

    fn inject(&self, faults: SimFaults) {
        self.handle.cluster().sim().update_faults(|f| *f = faults);
    }
}

/// The upstream Calico manifests (`CALICO_UPSTREAM_MANIFESTS`, else `../shared/fixtures/...`
/// beside the checkout), or `None`, said out loud, where this clone has neither (the test then
/// skips: they are a shared fixture, not part of the project).
pub fn upstream_manifests(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CALICO_UPSTREAM_MANIFESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/calico-manifests")
        });
    if dir.join("v3.30.7/calico.yaml").is_file() {
        return Some(dir);
    }
    println!(
        "{test}: the upstream Calico manifests are not at {} (set CALICO_UPSTREAM_MANIFESTS): skipping",
        dir.display()
    );
    None
}
