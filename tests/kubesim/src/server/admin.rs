//! The admin API under `/kubesim/` (bearer-token authenticated like the rest): faults,
//! counters, the simulated version and compaction, as JSON.
//!
//! - `GET|PUT|DELETE /kubesim/faults` — read, replace, clear [`Faults`](crate::faults::Faults)
//! - `GET /kubesim/counters`, `DELETE /kubesim/counters` (or `POST /kubesim/counters/reset`)
//! - `GET|PUT /kubesim/version` with `{"version": "v1.28.3"}` — the API server's version
//!   (`kubeadm upgrade apply`); the kubelets keep reporting theirs
//! - `POST /kubesim/compact` — forget history (old watches and continue tokens get 410)
//! - `GET|PUT|DELETE /kubesim/sim-faults` — workload, node and network faults
//!   ([`SimFaults`](crate::sim::SimFaults))
//! - `PUT /kubesim/nodes/<name>/kubelet-version` with `{"version": "v1.28.15"}` — what a
//!   restarted kubelet reports (kubeadm upgrade tests)

use std::sync::Arc;

use ::http::Method;
use serde_json::{Value, json};

use super::Shared;
use super::http::{self, Resp};
use crate::error::{ApiError, ApiResult};
use crate::faults::Faults;
use crate::version::KubeVersion;

/// Serves `/kubesim/<rest>`.
pub fn serve(shared: &Arc<Shared>, method: &Method, rest: &[&str], body: &[u8]) -> ApiResult<Resp> {
    let parse = || -> ApiResult<Value> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
    };
    match (method.as_str(), rest) {
        ("GET", ["faults"]) => Ok(http::json(200, &json!(shared.faults.faults()))),
        ("PUT" | "POST", ["faults"]) => {
            let f: Faults = serde_json::from_value(parse()?)
                .map_err(|e| ApiError::bad_request(format!("invalid faults: {e}")))?;
            if f.error_bursts
                .iter()
                .any(|b| !(0.0..=1.0).contains(&b.rate) || b.code < 400)
            {
                return Err(ApiError::bad_request(
                    "errorBursts[].rate must be within 0..1 and code at least 400",
                ));
            }
            shared.faults.set_faults(f);
            Ok(http::json(200, &json!(shared.faults.faults())))
        }
        ("DELETE", ["faults"]) => {
            shared.faults.clear_faults();
            Ok(http::json(200, &json!(shared.faults.faults())))
        }
        ("GET", ["sim-faults"]) => Ok(http::json(200, &json!(shared.cluster.sim().faults()))),
        ("PUT" | "POST", ["sim-faults"]) => {
            let f: crate::sim::SimFaults = serde_json::from_value(parse()?)
                .map_err(|e| ApiError::bad_request(format!("invalid sim-faults: {e}")))?;
            shared.cluster.sim().set_faults(f.clone());
            Ok(http::json(200, &json!(f)))
        }
        ("DELETE", ["sim-faults"]) => {
            shared.cluster.sim().set_faults(Default::default());
            Ok(http::json(200, &json!({})))
        }
        ("PUT" | "POST", ["nodes", name, "kubelet-version"]) => {
            let v = parse()?;
            let version = v
                .get("version")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("body must be {\"version\": \"v1.X.Y\"}"))?
                .to_string();
            KubeVersion::parse(&version).map_err(ApiError::bad_request)?;
            crate::kubelet::set_kubelet_version(&shared.cluster, name, &version)?;
            Ok(http::json(
                200,
                &json!({"node": name, "kubeletVersion": version}),
            ))
        }
        ("GET", ["counters"]) => Ok(http::json(200, &json!(shared.faults.counters()))),
        ("DELETE", ["counters"]) | ("POST", ["counters", "reset"]) => {
            shared.faults.reset_counters();
            Ok(http::json(200, &json!(shared.faults.counters())))
        }
        ("GET", ["version"]) => Ok(http::json(
            200,
            &json!({"version": shared.cluster.version().to_string()}),
        )),
        ("PUT" | "POST", ["version"]) => {
            let v = parse()?;
            let s = v
                .get("version")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("body must be {\"version\": \"v1.X.Y\"}"))?;
            let version = KubeVersion::parse(s).map_err(ApiError::bad_request)?;
            shared.cluster.set_version(version);
            Ok(http::json(200, &json!({"version": version.to_string()})))
        }
        ("POST", ["compact"]) => {
            shared.cluster.compact();
            Ok(http::json(
                200,
                &json!({"compactedAt": shared.cluster.current_resource_version().to_string()}),
            ))
        }
        _ => Err(ApiError::no_such_resource()),
    }
}
