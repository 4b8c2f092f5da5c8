//! The object store: one ordered map per resource type, one cluster-wide resourceVersion
//! counter (as etcd has), a bounded change history per type for watches and consistent
//! paginated lists, and a broadcast channel per type for watchers.
//!
//! Objects are kept as [`StoredObject`]s: the JSON value and its serialized bytes, made once per
//! object version, so lists and watch fan-out copy bytes instead of re-serializing, and events
//! are shared between watchers as `Arc`s instead of per-watcher copies.
//!
//! The store knows nothing about API semantics (validation, finalizers, GC): it commits what
//! [`crate::cluster`] decides, inside one lock, so a write, its event and its indexes change
//! together.

use crate::pointer::At;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::catalog::{Catalog, GroupResource};
use crate::error::ApiError;

/// Where an object lives within its type: namespace (empty when cluster-scoped) and name. The
/// derived order is the order the real server lists in (etcd key order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// A key from a namespace (`None` or empty for cluster-scoped) and name.
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self {
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }
}

/// One version of one object: the value and its serialized JSON.
#[derive(Debug)]
pub struct StoredObject {
    /// The object as stored, `metadata.resourceVersion` included.
    pub value: Value,
    /// `value` serialized once, shared by every list and watch that sends it.
    pub json: Bytes,
    /// The resourceVersion of this object version.
    pub rv: u64,
}

