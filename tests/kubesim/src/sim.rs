//! Simulation knobs shared by kubesim's kubelet and controllers: how fast simulated time runs
//! ([`Timing`]) and the faults injected into workloads and the network ([`SimFaults`]).
//!
//! One [`Sim`] lives in each [`Cluster`](crate::Cluster) (`cluster.sim()`), so every controller
//! sees the same values; tests change faults in-process (`handle.sim().set_faults(..)`) and the
//! `kubesim` binary through `PUT /kubesim/sim-faults`.

use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long simulated work takes. Durations a manifest gives in seconds (grace periods,
/// `initialDelaySeconds`, back-offs, deadlines) are multiplied by `time_scale`, so a test
/// cluster behaves like a real one, only faster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// Pulling an image.
    pub image_pull_ms: u64,
    /// Creating and starting a container (after its image is present).
    pub container_start_ms: u64,
    /// Added to every readiness probe's `initialDelaySeconds × time_scale`.
    pub readiness_delay_ms: u64,
    /// Factor applied to durations manifests give in seconds.
    pub time_scale: f64,
    /// How often the node side looks at every node: a kubelet stopping (a `not_ready_nodes`
    /// fault) or recovering is seen within this period. Healthy nodes renew their Lease and
    /// status every 10 s, as kubelets do.
    pub node_heartbeat_ms: u64,
    /// How long a run-to-completion container without a known behaviour runs.
    pub job_run_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            image_pull_ms: 30,
            container_start_ms: 30,
            readiness_delay_ms: 60,
            time_scale: 0.01,
            node_heartbeat_ms: 1000,
            job_run_ms: 50,
        }
    }
}

impl Timing {
    /// A simulated duration given in seconds, scaled.
    pub fn scaled(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds * self.time_scale).max(0.0))
    }

    /// Milliseconds as a duration.
    pub fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

/// Containers of an image (a glob on the image reference) on some nodes (all when empty).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ImageFault {
    /// Glob on the image reference, `*` matching any run of characters
    /// (e.g. `*calico/node:v3.28.5`).
    pub image: String,
    /// Node names; empty means every node.
    pub nodes: Vec<String>,
}

impl ImageFault {
    /// Whether this fault applies to `image` on `node`.
    pub fn matches(&self, image: &str, node: &str) -> bool {
        glob(&self.image, image) && (self.nodes.is_empty() || self.nodes.iter().any(|n| n == node))
    }
}

/// Containers that become ready late.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SlowReady {
    /// Glob on the image reference.
    pub image: String,
    /// Node names; empty means every node.
    pub nodes: Vec<String>,
    /// Extra real seconds before the container is Ready.
    pub seconds: f64,
}

/// Faults in workloads, nodes and the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SimFaults {
    /// Containers that exit with code 1 right after starting (CrashLoopBackOff).
    pub crash_loop: Vec<ImageFault>,
    /// Images that cannot be pulled (ErrImagePull, then ImagePullBackOff).
    pub never_pull: Vec<ImageFault>,
    /// Containers that take longer to become Ready.
    pub slow_ready: Vec<SlowReady>,
    /// Nodes whose kubelet stops posting status (the node goes NotReady, then Unknown).
    pub not_ready_nodes: Vec<String>,
    /// The data plane: partitions, UDP blocked, large packets dropped, DNS down.
    pub network: crate::network::Faults,
}

impl SimFaults {
    /// Whether containers of `image` on `node` crash-loop.
    pub fn crash_loops(&self, image: &str, node: &str) -> bool {
        self.crash_loop.iter().any(|f| f.matches(image, node))
    }

    /// Whether `image` cannot be pulled on `node`.
    pub fn never_pulls(&self, image: &str, node: &str) -> bool {
        self.never_pull.iter().any(|f| f.matches(image, node))
    }

    /// Extra readiness delay for `image` on `node`.
    pub fn extra_ready_delay(&self, image: &str, node: &str) -> Duration {
        let secs = self
            .slow_ready
            .iter()
            .filter(|f| {
                glob(&f.image, image) && (f.nodes.is_empty() || f.nodes.iter().any(|n| n == node))
            })
            .map(|f| f.seconds)
            .fold(0.0, f64::max);
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// The configuration a server starts with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Timing.
    pub timing: Timing,
    /// Initial faults.
    pub faults: SimFaults,
    /// Run the scheduler, the kubelets and the node lifecycle (tests of the bare API turn them
    /// off and drive pod status themselves; the workload controllers run either way).
    pub kubelet: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            faults: SimFaults::default(),
            kubelet: true,
        }
    }
}

/// The live simulation settings of one cluster.
#[derive(Debug, Default)]
pub struct Sim {
    timing: RwLock<Timing>,
    faults: RwLock<SimFaults>,
}

impl Sim {
    /// Settings from a configuration.
    pub fn new(config: &SimConfig) -> Self {
        Self {
            timing: RwLock::new(config.timing.clone()),
            faults: RwLock::new(config.faults.clone()),
        }
    }

    /// The current timing.
    pub fn timing(&self) -> Timing {
        self.timing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the timing.
    pub fn set_timing(&self, t: Timing) {
        *self.timing.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The current faults.
    pub fn faults(&self) -> SimFaults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: SimFaults) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Changes the faults in place.
    pub fn update_faults(&self, change: impl FnOnce(&mut SimFaults)) {
        change(&mut self.faults.write().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Shell-style glob with `*` only (image references contain no other metacharacters).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_image_references() {
        assert!(glob(
            "*calico/node:v3.28.5",
            "docker.io/calico/node:v3.28.5"
        ));
        assert!(!glob(
            "*calico/node:v3.28.5",
            "docker.io/calico/node:v3.27.5"
        ));
        assert!(glob(
            "*agnhost*",
            "registry.k8s.io/e2e-test-images/agnhost:2.53"
        ));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn faults_read_from_yaml_and_refuse_unknown_fields() {
        let f: SimFaults = serde_saphyr::from_str(
            "crash_loop: [{image: '*calico/node:*', nodes: [w2]}]\nnetwork: {dns_down: true}\n",
        )
        .unwrap();
        assert!(f.crash_loops("docker.io/calico/node:v3.28.5", "w2"));
        assert!(!f.crash_loops("docker.io/calico/node:v3.28.5", "w1"));
        assert!(serde_saphyr::from_str::<SimFaults>("crashloop: []\n").is_err());
    }
}
