//! kubesim's network model: pod addressing, and what a connection between any two points of a
//! simulated cluster would do, under faults and NetworkPolicies.
//!
//! Pure and deterministic: no I/O, no clock, no randomness, no async. Self-contained (std,
//! serde, serde_json only), so it builds and tests on its own.
//!
//! This first part is addressing: [`Ipam`] allocates pod addresses per node from Calico IP
//! pools the way Calico IPAM does (see `ipam.rs`).

mod cidr;
mod ipam;
mod labels;

pub use cidr::{CidrError, Ipv4Cidr};
pub use ipam::{BlockInfo, IpPool, Ipam, IpamError, SkippedPool, pools_from_objects};
pub use labels::{Labels, Selector, labels_of};
