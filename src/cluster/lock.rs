//! A cluster-wide lock so that two runs never upgrade one cluster at once.
//!
//! It is a `coordination.k8s.io/v1` Lease, the object Kubernetes itself uses for leader
//! election: the holder renews it while it works, and a lease whose renew time plus duration has
//! passed is stale and may be taken over (a run that crashed must not block the cluster forever).
//! Taking over uses the `resourceVersion` precondition, so two runs racing for a stale lease
//! cannot both win.

use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;

/// The Lease's namespace.
pub const LOCK_NAMESPACE: &str = "kube-system";
/// The Lease's name.
pub const LOCK_NAME: &str = "k8s-calico-upgrade";

/// A held lock. Release it with [`Lock::release`]; if the process dies, it expires.
pub struct Lock {
    api: Api<Lease>,
    holder: String,
    duration: Duration,
    resource_version: Option<String>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease_body(holder: &str, duration: Duration, acquired: Option<MicroTime>) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LOCK_NAME, "namespace": LOCK_NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "k8s-calico"}},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration.as_secs().max(1),
            "acquireTime": acquired.unwrap_or_else(now),
            "renewTime": now(),
        }
    }))
    .expect("a Lease built from known fields")
}

/// Whether a lease has expired, and when it does.
fn expiry(lease: &Lease) -> (bool, String) {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match renewed {
        Some(t) => {
            let until = t
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
                .unwrap_or(t);
            (until < Timestamp::now(), until.to_string())
        }
        None => (true, "unknown".into()),
    }
}

impl Lock {
    /// Takes the lock for `holder`, or explains who holds it.
    pub async fn acquire(client: &Client, holder: &str, duration: Duration) -> Result<Self> {
        let api: Api<Lease> = Api::namespaced(client.clone(), LOCK_NAMESPACE);
        let body = lease_body(holder, duration, None);
        match api.create(&PostParams::default(), &body).await {
            Ok(created) => {
                return Ok(Self {
                    api,
                    holder: holder.to_string(),
                    duration,
                    resource_version: created.metadata.resource_version,
                });
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(anyhow!(
                    "cannot create the lock Lease {LOCK_NAMESPACE}/{LOCK_NAME}: {e}"
                ));
            }
        }
        let existing = api
            .get(LOCK_NAME)
            .await
            .map_err(|e| anyhow!("cannot read the lock Lease: {e}"))?;
        let other = existing
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        let (expired, until) = expiry(&existing);
        if !expired && other != holder {
            return Err(anyhow!(
                "another calico_upgrade run holds the lock (Lease {LOCK_NAMESPACE}/{LOCK_NAME}, holder {other}) until {until}; wait for it to finish, or delete the Lease if that run is gone"
            ));
        }
        let mut take = lease_body(holder, duration, None);
        take.metadata.resource_version = existing.metadata.resource_version.clone();
        let replaced = api.replace(LOCK_NAME, &PostParams::default(), &take).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => anyhow!("another calico_upgrade run took the stale lock first (Lease {LOCK_NAMESPACE}/{LOCK_NAME})"),
            other => anyhow!("cannot take over the stale lock Lease: {other}"),
        })?;
        Ok(Self {
            api,
            holder: holder.to_string(),
            duration,
            resource_version: replaced.metadata.resource_version,
        })
    }

    /// Extends the lease; call it between long steps.
    pub async fn renew(&mut self) -> Result<()> {
        let mut body = lease_body(&self.holder, self.duration, None);
        let current = self
            .api
            .get(LOCK_NAME)
            .await
            .map_err(|e| anyhow!("cannot read the lock Lease: {e}"))?;
        if current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.holder.as_str())
        {
            return Err(anyhow!(
                "the lock Lease {LOCK_NAMESPACE}/{LOCK_NAME} was taken by another run"
            ));
        }
        body.spec.as_mut().expect("lease spec").acquire_time =
            current.spec.and_then(|s| s.acquire_time);
        body.metadata.resource_version = current.metadata.resource_version;
        let renewed = self
            .api
            .replace(LOCK_NAME, &PostParams::default(), &body)
            .await
            .map_err(|e| anyhow!("cannot renew the lock Lease: {e}"))?;
        self.resource_version = renewed.metadata.resource_version;
        Ok(())
    }

    /// Releases the lock (only if still ours).
    pub async fn release(self) -> Result<()> {
        let current = match self.api.get_opt(LOCK_NAME).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => return Err(anyhow!("cannot read the lock Lease: {e}")),
        };
        if current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.holder.as_str())
        {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: current.metadata.uid.clone(),
                resource_version: current.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(LOCK_NAME, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(anyhow!("cannot release the lock Lease: {e}")),
        }
    }
}

/// A holder identity: host, process and start time, so a message can say who holds the lock.
pub fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!(
        "calico_upgrade@{host}/pid-{}/{}",
        std::process::id(),
        Timestamp::now()
    )
}
