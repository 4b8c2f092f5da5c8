//! realplane: the real Kubernetes control plane in the test loop.
//!
//! kube-apiserver, kube-controller-manager, kube-scheduler and kubectl built from the
//! `k8s.io/kubernetes` Go module, etcd 3.6 and kwok (nodes and pods without kubelets), started
//! on 127.0.0.1 with the certificates, kubeconfigs and RBAC a kubeadm cluster has. The binaries
//! come from `binaries/build.sh` (`make controlplane`), cached outside the checkout.
//!
//! One implementation serves both uses:
//! - tests start a plane in process with [`RealPlane::start`] and drop it to stop it;
//! - `make cluster-up` / `make cluster-down` run the `realplane` binary, which starts the same
//!   plane in a supervisor process and writes `.cluster/kubeconfig`.
//!
//! Modules:
//! - [`binaries`]: where the built binaries are.
//! - [`pki`], [`kubeconfig`]: certificates and kubeconfigs per identity.
//! - [`components`]: each component's command line.
//! - [`process`]: child processes that die with their launcher.
//! - [`bootstrap`]: what kubeadm and kubelets create (nodes, add-ons, kwok's lifecycle).
//! - [`behaviours`]: kubesim's faults as kwok stages (crash loops, image pulls, readiness,
//!   nodes going down).
//! - [`probes`]: `calico_nettest`'s probe pods answered from kubesim's network model.
//! - [`api`]: JSON access to any resource.
//! - [`audit`]: the writes each client made, from the API server's audit log.
//! - [`plane`]: the running plane.
//! - [`supervisor`]: the detached plane behind `make cluster-up`.

pub mod api;
pub mod audit;
pub mod behaviours;
pub mod binaries;
pub mod bootstrap;
pub mod components;
pub mod kubeconfig;
pub mod pki;
pub mod plane;
pub mod probes;
pub mod process;
pub mod supervisor;

pub use audit::{Mark, Write};
pub use binaries::Binaries;
pub use kubesim::network::Faults as NetworkFaults;
pub use kubesim::sim::{ImageFault, SimFaults, SlowReady};
pub use plane::{Error, Options, RealPlane};
