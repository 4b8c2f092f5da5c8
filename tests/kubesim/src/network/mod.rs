//! kubesim's network model: pod addressing, and what a connection between any two points of a
//! simulated cluster would do, under faults and NetworkPolicies.
//!
//! Pure and deterministic: no I/O, no clock, no randomness, no async. Self-contained (std,
//! serde, serde_json only), so it builds and tests on its own.
//!
//! So far: addressing ([`Ipam`], see `ipam.rs`), what containers listen on ([`Behaviours`],
//! `listen.rs`) and compiled NetworkPolicies (`policy.rs`, used by the reachability engine).

mod cidr;
mod ipam;
mod labels;
mod listen;
#[allow(dead_code)] // evaluated by the reachability engine, which lands next
mod policy;

pub use cidr::{CidrError, Ipv4Cidr};
pub use ipam::{BlockInfo, IpPool, Ipam, IpamError, SkippedPool, pools_from_objects};
pub use labels::{Labels, Selector, labels_of};
pub use listen::{
    Agnhost, Behaviours, DeclaredPorts, Listener, Reply, Speaks, Transport, agnhost_listeners,
    declared_listeners, pod_hostname,
};
