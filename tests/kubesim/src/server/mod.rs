//! The HTTP(S) front end: listener, TLS, authentication, faults, routing to discovery,
//! OpenAPI, resources and the admin API; and [`Server::start`] with its [`Handle`].

pub mod admin;
pub mod discovery;
pub mod http;
pub mod openapi;
pub mod openapi_proto;
pub mod resources;
pub mod table;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, Request};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;

use self::http::{Query, Resp, negotiate, parse_accept};
use self::resources::{RequestParts, Target};
use crate::cluster::{Cluster, ClusterSettings, Resolved};
use crate::controllers::{self, ControllerSpec, Shutdown};
use crate::error::ApiError;
use crate::faults::FaultState;
use crate::store::StoreLimits;
use crate::version::KubeVersion;

/// The real server's request body limit (3 MiB); Calico's CRDs come close.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How to start a server.
pub struct ServerConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// HTTPS with a generated CA (default) or plain HTTP.
    pub tls: bool,
    /// The simulated Kubernetes version.
    pub version: KubeVersion,
    /// Where to write the kubeconfig; `None` writes it in a private temporary directory that
    /// is removed when the handle is dropped.
    pub kubeconfig_path: Option<PathBuf>,
    /// The bearer token; `None` generates one.
    pub token: Option<String>,
    /// How long new CRDs take to become Established.
    pub crd_establish_delay: Duration,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Change history kept per resource type (watch resumption, consistent pagination).
    pub watch_history_per_resource: usize,
    /// Run the built-in controllers (namespace lifecycle).
    pub builtin_controllers: bool,
    /// More controllers to start with the server.
    pub controllers: Vec<ControllerSpec>,
    /// Service CIDR for ClusterIPs.
    pub service_cidr: String,
    /// Over plain HTTP, serve requests that carry no Authorization header as the admin, as the
    /// old insecure port did: kubectl never sends credentials over HTTP. Wrong tokens still
    /// get 401. Ignored with TLS.
    pub anonymous_over_http: bool,
    /// Simulation timing and faults; `sim.kubelet` runs the scheduler and kubelets (with
    /// `builtin_controllers`; the workload controllers run with `builtin_controllers` alone).
    pub sim: crate::sim::SimConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: 0,
            tls: true,
            version: KubeVersion::DEFAULT,
            kubeconfig_path: None,
            token: None,
            crd_establish_delay: Duration::from_millis(200),
            bookmark_interval: Duration::from_secs(10),
            watch_history_per_resource: StoreLimits::default().history_per_resource,
            builtin_controllers: true,
            controllers: Vec::new(),
            service_cidr: "10.96.0.0/12".into(),
            anonymous_over_http: true,
            sim: crate::sim::SimConfig::default(),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Adds a controller started with the server.
    pub fn with_controller(mut self, spec: ControllerSpec) -> Self {
        self.controllers.push(spec);
        self
    }
}

/// State shared by every request.
pub struct Shared {
    /// The cluster state and API.
    pub cluster: Cluster,
    /// Faults and counters.
    pub faults: Arc<FaultState>,
    token: String,
    anonymous: bool,
    host: String,
    /// BOOKMARK period.
    pub bookmark_interval: Duration,
    openapi_v3: std::sync::Mutex<openapi::V3Cache>,
}

/// Starts servers.
#[derive(Debug)]
pub struct Server;

/// A running server. Dropping it stops the server.
pub struct Handle {
    url: String,
    token: String,
    kubeconfig_path: PathBuf,
    ca_pem: Option<String>,
    cluster: Cluster,
    faults: Arc<FaultState>,
    runtime: tokio::runtime::Handle,
    shutdown_tx: Option<tokio_watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    temp_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

struct Ready {
    url: String,
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    ca_pem: Option<String>,
}

fn private_temp_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kubesim-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        crate::ids::name_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

impl Server {
    /// Starts a server on its own runtime thread (so it serves sync tests and `#[tokio::test]`
    /// alike) and returns once it accepts connections and its kubeconfig is written.
    pub fn start(config: ServerConfig) -> anyhow::Result<Handle> {
        let token = config.token.clone().unwrap_or_else(crate::ids::new_token);
        let (temp_dir, kubeconfig_path) = match &config.kubeconfig_path {
            Some(p) => (None, p.clone()),
            None => {
                let d = private_temp_dir().context("creating the kubeconfig directory")?;
                let p = d.join("kubeconfig");
                (Some(d), p)
            }
        };
        let faults = Arc::new(FaultState::default());
        let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Ready>>();
        let thread_faults = faults.clone();
        let thread_token = token.clone();
        let thread = std::thread::Builder::new()
            .name("kubesim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kubesim-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(run(
                    config,
                    thread_token,
                    thread_faults,
                    shutdown_rx,
                    ready_tx,
                ));
                rt.shutdown_background();
            })
            .context("spawning the server thread")?;
        let ready = ready_rx
            .recv()
            .context("the server thread ended before it was ready")??;
        let kubeconfig =
            crate::kubeconfig::render(&ready.url, &token, ready.ca_pem.as_deref(), "default");
        crate::kubeconfig::write(&kubeconfig_path, &kubeconfig)
            .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
        Ok(Handle {
            url: ready.url,
            token,
            kubeconfig_path,
            ca_pem: ready.ca_pem,
            cluster: ready.cluster,
            faults,
            runtime: ready.runtime,
            shutdown_tx: Some(shutdown_tx),
            thread: Some(thread),
            temp_dir,
        })
    }
}

