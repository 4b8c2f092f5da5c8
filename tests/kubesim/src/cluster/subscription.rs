//! In-process change streams: a backlog from history, then live events, catching up from
//! history when the live channel overflowed, so a slow subscriber loses nothing until history
//! itself is compacted (then it gets 410 like an HTTP watcher).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::Cluster;
use crate::catalog::GroupResource;
use crate::error::ApiError;
use crate::store::ChangeEvent;

/// A stream of committed changes of one resource type.
pub struct Subscription {
    cluster: Cluster,
    resource: GroupResource,
    backlog: VecDeque<Arc<ChangeEvent>>,
    rx: broadcast::Receiver<Arc<ChangeEvent>>,
    last_rv: u64,
}

impl Subscription {
    pub(super) fn new(
        cluster: Cluster,
        resource: GroupResource,
        backlog: Vec<Arc<ChangeEvent>>,
        rx: broadcast::Receiver<Arc<ChangeEvent>>,
        start_rv: u64,
    ) -> Self {
        Self {
            cluster,
            resource,
            backlog: backlog.into(),
            rx,
            last_rv: start_rv,
        }
    }

    /// The resource type this subscription follows.
    pub fn resource(&self) -> &GroupResource {
        &self.resource
    }

    /// The resourceVersion of the last event delivered (or the start point).
    pub fn last_resource_version(&self) -> u64 {
        self.last_rv
    }

    /// The next change; `None` when the type stopped being served (its CRD was deleted);
    /// `Some(Err)` with 410 Expired when the subscriber fell behind compacted history.
    pub async fn next(&mut self) -> Option<Result<Arc<ChangeEvent>, ApiError>> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if e.rv <= self.last_rv {
                    continue;
                }
                self.last_rv = e.rv;
                return Some(Ok(e));
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.rv <= self.last_rv {
                        continue;
                    }
                    self.last_rv = e.rv;
                    return Some(Ok(e));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let state = self.cluster.store().read();
                    match state.catch_up(&self.resource, self.last_rv) {
                        Ok(events) => self.backlog.extend(events),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A change if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Arc<ChangeEvent>, ApiError>> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if e.rv <= self.last_rv {
                    continue;
                }
                self.last_rv = e.rv;
                return Some(Ok(e));
            }
            match self.rx.try_recv() {
                Ok(e) => {
                    if e.rv <= self.last_rv {
                        continue;
                    }
                    self.last_rv = e.rv;
                    return Some(Ok(e));
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    let state = self.cluster.store().read();
                    match state.catch_up(&self.resource, self.last_rv) {
                        Ok(events) => self.backlog.extend(events),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

impl Cluster {
    /// Starts a watch atomically: the current objects (when `initial`, for synthetic ADDED
    /// events) and a subscription to every change after them; or, with `from`, the changes
    /// after that resourceVersion (410 when compacted).
    pub fn watch_start(
        &self,
        r: &super::Resolved,
        namespace: Option<&str>,
        initial: bool,
        from: Option<u64>,
    ) -> Result<(Vec<Arc<crate::store::StoredObject>>, u64, Subscription), ApiError> {
        let gr = r.gr();
        let mut state = self.store().write();
        let current = state.current_rv();
        let start = if initial {
            current
        } else {
            from.unwrap_or(current)
        };
        let (backlog, rx) = state.subscribe(&gr, Some(start))?;
        let objects = if initial {
            state
                .table(&gr)
                .map(|t| t.range(namespace, None).map(|(_, o)| o.clone()).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        drop(state);
        Ok((
            objects,
            current,
            Subscription::new(self.clone(), gr, backlog, rx, start),
        ))
    }
}
