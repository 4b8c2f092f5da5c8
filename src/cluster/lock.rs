//! A cluster-wide lock so that two runs never upgrade one cluster at once.
//!
//! It is a `coordination.k8s.io/v1` Lease, the object Kubernetes itself uses for leader
//! election, and it is held the way leader election holds one: the lease is short
//! ([`LEASE_DURATION`]) and a task renews it every [`RENEW_EVERY`] for as long as the run lives.
//! A run that is killed stops renewing, so its lock expires about a minute later and the next
//! run may take it over; a live run renews long before expiry, so it is never taken over. If a
//! run cannot renew for a whole lease duration (the API server unreachable), it must assume the
//! lock is gone: [`Lock::held`] then fails and the run writes nothing more.
//!
//! Every write uses the `resourceVersion` precondition, so two runs racing for a stale lease
//! cannot both win, and a renewal never overwrites a lease another run took.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Lease's namespace.
pub const LOCK_NAMESPACE: &str = "kube-system";
/// The Lease's name.
pub const LOCK_NAME: &str = "k8s-calico-upgrade";
/// How long a lease lasts without renewal: how soon a killed run's lock is free.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How often the holder renews: four chances per lease duration.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How soon a failed renewal is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// How a lock is timed: [`Timing::default`] is [`LEASE_DURATION`] and [`RENEW_EVERY`].
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The lease duration written into the Lease.
    pub lease: Duration,
    /// The renewal interval; must be well below `lease`.
    pub renew_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: LEASE_DURATION,
            renew_every: RENEW_EVERY,
        }
    }
}

/// A held lock. Release it with [`Lock::release`]; if the process dies, it expires.
pub struct Lock {
    api: Api<Lease>,
    holder: String,
    /// Why the lock is no longer ours, once the renewer found out.
    lost: Arc<Mutex<Option<String>>>,
    stop: Option<oneshot::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
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

fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// Why a renewal failed.
enum RenewError {
    /// Another run holds the Lease now (or it was deleted): the lock is gone for good.
    Taken(String),
    /// The API server did not answer as it should; the next try may work.
    Transient(String),
}

/// Renews the lease once, keeping its acquire time.
async fn renew_once(api: &Api<Lease>, holder: &str, lease: Duration) -> Result<(), RenewError> {
    let current = match api.get_opt(LOCK_NAME).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(RenewError::Taken(format!(
                "the lock Lease {LOCK_NAMESPACE}/{LOCK_NAME} was deleted"
            )));
        }
        Err(e) => {
            return Err(RenewError::Transient(format!(
                "cannot read the lock Lease: {e}"
            )));
        }
    };
    if holder_of(&current) != Some(holder) {
        return Err(RenewError::Taken(format!(
            "the lock Lease {LOCK_NAMESPACE}/{LOCK_NAME} was taken by {}",
            holder_of(&current).unwrap_or("nobody")
        )));
    }
    let mut body = lease_body(holder, lease, None);
    body.spec.as_mut().expect("lease spec").acquire_time =
        current.spec.and_then(|s| s.acquire_time);
    body.metadata.resource_version = current.metadata.resource_version;
    match api.replace(LOCK_NAME, &PostParams::default(), &body).await {
        Ok(_) => Ok(()),
        // Someone wrote the Lease between our read and our write: look again next time.
        Err(kube::Error::Api(e)) if e.code == 409 => Err(RenewError::Transient(
            "the lock Lease changed while it was renewed".into(),
        )),
        Err(e) => Err(RenewError::Transient(format!(
            "cannot renew the lock Lease: {e}"
        ))),
    }
}

/// Renews until told to stop, or until the lock is lost (recorded in `lost`).
async fn renew_loop(
    api: Api<Lease>,
    holder: String,
    timing: Timing,
    lost: Arc<Mutex<Option<String>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut last_renewed = tokio::time::Instant::now();
    let mut wait = timing.renew_every;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let why = match renew_once(&api, &holder, timing.lease).await {
            Ok(()) => {
                last_renewed = tokio::time::Instant::now();
                wait = timing.renew_every;
                continue;
            }
            Err(RenewError::Taken(why)) => why,
            // Give up before the lease can have expired in another run's eyes.
            Err(RenewError::Transient(why))
                if last_renewed.elapsed() + RETRY_EVERY >= timing.lease =>
            {
                format!(
                    "the lock could not be renewed for {}s, so another run may have taken it: {why}",
                    last_renewed.elapsed().as_secs()
                )
            }
            Err(RenewError::Transient(_)) => {
                wait = RETRY_EVERY.min(timing.renew_every);
                continue;
            }
        };
        *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        return;
    }
}

impl Lock {
    /// Takes the lock for `holder` with the default [`Timing`], or explains who holds it.
    pub async fn acquire(client: &Client, holder: &str) -> Result<Self> {
        Self::acquire_with(client, holder, Timing::default()).await
    }

    /// Takes the lock with the given timing and starts renewing it.
    pub async fn acquire_with(client: &Client, holder: &str, timing: Timing) -> Result<Self> {
        let api: Api<Lease> = Api::namespaced(client.clone(), LOCK_NAMESPACE);
        Self::take(&api, holder, timing.lease).await?;
        let lost = Arc::new(Mutex::new(None));
        let (stop, stopped) = oneshot::channel();
        let renewer = tokio::spawn(renew_loop(
            api.clone(),
            holder.to_string(),
            timing,
            lost.clone(),
            stopped,
        ));
        Ok(Self {
            api,
            holder: holder.to_string(),
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }

    /// Creates the Lease, or takes over an expired one.
    async fn take(api: &Api<Lease>, holder: &str, lease: Duration) -> Result<()> {
        let body = lease_body(holder, lease, None);
        match api.create(&PostParams::default(), &body).await {
            Ok(_) => return Ok(()),
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
        let other = holder_of(&existing).unwrap_or_default().to_string();
        let (expired, until) = expiry(&existing);
        if !expired && other != holder {
            return Err(anyhow!(
                "another calico_upgrade run holds the lock (Lease {LOCK_NAMESPACE}/{LOCK_NAME}, holder {other}) until {until}, renewing it while it runs; wait for it to finish, or, if that run is gone, for the lease to expire (at most {}s after its last renewal)",
                lease.as_secs()
            ));
        }
        let mut take = lease_body(holder, lease, None);
        take.metadata.resource_version = existing.metadata.resource_version.clone();
        api.replace(LOCK_NAME, &PostParams::default(), &take).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => anyhow!("another calico_upgrade run took the stale lock first (Lease {LOCK_NAMESPACE}/{LOCK_NAME})"),
            other => anyhow!("cannot take over the stale lock Lease: {other}"),
        })?;
        Ok(())
    }

    /// `Ok` while the lock is ours; call it before each write step. Once the renewer found the
    /// lease taken, deleted or unrenewable for a lease duration, it says why.
    pub fn held(&self) -> Result<()> {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => Err(anyhow!("the upgrade lock was lost: {why}")),
        }
    }

    /// Stops renewing and releases the lock (only if still ours).
    pub async fn release(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let current = match self.api.get_opt(LOCK_NAME).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => return Err(anyhow!("cannot read the lock Lease: {e}")),
        };
        if holder_of(&current) != Some(self.holder.as_str()) {
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

impl Drop for Lock {
    fn drop(&mut self) {
        // Not released (an early return): stop renewing so the lease expires by itself.
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
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