impl StoredObject {
    /// Stamps `metadata.resourceVersion` and serializes.
    pub fn new(mut value: Value, rv: u64) -> Arc<Self> {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Arc::new(Self { value, json, rv })
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        self.value
            .at("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// In-process readers (controllers, kubelets) read stored objects in place: a shared
/// object derefs to its value, so a pass over thousands of pods copies nothing.
impl std::ops::Deref for StoredObject {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// What happened to an object, as watch events name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, shared by every watcher and in-process subscriber.
#[derive(Debug)]
pub struct ChangeEvent {
    /// The type of the changed object.
    pub resource: GroupResource,
    /// Added, Modified or Deleted.
    pub event_type: EventType,
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The object after the change (for Deleted, its last state stamped with the delete's rv).
    pub object: Arc<StoredObject>,
    /// The object before the change; used to reconstruct past states and selector transitions.
    pub prev: Option<Arc<StoredObject>>,
}

impl ChangeEvent {
    /// The key of the changed object.
    pub fn key(&self) -> ObjectKey {
        let meta = self.object.value.get("metadata");
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        ObjectKey::new(Some(s("namespace")), s("name"))
    }
}

/// Objects, history and watchers of one resource type.
#[derive(Debug)]
pub struct ResourceTable {
    /// Current objects in key order.
    pub objects: BTreeMap<ObjectKey, Arc<StoredObject>>,
    history: VecDeque<Arc<ChangeEvent>>,
    /// Every change with a resourceVersion above this is in `history`; watches and snapshots
    /// from below it are answered 410.
    floor: u64,
    sender: broadcast::Sender<Arc<ChangeEvent>>,
}

impl ResourceTable {
    fn new(floor: u64, capacity: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor,
            sender: broadcast::channel(capacity).0,
        }
    }

    /// Objects of one namespace (or all, for `None`), in key order, starting after `after`.
    pub fn range<'a>(
        &'a self,
        namespace: Option<&'a str>,
        after: Option<&'a ObjectKey>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Arc<StoredObject>)> + 'a {
        let start = match (after, namespace) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included(ObjectKey::new(Some(ns), "")),
            (None, None) => Bound::Unbounded,
        };
        self.objects
            .range((start, Bound::Unbounded))
            .take_while(move |(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
    }

    /// The oldest resourceVersion a watch or snapshot may start from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Changes after `rv`, or Expired when they were compacted away.
    pub fn changes_since(&self, rv: u64) -> Result<Vec<Arc<ChangeEvent>>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        // History is ordered by rv: binary search the first newer event.
        let idx = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.iter().skip(idx).cloned().collect())
    }

    /// Objects as they were at resourceVersion `at`, in key order after `after`, restricted to
    /// a namespace: current objects overlaid with the pre-images of later changes.
    pub fn snapshot(
        &self,
        at: u64,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
    ) -> Result<Vec<Arc<StoredObject>>, u64> {
        let later = self.changes_since(at)?;
        if later.is_empty() {
            return Ok(self
                .range(namespace, after)
                .map(|(_, o)| o.clone())
                .collect());
        }
        // For each key changed after `at`, the first later change tells its state at `at`.
        let mut overlay: BTreeMap<ObjectKey, Option<Arc<StoredObject>>> = BTreeMap::new();
        for e in &later {
            let key = e.key();
            if namespace.is_some_and(|ns| key.namespace != ns) {
                continue;
            }
            if after.is_some_and(|a| key <= *a) {
                continue;
            }
            overlay.entry(key).or_insert_with(|| match e.event_type {
                EventType::Added => None,
                _ => e.prev.clone(),
            });
        }
        let mut out = Vec::new();
        let mut current = self.range(namespace, after).peekable();
        let mut over = overlay.into_iter().peekable();
        loop {
            match (current.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    let (_, o) = current.next().expect("peeked");
                    out.push(o.clone());
                }
                (None, Some(_)) => {
                    let (_, o) = over.next().expect("peeked");
                    out.extend(o);
                }
                (Some((ck, _)), Some((ok, _))) => {
                    if *ck < ok {
                        let (_, o) = current.next().expect("peeked");
                        out.push(o.clone());
                    } else {
                        if *ck == ok {
                            current.next();
                        }
                        let (_, o) = over.next().expect("peeked");
                        out.extend(o);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A subscription's start: the backlog from history and the live receiver.
pub type Subscribed = (Vec<Arc<ChangeEvent>>, broadcast::Receiver<Arc<ChangeEvent>>);

/// Everything behind the store lock.
#[derive(Debug)]
pub struct StoreState {
    rv: u64,
    /// The served resource types.
    pub catalog: Catalog,
    tables: HashMap<GroupResource, ResourceTable>,
    /// owner uid → dependents, for garbage collection without scanning every object.
    dependents: HashMap<String, BTreeSet<(GroupResource, ObjectKey)>>,
    /// uid → where the object lives, to find owners from ownerReferences.
    by_uid: HashMap<String, (GroupResource, ObjectKey)>,
    history_limit: usize,
    channel_capacity: usize,
    /// resourceVersion at which a type's table was dropped (a deleted CRD): a re-created type
    /// cannot serve watches from before that.
    dropped_at: HashMap<GroupResource, u64>,
}

/// The shared store.
#[derive(Debug)]
pub struct Store {
    state: RwLock<StoreState>,
}

/// Limits of the store, from the server configuration.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Changes kept per resource type for watches and consistent pagination.
    pub history_per_resource: usize,
    /// Events buffered per resource type for watchers before a slow watcher catches up from
    /// history.
    pub channel_capacity: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            history_per_resource: 20_000,
            channel_capacity: 4_096,
        }
    }
}

impl Store {
    /// An empty store serving `catalog`.
    pub fn new(catalog: Catalog, limits: StoreLimits) -> Self {
        Self {
            state: RwLock::new(StoreState {
                rv: 1,
                catalog,
                tables: HashMap::new(),
                dependents: HashMap::new(),
                by_uid: HashMap::new(),
                history_limit: limits.history_per_resource.max(1),
                channel_capacity: limits.channel_capacity.max(16),
                dropped_at: HashMap::new(),
            }),
        }
    }

    /// Shared access for reads. A poisoned lock means a bug panicked mid-write; the data is
    /// still the last committed state, so reads go on.
    pub fn read(&self) -> RwLockReadGuard<'_, StoreState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access for a write and everything it implies.
    pub fn write(&self) -> RwLockWriteGuard<'_, StoreState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoreState {
    /// The newest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The table of a type, if anything was ever stored or watched there.
    pub fn table(&self, gr: &GroupResource) -> Option<&ResourceTable> {
        self.tables.get(gr)
    }

    fn table_mut(&mut self, gr: &GroupResource) -> &mut ResourceTable {
        // A type whose table is created now had no changes before (tables are made on first
        // write or watch), so every resourceVersion is a valid start, unless the type existed
        // before and was dropped with its history.
        let floor = self.dropped_at.get(gr).copied().unwrap_or(0);
        let cap = self.channel_capacity;
        self.tables
            .entry(gr.clone())
            .or_insert_with(|| ResourceTable::new(floor, cap))
    }

    /// One object.
    pub fn get(&self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        self.tables.get(gr)?.objects.get(key).cloned()
    }

    /// Number of objects of a type.
    pub fn count(&self, gr: &GroupResource) -> usize {
        self.tables.get(gr).map_or(0, |t| t.objects.len())
    }

    /// Subscribes to a type's changes after `rv` (`None`: from now): the backlog from history
    /// and a receiver for what follows, atomically so nothing is missed or doubled.
    pub fn subscribe(
        &mut self,
        gr: &GroupResource,
        rv: Option<u64>,
    ) -> Result<Subscribed, ApiError> {
        let current = self.rv;
        let table = self.table_mut(gr);
        let rx = table.sender.subscribe();
        let backlog = match rv {
            None => Vec::new(),
            Some(rv) if rv >= current => Vec::new(),
            Some(rv) => table
                .changes_since(rv)
                .map_err(|floor| too_old(rv, floor))?,
        };
        Ok((backlog, rx))
    }

    /// Changes of a type after `rv`, for a watcher that fell behind its channel.
    pub fn catch_up(&self, gr: &GroupResource, rv: u64) -> Result<Vec<Arc<ChangeEvent>>, ApiError> {
        match self.tables.get(gr) {
            Some(t) => t.changes_since(rv).map_err(|floor| too_old(rv, floor)),
            None => Ok(Vec::new()),
        }
    }

    /// Dependents of an owner uid (objects whose ownerReferences name it).
    pub fn dependents_of(&self, uid: &str) -> Vec<(GroupResource, ObjectKey)> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Where the object with a uid lives.
    pub fn locate_uid(&self, uid: &str) -> Option<(GroupResource, ObjectKey)> {
        self.by_uid.get(uid).cloned()
    }

    fn index(
        &mut self,
        gr: &GroupResource,
        key: &ObjectKey,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        let owners = |v: Option<&Value>| -> BTreeSet<String> {
            v.and_then(|v| v.at("/metadata/ownerReferences"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        };
        let (before, after) = (owners(old), owners(new));
        let entry = (gr.clone(), key.clone());
        for uid in before.difference(&after) {
            if let Some(set) = self.dependents.get_mut(uid) {
                set.remove(&entry);
                if set.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
        for uid in after.difference(&before) {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert(entry.clone());
        }
        let uid_of = |v: Option<&Value>| {
            v.and_then(|v| v.at("/metadata/uid"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(u) = uid_of(old) {
            self.by_uid.remove(&u);
        }
        if let Some(u) = uid_of(new) {
            self.by_uid.insert(u, entry);
        }
    }

    fn record(&mut self, event: ChangeEvent) -> Arc<ChangeEvent> {
        let limit = self.history_limit;
        let event = Arc::new(event);
        let table = self.table_mut(&event.resource);
        table.history.push_back(event.clone());
        while table.history.len() > limit {
            if let Some(old) = table.history.pop_front() {
                table.floor = old.rv;
            }
        }
        // No receivers is normal (nobody watches this type).
        let _ = table.sender.send(event.clone());
        event
    }

    /// Stores a new version of an object under a fresh resourceVersion and tells watchers.
    pub fn put(&mut self, gr: &GroupResource, key: ObjectKey, value: Value) -> Arc<StoredObject> {
        self.rv += 1;
        let rv = self.rv;
        let stored = StoredObject::new(value, rv);
        let prev = self
            .table_mut(gr)
            .objects
            .insert(key.clone(), stored.clone());
        self.index(
            gr,
            &key,
            prev.as_ref().map(|p| &p.value),
            Some(&stored.value),
        );
        self.record(ChangeEvent {
            resource: gr.clone(),
            event_type: if prev.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            rv,
            object: stored.clone(),
            prev,
        });
        stored
    }

    /// Removes an object and tells watchers; the DELETED event carries the delete's
    /// resourceVersion as the real server's does.
    pub fn remove(&mut self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        let prev = self.tables.get_mut(gr)?.objects.remove(key)?;
        self.rv += 1;
        let rv = self.rv;
        self.index(gr, key, Some(&prev.value), None);
        let tomb = StoredObject::new(prev.value.clone(), rv);
        self.record(ChangeEvent {
            resource: gr.clone(),
            event_type: EventType::Deleted,
            rv,
            object: tomb.clone(),
            prev: Some(prev),
        });
        Some(tomb)
    }

    /// Drops a whole type (a deleted CRD): its watchers see their streams end.
    pub fn drop_table(&mut self, gr: &GroupResource) {
        self.tables.remove(gr);
        self.dropped_at.insert(gr.clone(), self.rv);
    }

    /// Forgets all history, as an etcd compaction does: watches and continue tokens from before
    /// now get 410.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for t in self.tables.values_mut() {
            t.history.clear();
            t.floor = rv;
        }
    }
}

/// The real server's message for a watch or list from a compacted resourceVersion.
pub fn too_old(rv: u64, floor: u64) -> ApiError {
    ApiError::expired(format!("too old resource version: {rv} ({floor})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, v: i64) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("{ns}-{name}")}, "data": {"v": v}})
    }

    #[test]
    fn snapshot_sees_the_past() {
        let store = Store::new(Catalog::default(), StoreLimits::default());
        let gr = GroupResource::new("", "configmaps");
        let mut s = store.write();
        s.put(&gr, ObjectKey::new(Some("a"), "1"), obj("a", "1", 1));
        s.put(&gr, ObjectKey::new(Some("a"), "2"), obj("a", "2", 1));
        let at = s.current_rv();
        s.put(&gr, ObjectKey::new(Some("a"), "1"), obj("a", "1", 2));
        s.remove(&gr, &ObjectKey::new(Some("a"), "2"));
        s.put(&gr, ObjectKey::new(Some("a"), "3"), obj("a", "3", 1));
        let t = s.table(&gr).unwrap();
        let past = t.snapshot(at, Some("a"), None).unwrap();
        let names: Vec<_> = past
            .iter()
            .map(|o| o.value["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("1"), json!("2")]);
        assert_eq!(past[0].value["data"]["v"], 1);
        let now = t.snapshot(s.current_rv(), None, None).unwrap();
        assert_eq!(now.len(), 2);
        let after = t
            .snapshot(at, Some("a"), Some(&ObjectKey::new(Some("a"), "1")))
            .unwrap();
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn a_new_type_serves_watches_from_any_earlier_version() {
        let store = Store::new(Catalog::default(), StoreLimits::default());
        let cms = GroupResource::new("", "configmaps");
        let pods = GroupResource::new("", "pods");
        let mut s = store.write();
        s.put(&cms, ObjectKey::new(Some("a"), "1"), obj("a", "1", 1));
        let rv = s.current_rv();
        s.put(&cms, ObjectKey::new(Some("a"), "2"), obj("a", "2", 1));
        // No pod was ever written: a watch from an older version is valid, not 410.
        assert!(s.subscribe(&pods, Some(rv)).is_ok());
        s.drop_table(&cms);
        assert_eq!(s.subscribe(&cms, Some(rv)).unwrap_err().code, 410);
    }

    #[test]
    fn compaction_expires_old_watches() {
        let store = Store::new(Catalog::default(), StoreLimits::default());
        let gr = GroupResource::new("", "configmaps");
        let mut s = store.write();
        s.put(&gr, ObjectKey::new(Some("a"), "1"), obj("a", "1", 1));
        let rv = s.current_rv();
        s.put(&gr, ObjectKey::new(Some("a"), "1"), obj("a", "1", 2));
        assert_eq!(s.subscribe(&gr, Some(rv)).unwrap().0.len(), 1);
        s.compact();
        assert_eq!(s.subscribe(&gr, Some(rv)).unwrap_err().code, 410);
        assert_eq!(s.dependents_of("x").len(), 0);
        assert!(s.locate_uid("a-1").is_some());
    }
}
