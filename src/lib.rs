//! k8s-calico: Ansible binary modules that keep Calico compatible and upgraded while platform
//! teams upgrade kubeadm Kubernetes clusters.
//!
//! The binaries in `src/bin/` are thin: each parses its arguments through [`module`], calls one
//! of the module implementations here, and prints the result.
//!
//! - [`module`]: the Ansible binary-module protocol (arguments, coercion, results, panics).
//! - [`version`]: Kubernetes and Calico version numbers.
//! - [`catalog`]: the compiled-in Calico release catalog and the matrix derived from it.
//! - [`matrix`]: `calico_matrix`, planning versions and paths.
//! - [`cluster`]: cluster access shared by the modules that talk to a cluster.
//! - [`upgrade`]: `calico_upgrade`, detect/check/backup/upgrade/wait/rollback.
//! - [`nettest`]: `calico_nettest`, exec-free pod network tests.
//! - [`fsutil`]: atomic file writes.

// Failures carry partial facts by design (a rollback's result, the nodes that were not ready);
// they are built once per run, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod catalog;
pub mod cluster;
pub mod fsutil;
pub mod matrix;
pub mod module;
pub mod nettest;
pub mod upgrade;
pub mod version;
