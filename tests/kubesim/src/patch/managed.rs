//! Server-side apply and managedFields bookkeeping, as kube-apiserver's field manager does it.

use crate::pointer::At;
use serde_json::{Map, Value, json};

use super::PatchError;
use super::fieldpath::{FieldPath, FieldSet, PathElement};
use super::schema::Schema;
use super::typed::{self, Comparison};

/// The `operation` of a managedFields entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write (create, update, patch).
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedFieldsEntry {
    /// The field manager name (`kubectl`, `kubectl-client-side-apply`, `kube-controller-manager`).
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The API version the fields were written with (`apps/v1`).
    pub api_version: String,
    /// When the manager last changed the object (RFC 3339), if known.
    pub time: Option<String>,
    /// `status` (or another subresource) for writes through a subresource.
    pub subresource: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    /// The entry as the real server serialises it (field order included).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    /// Parses one entry; `None` when it is not a usable FieldsV1 entry.
    pub fn from_json(v: &Value) -> Option<Self> {
        let operation = match v.get("operation")?.as_str()? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        if v.get("fieldsType")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "FieldsV1")
        {
            return None;
        }
        let fields = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::new(),
        };
        Some(ManagedFieldsEntry {
            manager: v
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            operation,
            api_version: v
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fields,
        })
    }

    /// Whether two entries are the same manager identity: appliers are one entry whatever
    /// the API version, updaters one per API version.
    fn same_identity(
        &self,
        manager: &str,
        op: Operation,
        api_version: &str,
        sub: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource.as_deref() == sub
            && (op == Operation::Apply || self.api_version == api_version)
    }

    /// The JSON identifier the real server keys managers by; conflicts sort by it.
    fn identifier(&self) -> String {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        if self.operation == Operation::Update {
            m.insert("apiVersion".into(), json!(self.api_version));
        }
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m).to_string()
    }
}

/// Reads `metadata.managedFields`, skipping entries that do not parse.
pub(crate) fn read_entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
    obj.at("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ManagedFieldsEntry::from_json).collect())
        .unwrap_or_default()
}

/// Orders entries as the real server stores them: appliers first, then by time, manager,
/// API version and subresource.
fn sort_entries(entries: &mut [ManagedFieldsEntry]) {
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| {
                a.time
                    .as_deref()
                    .unwrap_or("")
                    .cmp(b.time.as_deref().unwrap_or(""))
            })
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
}

fn write_entries(obj: &mut Value, mut entries: Vec<ManagedFieldsEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    sort_entries(&mut entries);
    let Value::Object(root) = obj else {
        return;
    };
    if entries.is_empty() {
        if let Some(Value::Object(meta)) = root.get_mut("metadata") {
            meta.shift_remove("managedFields");
        }
        return;
    }
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(ManagedFieldsEntry::to_json).collect()),
        );
    }
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        meta.shift_remove("managedFields");
    }
    out
}

/// One field another manager owns and an apply would change.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The owning manager's name.
    pub manager: String,
    /// How it wrote the field.
    pub operation: Operation,
    /// The API version of its entry.
    pub api_version: String,
    /// Its subresource, if it wrote through one.
    pub subresource: Option<String>,
    /// The contested field.
    pub path: FieldPath,
    identifier: String,
}

impl Conflict {
    /// The manager as the real server names it: `"kubectl"`, or
    /// `"kube-controller-manager" using apps/v1` for an updater, with `with subresource "status"`.
    pub fn describe_manager(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s = format!("{s} with subresource {sub:?}");
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    /// The `details.causes[].message` of the 409: `conflict with "kubectl" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.describe_manager())
    }

    /// The `details.causes[].field`: `.spec.replicas`.
    pub fn field(&self) -> String {
        self.path.to_string()
    }
}

/// The `Status.message` of an apply conflict, worded like the real server.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.describe_manager(),
            one.path
        );
    }
    let mut sorted: Vec<&Conflict> = conflicts.iter().collect();
    sorted.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    let mut lines = Vec::new();
    let mut last: Option<&str> = None;
    for c in sorted {
        if last != Some(c.identifier.as_str()) {
            lines.push(format!("conflicts with {}:", c.describe_manager()));
            last = Some(c.identifier.as_str());
        }
        lines.push(format!("- {}", c.path));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The result of a server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The object to store (or, when nothing changed, the live object as it was).
    pub object: Value,
    /// False when the apply changed neither the object nor its managedFields: the server
    /// answers with the live object and keeps its resourceVersion.
    pub changed: bool,
}

/// Field ownership tracking for one write: the schema of the kind, the API version and
/// subresource written through, the clock, and the fields that endpoint resets.
pub struct FieldManager<'s> {
    schema: &'s dyn Schema,
    api_version: String,
    now: String,
    subresource: Option<String>,
    ignored: Vec<Vec<String>>,
    strip: FieldSet,
}

