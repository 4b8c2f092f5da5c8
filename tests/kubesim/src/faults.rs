//! HTTP-level faults and request counters, settable at run time through the admin API and
//! the Rust handle: error bursts (a fraction of requests, optionally by verb and resource,
//! answered with a code), added latency, and watch streams cut every N seconds. The counters
//! let a product test prove that a check-mode run made no writes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An error burst: a fraction of matching requests gets an error status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBurst {
    /// Fraction of matching requests answered with the error, 0.0 to 1.0.
    pub rate: f64,
    /// The HTTP code to answer (429 gets `Retry-After`; 500, 503, 504... get their reasons).
    pub code: u16,
    /// Only these verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); empty for all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Only these resources (plural, optionally `plural.group`); empty for all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Stop after this many injected errors; `None` for no limit.
    #[serde(default)]
    pub max_count: Option<u64>,
    /// `Retry-After` seconds for 429.
    #[serde(default)]
    pub retry_after_seconds: Option<u32>,
}

/// Every fault in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Error bursts, checked in order.
    #[serde(default)]
    pub error_bursts: Vec<ErrorBurst>,
    /// Latency added before answering every API request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Watch streams are closed this many seconds after they start (0: never).
    #[serde(default)]
    pub drop_watches_after_seconds: u64,
}

/// Request and write counters, by verb and resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Requests by `verb resource` (`list pods`, `patch daemonsets.apps`).
    pub requests: BTreeMap<String, u64>,
    /// Client writes that changed state (no dry runs, no no-ops), by `verb resource`.
    pub writes: BTreeMap<String, u64>,
    /// Sum of `writes`.
    pub total_writes: u64,
    /// Sum of `requests`.
    pub total_requests: u64,
    /// Errors injected by bursts.
    pub injected_errors: u64,
}

/// The shared fault and counter state.
#[derive(Debug, Default)]
pub struct FaultState {
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
    burst_hits: Mutex<Vec<u64>>,
    rng: AtomicU64,
}

impl FaultState {
    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces all faults.
    pub fn set_faults(&self, faults: Faults) {
        let n = faults.error_bursts.len();
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
        *self.burst_hits.lock().unwrap_or_else(|e| e.into_inner()) = vec![0; n];
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = Counters::default();
    }

    /// Counts a request.
    pub fn count_request(&self, verb: &str, resource: &str) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.requests.entry(format!("{verb} {resource}")).or_default() += 1;
        c.total_requests += 1;
    }

    /// Counts a client write that changed state.
    pub fn count_write(&self, verb: &str, resource: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.writes.entry(format!("{verb} {resource}")).or_default() += n;
        c.total_writes += n;
    }

    /// Added latency.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(
            self.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .latency_ms,
        )
    }

    /// How long a watch may live before it is cut, if watches are being dropped.
    pub fn watch_drop_after(&self) -> Option<Duration> {
        let s = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drop_watches_after_seconds;
        (s > 0).then(|| Duration::from_secs(s))
    }

    /// Decides whether this request gets an injected error: `(code, retry_after)`.
    pub fn injected_error(&self, verb: &str, resource: &str) -> Option<(u16, Option<u32>)> {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut hits = self.burst_hits.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in faults.error_bursts.iter().enumerate() {
            let verb_ok = b.verbs.is_empty() || b.verbs.iter().any(|v| v == verb);
            let res_ok = b.resources.is_empty()
                || b.resources
                    .iter()
                    .any(|r| r == resource || resource.split('.').next() == Some(r.as_str()));
            if !(verb_ok && res_ok) {
                continue;
            }
            if b.max_count
                .is_some_and(|m| hits.get(i).copied().unwrap_or(0) >= m)
            {
                continue;
            }
            if self.next_unit() < b.rate {
                if let Some(h) = hits.get_mut(i) {
                    *h += 1;
                }
                drop(hits);
                drop(faults);
                self.counters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .injected_errors += 1;
                let fb = self.faults();
                let b = &fb.error_bursts[i];
                return Some((b.code, b.retry_after_seconds));
            }
        }
        None
    }

    /// A uniform number in [0, 1) from a xorshift generator: deterministic enough for tests
    /// at rate 1.0 and 0.0, spread enough for fractional rates.
    fn next_unit(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = 0x9E37_79B9_7F4A_7C15;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_filter_and_stop() {
        let s = FaultState::default();
        s.set_faults(Faults {
            error_bursts: vec![ErrorBurst {
                rate: 1.0,
                code: 503,
                verbs: vec!["list".into()],
                resources: vec!["pods".into()],
                max_count: Some(2),
                retry_after_seconds: None,
            }],
            ..Faults::default()
        });
        assert_eq!(s.injected_error("get", "pods"), None);
        assert_eq!(s.injected_error("list", "nodes"), None);
        assert_eq!(s.injected_error("list", "pods"), Some((503, None)));
        assert_eq!(s.injected_error("list", "pods"), Some((503, None)));
        assert_eq!(s.injected_error("list", "pods"), None);
        assert_eq!(s.counters().injected_errors, 2);
    }
}