async fn run(
    config: ServerConfig,
    token: String,
    faults: Arc<FaultState>,
    shutdown_rx: tokio_watch::Receiver<bool>,
    ready_tx: std::sync::mpsc::Sender<anyhow::Result<Ready>>,
) {
    let setup = async {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port)))
            .await
            .context("binding the listener")?;
        let addr = listener.local_addr()?;
        let tls = if config.tls {
            Some(crate::tls::generate()?)
        } else {
            None
        };
        let cluster = Cluster::new(ClusterSettings {
            version: config.version,
            crd_establish_delay: config.crd_establish_delay,
            service_cidr: config.service_cidr.clone(),
            limits: StoreLimits {
                history_per_resource: config.watch_history_per_resource,
                ..StoreLimits::default()
            },
            sim: config.sim.clone(),
        });
        anyhow::Ok((listener, addr, tls, cluster))
    };
    let (listener, addr, tls, cluster) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{}", addr.port());
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        faults,
        token,
        anonymous: config.anonymous_over_http && tls.is_none(),
        host: format!("127.0.0.1:{}", addr.port()),
        bookmark_interval: config.bookmark_interval,
        openapi_v3: std::sync::Mutex::default(),
    });
    let mut specs = Vec::new();
    if config.builtin_controllers {
        specs.extend(controllers::builtin());
        if config.sim.kubelet {
            specs.extend(controllers::simulation());
        }
    }
    specs.extend(config.controllers);
    for spec in specs {
        tokio::spawn((spec.start)(
            cluster.clone(),
            Shutdown::new(shutdown_rx.clone()),
        ));
    }
    let _ = ready_tx.send(Ok(Ready {
        url,
        cluster,
        runtime: tokio::runtime::Handle::current(),
        ca_pem: tls.as_ref().map(|t| t.ca_pem.clone()),
    }));
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config));
    let mut shutdown = Shutdown::new(shutdown_rx);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let Ok(tls_stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(tls_stream), service)
                        .await;
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    match route(shared, req).await {
        Ok(r) => r,
        Err(e) => http::error(&e),
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return Ok(http::text(200, "ok"));
    }
    let authorized = match header(&req, "authorization") {
        Some(h) => h
            .strip_prefix("Bearer ")
            .is_some_and(|t| t.trim() == shared.token),
        None => shared.anonymous,
    };
    if !authorized {
        return Err(ApiError::unauthorized());
    }
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    let accept = parse_accept(header(&req, "accept"));
    let content_type = header(&req, "content-type").map(str::to_string);
    let user_agent = header(&req, "user-agent").map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::too_large(MAX_BODY)
                } else {
                    ApiError::bad_request(format!("reading the request body: {e}"))
                },
            );
        }
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["kubesim", rest @ ..] = segs.as_slice() {
        return admin::serve(&shared, &method, rest, &body);
    }
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let catalog = shared.cluster.catalog();
    let version = shared.cluster.version();
    let read_only = || {
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        ["version"] => {
            read_only()?;
            Ok(http::json(200, &version.version_info()))
        }
        ["api"] => {
            read_only()?;
            Ok(match discovery::wants_aggregated(&accept, &version) {
                Some(v) => {
                    discovery::aggregated_response(&discovery::aggregated(&catalog, true, v), v)
                }
                None => http::json(200, &discovery::api_versions(&shared.host)),
            })
        }
        ["apis"] => {
            read_only()?;
            Ok(match discovery::wants_aggregated(&accept, &version) {
                Some(v) => {
                    discovery::aggregated_response(&discovery::aggregated(&catalog, false, v), v)
                }
                None => http::json(200, &discovery::api_group_list(&catalog)),
            })
        }
        ["api", "v1"] => {
            read_only()?;
            discovery::resource_list(&catalog, "", "v1")
                .map(|d| http::json(200, &d))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["apis", group] => {
            read_only()?;
            discovery::api_group(&catalog, group)
                .map(|d| http::json(200, &d))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["apis", group, v] => {
            read_only()?;
            discovery::resource_list(&catalog, group, v)
                .map(|d| http::json(200, &d))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["openapi", "v2"] => {
            read_only()?;
            let wants_proto = accept.iter().any(|m| {
                m.mime
                    .starts_with("application/com.github.proto-openapi.spec.v2")
            });
            if wants_proto {
                Ok(http::json_bytes(
                    200,
                    Bytes::from(openapi_proto::document(&catalog, &version)),
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ))
            } else {
                Ok(http::json(200, &openapi::v2(&catalog, &version)))
            }
        }
        ["openapi", "v3"] if version.serves_openapi_v3() => {
            read_only()?;
            let mut cache = shared.openapi_v3.lock().unwrap_or_else(|e| e.into_inner());
            Ok(http::json(200, &cache.index(&catalog, &version)))
        }
        ["openapi", "v3", "api", v] if version.serves_openapi_v3() => {
            read_only()?;
            let mut cache = shared.openapi_v3.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .document(&catalog, &version, &format!("api/{v}"))
                .map(|d| http::json(200, &d))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["openapi", "v3", "apis", g, v] if version.serves_openapi_v3() => {
            read_only()?;
            let mut cache = shared.openapi_v3.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .document(&catalog, &version, &format!("apis/{g}/{v}"))
                .map(|d| http::json(200, &d))
                .ok_or_else(ApiError::no_such_resource)
        }
        ["api", "v1", rest @ ..] => {
            resource(
                &shared,
                &catalog,
                "",
                "v1",
                rest,
                &method,
                query,
                &accept,
                content_type,
                user_agent,
                body,
            )
            .await
        }
        ["apis", g, v, rest @ ..] => {
            resource(
                &shared,
                &catalog,
                g,
                v,
                rest,
                &method,
                query,
                &accept,
                content_type,
                user_agent,
                body,
            )
            .await
        }
        _ => Ok(http::text(404, "404 page not found\n")),
    }
}

/// Parses a resource path below `/api/v1` or `/apis/<g>/<v>`.
fn parse_target(
    catalog: &crate::catalog::Catalog,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<(Target, bool), ApiError> {
    let (rest, legacy_watch) = match rest {
        ["watch", tail @ ..] => (tail, true),
        _ => (rest, false),
    };
    let lookup = |plural: &str| {
        catalog
            .lookup(group, version, plural)
            .cloned()
            .ok_or_else(ApiError::no_such_resource)
    };
    let resolved = |rt| Resolved {
        rt,
        version: version.to_string(),
    };
    let s = |x: &&str| x.to_string();
    let target = match rest {
        ["namespaces", ns, res, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && (*res == "status" || *res == "finalize")) =>
        {
            let rt = lookup(res)?;
            if !rt.namespaced {
                return Err(ApiError::no_such_resource());
            }
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(s(name)), None),
                [name, sub] => (Some(s(name)), Some(s(sub))),
                _ => return Err(ApiError::no_such_resource()),
            };
            Target {
                r: resolved(rt),
                namespace: Some(ns.to_string()),
                name,
                sub,
            }
        }
        [res, tail @ ..] => {
            let rt = lookup(res)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(s(name)), None),
                [name, sub] => (Some(s(name)), Some(s(sub))),
                _ => return Err(ApiError::no_such_resource()),
            };
            if rt.namespaced && name.is_some() {
                return Err(ApiError::no_such_resource());
            }
            Target {
                r: resolved(rt),
                namespace: None,
                name,
                sub,
            }
        }
        [] => return Err(ApiError::no_such_resource()),
    };
    Ok((target, legacy_watch))
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    catalog: &crate::catalog::Catalog,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    mut query: Query,
    accept: &[http::MediaRange],
    content_type: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
) -> Result<Resp, ApiError> {
    let (target, legacy_watch) = parse_target(catalog, group, version, rest)?;
    if legacy_watch {
        query = Query::parse(Some(&format!("watch=true&{}", query_string(&query))));
    }
    let verb = resources::verb_of(method, &target, &query);
    let label = target.label();
    shared.faults.count_request(verb, &label);
    if let Some((code, retry_after)) = shared.faults.injected_error(verb, &label) {
        let mut e = ApiError::from_code(code, None);
        if let Some(ra) = retry_after {
            e.retry_after = Some(ra);
        }
        return Err(e);
    }
    let rendering = if method == Method::GET {
        negotiate(accept)?
    } else {
        http::Rendering::Object
    };
    resources::handle(
        shared.clone(),
        target,
        RequestParts {
            method,
            query: &query,
            content_type: content_type.as_deref(),
            user_agent: user_agent.as_deref(),
            rendering,
            body,
        },
    )
    .await
}

fn query_string(q: &Query) -> String {
    q.raw_pairs()
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Handle {
    /// The server URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The kubeconfig file that points at this server.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The CA certificate (PEM) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The in-process API on the server's state.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Faults and counters.
    pub fn faults(&self) -> &FaultState {
        &self.faults
    }

    /// The server's runtime, to spawn work beside it.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Starts a controller on the server's runtime after start-up.
    pub fn spawn_controller(&self, spec: ControllerSpec) {
        if let Some(tx) = &self.shutdown_tx {
            let shutdown = Shutdown::new(tx.subscribe());
            self.runtime
                .spawn((spec.start)(self.cluster.clone(), shutdown));
        }
    }

    /// Changes the reported Kubernetes version.
    pub fn set_version(&self, version: KubeVersion) {
        self.cluster.set_version(version);
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(d) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}
