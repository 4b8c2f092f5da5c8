//! One running control plane: [`RealPlane::start`] brings up etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, registers the nodes and returns once
//! every node is Ready; dropping the handle stops every process and removes the directory
//! (unless it was given).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::{Value, json};

use crate::api;
use crate::audit::{self, AuditLog, Mark, Write};
use crate::behaviours;
use crate::binaries::{self, Binaries};
use crate::bootstrap::{self, NodeSpec};
use crate::components::{self, Layout};
use crate::kubeconfig;
use crate::pki::{self, Identity, Pki};
use crate::probes;
use crate::process::{self, Component};
use kubesim::sim::SimFaults;

/// Why a plane did not start or a request to it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are missing.
    #[error(transparent)]
    Binaries(#[from] binaries::Error),
    /// The certificates could not be made.
    #[error(transparent)]
    Pki(#[from] pki::Error),
    /// A component could not be started or exited.
    #[error(transparent)]
    Process(#[from] process::Error),
    /// A request failed.
    #[error(transparent)]
    Api(#[from] api::Error),
    /// The audit log could not be read.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// A file of the plane could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A client could not be built.
    #[error("a client for {server}: {source}")]
    Client {
        /// The API server.
        server: String,
        /// kube's error.
        source: kube::Error,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {waited:?}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last state seen.
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How to start a plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// How many nodes (`CLUSTER_NODES`, 5 by default).
    pub nodes: usize,
    /// How many of them are control-plane nodes (the first ones, 1 by default).
    pub control_plane_nodes: usize,
    /// Where to keep the plane's files; a temporary directory (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// The API server's port; a free ephemeral port when `None`.
    pub apiserver_port: Option<u16>,
    /// kubeadm's ConfigMap and add-ons (kube-proxy, CoreDNS, kube-dns), as `kubeadm init`
    /// leaves a cluster.
    pub kubeadm_addons: bool,
    /// The pod network (kubeadm `podSubnet`, the controller-manager's `--cluster-cidr`).
    pub pod_subnet: String,
    /// How long the whole start may take.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 5,
            control_plane_nodes: 1,
            dir: None,
            apiserver_port: None,
            kubeadm_addons: true,
            pod_subnet: "10.244.0.0/16".into(),
            timeout: Duration::from_secs(180),
        }
    }
}

enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// A running control plane. Dropping it stops every component.
pub struct RealPlane {
    // Field order is drop order: the processes stop before the runtime and the directory go.
    components: std::sync::Mutex<Vec<Component>>,
    probe_runner: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
    admin: Client,
    super_admin: Client,
    binaries: Binaries,
    server: String,
    nodes: Vec<NodeSpec>,
    version: String,
    audit: AuditLog,
    fences: AtomicU64,
    started_in: Duration,
    dir: Dir,
}

impl std::fmt::Debug for RealPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealPlane")
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// Set to keep a plane's directory (logs, audit log, certificates) after it stops.
pub const KEEP_ENV: &str = "K8S_CALICO_REALPLANE_KEEP";

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

impl RealPlane {
    /// Starts a plane with the binaries [`Binaries::locate`] finds.
    pub fn start(options: Options) -> Result<Self, Error> {
        Self::start_with(Binaries::locate()?, options)
    }

    /// Starts a plane with `binaries`. A port another process took between picking and
    /// binding makes it start again (three attempts).
    pub fn start_with(binaries: Binaries, options: Options) -> Result<Self, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(binaries.clone(), &options) {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn start_once(binaries: Binaries, options: &Options) -> Result<Self, Error> {
        let begun = Instant::now();
        let deadline = begun + options.timeout;
        let dir = match &options.dir {
            Some(d) => {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(io(format!("clearing {}", d.display())))?;
                }
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                Dir::Given(d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("realplane-")
                    .tempdir()
                    .map_err(io("creating a directory for the plane"))?;
                if std::env::var_os(KEEP_ENV).is_some() {
                    let kept = t.keep();
                    eprintln!("realplane: keeping {} ({KEEP_ENV})", kept.display());
                    Dir::Given(kept)
                } else {
                    Dir::Temp(t)
                }
            }
        };
        let root = dir.path().to_path_buf();
        let pki = Pki::generate(&root.join("pki"))?;
        let layout = Layout {
            dir: &root,
            pki: &pki,
        };
        let free = || process::free_port().map_err(io("picking a free port"));
        let (etcd_port, peer_port) = (free()?, free()?);
        let port = match options.apiserver_port {
            Some(p) => p,
            None => free()?,
        };
        let server = format!("https://127.0.0.1:{port}");
        write_files(&root, &pki, &server)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io("starting the tokio runtime"))?;
        let mut components = Vec::new();
        let spawn = |name: &str, args: Vec<String>, env: &[(&str, &Path)]| {
            Component::spawn(
                name,
                &binaries.path(name),
                &args,
                env,
                &root.join(format!("{name}.log")),
            )
        };
        components.push(spawn(
            "etcd",
            components::etcd(layout, etcd_port, peer_port),
            &[],
        )?);
        wait_for_port(&mut components, etcd_port, deadline)?;
        components.push(spawn(
            "kube-apiserver",
            components::apiserver(layout, port, etcd_port),
            &[],
        )?);

        let client_for = |id: Identity| -> Result<Client, Error> {
            let text = kubeconfig::render(&pki, &server, id).map_err(io("reading the pki"))?;
            runtime.block_on(client_from_kubeconfig(&text, &server))
        };
        let super_admin = client_for(pki::SUPER_ADMIN)?;
        let admin = client_for(pki::ADMIN)?;
        wait_until(
            &mut components,
            deadline,
            "the API server's /readyz",
            || runtime.block_on(readyz(&super_admin)),
        )?;

        let version = runtime.block_on(server_version(&super_admin))?;
        runtime.block_on(bootstrap::admin_binding(&super_admin))?;
        write_kwok_config(&root, &version, &SimFaults::default())?;

        let home = root.join("kwok-home");
        std::fs::create_dir_all(&home).map_err(io("creating kwok's home"))?;
        components.push(spawn(
            "kube-controller-manager",
            components::controller_manager(layout, &options.pod_subnet),
            &[],
        )?);
        components.push(spawn("kube-scheduler", components::scheduler(layout), &[])?);
        components.push(spawn("kwok", components::kwok(layout), &[("HOME", &home)])?);

        let nodes = bootstrap::node_specs(options.nodes, options.control_plane_nodes);
        runtime.block_on(async {
            bootstrap::nodes(&super_admin, &nodes).await?;
            if options.kubeadm_addons {
                bootstrap::kubeadm_addons(&super_admin, &version, &options.pod_subnet).await?;
            }
            Ok::<(), api::Error>(())
        })?;
        wait_until(
            &mut components,
            deadline,
            "every node Ready and the default ServiceAccount",
            || runtime.block_on(nodes_ready(&super_admin, nodes.len())),
        )?;

        let audit = AuditLog::new(&root.join("audit.log"));
        let runner = client_for(pki::PROBE_RUNNER)?;
        let probe_runner = runtime.spawn(probes::run(runner, root.clone()));
        Ok(Self {
            components: std::sync::Mutex::new(components),
            probe_runner,
            runtime,
            admin,
            super_admin,
            binaries,
            server,
            nodes,
            version,
            audit,
            fences: AtomicU64::new(0),
            started_in: begun.elapsed(),
            dir,
        })
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The plane's directory: certificates, kubeconfigs, logs, the audit log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig (kubeadm's admin.conf: `kubernetes-admin`, authorised by RBAC as
    /// cluster-admin). Give it to the modules under test.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("admin.kubeconfig")
    }

    /// The user name the admin kubeconfig authenticates as.
    pub fn admin_user(&self) -> &'static str {
        pki::ADMIN.user
    }

    /// The nodes, in order (`cp1`, then `w1`..).
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The binaries the plane runs (its `kubectl` among them).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// How long the start took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A client authenticated as the admin kubeconfig's user.
    pub fn client(&self) -> Client {
        self.admin.clone()
    }

    /// Runs `future` on the plane's runtime (for kube-rs calls from synchronous tests).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The process ids of the running components, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.components()
            .iter()
            .filter_map(|c| c.pid().map(|p| (c.name().to_string(), p)))
            .collect()
    }

    fn components(&self) -> std::sync::MutexGuard<'_, Vec<Component>> {
        self.components.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails, naming the component and the end of its log, if any component has exited.
    pub fn check_running(&self) -> Result<(), Error> {
        for c in self.components().iter_mut() {
            c.check_running()?;
        }
        Ok(())
    }

    /// One object, or `None` when it does not exist.
    pub fn get(
        &self,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        match self.block_on(api::get(
            &self.super_admin,
            api_version,
            resource,
            namespace,
            name,
        )) {
            Ok(v) => Some(v),
            Err(e) if e.code() == Some(404) => None,
            Err(e) => panic!("reading {resource} {name}: {e}"),
        }
    }

    /// Every object of a type, in every namespace (empty when the type is not served).
    pub fn list(&self, api_version: &str, resource: &str) -> Vec<Value> {
        match self.block_on(api::list(&self.super_admin, api_version, resource, None)) {
            Ok(v) => v,
            Err(e) if e.code() == Some(404) => Vec::new(),
            Err(e) => panic!("listing {resource}: {e}"),
        }
    }

    /// Runs the plane's real `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        std::process::Command::new(self.binaries.path("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir())
            .output()
    }

    /// A position in the audit log: every write answered before this call is before it.
    pub fn mark(&self) -> Result<Mark, Error> {
        self.fence(self.audit.start())
    }

    /// Every write the API server logged since `mark`, by anyone (see [`Write::user`]).
    pub fn writes_since(&self, mark: Mark) -> Result<Vec<Write>, Error> {
        let now = self.fence(mark)?;
        Ok(self.audit.writes_between(mark, now)?)
    }

    /// The writes since `mark` that changed something and were made with the admin
    /// kubeconfig, which the modules under test use.
    pub fn admin_writes_since(&self, mark: Mark) -> Result<Vec<Write>, Error> {
        Ok(self
            .writes_since(mark)?
            .into_iter()
            .filter(|w| w.user == pki::ADMIN.user && w.stored())
            .collect())
    }

    fn fence(&self, from: Mark) -> Result<Mark, Error> {
        let id = format!(
            "realplane-fence-{}",
            self.fences.fetch_add(1, Ordering::SeqCst)
        );
        let path = format!("/apis/authentication.k8s.io/v1/selfsubjectreviews?fieldManager={id}");
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        self.block_on(api::request(
            &self.super_admin,
            "POST",
            &path,
            "application/json",
            Some(&body),
        ))
        .map_err(|e| audit::Error::Fence(e.to_string()))?;
        Ok(self
            .audit
            .wait_for_fence(&id, from, Duration::from_secs(30))?)
    }

    /// Makes the plane behave as `faults` say, replacing the faults set before: crash loops,
    /// images that cannot be pulled, slow or no readiness, nodes going down (kwok stages, see
    /// [`behaviours`]) and the data plane's faults the probe runner answers with.
    /// `SimFaults::default()` lifts them all.
    ///
    /// kwok applies stages when an object changes; it restarts here so that it reads every
    /// node and pod again under the new stages (a node set down, a pod made well). The new
    /// kwok process dies with the calling thread, like the plane's others.
    pub fn set_faults(&self, faults: &SimFaults) -> Result<(), Error> {
        probes::write_faults(self.dir(), faults).map_err(io("writing the network faults"))?;
        write_kwok_config(self.dir(), &self.version, faults)?;
        let mut components = self.components();
        let Some(kwok) = components.iter_mut().find(|c| c.name() == "kwok") else {
            return Ok(());
        };
        kwok.stop(Duration::from_secs(5));
        // A new kwok process has a new identity and would wait for the old one's node Leases
        // to expire (40 s) before managing the nodes again: they go, it makes new ones.
        let c = &self.super_admin;
        self.block_on(async {
            for lease in api::list(
                c,
                "coordination.k8s.io/v1",
                "leases",
                Some("kube-node-lease"),
            )
            .await?
            {
                let name = lease["metadata"]["name"].as_str().unwrap_or("");
                match api::delete(
                    c,
                    "coordination.k8s.io/v1",
                    "leases",
                    Some("kube-node-lease"),
                    name,
                )
                .await
                {
                    Err(e) if e.code() != Some(404) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })?;
        kwok.start_again()?;
        Ok(())
    }

    /// Stops every component (also done on drop).
    pub fn stop(&mut self) {
        self.probe_runner.abort();
        for c in self.components().iter_mut().rev() {
            c.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for RealPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_files(root: &Path, pki: &Pki, server: &str) -> Result<(), Error> {
    let json = |v: Value| serde_json::to_string_pretty(&v).unwrap_or_default();
    pki::write_file(
        &root.join("audit-policy.json"),
        &json(audit::policy()),
        false,
    )
    .map_err(io("writing the audit policy"))?;
    for id in pki::IDENTITIES {
        kubeconfig::write(
            pki,
            server,
            id,
            &root.join(format!("{}.kubeconfig", id.file)),
        )
        .map_err(io(format!("writing the kubeconfig of {}", id.user)))?;
    }
    Ok(())
}

/// kwok's configuration: its options, the default lifecycle and the stages of `faults`.
fn write_kwok_config(root: &Path, version: &str, faults: &SimFaults) -> Result<(), Error> {
    let mut docs = vec![components::kwok_config()];
    docs.extend(bootstrap::default_stages(version));
    docs.extend(behaviours::stages(faults));
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap_or_default()))
        .collect();
    let (tmp, path) = (
        root.join(".kwok.yaml.tmp"),
        root.join(components::KWOK_CONFIG),
    );
    pki::write_file(&tmp, &text, false)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(io("writing kwok's configuration"))
}

async fn client_from_kubeconfig(text: &str, server: &str) -> Result<Client, Error> {
    let err = |source| Error::Client {
        server: server.to_string(),
        source,
    };
    let kc = kube::config::Kubeconfig::from_yaml(text)
        .map_err(|e| err(kube::Error::InferKubeconfig(e)))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(kube::Error::InferKubeconfig(e)))?;
    Client::try_from(config).map_err(err)
}

async fn readyz(client: &Client) -> Result<(bool, String), Error> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a static request");
    match client.request_text(req).await {
        Ok(t) => Ok((t.trim() == "ok", t)),
        Err(e) => Ok((false, e.to_string())),
    }
}