impl<'s> FieldManager<'s> {
    /// A field manager for writes of `api_version` (`apps/v1`, `v1`) at time `now` (RFC 3339,
    /// as written in managedFields `time`).
    pub fn new(schema: &'s dyn Schema, api_version: &str, now: &str) -> Self {
        let mut strip = FieldSet::new();
        let f = |s: &str| PathElement::Field(s.to_string());
        strip.insert(&[f("apiVersion")]);
        strip.insert(&[f("kind")]);
        strip.insert(&[f("metadata")]);
        for m in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            strip.insert(&[f("metadata"), f(m)]);
        }
        FieldManager {
            schema,
            api_version: api_version.to_string(),
            now: now.to_string(),
            subresource: None,
            ignored: Vec::new(),
            strip,
        }
    }

    /// Writes through a subresource (`Some("status")`): entries are recorded with it.
    pub fn subresource(mut self, subresource: Option<&str>) -> Self {
        self.subresource = subresource.filter(|s| !s.is_empty()).map(str::to_string);
        self
    }

    /// A subtree this endpoint resets (`["status"]` for the main resource of a kind with a
    /// status subresource, `["spec"]` for its status): never owned, never a conflict. Apply
    /// also keeps the live value there; for other writes the server resets it before calling
    /// [`FieldManager::update`].
    pub fn ignore(mut self, path: &[&str]) -> Self {
        self.ignored
            .push(path.iter().map(|s| (*s).to_string()).collect());
        self
    }

    fn tracked(&self, set: &FieldSet) -> FieldSet {
        let mut out = set.difference(&self.strip);
        for p in &self.ignored {
            let pes: Vec<PathElement> = p.iter().map(|s| PathElement::Field(s.clone())).collect();
            out.remove_prefix(&pes);
        }
        out
    }

    fn tracked_comparison(&self, c: Comparison) -> Comparison {
        Comparison {
            added: self.tracked(&c.added),
            modified: self.tracked(&c.modified),
            removed: self.tracked(&c.removed),
        }
    }

    /// Server-side apply of `config` by `manager` onto `live` (`None` creates).
    ///
    /// Merges the configuration, removes the fields this manager applied before and dropped
    /// (unless another manager owns them), and records ownership. Fields of other managers that
    /// the apply would change are [`PatchError::Conflicts`] unless `force`, which takes them
    /// over. Errors with [`PatchError::BadRequest`] for a configuration that is not an object,
    /// sets `metadata.managedFields`, or breaks a list's keys.
    pub fn apply(
        &self,
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Applied, PatchError> {
        if !config.is_object() {
            return Err(PatchError::BadRequest(
                "error decoding YAML: the applied configuration must be an object".into(),
            ));
        }
        if config
            .at("/metadata/managedFields")
            .is_some_and(|v| !v.is_null())
        {
            return Err(PatchError::BadRequest(
                "metadata.managedFields must be nil".into(),
            ));
        }
        let sub = self.subresource.as_deref();
        let live_obj = live.map_or_else(|| Value::Object(Map::new()), without_managed_fields);
        let mut entries = live.map(read_entries).unwrap_or_default();
        if live.is_some() && entries.is_empty() {
            // An object nobody is recorded as managing (created before field tracking, or
            // written around it) is owned by "before-first-apply", as on the real server, so
            // that a first apply cannot silently take fields over.
            let empty = Value::Object(Map::new());
            let all = self.tracked(&typed::compare(&empty, &live_obj, self.schema).added);
            if !all.is_empty() {
                entries.push(ManagedFieldsEntry {
                    manager: "before-first-apply".into(),
                    operation: Operation::Update,
                    api_version: self.api_version.clone(),
                    time: Some(self.now.clone()),
                    subresource: None,
                    fields: all,
                });
            }
        }

        let config_set = self.tracked(&typed::to_field_set(config, self.schema)?);
        let mut merged = typed::merge(&live_obj, config, self.schema)?;
        for p in &self.ignored {
            typed::set_path(&mut merged, p, typed::get_path(&live_obj, p).cloned());
        }

        let mine = entries
            .iter()
            .position(|e| e.same_identity(manager, Operation::Apply, "", sub));
        let last_set = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();
        let others = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != mine)
            .fold(FieldSet::new(), |acc, (_, e)| acc.union(&e.fields));
        let dropped = last_set.difference(&config_set.union(&others));
        let new_obj = if dropped.is_empty() {
            merged
        } else {
            typed::remove(&merged, &dropped, self.schema)
        };

        let cmp = self.tracked_comparison(typed::compare(&live_obj, &new_obj, self.schema));
        let changed_fields = cmp.modified.union(&cmp.added);
        let mut conflicts = Vec::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if Some(i) == mine {
                continue;
            }
            let contested = e.fields.intersection(&changed_fields);
            if !contested.is_empty() {
                let identifier = e.identifier();
                conflicts.extend(contested.paths().into_iter().map(|path| Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation,
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    path,
                    identifier: identifier.clone(),
                }));
                e.fields = e.fields.difference(&contested);
            }
            e.fields = e.fields.difference(&cmp.removed);
        }
        if !force && !conflicts.is_empty() {
            // Stable: within one manager the paths stay in field set order.
            conflicts.sort_by(|a, b| a.identifier.cmp(&b.identifier));
            return Err(PatchError::Conflicts(conflicts));
        }

        let content_changed = live.is_none() || new_obj != live_obj;
        let entry = ManagedFieldsEntry {
            manager: manager.to_string(),
            operation: Operation::Apply,
            api_version: self.api_version.clone(),
            time: Some(self.now.clone()),
            subresource: self.subresource.clone(),
            fields: config_set,
        };
        match mine {
            Some(i) => {
                let prev = &entries[i];
                let same = prev.fields == entry.fields && prev.api_version == entry.api_version;
                let time = if same && !content_changed {
                    prev.time.clone()
                } else {
                    entry.time.clone()
                };
                entries[i] = ManagedFieldsEntry { time, ..entry };
            }
            None => entries.push(entry),
        }
        let mut object = new_obj;
        write_entries(&mut object, entries);
        match live {
            Some(l) if *l == object => Ok(Applied {
                object: l.clone(),
                changed: false,
            }),
            _ => Ok(Applied {
                object,
                changed: true,
            }),
        }
    }

    /// Records a non-apply write (create with `live: None`, update, merge/JSON/strategic
    /// patch) by `manager`: the fields the write changed become owned by it (operation
    /// `Update`) and leave every other manager, and removed fields leave everyone.
    ///
    /// Returns `new` with `metadata.managedFields` recomputed. Writes to the main resource may
    /// carry their own managedFields (as `kubectl replace` of a fetched object does): a list that
    /// differs from the live one replaces it, and `[{}]` clears it, as on the real server.
    pub fn update(
        &self,
        live: Option<&Value>,
        new: &Value,
        manager: &str,
    ) -> Result<Value, PatchError> {
        self.update_owned(live, new.clone(), manager)
    }

    /// [`Self::update`] taking the new object by value, which the write path can give up:
    /// the result is built from it instead of from a copy.
    pub fn update_owned(
        &self,
        live: Option<&Value>,
        mut new_obj: Value,
        manager: &str,
    ) -> Result<Value, PatchError> {
        if !new_obj.is_object() {
            return Err(PatchError::BadRequest(
                "the object to write must be a JSON object".into(),
            ));
        }
        let sub = self.subresource.as_deref();
        // The comparison skips managedFields, so the live object is compared as stored.
        let empty = Value::Object(Map::new());
        let live_obj = live.unwrap_or(&empty);
        let sent_mf = match new_obj.get_mut("metadata") {
            Some(Value::Object(meta)) => meta.shift_remove("managedFields"),
            _ => None,
        };

        let live_mf = live.and_then(|l| l.at("/metadata/managedFields"));
        let sent_mf = sent_mf.as_ref().filter(|v| !v.is_null());
        let mut entries = match (sub, sent_mf) {
            (None, Some(sent)) if Some(sent) != live_mf => match sent.as_array() {
                Some(list) => list
                    .iter()
                    .filter_map(ManagedFieldsEntry::from_json)
                    .collect(),
                None => live.map(read_entries).unwrap_or_default(),
            },
            _ => live.map(read_entries).unwrap_or_default(),
        };

        let cmp = self.tracked_comparison(typed::compare(live_obj, &new_obj, self.schema));
        let changed_fields = cmp.modified.union(&cmp.added);
        for e in &mut entries {
            // Most writes touch fields of one manager; the others' sets are kept as they are.
            if e.fields.overlaps(&changed_fields) || e.fields.overlaps(&cmp.removed) {
                e.fields = e
                    .fields
                    .difference(&changed_fields)
                    .difference(&cmp.removed);
            }
        }
        if !changed_fields.is_empty() {
            let existing = entries
                .iter_mut()
                .find(|e| e.same_identity(manager, Operation::Update, &self.api_version, sub));
            match existing {
                Some(e) => {
                    e.fields = e.fields.union(&changed_fields);
                    e.time = Some(self.now.clone());
                }
                None => entries.push(ManagedFieldsEntry {
                    manager: manager.to_string(),
                    operation: Operation::Update,
                    api_version: self.api_version.clone(),
                    time: Some(self.now.clone()),
                    subresource: self.subresource.clone(),
                    fields: changed_fields,
                }),
            }
        }
        write_entries(&mut new_obj, entries);
        Ok(new_obj)
    }
}
