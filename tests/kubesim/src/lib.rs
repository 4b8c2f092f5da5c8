#![recursion_limit = "256"]
//! kubesim: an in-memory Kubernetes API simulator for the k8s-calico test suite.
//!
//! It serves the Kubernetes API over HTTPS (or HTTP) so that kubectl, kube-rs and the product's
//! modules talk to it unchanged, and offers the same API in-process ([`Cluster`]) for the
//! simulator's own controllers. See `ARCHITECTURE.md` beside `Cargo.toml`.

pub mod admission;
pub mod calico;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod controllers;
pub mod error;
pub mod faults;
pub mod ids;
pub mod kubeconfig;
pub mod kubelet;
pub mod network;
pub mod operator;
pub mod patch;
pub mod pointer;
pub mod scenario;
pub mod selectors;
pub mod server;
pub mod sim;
pub mod store;
pub mod tls;
pub mod version;
pub mod workloads;

pub use cluster::{
    Cluster, ClusterSettings, DeleteOptions, ListOptions, PatchType, Propagation, WriteOptions,
};
pub use controllers::{ControllerSpec, Shutdown};
pub use error::{ApiError, ApiResult};
pub use faults::{Counters, ErrorBurst, Faults};
pub use server::{Handle, Server, ServerConfig};
pub use sim::{ImageFault, Sim, SimConfig, SimFaults, SlowReady, Timing};
pub use version::KubeVersion;