async fn server_version(client: &Client) -> Result<String, Error> {
    let v = client
        .apiserver_version()
        .await
        .map_err(|source| Error::Client {
            server: "the API server".into(),
            source,
        })?;
    Ok(v.git_version)
}

async fn nodes_ready(client: &Client, want: usize) -> Result<(bool, String), Error> {
    let nodes = api::list(client, "v1", "nodes", None).await?;
    let ready: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    let sa = api::get(client, "v1", "serviceaccounts", Some("default"), "default").await;
    let done = ready.len() == want && sa.is_ok();
    Ok((
        done,
        format!(
            "; Ready nodes: {ready:?} of {want}, default ServiceAccount: {}",
            sa.is_ok()
        ),
    ))
}

fn wait_for_port(components: &mut [Component], port: u16, deadline: Instant) -> Result<(), Error> {
    wait_until(
        components,
        deadline,
        &format!("a listener on 127.0.0.1:{port}"),
        || {
            Ok((
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                String::new(),
            ))
        },
    )
}

/// Polls `check` (done, detail) until done, failing at once when a component exits.
fn wait_until(
    components: &mut [Component],
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> Result<(bool, String), Error>,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        for c in components.iter_mut() {
            c.check_running()?;
        }
        let detail = match check() {
            Ok((true, _)) => return Ok(()),
            Ok((false, d)) => d,
            Err(e) => format!(": {e}"),
        };
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
                detail,
            });
        }
        std::thread::sleep(POLL);
    }
}
