//! Cluster access shared by every module: the connection arguments (named and behaving like
//! kubernetes.core's), building a kube-rs client from them, and reading what the API server is.

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod apply;
pub mod detect;
pub mod lock;
pub mod objects;
pub mod retry;
pub mod wait;

use crate::module::{Module, Param};
use crate::version::KubernetesVersion;

/// `kubeconfig`: the path of the kubeconfig, like kubernetes.core's auth option.
pub const KUBECONFIG: Param = Param::path("kubeconfig").env("K8S_AUTH_KUBECONFIG").help(
    "Path to the kubeconfig; defaults to K8S_AUTH_KUBECONFIG, then KUBECONFIG, then ~/.kube/config",
);
/// `context`: the kubeconfig context to use.
pub const CONTEXT: Param = Param::str("context")
    .env("K8S_AUTH_CONTEXT")
    .help("The kubeconfig context; defaults to K8S_AUTH_CONTEXT, then the current context");
/// `validate_certs`: verify the API server's certificate.
pub const VALIDATE_CERTS: Param = Param::bool("validate_certs", true)
    .aliases(&["verify_ssl"])
    .env("K8S_AUTH_VERIFY_SSL")
    .help("Verify the API server's TLS certificate; false is warned about");

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The kubeconfig path; `None` means the usual lookup (KUBECONFIG, ~/.kube/config).
    pub kubeconfig: Option<PathBuf>,
    /// The context; `None` means the kubeconfig's current context.
    pub context: Option<String>,
    /// Whether to verify the server certificate.
    pub validate_certs: bool,
}

impl Connection {
    /// Reads the connection arguments of a module that includes [`KUBECONFIG`], [`CONTEXT`] and
    /// [`VALIDATE_CERTS`] in its spec; warns when certificates are not verified.
    pub fn from_module(m: &mut Module) -> Self {
        let c = Self {
            kubeconfig: m.str("kubeconfig").map(PathBuf::from),
            context: m.str("context").map(str::to_string),
            validate_certs: m.bool("validate_certs"),
        };
        if !c.validate_certs {
            m.warn("validate_certs is false: the API server's certificate is not verified, so anyone on the path can read and change what this module sends");
        }
        c
    }

    /// A short description for messages: the kubeconfig and context in use.
    pub fn describe(&self) -> String {
        let file = self
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the default kubeconfig".to_string());
        match &self.context {
            Some(ctx) => format!("{file} (context {ctx})"),
            None => file,
        }
    }
}

/// Makes rustls use ring, the one crypto provider every TLS client in the modules is built with.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds a client for the cluster.
pub async fn client(conn: &Connection) -> Result<Client> {
    install_crypto_provider();
    let kubeconfig = match &conn.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?,
        None => Kubeconfig::read().map_err(|e| {
            anyhow!("no kubeconfig found ({e}); give kubeconfig (or set K8S_AUTH_KUBECONFIG or KUBECONFIG)")
        })?,
    };
    let options = KubeConfigOptions {
        context: conn.context.clone(),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("cannot use kubeconfig {}", conn.describe()))?;
    config.connect_timeout = Some(Duration::from_secs(10));
    if !conn.validate_certs {
        config.accept_invalid_certs = true;
    }
    // kube's retry is replaced by ours (it also covers 500 and 502); the buffer makes the
    // stack cloneable, which retrying needs.
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config)
        .with_context(|| format!("cannot build a client for {}", conn.describe()))?;
    Ok(builder
        .with_layer(
            &tower::ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(
                    retry::TransientRetry::default(),
                ))
                .layer(tower::buffer::BufferLayer::new(64)),
        )
        .build())
}

/// The cluster's name as the kubeconfig calls it (for backup folder names), or `cluster`.
pub fn cluster_name(conn: &Connection) -> String {
    let kubeconfig = match &conn.kubeconfig {
        Some(p) => Kubeconfig::read_from(p).ok(),
        None => Kubeconfig::read().ok(),
    };
    let Some(kc) = kubeconfig else {
        return "cluster".into();
    };
    let context = conn.context.clone().or(kc.current_context.clone());
    kc.contexts
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cluster".into())
}

/// The Kubernetes version the API server reports on `/version`.
pub async fn server_version(client: &Client) -> Result<KubernetesVersion> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| anyhow!("cannot read /version from the API server: {e}"))?;
    info.git_version
        .parse()
        .map_err(|e| anyhow!("the API server reports an unusable version: {e}"))
}

/// An API group's discovery, or `None` when the server does not serve it (kube reports that as
/// a missing group, or a 404 from an aggregated server).
pub async fn served_group(
    client: &Client,
    group: &str,
) -> Result<Option<kube::discovery::ApiGroup>> {
    match kube::discovery::group(client, group).await {
        Ok(g) => Ok(Some(g)),
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(anyhow!("discovering API group {group}: {e}")),
    }
}
