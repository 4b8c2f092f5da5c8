//! Carrying the user's customisations over when a manifest (`calico.yaml`) install is upgraded.
//!
//! Calico's upgrade guide for manifest installs says: download the new `calico.yaml` and re-apply
//! any local edits by hand. This module does that automatically, as a pure three-way merge over
//! Kubernetes objects held as `serde_json::Value`:
//!
//! - **base**: the objects of the upstream manifest of the running version,
//! - **live**: the same objects read from the cluster (matched by kind, namespace and name),
//! - **target**: the objects of the upstream manifest of the version to upgrade to.
//!
//! A *customisation* is a difference between base and live at one of the curated points below.
//! Each one is carried onto the target, or dropped with a reason, and every one is reported.
//!
//! # Customisation points
//!
//! Only these points are compared; everything else in a live object comes from the target.
//! A curated list (rather than a diff of whole objects) is what keeps the API server's own
//! additions out of the report.
//!
//! 1. **env** of every container and init container of every workload (DaemonSet, Deployment,
//!    StatefulSet), by variable name: changed values, added variables and upstream variables the
//!    user removed; `value` and `valueFrom` alike (e.g. `CALICO_IPV4POOL_CIDR`,
//!    `IP_AUTODETECTION_METHOD`, `FELIX_*`, `CALICO_IPV4POOL_IPIP`/`VXLAN`).
//! 2. **ConfigMap `data`** of the manifest's ConfigMaps (`calico-config`), by key: changed and
//!    added keys (`veth_mtu`, `typha_service_name`, `calico_backend`, ...). `cni_network_config`
//!    is compared and carried as the string it is: it holds placeholders such as `__CNI_MTU__`,
//!    so it is not JSON that could be merged field by field.
//! 3. **resources** of every container: each `requests.<name>` and `limits.<name>` on its own,
//!    compared as quantities (`0.25` equals `250m`, `1Gi` equals `1024Mi`); and the
//!    **liveness, readiness and startup probes** of every container, field by field. Calico's
//!    instructions for VXLAN-only clusters remove `-bird-live`/`-bird-ready` from calico-node's
//!    probes, and losing that edit leaves calico-node unready on the new version.
//! 4. The pod template's **tolerations** (as a set), **nodeSelector** (by key), **affinity**
//!    (as one value), **priorityClassName**, **imagePullSecrets** (by name; also those of the
//!    manifest's ServiceAccounts), and its **labels and annotations** (by key).
//! 5. **volumes** (by name) and each container's **volumeMounts** (by `mountPath`, the key the
//!    API server uses): added, changed and removed. Containers the user added to a workload are
//!    carried whole, in their place.
//! 6. **`spec.replicas`** of Deployments and StatefulSets (typha replicas are a common tuning),
//!    and the DaemonSet's **`updateStrategy`** (`rollingUpdate.maxUnavailable`; `OnDelete` is
//!    reported and not carried, see below).
//! 7. The **image registry**: when the live images of a workload come from another registry
//!    (or registry path) than base's for the same image path, the target's images are moved to
//!    that registry, keeping the target's tags. Images whose tag or digest the user changed are
//!    reported as dropped: the version always comes from the target. [`rewrite_registry`] does
//!    the same move for the module's `image_registry` argument.
//! 8. **Deleted objects**: a Deployment, Service or PodDisruptionBudget that base has and the
//!    cluster does not (typically `calico-typha` on a small cluster) stays deleted: it is left out
//!    of the objects to apply and reported as a carried `deleted` customisation. Deleting one of
//!    these is a deliberate act an operator expects to survive an upgrade; other kinds (the
//!    calico-node DaemonSet, RBAC, CRDs, ConfigMaps) are re-created, because Calico does not work
//!    without them. Deletions are only inferred when the live set holds at least one object of
//!    base, so an empty or failed read never turns into "the user deleted everything".
//!
//! # Never a customisation
//!
//! Fields the API server sets (`status`, `metadata.uid`, `resourceVersion`, `generation`,
//! `creationTimestamp`, `managedFields`, the `deprecated.daemonset.template.generation` and
//! `kubectl.kubernetes.io/last-applied-configuration` annotations) are outside every point.
//! Defaults the API server fills in (the `SetDefaults_*` functions of `pkg/apis/core/v1` and
//! `pkg/apis/apps/v1`) are outside most points, and where they fall inside one they compare equal
//! to their absence: `fieldRef.apiVersion: v1`, `defaultMode: 420`, `hostPath.type: ""`,
//! `protocol: TCP`, `expirationSeconds: 3600`, the probe defaults (`timeoutSeconds: 1`,
//! `periodSeconds: 10`, `successThreshold: 1`, `failureThreshold: 3`, `scheme: HTTP`) and the
//! like, quantities rounded to milli-units,
//! empty values (`""`, `false`, `{}`, `[]`, `null`, all omitted by the server), `replicas: 1`,
//! the DaemonSet's `maxUnavailable: 1`. The pod-template annotation
//! `kubectl.kubernetes.io/restartedAt` records a `kubectl rollout restart`, not a setting, and is
//! ignored.
//!
//! # Conflicts: the live value wins
//!
//! When the user and the target both changed the same point away from base (differently), the
//! **live value wins** and the entry is reported as carried with `conflict: true` and the target's
//! value beside it. The user's value is a deliberate choice about this cluster; the target's is a
//! new default for clusters in general, and an upgrade that silently reverts an operator's
//! setting (an MTU, an IPAM block in `cni_network_config`, an IP pool mode) breaks networking in
//! ways that are hard to trace, while keeping it is visible in the report and easy to revisit.
//! Before that rule applies, both sides' changes are combined where they do not overlap: objects
//! (a volume, an env entry, a probe) field by field, and multi-line text (`cni_network_config`)
//! line by line, as `git merge-file` would (3.30 dropped the `bandwidth` plugin from it; a user's
//! `log_level` edit elsewhere in it merges cleanly). Only fields or lines both sides changed are a
//! conflict.
//!
//! # Dropped
//!
//! A customisation is dropped (and reported with the reason) when it has nowhere to go or would
//! break the upgrade:
//! - the object, or the container, is no longer in the target;
//! - the user changed a setting (env variable, data key, volume) that the target removed: upstream
//!   removed it for a reason, so it is not re-added; the report lets the operator re-add it;
//! - the user removed a ConfigMap key the target still has (its workloads may read it);
//! - the user removed a volume a target container still mounts;
//! - a volumeMount whose volume is not in the result;
//! - the target adds a container with the name of one the user added;
//! - the image tag or digest (the version comes from the target) or an image replaced by a
//!   different one;
//! - `updateStrategy.type: OnDelete`: the new version would never roll out, and the upgrade
//!   waits for the rollout.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// Whether a customisation made it into the objects to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It is in the objects to apply.
    Carried,
    /// It is not; the entry's `reason` says why.
    Dropped,
}

/// What the user did at a customisation point, compared with the running version's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// A value upstream has was changed.
    Changed,
    /// Something upstream does not have was added.
    Added,
    /// Something upstream has was removed.
    Removed,
    /// A whole object upstream has was deleted from the cluster.
    Deleted,
    /// Images are pulled from another registry.
    Registry,
}

/// One customisation and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customization {
    /// The object, as `kind/namespace/name` (`kind/name` for cluster-scoped objects).
    pub object: String,
    /// A readable path, e.g.
    /// `DaemonSet kube-system/calico-node: env CALICO_IPV4POOL_CIDR of container calico-node`.
    pub path: String,
    /// What the user did.
    pub change: Change,
    /// The value in the upstream manifest of the running version (`null`: absent).
    pub base: Value,
    /// The value in the cluster (`null`: absent).
    pub live: Value,
    /// The value in the upstream manifest of the target version (`null`: absent).
    pub upstream: Value,
    /// The value in the objects to apply (`null`: absent).
    pub applied: Value,
    /// Carried or dropped.
    pub status: Status,
    /// The target changed the same point too, differently; the live value won.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
    /// Why it was dropped; for a carried entry, a note when there is something to know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every customisation found, split by what became of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Customisations present in the objects to apply.
    pub carried: Vec<Customization>,
    /// Customisations left out, each with its reason.
    pub dropped: Vec<Customization>,
}

impl Report {
    /// The report for the module result: `{"carried": [...], "dropped": [...]}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self)
            .unwrap_or_else(|e| Value::String(format!("report not serialisable: {e}")))
    }

    /// One line per dropped customisation, `<path>: <reason>`, for the module's warnings.
    pub fn dropped_messages(&self) -> Vec<String> {
        self.dropped
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c.path,
                    c.reason.as_deref().unwrap_or("not carried")
                )
            })
            .collect()
    }

    /// One line per conflict (carried, the live value won over a changed upstream value), for
    /// the module's warnings: the operator should look at what upstream changed.
    pub fn conflict_messages(&self) -> Vec<String> {
        self.carried
            .iter()
            .filter(|c| c.conflict)
            .map(|c| {
                format!(
                    "{}: kept {}, upstream now has {}",
                    c.path,
                    show(&c.live),
                    show(&c.upstream)
                )
            })
            .collect()
    }

    /// Whether no customisation was found.
    pub fn is_empty(&self) -> bool {
        self.carried.is_empty() && self.dropped.is_empty()
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The result of [`carry_over`].
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The objects to apply: the target manifest with the customisations carried over, in the
    /// target's order, without the objects the user deleted.
    pub objects: Vec<Value>,
    /// What was carried and what was not.
    pub report: Report,
}

/// One image moved to another registry by [`rewrite_registry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRewrite {
    /// The object, as `kind/namespace/name`.
    pub object: String,
    /// The container (init containers included).
    pub container: String,
    /// The image before.
    pub from: String,
    /// The image after.
    pub to: String,
}

/// Kinds whose deletion from the cluster is kept over an upgrade (see the module docs).
const DELETABLE_KINDS: &[&str] = &["Deployment", "Service", "PodDisruptionBudget"];

/// Kinds with a pod template at `spec.template`.
const WORKLOAD_KINDS: &[&str] = &["DaemonSet", "Deployment", "StatefulSet", "ReplicaSet"];

/// Pod-template annotations that record an action rather than a setting.
const IGNORED_TEMPLATE_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/restartedAt"];

/// Merges the user's customisations (base → live) into the target manifest's objects.
///
/// `base`: the upstream manifest of the running version; `live`: the same objects read from the
/// cluster; `target`: the upstream manifest of the target version. Never fails: anything it
/// cannot make sense of is left as the target has it.
pub fn carry_over(base: &[Value], live: &[Value], target: &[Value]) -> Merged {
    let mut entries = Vec::new();
    let live_was_read = base.iter().any(|b| find(live, b).is_some());
    let registry = Registry::detect(base, live);
    let mut objects = Vec::with_capacity(target.len());

    for t in target {
        let (Some(b), l) = (find(base, t), find(live, t)) else {
            // New upstream: nothing of the user's to carry, but it pulls from the same registry.
            let mut o = t.clone();
            let mut ctx = Ctx::new(&o, &mut entries);
            registry.apply(&mut ctx, None, None, &mut o, &BTreeSet::new());
            objects.push(o);
            continue;
        };
        let Some(l) = l else {
            let mut o = t.clone();
            let mut ctx = Ctx::new(t, &mut entries);
            if live_was_read && DELETABLE_KINDS.contains(&kind(t)) {
                ctx.push(Customization {
                    path: format!("{}: the object", ctx.display),
                    object: ctx.object.clone(),
                    change: Change::Deleted,
                    base: Value::String("exists".into()),
                    live: Value::String("absent".into()),
                    upstream: Value::String("exists".into()),
                    applied: Value::Null,
                    status: Status::Carried,
                    conflict: false,
                    reason: Some("deleted from the cluster, so it stays deleted: the upgrade does not re-create it".into()),
                });
                continue;
            }
            registry.apply(&mut ctx, Some(b), None, &mut o, &BTreeSet::new());
            objects.push(o);
            continue;
        };
        let mut o = t.clone();
        let mut ctx = Ctx::new(t, &mut entries);
        let added = merge_object(&mut ctx, b, l, &mut o);
        registry.apply(&mut ctx, Some(b), Some(l), &mut o, &added);
        objects.push(o);
    }

    // Objects upstream removed: what the user customised in them cannot be carried anywhere.
    for b in base {
        if find(target, b).is_some() {
            continue;
        }
        let Some(l) = find(live, b) else { continue };
        let mut scratch = b.clone();
        let mut found = Vec::new();
        let mut ctx = Ctx::new(b, &mut found);
        merge_object(&mut ctx, b, l, &mut scratch);
        for mut c in found {
            drop_entry(
                &mut c,
                &format!("{} is not in the target manifest", Ctx::display_of(b)),
            );
            entries.push(c);
        }
    }

    let mut report = Report::default();
    for c in entries {
        match c.status {
            Status::Carried => report.carried.push(c),
            Status::Dropped => report.dropped.push(c),
        }
    }
    Merged { objects, report }
}

/// Moves every container image of `objects` to `registry`, keeping the image path after the
/// registry host and the tag or digest: `docker.io/calico/node:v3.28.5` and `calico/node:v3.28.5`
/// become `<registry>/calico/node:v3.28.5`, `quay.io/tigera/operator:v1.34.13` becomes
/// `<registry>/tigera/operator:v1.34.13`. `registry` may carry a path (`mirror.local/calico`);
/// images already under it are left alone, so a second run changes nothing. Returns what moved.
pub fn rewrite_registry(objects: &mut [Value], registry: &str) -> Vec<ImageRewrite> {
    let registry = registry.trim();
    let registry = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    let registry = registry.trim_end_matches('/');
    let mut out = Vec::new();
    if registry.is_empty() {
        return out;
    }
    let under = format!("{registry}/");
    for obj in objects.iter_mut() {
        let object = Ctx::object_of(obj);
        let Some(spec) = pod_spec_mut(obj) else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            let Some(Value::Array(containers)) = spec.get_mut(list) else {
                continue;
            };
            for c in containers.iter_mut() {
                let name = str_at(c, &["name"]).unwrap_or("").to_string();
                let Some(Value::String(image)) = c.get_mut("image") else {
                    continue;
                };
                if image.starts_with(&under) {
                    continue;
                }
                let parsed = ImageRef::parse(image);
                let moved = format!("{under}{}{}", parsed.path, parsed.suffix);
                if moved != *image {
                    out.push(ImageRewrite {
                        object: object.clone(),
                        container: name,
                        from: image.clone(),
                        to: moved.clone(),
                    });
                    *image = moved;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reporting context

/// The object being merged and where its entries go.
struct Ctx<'r> {
    object: String,
    display: String,
    out: &'r mut Vec<Customization>,
}

impl<'r> Ctx<'r> {
    fn new(obj: &Value, out: &'r mut Vec<Customization>) -> Self {
        Ctx {
            object: Self::object_of(obj),
            display: Self::display_of(obj),
            out,
        }
    }

    fn object_of(obj: &Value) -> String {
        let (k, ns, n) = (kind(obj), namespace(obj), name(obj));
        if ns.is_empty() {
            format!("{k}/{n}")
        } else {
            format!("{k}/{ns}/{n}")
        }
    }

    fn display_of(obj: &Value) -> String {
        let (k, ns, n) = (kind(obj), namespace(obj), name(obj));
        if ns.is_empty() {
            format!("{k} {n}")
        } else {
            format!("{k} {ns}/{n}")
        }
    }

    fn push(&mut self, c: Customization) -> usize {
        self.out.push(c);
        self.out.len() - 1
    }

    /// Records a verdict; returns the entry's index.
    fn record(
        &mut self,
        what: &str,
        v: &Verdict,
        seen: Seen<'_>,
        applied: Option<&Value>,
    ) -> usize {
        let c = Customization {
            object: self.object.clone(),
            path: format!("{}: {what}", self.display),
            change: v.change,
            base: seen.base.cloned().unwrap_or(Value::Null),
            live: seen.live.cloned().unwrap_or(Value::Null),
            upstream: seen.target.cloned().unwrap_or(Value::Null),
            applied: applied.cloned().unwrap_or(Value::Null),
            status: v.status,
            conflict: v.conflict,
            reason: v.reason.clone(),
        };
        self.push(c)
    }

    /// Turns a carried entry into a dropped one after the fact (a later check found it cannot
    /// stay); the applied value becomes the target's.
    fn demote(&mut self, index: usize, reason: String) {
        if let Some(c) = self.out.get_mut(index) {
            drop_entry(c, &reason);
        }
    }
}

fn drop_entry(c: &mut Customization, reason: &str) {
    c.status = Status::Dropped;
    c.conflict = false;
    c.applied = c.upstream.clone();
    c.reason = Some(reason.to_string());
}

/// The three values at one point.
#[derive(Clone, Copy)]
struct Seen<'a> {
    base: Option<&'a Value>,
    live: Option<&'a Value>,
    target: Option<&'a Value>,
}

// ---------------------------------------------------------------------------------------------
// The three-way decision at one point

#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// Leave the target's value.
    Keep,
    /// Put this value in.
    Set(Value),
    /// Take the target's value out.
    Remove,
}

#[derive(Debug, Clone)]
struct Verdict {
    change: Change,
    status: Status,
    action: Action,
    conflict: bool,
    reason: Option<String>,
}

impl Verdict {
    fn dropped(mut self, reason: impl Into<String>) -> Self {
        self.status = Status::Dropped;
        self.action = Action::Keep;
        self.conflict = false;
        self.reason = Some(reason.into());
        self
    }
}

type Eq3 = dyn Fn(Option<&Value>, Option<&Value>) -> bool;

/// The decision at one point, or `None` when the user did not change it.
fn three_way(s: Seen<'_>, eq: &Eq3) -> Option<Verdict> {
    let Seen {
        base: b,
        live: l,
        target: t,
    } = s;
    if eq(b, l) {
        return None;
    }
    let change = match (b, l) {
        (None, _) => Change::Added,
        (_, None) => Change::Removed,
        _ => Change::Changed,
    };
    let carried = |action, conflict, reason: Option<&str>| Verdict {
        change,
        status: Status::Carried,
        action,
        conflict,
        reason: reason.map(str::to_string),
    };
    if eq(t, l) {
        let note = if l.is_none() {
            "the target does not have it either"
        } else {
            "the target has the same value"
        };
        return Some(carried(Action::Keep, false, Some(note)));
    }
    if eq(t, b) {
        // Field by field even here: the live value carries what the server filled in (probe
        // thresholds, `defaultMode`, ...), which the merge leaves out where the target has none.
        let action = match (b, l, t) {
            (Some(bv), Some(lv), Some(tv))
                if bv.is_object() && lv.is_object() && tv.is_object() =>
            {
                merge3(b, l, t, "").0.map_or(Action::Remove, Action::Set)
            }
            _ => l.map_or(Action::Remove, |v| Action::Set(v.clone())),
        };
        return Some(carried(action, false, None));
    }
    Some(match (b, l, t) {
        (Some(_), Some(_), None) => carried(Action::Keep, false, None)
            .dropped("the target manifest no longer has it, so it is not re-added; add it again by hand if it is still wanted"),
        (Some(bv), Some(lv), Some(tv)) if bv.is_object() && lv.is_object() && tv.is_object() => {
            let (merged, conflict) = merge3(Some(bv), Some(lv), Some(tv), "");
            let note = if conflict {
                "the target changed it too; the live value wins where both changed it"
            } else {
                "merged with the target's own changes to it"
            };
            carried(merged.map_or(Action::Remove, Action::Set), conflict, Some(note))
        }
        (Some(Value::String(bs)), Some(Value::String(ls)), Some(Value::String(ts)))
            if let Some(merged) = merge_lines(bs, ls, ts) =>
        {
            carried(
                Action::Set(Value::String(merged)),
                false,
                Some("merged line by line with the target's own changes to it"),
            )
        }
        (_, Some(lv), _) => carried(Action::Set(lv.clone()), true, Some("the target changed it too; the live value wins")),
        (_, None, _) => carried(Action::Remove, true, Some("the target changed it too; it stays removed")),
    })
}

/// A replaced range of base lines: `start..end` becomes `lines`.
type Hunk<'a> = (usize, usize, Vec<&'a str>);

/// The edits from `a` to `b` as hunks (a longest-common-subsequence diff); `None` when the texts
/// are too large to diff cheaply.
fn hunks<'a>(a: &[&'a str], b: &[&'a str]) -> Option<Vec<Hunk<'a>>> {
    const MAX_CELLS: usize = 4_000_000;
    let (n, m) = (a.len(), b.len());
    let w = m.checked_add(1)?;
    let cells = n.checked_add(1)?.checked_mul(w)?;
    if cells > MAX_CELLS {
        return None;
    }
    // lcs[i * w + j]: the length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; cells];
    let at = |lcs: &[u32], i: usize, j: usize| lcs.get(i * w + j).copied().unwrap_or(0);
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if a.get(i) == b.get(j) {
                at(&lcs, i + 1, j + 1) + 1
            } else {
                at(&lcs, i + 1, j).max(at(&lcs, i, j + 1))
            };
            if let Some(slot) = lcs.get_mut(i * w + j) {
                *slot = v;
            }
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<&'a str>)> = None;
    while i < n || j < m {
        if i < n && j < m && a.get(i) == b.get(j) {
            if let Some((start, lines)) = open.take() {
                out.push((start, i, lines));
            }
            i += 1;
            j += 1;
        } else if j < m && (i == n || at(&lcs, i, j + 1) >= at(&lcs, i + 1, j)) {
            open.get_or_insert_with(|| (i, Vec::new()))
                .1
                .extend(b.get(j).copied());
            j += 1;
        } else {
            open.get_or_insert_with(|| (i, Vec::new()));
            i += 1;
        }
    }
    if let Some((start, lines)) = open {
        out.push((start, n, lines));
    }
    Some(out)
}

/// A line-based three-way merge of multi-line text (`cni_network_config`): both sides' edits
/// when they touch different lines, as an operator merging by hand would; `None` when they
/// overlap or touch (as `git merge-file` would call a conflict).
fn merge_lines(base: &str, live: &str, target: &str) -> Option<String> {
    if !(base.contains('\n') || live.contains('\n') || target.contains('\n')) {
        return None;
    }
    let (b, l, t): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        base.split('\n').collect(),
        live.split('\n').collect(),
        target.split('\n').collect(),
    );
    let (lh, th) = (hunks(&b, &l)?, hunks(&b, &t)?);
    for x in &lh {
        for y in &th {
            if x.0 <= y.1 && y.0 <= x.1 && x != y {
                return None;
            }
        }
    }
    let mut all: Vec<&Hunk<'_>> = lh
        .iter()
        .chain(th.iter().filter(|y| !lh.contains(y)))
        .collect();
    all.sort_by_key(|h| (h.0, h.1));
    let mut out: Vec<&str> = Vec::new();
    let mut pos = 0;
    for (start, end, lines) in all {
        out.extend(b.get(pos..*start)?);
        out.extend(lines.iter().copied());
        pos = *end;
    }
    out.extend(b.get(pos..)?);
    Some(out.join("\n"))
}

/// A field-by-field three-way merge of objects; anything else is a leaf. The live value wins a
/// leaf both sides changed (reported as a conflict).
fn merge3(
    b: Option<&Value>,
    l: Option<&Value>,
    t: Option<&Value>,
    key: &str,
) -> (Option<Value>, bool) {
    if let (Some(Value::Object(bm)), Some(Value::Object(lm)), Some(Value::Object(tm))) = (b, l, t) {
        let mut out = Map::new();
        let mut conflict = false;
        let mut keys: Vec<&String> = tm.keys().collect();
        keys.extend(lm.keys().filter(|k| !tm.contains_key(*k)));
        for k in keys {
            let (v, c) = merge3(bm.get(k), lm.get(k), tm.get(k), k);
            conflict |= c;
            if let Some(v) = v {
                out.insert(k.clone(), v);
            }
        }
        return (Some(Value::Object(out)), conflict);
    }
    let eq =
        |x: Option<&Value>, y: Option<&Value>| norm_field_opt(key, x) == norm_field_opt(key, y);
    if eq(l, b) || eq(t, l) {
        (t.cloned(), false)
    } else if eq(t, b) {
        (l.cloned(), false)
    } else {
        (l.cloned(), true)
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison modulo API-server defaults

/// Field values the API server fills in when absent (`SetDefaults_*` of core/v1), by field name.
/// Only applied inside the customisation points, where these names mean what is listed here.
const DEFAULTS: &[(&str, DefaultValue)] = &[
    ("defaultMode", DefaultValue::Int(420)),
    ("apiVersion", DefaultValue::Str("v1")),
    ("expirationSeconds", DefaultValue::Int(3600)),
    ("protocol", DefaultValue::Str("TCP")),
    ("volumeMode", DefaultValue::Str("Filesystem")),
    ("iscsiInterface", DefaultValue::Str("default")),
    ("pool", DefaultValue::Str("rbd")),
    ("keyring", DefaultValue::Str("/etc/ceph/keyring")),
    ("cachingMode", DefaultValue::Str("ReadWrite")),
    ("storageMode", DefaultValue::Str("ThinProvisioned")),
    // SetDefaults_Probe and SetDefaults_HTTPGetAction.
    ("timeoutSeconds", DefaultValue::Int(1)),
    ("periodSeconds", DefaultValue::Int(10)),
    ("successThreshold", DefaultValue::Int(1)),
    ("failureThreshold", DefaultValue::Int(3)),
    ("scheme", DefaultValue::Str("HTTP")),
];

enum DefaultValue {
    Int(i64),
    Str(&'static str),
}

fn is_default(key: &str, v: &Value) -> bool {
    DEFAULTS.iter().any(|(k, d)| {
        *k == key
            && match d {
                DefaultValue::Int(i) => v.as_i64() == Some(*i),
                DefaultValue::Str(s) => v.as_str() == Some(*s),
            }
    })
}

/// Whether the server would omit it (`omitempty`): such a value equals its absence.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) => false,
    }
}

/// A value with empties and defaults dropped, integral floats as integers.
fn norm(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| norm_field(k, v).map(|n| (k.clone(), n)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn norm_field(key: &str, v: &Value) -> Option<Value> {
    let n = norm(v);
    (!is_empty(&n) && !is_default(key, &n)).then_some(n)
}

fn norm_field_opt(key: &str, v: Option<&Value>) -> Option<Value> {
    v.and_then(|v| norm_field(key, v))
}

fn eq_norm(a: Option<&Value>, b: Option<&Value>) -> bool {
    norm_field_opt("", a) == norm_field_opt("", b)
}

/// Strings as they are; numbers and booleans as the text YAML would give them.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn eq_text(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (text(x), text(y)) {
            (Some(x), Some(y)) => x == y,
            _ => norm(x) == norm(y),
        },
        _ => false,
    }
}

fn eq_quantity(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            let (Some(xs), Some(ys)) = (text(x), text(y)) else {
                return norm(x) == norm(y);
            };
            match (quantity_nanos(&xs), quantity_nanos(&ys)) {
                (Some(p), Some(q)) => p == q,
                _ => xs.trim() == ys.trim(),
            }
        }
        _ => false,
    }
}

/// A Kubernetes quantity in nano-units, rounded up to milli-units as the API server stores it
/// (`SetDefaults_ResourceList`); `None` when it does not parse or overflows.
fn quantity_nanos(s: &str) -> Option<i128> {
    let s = s.trim();
    let (sign, s) = match s.strip_prefix('-') {
        Some(rest) => (-1i128, rest),
        None => (1i128, s.strip_prefix('+').unwrap_or(s)),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(c.to_digit(10)?))?;
    }
    let (pow10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.starts_with(['e', 'E']) => (e.get(1..)?.parse::<i32>().ok()?, 0),
        _ => return None,
    };
    let frac_digits = i32::try_from(frac.len()).ok()?;
    let mut value = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
    let exp = pow10.checked_add(9)?.checked_sub(frac_digits)?;
    if exp >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?;
    } else {
        let d = 10i128.checked_pow(u32::try_from(exp.checked_neg()?).ok()?)?;
        value = value.checked_add(d - 1)? / d;
    }
    let milli = 1_000_000i128;
    let value = value.checked_add(milli - 1)? / milli * milli;
    Some(sign * value)
}

// ---------------------------------------------------------------------------------------------
// Objects

fn kind(o: &Value) -> &str {
    str_at(o, &["kind"]).unwrap_or("")
}

fn name(o: &Value) -> &str {
    str_at(o, &["metadata", "name"]).unwrap_or("")
}

fn namespace(o: &Value) -> &str {
    str_at(o, &["metadata", "namespace"]).unwrap_or("")
}

/// The object of `set` with `o`'s kind and name, and its namespace; a manifest object without a
/// namespace matches whatever namespace the cluster gave it.
fn find<'a>(set: &'a [Value], o: &Value) -> Option<&'a Value> {
    let (k, ns, n) = (kind(o), namespace(o), name(o));
    if k.is_empty() || n.is_empty() {
        return None;
    }
    let same = |x: &&Value| kind(x) == k && name(x) == n;
    set.iter()
        .filter(same)
        .find(|x| namespace(x) == ns)
        .or_else(|| {
            set.iter()
                .filter(same)
                .find(|x| namespace(x).is_empty() || ns.is_empty())
        })
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn array_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Sets a value, creating missing (or null) parents; `false` when a parent is not an object.
fn set_at(v: &mut Value, path: &[&str], new: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for k in parents {
        let Value::Object(m) = cur else { return false };
        let slot = m.entry((*k).to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        cur = slot;
    }
    match cur {
        Value::Object(m) => {
            m.insert((*last).to_string(), new);
            true
        }
        _ => false,
    }
}

fn remove_at(v: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(*k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(*last);
    }
}

/// Writes a map or list back only when it changed, so untouched points keep the target's shape.
fn write_back(v: &mut Value, path: &[&str], before: &Value, after: Value) {
    if *before == after {
        return;
    }
    if is_empty(&after) {
        remove_at(v, path);
    } else {
        set_at(v, path, after);
    }
}

fn pod_spec_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let path: &[&str] = match kind(obj) {
        "Pod" => &["spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => &["spec", "template", "spec"],
    };
    let mut cur = obj;
    for k in path {
        cur = cur.get_mut(*k)?;
    }
    cur.as_object_mut()
}

fn key_name(v: &Value) -> Option<String> {
    str_at(v, &["name"]).map(str::to_string)
}

fn key_mount_path(v: &Value) -> Option<String> {
    str_at(v, &["mountPath"]).map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Merging one object

/// Merges one object; returns the names of the containers the user added (carried as they are,
/// so the registry pass leaves their images alone).
fn merge_object(ctx: &mut Ctx<'_>, b: &Value, l: &Value, o: &mut Value) -> BTreeSet<String> {
    match kind(b) {
        "ConfigMap" => {
            merge_map_at(
                ctx,
                b,
                l,
                o,
                &["data"],
                &MapPolicy {
                    what: &|k| format!("data {k}"),
                    eq: &eq_text,
                    ignore: &|_| false,
                    removal_guard: Some(
                        "the target still has this key and its workloads may read it, so it is kept",
                    ),
                },
            );
            BTreeSet::new()
        }
        "ServiceAccount" => {
            merge_list_at(ctx, b, l, o, &["imagePullSecrets"], &|k| {
                format!("imagePullSecret {k}")
            });
            BTreeSet::new()
        }
        k if WORKLOAD_KINDS.contains(&k) => merge_workload(ctx, b, l, o),
        _ => BTreeSet::new(),
    }
}

fn merge_workload(ctx: &mut Ctx<'_>, b: &Value, l: &Value, o: &mut Value) -> BTreeSet<String> {
    let k = kind(b);
    if k != "DaemonSet" {
        merge_scalar(
            ctx,
            "replicas",
            b,
            l,
            o,
            &["spec", "replicas"],
            Some(Value::from(1)),
        );
    }
    if k == "DaemonSet" {
        merge_update_strategy(ctx, b, l, o);
    }

    merge_map_at(
        ctx,
        b,
        l,
        o,
        &["spec", "template", "metadata", "labels"],
        &MapPolicy {
            what: &|k| format!("pod template label {k}"),
            eq: &eq_text,
            ignore: &|_| false,
            removal_guard: None,
        },
    );
    merge_map_at(
        ctx,
        b,
        l,
        o,
        &["spec", "template", "metadata", "annotations"],
        &MapPolicy {
            what: &|k| format!("pod template annotation {k}"),
            eq: &eq_text,
            ignore: &|k| IGNORED_TEMPLATE_ANNOTATIONS.contains(&k),
            removal_guard: None,
        },
    );
    merge_map_at(
        ctx,
        b,
        l,
        o,
        &["spec", "template", "spec", "nodeSelector"],
        &MapPolicy {
            what: &|k| format!("nodeSelector {k}"),
            eq: &eq_text,
            ignore: &|_| false,
            removal_guard: None,
        },
    );
    merge_tolerations(ctx, b, l, o);
    merge_list_at(
        ctx,
        b,
        l,
        o,
        &["spec", "template", "spec", "imagePullSecrets"],
        &|k| format!("imagePullSecret {k}"),
    );
    merge_scalar(
        ctx,
        "affinity",
        b,
        l,
        o,
        &["spec", "template", "spec", "affinity"],
        None,
    );
    merge_scalar(
        ctx,
        "priorityClassName",
        b,
        l,
        o,
        &["spec", "template", "spec", "priorityClassName"],
        None,
    );

    let mut added = Vec::new();
    let mut carried_mounts = Vec::new();
    for (list, label) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        merge_containers(ctx, b, l, o, list, label, &mut added, &mut carried_mounts);
    }
    merge_volumes(ctx, b, l, o);
    check_mounts(ctx, o, &carried_mounts, &added);
    let kept = |n: &String| containers_of(o).any(|(_, c)| str_at(c, &["name"]) == Some(n.as_str()));
    added.into_iter().map(|(n, _)| n).filter(kept).collect()
}

/// A customisation at one value (scalar or object) of the workload.
fn merge_scalar(
    ctx: &mut Ctx<'_>,
    what: &str,
    b: &Value,
    l: &Value,
    o: &mut Value,
    path: &[&str],
    default: Option<Value>,
) {
    let with_default = |v: Option<&Value>| {
        v.filter(|v| !v.is_null())
            .cloned()
            .or_else(|| default.clone())
    };
    let (bv, lv, tv) = (
        with_default(get(b, path)),
        with_default(get(l, path)),
        with_default(get(o, path)),
    );
    let seen = Seen {
        base: bv.as_ref(),
        live: lv.as_ref(),
        target: tv.as_ref(),
    };
    let Some(v) = three_way(seen, &eq_norm) else {
        return;
    };
    let applied = apply_action(o, path, &v.action, tv.as_ref());
    ctx.record(what, &v, seen, applied.as_ref());
}

fn apply_action(
    o: &mut Value,
    path: &[&str],
    action: &Action,
    target: Option<&Value>,
) -> Option<Value> {
    match action {
        Action::Keep => target.cloned(),
        Action::Set(v) => {
            set_at(o, path, v.clone());
            Some(v.clone())
        }
        Action::Remove => {
            remove_at(o, path);
            None
        }
    }
}

fn merge_update_strategy(ctx: &mut Ctx<'_>, b: &Value, l: &Value, o: &mut Value) {
    let ty = |v: &Value| {
        str_at(v, &["spec", "updateStrategy", "type"])
            .unwrap_or("RollingUpdate")
            .to_string()
    };
    let (bt, lt, tt) = (ty(b), ty(l), ty(o));
    if lt != bt {
        let seen_vals = (
            Value::String(bt.clone()),
            Value::String(lt.clone()),
            Value::String(tt.clone()),
        );
        let seen = Seen {
            base: Some(&seen_vals.0),
            live: Some(&seen_vals.1),
            target: Some(&seen_vals.2),
        };
        let carried = Verdict {
            change: Change::Changed,
            status: Status::Carried,
            action: Action::Keep,
            conflict: false,
            reason: None,
        };
        if lt == "OnDelete" {
            let v = carried.dropped(
                "with OnDelete the new version would not roll out until every pod is deleted by hand, and the upgrade waits for the rollout; the target's strategy is applied (set OnDelete again afterwards if wanted)",
            );
            ctx.record("updateStrategy type", &v, seen, Some(&seen_vals.2));
        } else {
            set_at(o, &["spec", "updateStrategy", "type"], seen_vals.1.clone());
            ctx.record("updateStrategy type", &carried, seen, Some(&seen_vals.1));
        }
    }
    if ty(o) == "RollingUpdate" && lt == "RollingUpdate" {
        let path = &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"];
        merge_scalar(
            ctx,
            "updateStrategy rollingUpdate.maxUnavailable",
            b,
            l,
            o,
            path,
            Some(Value::from(1)),
        );
    }
}

/// How [`merge_map`] treats one map.
struct MapPolicy<'a> {
    what: &'a dyn Fn(&str) -> String,
    eq: &'a Eq3,
    ignore: &'a dyn Fn(&str) -> bool,
    /// When set, a key the user removed but the target has is kept, dropped with this reason.
    removal_guard: Option<&'a str>,
}

fn merge_map_at(
    ctx: &mut Ctx<'_>,
    b: &Value,
    l: &Value,
    o: &mut Value,
    path: &[&str],
    p: &MapPolicy<'_>,
) {
    let empty = Map::new();
    let bm = get(b, path).and_then(Value::as_object).unwrap_or(&empty);
    let lm = get(l, path).and_then(Value::as_object).unwrap_or(&empty);
    let before = get(o, path).cloned().unwrap_or(Value::Null);
    let mut tm = before.as_object().cloned().unwrap_or_default();
    merge_map(ctx, bm, lm, &mut tm, p);
    write_back(o, path, &before, Value::Object(tm));
}

fn merge_map(
    ctx: &mut Ctx<'_>,
    bm: &Map<String, Value>,
    lm: &Map<String, Value>,
    tm: &mut Map<String, Value>,
    p: &MapPolicy<'_>,
) {
    let mut keys: Vec<&String> = lm.keys().collect();
    keys.extend(bm.keys().filter(|k| !lm.contains_key(*k)));
    for k in keys {
        if (p.ignore)(k) {
            continue;
        }
        let t = tm.get(k).cloned();
        let seen = Seen {
            base: bm.get(k),
            live: lm.get(k),
            target: t.as_ref(),
        };
        let Some(mut v) = three_way(seen, p.eq) else {
            continue;
        };
        if let (Action::Remove, Some(why), Some(_)) = (&v.action, p.removal_guard, &t) {
            v = v.dropped(why);
        }
        let applied = match &v.action {
            Action::Keep => t.clone(),
            Action::Set(x) => {
                tm.insert(k.clone(), x.clone());
                Some(x.clone())
            }
            Action::Remove => {
                tm.shift_remove(k);
                None
            }
        };
        ctx.record(&(p.what)(k), &v, seen, applied.as_ref());
    }
}

/// How [`merge_list`] treats one list of named entries.
struct ListPolicy<'a> {
    key: fn(&Value) -> Option<String>,
    what: &'a dyn Fn(&str) -> String,
    /// A reason to keep an entry the user removed, or `None` to remove it.
    removal_guard: &'a dyn Fn(&str) -> Option<String>,
}

/// Merges a list keyed by a field; returns the key and report index of every entry it put in.
fn merge_list(
    ctx: &mut Ctx<'_>,
    base: &[Value],
    live: &[Value],
    target: &mut Vec<Value>,
    p: &ListPolicy<'_>,
) -> Vec<(String, usize)> {
    let find_in = |list: &[Value], k: &str| {
        list.iter()
            .find(|v| (p.key)(v).as_deref() == Some(k))
            .cloned()
    };
    // Kubernetes tolerates duplicate names (in env, the last one wins); each is looked at once.
    let mut keys: Vec<String> = Vec::new();
    for k in live.iter().chain(base).filter_map(p.key) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut put = Vec::new();
    for k in keys {
        let (b, l) = (find_in(base, &k), find_in(live, &k));
        let ti = target
            .iter()
            .position(|v| (p.key)(v).as_deref() == Some(k.as_str()));
        let t = ti.and_then(|i| target.get(i)).cloned();
        let seen = Seen {
            base: b.as_ref(),
            live: l.as_ref(),
            target: t.as_ref(),
        };
        let Some(mut v) = three_way(seen, &eq_norm) else {
            continue;
        };
        if v.action == Action::Remove
            && let Some(why) = (p.removal_guard)(&k)
        {
            v = v.dropped(why);
        }
        let applied = match (&v.action, ti) {
            (Action::Keep, _) => t.clone(),
            (Action::Set(x), Some(i)) => {
                if let Some(slot) = target.get_mut(i) {
                    *slot = x.clone();
                }
                Some(x.clone())
            }
            (Action::Set(x), None) => {
                insert_near(target, live, &k, x.clone(), p.key);
                Some(x.clone())
            }
            (Action::Remove, Some(i)) => {
                target.remove(i);
                None
            }
            (Action::Remove, None) => None,
        };
        let idx = ctx.record(&(p.what)(&k), &v, seen, applied.as_ref());
        if matches!(v.action, Action::Set(_)) {
            put.push((k, idx));
        }
    }
    put
}

/// [`merge_list`] on a list of entries keyed by `name` at `path`.
fn merge_list_at(
    ctx: &mut Ctx<'_>,
    b: &Value,
    l: &Value,
    o: &mut Value,
    path: &[&str],
    what: &dyn Fn(&str) -> String,
) {
    let before = get(o, path).cloned().unwrap_or(Value::Null);
    let mut list = before.as_array().cloned().unwrap_or_default();
    merge_list(
        ctx,
        array_at(b, path),
        array_at(l, path),
        &mut list,
        &ListPolicy {
            key: key_name,
            what,
            removal_guard: &|_| None,
        },
    );
    write_back(o, path, &before, Value::Array(list));
}

/// Inserts an entry the user added where it sits in the live list: after the nearest earlier
/// live entry the target has (order matters for `$(VAR)` references in env and for init
/// containers), else before the nearest later one, else at the end.
fn insert_near(
    target: &mut Vec<Value>,
    live: &[Value],
    k: &str,
    value: Value,
    key: fn(&Value) -> Option<String>,
) {
    let pos_in = |list: &[Value], k: &str| list.iter().position(|v| key(v).as_deref() == Some(k));
    let Some(at) = pos_in(live, k) else {
        target.push(value);
        return;
    };
    let before = live.get(..at).unwrap_or(&[]);
    if let Some(i) = before
        .iter()
        .rev()
        .filter_map(key)
        .find_map(|n| pos_in(target, &n))
    {
        target.insert(i + 1, value);
        return;
    }
    let after = live.get(at + 1..).unwrap_or(&[]);
    if let Some(i) = after
        .iter()
        .filter_map(key)
        .find_map(|n| pos_in(target, &n))
    {
        target.insert(i, value);
        return;
    }
    target.push(value);
}

fn describe_toleration(v: &Value) -> String {
    let parts: Vec<String> = ["key", "operator", "value", "effect", "tolerationSeconds"]
        .iter()
        .filter_map(|f| {
            v.get(*f)
                .and_then(text)
                .filter(|s| !s.is_empty())
                .map(|s| format!("{f}={s}"))
        })
        .collect();
    if parts.is_empty() {
        "(tolerate everything)".into()
    } else {
        parts.join(" ")
    }
}

/// Tolerations have no key: they are compared as a set of values.
fn merge_tolerations(ctx: &mut Ctx<'_>, b: &Value, l: &Value, o: &mut Value) {
    let path = &["spec", "template", "spec", "tolerations"];
    let (bl, ll) = (array_at(b, path), array_at(l, path));
    let before = get(o, path).cloned().unwrap_or(Value::Null);
    let mut tl: Vec<Value> = before.as_array().cloned().unwrap_or_default();
    let has = |list: &[Value], x: &Value| list.iter().any(|y| norm(y) == norm(x));
    for x in ll.iter().filter(|x| !has(bl, x)) {
        let note = has(&tl, x).then_some("the target has it too".to_string());
        if note.is_none() {
            tl.push(x.clone());
        }
        let v = Verdict {
            change: Change::Added,
            status: Status::Carried,
            action: Action::Keep,
            conflict: false,
            reason: note,
        };
        ctx.record(
            &format!("toleration {}", describe_toleration(x)),
            &v,
            Seen {
                base: None,
                live: Some(x),
                target: None,
            },
            Some(x),
        );
    }
    for x in bl.iter().filter(|x| !has(ll, x)) {
        let present = has(&tl, x);
        tl.retain(|y| norm(y) != norm(x));
        let note = (!present).then_some("the target does not have it either".to_string());
        let v = Verdict {
            change: Change::Removed,
            status: Status::Carried,
            action: Action::Keep,
            conflict: false,
            reason: note,
        };
        let target = present.then_some(x);
        ctx.record(
            &format!("toleration {}", describe_toleration(x)),
            &v,
            Seen {
                base: Some(x),
                live: None,
                target,
            },
            None,
        );
    }
    write_back(o, path, &before, Value::Array(tl));
}

#[allow(clippy::too_many_arguments)]
fn merge_containers(
    ctx: &mut Ctx<'_>,
    b: &Value,
    l: &Value,
    o: &mut Value,
    list: &str,
    label: &str,
    added: &mut Vec<(String, usize)>,
    carried_mounts: &mut Vec<(String, String, usize)>,
) {
    let path = &["spec", "template", "spec", list];
    let (bl, ll) = (array_at(b, path), array_at(l, path));
    let before = get(o, path).cloned().unwrap_or(Value::Null);
    let mut tl: Vec<Value> = before.as_array().cloned().unwrap_or_default();

    let mut names: Vec<String> = Vec::new();
    for n in ll.iter().chain(bl).filter_map(key_name) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for n in names {
        let what = format!("{label} {n}");
        let (bc, lc) = (named(bl, &n), named(ll, &n));
        let ti = tl
            .iter()
            .position(|c| str_at(c, &["name"]) == Some(n.as_str()));
        match (bc, lc, ti) {
            (Some(bc), Some(lc), Some(i)) => {
                if let Some(tc) = tl.get_mut(i) {
                    let mounts = merge_container(ctx, &what, bc, lc, tc);
                    carried_mounts.extend(mounts.into_iter().map(|(m, idx)| (n.clone(), m, idx)));
                }
            }
            (Some(bc), Some(lc), None) => {
                // Upstream removed the container: collect what the user customised in it, to say
                // it was dropped.
                let mut scratch = bc.clone();
                let mut found = Vec::new();
                let mut sub = Ctx {
                    object: ctx.object.clone(),
                    display: ctx.display.clone(),
                    out: &mut found,
                };
                merge_container(&mut sub, &what, bc, lc, &mut scratch);
                for mut c in found {
                    c.upstream = Value::Null;
                    drop_entry(&mut c, &format!("{what} is not in the target manifest"));
                    ctx.push(c);
                }
            }
            (Some(bc), None, Some(i)) => {
                let t = tl.get(i).cloned();
                let seen = Seen {
                    base: Some(bc),
                    live: None,
                    target: t.as_ref(),
                };
                let mut v = Verdict {
                    change: Change::Removed,
                    status: Status::Carried,
                    action: Action::Remove,
                    conflict: false,
                    reason: None,
                };
                if list == "containers" && tl.len() == 1 {
                    v = v.dropped("it is the workload's only container in the target");
                    ctx.record(&what, &v, seen, t.as_ref());
                } else {
                    tl.remove(i);
                    ctx.record(&what, &v, seen, None);
                }
            }
            (Some(_), None, None) => {}
            (None, Some(lc), None) => {
                insert_near(&mut tl, ll, &n, lc.clone(), key_name);
                let v = Verdict {
                    change: Change::Added,
                    status: Status::Carried,
                    action: Action::Keep,
                    conflict: false,
                    reason: None,
                };
                let idx = ctx.record(
                    &what,
                    &v,
                    Seen {
                        base: None,
                        live: Some(lc),
                        target: None,
                    },
                    Some(lc),
                );
                added.push((n.clone(), idx));
            }
            (None, Some(lc), Some(i)) => {
                let t = tl.get(i).cloned();
                let v = Verdict {
                    change: Change::Added,
                    status: Status::Carried,
                    action: Action::Keep,
                    conflict: false,
                    reason: None,
                }
                .dropped("the target adds its own container of that name");
                ctx.record(
                    &what,
                    &v,
                    Seen {
                        base: None,
                        live: Some(lc),
                        target: t.as_ref(),
                    },
                    t.as_ref(),
                );
            }
            (None, None, _) => {}
        }
    }
    write_back(o, path, &before, Value::Array(tl));
}

/// Merges the points inside one container; returns the mount paths of the volumeMounts it put
/// in, with their report index.
fn merge_container(
    ctx: &mut Ctx<'_>,
    what: &str,
    bc: &Value,
    lc: &Value,
    tc: &mut Value,
) -> Vec<(String, usize)> {
    let before = get(tc, &["env"]).cloned().unwrap_or(Value::Null);
    let mut env = before.as_array().cloned().unwrap_or_default();
    merge_list(
        ctx,
        array_at(bc, &["env"]),
        array_at(lc, &["env"]),
        &mut env,
        &ListPolicy {
            key: key_name,
            what: &|k| format!("env {k} of {what}"),
            removal_guard: &|_| None,
        },
    );
    write_back(tc, &["env"], &before, Value::Array(env));

    let resources_before = get(tc, &["resources"]).cloned();
    for section in ["requests", "limits"] {
        merge_map_at(
            ctx,
            bc,
            lc,
            tc,
            &["resources", section],
            &MapPolicy {
                what: &|k| format!("resources {section}.{k} of {what}"),
                eq: &eq_quantity,
                ignore: &|_| false,
                removal_guard: None,
            },
        );
    }
    // Removing the last quantity would leave a `resources: {}` the target did not have.
    let resources_after = get(tc, &["resources"]);
    if resources_after != resources_before.as_ref() && resources_after.is_some_and(is_empty) {
        remove_at(tc, &["resources"]);
    }

    // Calico's own instructions for VXLAN-only clusters remove `-bird-live`/`-bird-ready` from
    // calico-node's probes; losing that edit leaves calico-node unready after the upgrade.
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        merge_scalar(
            ctx,
            &format!("{probe} of {what}"),
            bc,
            lc,
            tc,
            &[probe],
            None,
        );
    }

    let before = get(tc, &["volumeMounts"]).cloned().unwrap_or(Value::Null);
    let mut mounts = before.as_array().cloned().unwrap_or_default();
    let put = merge_list(
        ctx,
        array_at(bc, &["volumeMounts"]),
        array_at(lc, &["volumeMounts"]),
        &mut mounts,
        &ListPolicy {
            key: key_mount_path,
            what: &|k| format!("volumeMount {k} of {what}"),
            removal_guard: &|_| None,
        },
    );
    write_back(tc, &["volumeMounts"], &before, Value::Array(mounts));
    put
}

fn named<'a>(list: &'a [Value], n: &str) -> Option<&'a Value> {
    list.iter().find(|c| str_at(c, &["name"]) == Some(n))
}

fn mounted_volumes(o: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for list in ["initContainers", "containers"] {
        for c in array_at(o, &["spec", "template", "spec", list]) {
            let cname = str_at(c, &["name"]).unwrap_or("");
            for m in array_at(c, &["volumeMounts"]) {
                if let Some(v) = str_at(m, &["name"]) {
                    out.entry(v.to_string())
                        .or_insert_with(|| cname.to_string());
                }
            }
        }
    }
    out
}

fn merge_volumes(ctx: &mut Ctx<'_>, b: &Value, l: &Value, o: &mut Value) {
    let path = &["spec", "template", "spec", "volumes"];
    let mounted = mounted_volumes(o);
    let before = get(o, path).cloned().unwrap_or(Value::Null);
    let mut vols = before.as_array().cloned().unwrap_or_default();
    merge_list(
        ctx,
        array_at(b, path),
        array_at(l, path),
        &mut vols,
        &ListPolicy {
            key: key_name,
            what: &|k| format!("volume {k}"),
            removal_guard: &|k| {
                mounted
                    .get(k)
                    .map(|c| format!("container {c} of the target still mounts it, so it is kept"))
            },
        },
    );
    write_back(o, path, &before, Value::Array(vols));
}

/// A carried volumeMount whose volume is not in the result would make the object invalid: take
/// it out again and say so.
/// A container the user added that mounts a volume not in the result is taken out too.
fn check_mounts(
    ctx: &mut Ctx<'_>,
    o: &mut Value,
    carried: &[(String, String, usize)],
    added: &[(String, usize)],
) {
    let vols: BTreeSet<String> = array_at(o, &["spec", "template", "spec", "volumes"])
        .iter()
        .filter_map(key_name)
        .collect();
    for (container, mount_path, idx) in carried {
        for list in ["initContainers", "containers"] {
            let Some(Value::Array(cs)) = o.pointer_mut(&format!("/spec/template/spec/{list}"))
            else {
                continue;
            };
            let Some(c) = cs
                .iter_mut()
                .find(|c| str_at(c, &["name"]) == Some(container.as_str()))
            else {
                continue;
            };
            let Some(Value::Array(ms)) = c.get_mut("volumeMounts") else {
                continue;
            };
            let Some(i) = ms
                .iter()
                .position(|m| str_at(m, &["mountPath"]) == Some(mount_path.as_str()))
            else {
                continue;
            };
            let vol = ms
                .get(i)
                .and_then(|m| str_at(m, &["name"]))
                .unwrap_or("")
                .to_string();
            if !vols.contains(&vol) {
                ms.remove(i);
                ctx.demote(*idx, format!("its volume {vol} is not in the target"));
            }
        }
    }
    for (container, idx) in added {
        for list in ["initContainers", "containers"] {
            let Some(Value::Array(cs)) = o.pointer_mut(&format!("/spec/template/spec/{list}"))
            else {
                continue;
            };
            let Some(i) = cs
                .iter()
                .position(|c| str_at(c, &["name"]) == Some(container.as_str()))
            else {
                continue;
            };
            let missing = cs
                .get(i)
                .map(|c| array_at(c, &["volumeMounts"]))
                .unwrap_or(&[])
                .iter()
                .filter_map(key_name)
                .find(|v| !vols.contains(v));
            if let Some(vol) = missing {
                cs.remove(i);
                ctx.demote(
                    *idx,
                    format!("it mounts volume {vol}, which is not in the target"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images and registries

/// An image reference split as `[host/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    host: Option<String>,
    path: String,
    /// `:tag`, `@digest` or both, with their separators.
    suffix: String,
}

impl ImageRef {
    fn parse(image: &str) -> ImageRef {
        let image = image.trim();
        let (name_tag, digest) = match image.split_once('@') {
            Some((n, d)) => (n, format!("@{d}")),
            None => (image, String::new()),
        };
        let slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(c) if slash.is_none_or(|s| c > s) => name_tag.split_at(c),
            _ => (name_tag, ""),
        };
        let (host, path) = match name.split_once('/') {
            Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => {
                (Some(h.to_string()), p.to_string())
            }
            _ => (None, name.to_string()),
        };
        ImageRef {
            host,
            path,
            suffix: format!("{tag}{digest}"),
        }
    }

    /// Registry host and path, with Docker Hub spelled one way.
    fn canonical(&self) -> String {
        let host = match self.host.as_deref() {
            None | Some("index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com") => {
                "docker.io"
            }
            Some(h) => h,
        };
        if host == "docker.io" && !self.path.contains('/') {
            format!("docker.io/library/{}", self.path)
        } else {
            format!("{host}/{}", self.path)
        }
    }

    /// The path as keyed for registry detection (Docker Hub's `library/` made explicit).
    fn path_key(&self) -> String {
        let c = self.canonical();
        let host_len = c.find('/').map_or(0, |i| i + 1);
        c.get(host_len..).unwrap_or(&self.path).to_string()
    }
}

/// How a live image relates to base's for the same container.
#[derive(Debug, PartialEq, Eq)]
enum ImageRelation {
    /// Same registry and image path.
    Same,
    /// The same image path under another registry (host and optional path prefix).
    Registry(String),
    /// Another image altogether.
    Replaced,
}

fn relate(base: &ImageRef, live: &ImageRef) -> ImageRelation {
    let (bc, lc) = (base.canonical(), live.canonical());
    if bc == lc {
        return ImageRelation::Same;
    }
    for p in [base.path_key(), base.path.clone()] {
        if let Some(prefix) = lc.strip_suffix(&p).and_then(|s| s.strip_suffix('/'))
            && !prefix.is_empty()
        {
            return ImageRelation::Registry(prefix.to_string());
        }
    }
    ImageRelation::Replaced
}

/// The registries the live images were moved to, by image path.
#[derive(Debug, Default)]
struct Registry {
    moved: BTreeMap<String, String>,
    kept: BTreeSet<String>,
}

fn containers_of(o: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    [
        ("init container", "initContainers"),
        ("container", "containers"),
    ]
    .into_iter()
    .flat_map(move |(label, list)| {
        array_at(o, &["spec", "template", "spec", list])
            .iter()
            .map(move |c| (label, c))
    })
}

fn image_of<'a>(o: &'a Value, label: &str, container: &str) -> Option<&'a str> {
    containers_of(o)
        .find(|(l, c)| *l == label && str_at(c, &["name"]) == Some(container))
        .and_then(|(_, c)| str_at(c, &["image"]))
}

impl Registry {
    fn detect(base: &[Value], live: &[Value]) -> Registry {
        let mut r = Registry::default();
        for b in base.iter().filter(|b| WORKLOAD_KINDS.contains(&kind(b))) {
            let Some(l) = find(live, b) else { continue };
            for (label, bc) in containers_of(b) {
                let (Some(n), Some(bi)) = (str_at(bc, &["name"]), str_at(bc, &["image"])) else {
                    continue;
                };
                let Some(li) = image_of(l, label, n) else {
                    continue;
                };
                let (bi, li) = (ImageRef::parse(bi), ImageRef::parse(li));
                match relate(&bi, &li) {
                    ImageRelation::Same => {
                        r.kept.insert(bi.path_key());
                    }
                    ImageRelation::Registry(prefix) => {
                        r.moved.entry(bi.path_key()).or_insert(prefix);
                    }
                    ImageRelation::Replaced => {}
                }
            }
        }
        r
    }

    /// The registry every moved image went to, when there is exactly one and no image stayed:
    /// images new in the target go there too (a mirror holds the whole release).
    fn common(&self) -> Option<&str> {
        let mut all = self.moved.values();
        let first = all.next()?;
        (self.kept.is_empty() && all.all(|p| p == first)).then_some(first.as_str())
    }

    /// Moves the target's images, reports each move, and reports live images whose tag or
    /// digest (or whole name) differs from base's, which are not carried.
    fn apply(
        &self,
        ctx: &mut Ctx<'_>,
        b: Option<&Value>,
        l: Option<&Value>,
        o: &mut Value,
        user_added: &BTreeSet<String>,
    ) {
        if !WORKLOAD_KINDS.contains(&kind(o)) {
            return;
        }
        let containers: Vec<(&'static str, String)> = containers_of(o)
            .filter_map(|(label, c)| str_at(c, &["name"]).map(|n| (label, n.to_string())))
            .collect();
        for (label, n) in containers {
            if user_added.contains(&n) {
                continue;
            }
            let what = format!("image of {label} {n}");
            let bi = b.and_then(|b| image_of(b, label, &n)).map(str::to_string);
            let li = l.and_then(|l| image_of(l, label, &n)).map(str::to_string);
            let Some(ti) = image_of(o, label, &n).map(str::to_string) else {
                continue;
            };
            let t = ImageRef::parse(&ti);

            if let (Some(bs), Some(ls)) = (&bi, &li) {
                let (bp, lp) = (ImageRef::parse(bs), ImageRef::parse(ls));
                let rel = relate(&bp, &lp);
                let seen_vals = (
                    Value::String(bs.clone()),
                    Value::String(ls.clone()),
                    Value::String(ti.clone()),
                );
                let seen = Seen {
                    base: Some(&seen_vals.0),
                    live: Some(&seen_vals.1),
                    target: Some(&seen_vals.2),
                };
                let changed = Verdict {
                    change: Change::Changed,
                    status: Status::Carried,
                    action: Action::Keep,
                    conflict: false,
                    reason: None,
                };
                if rel == ImageRelation::Replaced {
                    let v = changed.dropped("the live image is not upstream's (another name); the target's image is applied");
                    ctx.record(&what, &v, seen, Some(&seen_vals.2));
                    continue;
                }
                if bp.suffix != lp.suffix {
                    let v = changed.dropped("the image tag or digest was changed; the version comes from the target release");
                    ctx.record(&what, &v, seen, Some(&seen_vals.2));
                }
            }

            let prefix = self
                .moved
                .get(&t.path_key())
                .map(String::as_str)
                .or_else(|| {
                    if self.kept.contains(&t.path_key()) {
                        None
                    } else {
                        self.common()
                    }
                });
            let Some(prefix) = prefix else { continue };
            let moved = format!("{prefix}/{}{}", t.path, t.suffix);
            if ImageRef::parse(&moved).canonical() == t.canonical() && moved.ends_with(&t.suffix) {
                continue;
            }
            set_image(o, label, &n, &moved);
            let v = Verdict {
                change: Change::Registry,
                status: Status::Carried,
                action: Action::Keep,
                conflict: false,
                reason: Some(format!("images are pulled from {prefix}")),
            };
            let vals = (
                bi.map(Value::String),
                li.map(Value::String),
                Value::String(ti),
                Value::String(moved),
            );
            let what = format!("image registry of {label} {n}");
            ctx.record(
                &what,
                &v,
                Seen {
                    base: vals.0.as_ref(),
                    live: vals.1.as_ref(),
                    target: Some(&vals.2),
                },
                Some(&vals.3),
            );
        }
    }
}

fn set_image(o: &mut Value, label: &str, container: &str, image: &str) {
    let list = if label == "init container" {
        "initContainers"
    } else {
        "containers"
    };
    let Some(Value::Array(cs)) = o.pointer_mut(&format!("/spec/template/spec/{list}")) else {
        return;
    };
    if let Some(c) = cs
        .iter_mut()
        .find(|c| str_at(c, &["name"]) == Some(container))
    {
        set_at(c, &["image"], Value::String(image.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- a small hand-written manifest, in the shape of calico.yaml (not a copy of it) ---------

    fn image(path: &str, version: &str) -> String {
        format!("docker.io/calico/{path}:{version}")
    }

    fn upstream(version: &str) -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "calico-node", "namespace": "kube-system"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "calico-config", "namespace": "kube-system"},
                "data": {"typha_service_name": "none", "calico_backend": "bird", "veth_mtu": "0",
                         "cni_network_config": "{\n  \"name\": \"k8s-pod-network\",\n  \"plugins\": [{\"type\": \"calico\", \"mtu\": __CNI_MTU__}]\n}"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "calico-node"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            json!({"kind": "DaemonSet", "apiVersion": "apps/v1",
            "metadata": {"name": "calico-node", "namespace": "kube-system", "labels": {"k8s-app": "calico-node"}},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "calico-node"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "calico-node"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "hostNetwork": true,
                        "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}, {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                        "serviceAccountName": "calico-node",
                        "terminationGracePeriodSeconds": 0,
                        "priorityClassName": "system-node-critical",
                        "initContainers": [
                            {"name": "upgrade-ipam", "image": image("cni", version), "command": ["/opt/cni/bin/calico-ipam", "-upgrade"],
                             "volumeMounts": [{"mountPath": "/var/lib/cni/networks", "name": "host-local-net-dir"}],
                             "securityContext": {"privileged": true}},
                            {"name": "install-cni", "image": image("cni", version), "imagePullPolicy": "IfNotPresent",
                             "env": [{"name": "CNI_CONF_NAME", "value": "10-calico.conflist"},
                                     {"name": "CNI_MTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                                     {"name": "SLEEP", "value": "false"}],
                             "volumeMounts": [{"mountPath": "/host/etc/cni/net.d", "name": "cni-net-dir"}],
                             "securityContext": {"privileged": true}},
                            {"name": "mount-bpffs", "image": image("node", version), "command": ["calico-node", "-init"],
                             "env": [{"name": "LOG_LEVEL", "value": "info"}],
                             "volumeMounts": [{"mountPath": "/sys/fs", "name": "sys-fs", "mountPropagation": "Bidirectional"}],
                             "securityContext": {"privileged": true}}
                        ],
                        "containers": [{
                            "name": "calico-node", "image": image("node", version), "imagePullPolicy": "IfNotPresent",
                            "env": [
                                {"name": "DATASTORE_TYPE", "value": "kubernetes"},
                                {"name": "NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                {"name": "CALICO_IPV4POOL_IPIP", "value": "Always"},
                                {"name": "CALICO_IPV4POOL_VXLAN", "value": "Never"},
                                {"name": "FELIX_IPINIPMTU", "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}},
                                {"name": "FELIX_HEALTHENABLED", "value": "true"}
                            ],
                            "securityContext": {"privileged": true},
                            "resources": {"requests": {"cpu": "250m"}},
                            "livenessProbe": {"exec": {"command": ["/bin/calico-node", "-felix-live", "-bird-live"]}, "periodSeconds": 10, "timeoutSeconds": 10},
                            "volumeMounts": [
                                {"mountPath": "/host/etc/cni/net.d", "name": "cni-net-dir", "readOnly": false},
                                {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": true},
                                {"mountPath": "/var/run/calico", "name": "var-run-calico", "readOnly": false}
                            ]
                        }],
                        "volumes": [
                            {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                            {"name": "var-run-calico", "hostPath": {"path": "/var/run/calico"}},
                            {"name": "sys-fs", "hostPath": {"path": "/sys/fs/", "type": "DirectoryOrCreate"}},
                            {"name": "cni-net-dir", "hostPath": {"path": "/etc/cni/net.d"}},
                            {"name": "host-local-net-dir", "hostPath": {"path": "/var/lib/cni/networks"}}
                        ]
                    }
                }
            }}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "calico-kube-controllers", "namespace": "kube-system", "labels": {"k8s-app": "calico-kube-controllers"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}}, "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"name": "calico-kube-controllers", "namespace": "kube-system", "labels": {"k8s-app": "calico-kube-controllers"}},
                        "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                            "serviceAccountName": "calico-kube-controllers", "priorityClassName": "system-cluster-critical",
                            "containers": [{"name": "calico-kube-controllers", "image": image("kube-controllers", version),
                                "env": [{"name": "ENABLED_CONTROLLERS", "value": "node"}, {"name": "DATASTORE_TYPE", "value": "kubernetes"}],
                                "readinessProbe": {"exec": {"command": ["/usr/bin/check-status", "-r"]}, "periodSeconds": 10}}]}}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "calico-typha", "namespace": "kube-system", "labels": {"k8s-app": "calico-typha"}},
                "spec": {"replicas": 1, "revisionHistoryLimit": 2, "selector": {"matchLabels": {"k8s-app": "calico-typha"}},
                    "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 1}},
                    "template": {"metadata": {"labels": {"k8s-app": "calico-typha"}, "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}},
                        "spec": {"hostNetwork": true, "serviceAccountName": "calico-node",
                            "containers": [{"name": "calico-typha", "image": image("typha", version),
                                "ports": [{"containerPort": 5473, "name": "calico-typha"}],
                                "env": [{"name": "TYPHA_LOGSEVERITYSCREEN", "value": "info"}]}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "calico-typha", "namespace": "kube-system", "labels": {"k8s-app": "calico-typha"}},
                "spec": {"ports": [{"port": 5473, "name": "calico-typha", "targetPort": "calico-typha"}], "selector": {"k8s-app": "calico-typha"}}}),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "calico-typha", "namespace": "kube-system"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"k8s-app": "calico-typha"}}}}),
        ]
    }

    const OLD: &str = "v3.25.2";
    const NEW: &str = "v3.28.5";

    // --- what an API server does to an applied object -----------------------------------------

    fn default_in(m: &mut Value, key: &str, v: Value) {
        if let Value::Object(map) = m
            && !map.contains_key(key)
        {
            map.insert(key.to_string(), v);
        }
    }

    fn default_container(c: &mut Value) {
        default_in(c, "imagePullPolicy", json!("IfNotPresent"));
        default_in(c, "terminationMessagePath", json!("/dev/termination-log"));
        default_in(c, "terminationMessagePolicy", json!("File"));
        default_in(c, "resources", json!({}));
        if let Some(Value::Array(env)) = c.get_mut("env") {
            for e in env {
                if let Some(f) = e.pointer_mut("/valueFrom/fieldRef") {
                    default_in(f, "apiVersion", json!("v1"));
                }
                // `value: ""` is omitted on the way out.
                if e.get("value") == Some(&json!("")) {
                    e.as_object_mut().unwrap().remove("value");
                }
            }
        }
        if let Some(Value::Array(ports)) = c.get_mut("ports") {
            ports
                .iter_mut()
                .for_each(|p| default_in(p, "protocol", json!("TCP")));
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(p) = c.get_mut(probe) {
                default_in(p, "timeoutSeconds", json!(1));
                default_in(p, "periodSeconds", json!(10));
                default_in(p, "successThreshold", json!(1));
                default_in(p, "failureThreshold", json!(3));
            }
        }
        if let Some(Value::Array(ms)) = c.get_mut("volumeMounts") {
            for m in ms {
                if m.get("readOnly") == Some(&json!(false)) {
                    m.as_object_mut().unwrap().remove("readOnly");
                }
            }
        }
        if let Some(Value::Object(res)) = c.get_mut("resources") {
            for section in res.values_mut() {
                if let Value::Object(q) = section {
                    for v in q.values_mut() {
                        // The server stores canonical quantities.
                        if *v == json!("0.25") {
                            *v = json!("250m");
                        }
                        if *v == json!("1024Mi") {
                            *v = json!("1Gi");
                        }
                    }
                }
            }
        }
    }

    /// The object as `kubectl get -o json` shows it after `kubectl apply`.
    fn server_view(o: &Value) -> Value {
        let mut v = o.clone();
        let last_applied = serde_json::to_string(o).unwrap();
        let kind = kind(o).to_string();
        let meta = v.get_mut("metadata").unwrap();
        default_in(meta, "annotations", json!({}));
        let ann = meta.get_mut("annotations").unwrap();
        ann.as_object_mut().unwrap().insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            json!(last_applied),
        );
        match kind.as_str() {
            "DaemonSet" => {
                ann.as_object_mut().unwrap().insert(
                    "deprecated.daemonset.template.generation".into(),
                    json!("3"),
                );
            }
            "Deployment" => {
                ann.as_object_mut()
                    .unwrap()
                    .insert("deployment.kubernetes.io/revision".into(), json!("2"));
            }
            _ => {}
        }
        for (k, val) in [
            ("uid", json!("0b5c2b44-6a55-4b9b-9d55-0c0c4ad3a111")),
            ("resourceVersion", json!("123456")),
            ("generation", json!(3)),
            ("creationTimestamp", json!("2024-05-01T10:00:00Z")),
            (
                "managedFields",
                json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1"}]),
            ),
        ] {
            meta.as_object_mut().unwrap().insert(k.into(), val);
        }
        match kind.as_str() {
            "DaemonSet" | "Deployment" => {
                let spec = v.get_mut("spec").unwrap();
                default_in(spec, "revisionHistoryLimit", json!(10));
                if kind == "DaemonSet" {
                    default_in(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
                    let us = spec.get_mut("updateStrategy").unwrap();
                    if us["type"] == "RollingUpdate" {
                        default_in(us, "rollingUpdate", json!({}));
                        let ru = us.get_mut("rollingUpdate").unwrap();
                        default_in(ru, "maxUnavailable", json!(1));
                        default_in(ru, "maxSurge", json!(0));
                    }
                } else {
                    default_in(spec, "replicas", json!(1));
                    default_in(spec, "progressDeadlineSeconds", json!(600));
                    default_in(spec, "strategy", json!({}));
                    let st = spec.get_mut("strategy").unwrap();
                    default_in(st, "type", json!("RollingUpdate"));
                    if st["type"] == "RollingUpdate" {
                        default_in(st, "rollingUpdate", json!({}));
                        let ru = st.get_mut("rollingUpdate").unwrap();
                        default_in(ru, "maxUnavailable", json!("25%"));
                        default_in(ru, "maxSurge", json!("25%"));
                    }
                }
                let tm = spec.pointer_mut("/template/metadata").unwrap();
                tm.as_object_mut()
                    .unwrap()
                    .insert("creationTimestamp".into(), Value::Null);
                let ps = spec.pointer_mut("/template/spec").unwrap();
                default_in(ps, "dnsPolicy", json!("ClusterFirst"));
                default_in(ps, "restartPolicy", json!("Always"));
                default_in(ps, "schedulerName", json!("default-scheduler"));
                default_in(ps, "securityContext", json!({}));
                default_in(ps, "terminationGracePeriodSeconds", json!(30));
                if let Some(sa) = ps.get("serviceAccountName").cloned() {
                    default_in(ps, "serviceAccount", sa);
                }
                for list in ["initContainers", "containers"] {
                    if let Some(Value::Array(cs)) = ps.get_mut(list) {
                        cs.iter_mut().for_each(default_container);
                    }
                }
                if let Some(Value::Array(vols)) = ps.get_mut("volumes") {
                    for vol in vols {
                        if let Some(hp) = vol.get_mut("hostPath") {
                            default_in(hp, "type", json!(""));
                        }
                        for src in ["configMap", "secret", "projected", "downwardAPI"] {
                            if let Some(s) = vol.get_mut(src) {
                                default_in(s, "defaultMode", json!(420));
                            }
                        }
                    }
                }
                v.as_object_mut().unwrap().insert(
                    "status".into(),
                    json!({"observedGeneration": 3, "numberReady": 3, "replicas": 1, "conditions": []}),
                );
            }
            "Service" => {
                let spec = v.get_mut("spec").unwrap();
                default_in(spec, "type", json!("ClusterIP"));
                default_in(spec, "sessionAffinity", json!("None"));
                default_in(spec, "clusterIP", json!("10.96.12.34"));
                default_in(spec, "clusterIPs", json!(["10.96.12.34"]));
                default_in(spec, "ipFamilies", json!(["IPv4"]));
                default_in(spec, "ipFamilyPolicy", json!("SingleStack"));
                default_in(spec, "internalTrafficPolicy", json!("Cluster"));
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    ports
                        .iter_mut()
                        .for_each(|p| default_in(p, "protocol", json!("TCP")));
                }
                v.as_object_mut()
                    .unwrap()
                    .insert("status".into(), json!({"loadBalancer": {}}));
            }
            "PodDisruptionBudget" => {
                v.as_object_mut().unwrap().insert(
                    "status".into(),
                    json!({"currentHealthy": 1, "desiredHealthy": 0}),
                );
            }
            _ => {}
        }
        v
    }

    fn live_of(objs: &[Value]) -> Vec<Value> {
        objs.iter()
            .filter(|o| kind(o) != "CustomResourceDefinition")
            .map(server_view)
            .collect()
    }

    // --- small helpers for editing objects in tests ---------------------------------------------

    fn obj<'a>(objs: &'a mut [Value], kind_: &str, name_: &str) -> &'a mut Value {
        objs.iter_mut()
            .find(|o| kind(o) == kind_ && name(o) == name_)
            .unwrap()
    }

    fn container<'a>(o: &'a mut Value, cname: &str) -> &'a mut Value {
        let spec = o.pointer_mut("/spec/template/spec").unwrap();
        let in_init = spec["initContainers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == cname));
        let list = if in_init {
            "initContainers"
        } else {
            "containers"
        };
        spec.get_mut(list)
            .unwrap()
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == cname)
            .unwrap()
    }

    fn env(c: &mut Value) -> &mut Vec<Value> {
        c.get_mut("env").unwrap().as_array_mut().unwrap()
    }

    fn set_env(c: &mut Value, n: &str, v: Value) {
        let e = env(c);
        match e.iter_mut().find(|x| x["name"] == n) {
            Some(x) => *x = v,
            None => e.push(v),
        }
    }

    fn insert_env_after(c: &mut Value, after: &str, v: Value) {
        let e = env(c);
        let i = e.iter().position(|x| x["name"] == after).unwrap();
        e.insert(i + 1, v);
    }

    fn env_names(c: &Value) -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn find_entry<'a>(r: &'a Report, path_end: &str) -> &'a Customization {
        r.carried
            .iter()
            .chain(&r.dropped)
            .find(|c| c.path.ends_with(path_end))
            .unwrap_or_else(|| panic!("no entry ending in {path_end:?} in {:#}", r.to_json()))
    }

    /// Equal object lists; on failure, shows only the first object that differs.
    fn assert_objects(got: &[Value], want: &[Value], context: &str) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                g == w,
                "{context}: {} differs\n got: {:#}\nwant: {:#}",
                Ctx::object_of(w),
                g,
                w
            );
        }
        assert_eq!(got.len(), want.len(), "{context}: object count");
    }

    fn paths(list: &[Customization]) -> Vec<String> {
        list.iter().map(|c| c.path.clone()).collect()
    }

    // --- tests ----------------------------------------------------------------------------------

    #[test]
    fn unchanged_live_objects_give_no_customisations_and_the_target_as_is() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let merged = carry_over(&base, &live_of(&base), &target);
        assert!(merged.report.is_empty(), "{:#}", merged.report.to_json());
        assert_eq!(merged.objects, target);
        assert_eq!(
            merged.report.to_json(),
            json!({"carried": [], "dropped": []})
        );
    }

    #[test]
    fn server_defaults_and_server_set_fields_are_never_customisations() {
        let mut base = upstream(OLD);
        // Manifest spellings the server stores differently or drops.
        let ds = obj(&mut base, "DaemonSet", "calico-node");
        container(ds, "calico-node")["resources"] =
            json!({"requests": {"cpu": "0.25"}, "limits": {"memory": "1024Mi"}});
        set_env(
            container(ds, "calico-node"),
            "EMPTY",
            json!({"name": "EMPTY", "value": ""}),
        );
        ds.pointer_mut("/spec/template/spec/volumes")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "cfg", "configMap": {"name": "calico-config"}}));
        let mut live = live_of(&base);
        // What a rollout restart and the controllers add.
        let ds_live = obj(&mut live, "DaemonSet", "calico-node");
        ds_live.pointer_mut("/spec/template/metadata").unwrap()["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2024-06-01T12:00:00Z"});
        let target = base
            .iter()
            .map(|o| serde_json::from_str(&serde_json::to_string(o).unwrap()).unwrap())
            .collect::<Vec<Value>>();
        let merged = carry_over(&base, &live, &target);
        assert!(merged.report.is_empty(), "{:#}", merged.report.to_json());
        assert_eq!(merged.objects, target);
    }

    #[test]
    fn env_changes_additions_removals_and_value_from_are_carried() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        let node = container(obj(&mut live, "DaemonSet", "calico-node"), "calico-node");
        set_env(
            node,
            "CALICO_IPV4POOL_IPIP",
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": "Never"}),
        );
        insert_env_after(
            node,
            "CALICO_IPV4POOL_VXLAN",
            json!({"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"}),
        );
        set_env(
            node,
            "IP_AUTODETECTION_METHOD",
            json!({"name": "IP_AUTODETECTION_METHOD", "value": "interface=eth0"}),
        );
        set_env(
            node,
            "CALICO_IPV4POOL_VXLAN",
            json!({"name": "CALICO_IPV4POOL_VXLAN",
            "valueFrom": {"configMapKeyRef": {"name": "pool-settings", "key": "vxlan"}}}),
        );
        set_env(
            node,
            "FELIX_PROMETHEUSMETRICSENABLED",
            json!({"name": "FELIX_PROMETHEUSMETRICSENABLED",
            "valueFrom": {"secretKeyRef": {"name": "felix", "key": "metrics"}}}),
        );
        env(node).retain(|e| e["name"] != "FELIX_HEALTHENABLED");

        let merged = carry_over(&base, &live, &target);
        let r = &merged.report;
        assert!(r.dropped.is_empty(), "{:#}", r.to_json());
        let mut out = merged.objects.clone();
        let node = container(obj(&mut out, "DaemonSet", "calico-node"), "calico-node").clone();
        assert_eq!(
            env_names(&node),
            [
                "DATASTORE_TYPE",
                "NODENAME",
                "CALICO_IPV4POOL_IPIP",
                "CALICO_IPV4POOL_VXLAN",
                "CALICO_IPV4POOL_CIDR",
                "FELIX_IPINIPMTU",
                "IP_AUTODETECTION_METHOD",
                "FELIX_PROMETHEUSMETRICSENABLED"
            ]
        );
        let e = |n: &str| {
            node["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(
            e("CALICO_IPV4POOL_IPIP"),
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": "Never"})
        );
        assert_eq!(
            e("CALICO_IPV4POOL_VXLAN"),
            json!({"name": "CALICO_IPV4POOL_VXLAN", "valueFrom": {"configMapKeyRef": {"name": "pool-settings", "key": "vxlan"}}})
        );
        assert_eq!(
            node["image"],
            image("node", NEW),
            "the version comes from the target"
        );

        let c = find_entry(r, "env CALICO_IPV4POOL_CIDR of container calico-node");
        assert_eq!(
            c.path,
            "DaemonSet kube-system/calico-node: env CALICO_IPV4POOL_CIDR of container calico-node"
        );
        assert_eq!(c.object, "DaemonSet/kube-system/calico-node");
        assert_eq!((c.change, c.status), (Change::Added, Status::Carried));
        assert_eq!((&c.base, &c.upstream), (&Value::Null, &Value::Null));
        assert_eq!(
            c.live,
            json!({"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"})
        );
        let c = find_entry(r, "env CALICO_IPV4POOL_IPIP of container calico-node");
        assert_eq!(
            (
                c.change,
                &c.base["value"],
                &c.live["value"],
                &c.upstream["value"]
            ),
            (
                Change::Changed,
                &json!("Always"),
                &json!("Never"),
                &json!("Always")
            )
        );
        let c = find_entry(r, "env FELIX_HEALTHENABLED of container calico-node");
        assert_eq!(
            (c.change, c.status, &c.applied),
            (Change::Removed, Status::Carried, &Value::Null)
        );
        assert_eq!(r.carried.len(), 6, "{:#?}", paths(&r.carried));
    }

    #[test]
    fn calico_config_data_is_carried_and_a_removed_key_the_target_needs_is_kept() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        let data = obj(&mut live, "ConfigMap", "calico-config")
            .get_mut("data")
            .unwrap()
            .as_object_mut()
            .unwrap();
        data.insert("veth_mtu".into(), json!("1440"));
        data.insert("typha_service_name".into(), json!("calico-typha"));
        data.insert("custom_key".into(), json!("x"));
        let cni = data["cni_network_config"].as_str().unwrap().replace(
            "\"mtu\": __CNI_MTU__",
            "\"mtu\": __CNI_MTU__, \"log_level\": \"debug\"",
        );
        data.insert("cni_network_config".into(), json!(cni));
        data.shift_remove("calico_backend");

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        let data = &obj(&mut out, "ConfigMap", "calico-config")["data"];
        assert_eq!(data["veth_mtu"], "1440");
        assert_eq!(data["typha_service_name"], "calico-typha");
        assert_eq!(data["custom_key"], "x");
        assert_eq!(
            data["cni_network_config"],
            json!(cni),
            "carried as the string it is"
        );
        assert_eq!(
            data["calico_backend"], "bird",
            "calico-node reads it: a removal is not carried"
        );
        let r = &merged.report;
        assert_eq!(paths(&r.carried).len(), 4);
        let d = find_entry(
            r,
            "ConfigMap kube-system/calico-config: data calico_backend",
        );
        assert_eq!((d.status, d.change), (Status::Dropped, Change::Removed));
        assert!(d.reason.as_deref().unwrap().contains("may read it"));
        assert_eq!(find_entry(r, "data veth_mtu").base, json!("0"));
    }

    #[test]
    fn resources_of_every_calico_container_are_carried_as_quantities() {
        let (base, mut target) = (upstream(OLD), upstream(NEW));
        // The target spells the same quantity differently: not a change of anybody's.
        container(obj(&mut target, "DaemonSet", "calico-node"), "calico-node")["resources"] =
            json!({"requests": {"cpu": "0.25"}});
        let mut live = live_of(&base);
        container(obj(&mut live, "DaemonSet", "calico-node"), "calico-node")["resources"] =
            json!({"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}});
        container(
            obj(&mut live, "Deployment", "calico-kube-controllers"),
            "calico-kube-controllers",
        )["resources"] = json!({"requests": {"memory": "64Mi"}});
        container(obj(&mut live, "Deployment", "calico-typha"), "calico-typha")["resources"] =
            json!({"limits": {"cpu": "1"}});

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        assert_eq!(
            container(obj(&mut out, "DaemonSet", "calico-node"), "calico-node")["resources"],
            json!({"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})
        );
        assert_eq!(
            container(
                obj(&mut out, "Deployment", "calico-kube-controllers"),
                "calico-kube-controllers"
            )["resources"],
            json!({"requests": {"memory": "64Mi"}})
        );
        assert_eq!(
            container(obj(&mut out, "Deployment", "calico-typha"), "calico-typha")["resources"],
            json!({"limits": {"cpu": "1"}})
        );
        assert_eq!(
            paths(&merged.report.carried),
            [
                "DaemonSet kube-system/calico-node: resources requests.cpu of container calico-node",
                "DaemonSet kube-system/calico-node: resources requests.memory of container calico-node",
                "DaemonSet kube-system/calico-node: resources limits.memory of container calico-node",
                "Deployment kube-system/calico-kube-controllers: resources requests.memory of container calico-kube-controllers",
                "Deployment kube-system/calico-typha: resources limits.cpu of container calico-typha",
            ]
        );
        assert!(merged.report.dropped.is_empty());
    }

    #[test]
    fn pod_template_scheduling_settings_labels_and_annotations_are_carried() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        let ps = ds.pointer_mut("/spec/template/spec").unwrap();
        ps["tolerations"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["key"] != "CriticalAddonsOnly");
        ps["tolerations"].as_array_mut().unwrap().push(json!({"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoExecute"}));
        ps["nodeSelector"]["node.example.com/calico"] = json!("yes");
        ps["priorityClassName"] = json!("platform-critical");
        ps["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node.example.com/no-calico", "operator": "DoesNotExist"}]}]}}});
        let tm = ds.pointer_mut("/spec/template/metadata").unwrap();
        tm["labels"]["team"] = json!("network");
        tm["annotations"] = json!({"prometheus.io/scrape": "true", "kubectl.kubernetes.io/restartedAt": "2024-06-01T12:00:00Z"});

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        let ps = &ds["spec"]["template"]["spec"];
        assert_eq!(
            ps["tolerations"],
            json!([{"effect": "NoSchedule", "operator": "Exists"},
            {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoExecute"}])
        );
        assert_eq!(
            ps["nodeSelector"],
            json!({"kubernetes.io/os": "linux", "node.example.com/calico": "yes"})
        );
        assert_eq!(ps["priorityClassName"], "platform-critical");
        assert_eq!(
            ps["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"][0]["operator"],
            "DoesNotExist"
        );
        let tm = &ds["spec"]["template"]["metadata"];
        assert_eq!(
            tm["labels"],
            json!({"k8s-app": "calico-node", "team": "network"})
        );
        assert_eq!(
            tm["annotations"],
            json!({"prometheus.io/scrape": "true"}),
            "restartedAt is not a setting"
        );
        let got = paths(&merged.report.carried);
        assert_eq!(got.len(), 7, "{got:#?}");
        assert!(got.contains(&"DaemonSet kube-system/calico-node: toleration key=CriticalAddonsOnly operator=Exists".to_string()));
        assert_eq!(
            find_entry(&merged.report, "priorityClassName").base,
            json!("system-node-critical")
        );
        assert!(merged.report.dropped.is_empty());
    }

    #[test]
    fn volumes_and_mounts_added_changed_and_removed() {
        let (base, mut target) = (upstream(OLD), upstream(NEW));
        // Upstream adds a hostPath type where the user changed the path: both changes survive.
        let tds = obj(&mut target, "DaemonSet", "calico-node");
        tds.pointer_mut("/spec/template/spec/volumes/3/hostPath")
            .unwrap()["type"] = json!("DirectoryOrCreate");
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        let vols = ds
            .pointer_mut("/spec/template/spec/volumes")
            .unwrap()
            .as_array_mut()
            .unwrap();
        vols.push(json!({"name": "felix-certs", "secret": {"secretName": "felix-certs", "defaultMode": 420}}));
        vols.iter_mut()
            .find(|v| v["name"] == "cni-net-dir")
            .unwrap()["hostPath"]["path"] = json!("/var/lib/rancher/cni/net.d");
        vols.retain(|v| v["name"] != "lib-modules" && v["name"] != "host-local-net-dir");
        let node = container(ds, "calico-node");
        node["volumeMounts"].as_array_mut().unwrap().push(
            json!({"name": "felix-certs", "mountPath": "/etc/felix/certs", "readOnly": true}),
        );
        node["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["name"] != "lib-modules");
        // upgrade-ipam "can be deleted if you have already upgraded to calico-ipam".
        ds.pointer_mut("/spec/template/spec/initContainers")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "upgrade-ipam");

        let merged = carry_over(&base, &live, &target);
        let r = &merged.report;
        assert!(r.dropped.is_empty(), "{:#}", r.to_json());
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        let vols = ds["spec"]["template"]["spec"]["volumes"].clone();
        let names: Vec<&str> = vols
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["var-run-calico", "sys-fs", "cni-net-dir", "felix-certs"]
        );
        assert_eq!(
            vols[2]["hostPath"],
            json!({"path": "/var/lib/rancher/cni/net.d", "type": "DirectoryOrCreate"})
        );
        assert_eq!(
            find_entry(r, "volume cni-net-dir").reason.as_deref(),
            Some("merged with the target's own changes to it")
        );
        let inits: Vec<&str> = ds["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits, ["install-cni", "mount-bpffs"]);
        let node = container(ds, "calico-node");
        let mounts: Vec<&str> = node["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            ["/host/etc/cni/net.d", "/var/run/calico", "/etc/felix/certs"]
        );
        assert_eq!(
            find_entry(r, "init container upgrade-ipam").change,
            Change::Removed
        );
        assert_eq!(r.carried.len(), 7, "{:#?}", paths(&r.carried));
    }

    #[test]
    fn a_removed_volume_still_mounted_by_the_target_is_kept_and_reported() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        ds.pointer_mut("/spec/template/spec/volumes")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|v| v["name"] != "sys-fs");
        ds.pointer_mut("/spec/template/spec/initContainers")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "mount-bpffs");
        // ...and a mount of a volume the target no longer has: that cannot be carried.
        let mut target2 = target.clone();
        let tds = obj(&mut target2, "DaemonSet", "calico-node");
        tds.pointer_mut("/spec/template/spec/volumes")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|v| v["name"] != "var-run-calico");
        container(tds, "calico-node")["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["name"] != "var-run-calico");
        container(tds, "install-cni")["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"mountPath": "/sys/fs", "name": "sys-fs"}));
        container(ds, "calico-node")["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"mountPath": "/run/calico", "name": "var-run-calico"}));

        let merged = carry_over(&base, &live, &target2);
        let r = &merged.report;
        let d = find_entry(r, "volume sys-fs");
        assert_eq!((d.status, d.change), (Status::Dropped, Change::Removed));
        assert!(
            d.reason.as_deref().unwrap().contains("install-cni"),
            "{:?}",
            d.reason
        );
        let d = find_entry(r, "volumeMount /run/calico of container calico-node");
        assert_eq!(d.status, Status::Dropped);
        assert!(d.reason.as_deref().unwrap().contains("var-run-calico"));
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        assert!(
            ds["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "sys-fs")
        );
        let mounts = container(ds, "calico-node")["volumeMounts"].clone();
        assert!(
            !mounts
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "var-run-calico")
        );
        assert_eq!(
            find_entry(r, "init container mount-bpffs").status,
            Status::Carried
        );
    }

    #[test]
    fn vxlan_probe_edits_and_image_pull_secrets_are_carried() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        // Upstream raises the liveness timeout; the user removed the BIRD check (VXLAN only).
        container(obj(&mut target, "DaemonSet", "calico-node"), "calico-node")["livenessProbe"]["timeoutSeconds"] =
            json!(15);
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        container(ds, "calico-node")["livenessProbe"]["exec"]["command"] =
            json!(["/bin/calico-node", "-felix-live"]);
        ds.pointer_mut("/spec/template/spec").unwrap()["imagePullSecrets"] =
            json!([{"name": "mirror-pull"}]);
        obj(&mut live, "ServiceAccount", "calico-node")["imagePullSecrets"] =
            json!([{"name": "mirror-pull"}]);

        let merged = carry_over(&base, &live, &target);
        let r = &merged.report;
        assert!(r.dropped.is_empty(), "{:#}", r.to_json());
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        assert_eq!(
            ds["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": "mirror-pull"}])
        );
        let probe = container(ds, "calico-node")["livenessProbe"].clone();
        assert_eq!(
            probe["exec"]["command"],
            json!(["/bin/calico-node", "-felix-live"])
        );
        assert_eq!(
            probe["timeoutSeconds"], 15,
            "upstream's own change to the probe is kept"
        );
        let c = find_entry(r, "livenessProbe of container calico-node");
        assert_eq!((c.status, c.conflict), (Status::Carried, false));
        assert_eq!(
            obj(&mut out, "ServiceAccount", "calico-node")["imagePullSecrets"],
            json!([{"name": "mirror-pull"}])
        );
        assert_eq!(
            paths(&r.carried),
            [
                "ServiceAccount kube-system/calico-node: imagePullSecret mirror-pull",
                "DaemonSet kube-system/calico-node: imagePullSecret mirror-pull",
                "DaemonSet kube-system/calico-node: livenessProbe of container calico-node",
            ]
        );
    }

    #[test]
    fn replicas_and_daemonset_update_strategy_are_carried() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        obj(&mut live, "Deployment", "calico-typha")["spec"]["replicas"] = json!(3);
        obj(&mut live, "Deployment", "calico-kube-controllers")["spec"]["replicas"] = json!(2);
        obj(&mut live, "DaemonSet", "calico-node")["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] =
            json!("10%");

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        assert_eq!(
            obj(&mut out, "Deployment", "calico-typha")["spec"]["replicas"],
            3
        );
        assert_eq!(
            obj(&mut out, "Deployment", "calico-kube-controllers")["spec"]["replicas"],
            2
        );
        assert_eq!(
            obj(&mut out, "DaemonSet", "calico-node")["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}})
        );
        assert_eq!(
            paths(&merged.report.carried),
            [
                "DaemonSet kube-system/calico-node: updateStrategy rollingUpdate.maxUnavailable",
                "Deployment kube-system/calico-kube-controllers: replicas",
                "Deployment kube-system/calico-typha: replicas",
            ]
        );
        let c = find_entry(&merged.report, "calico-typha: replicas");
        assert_eq!(
            (&c.base, &c.live, &c.upstream, &c.applied),
            (&json!(1), &json!(3), &json!(1), &json!(3))
        );
    }

    #[test]
    fn on_delete_update_strategy_is_dropped_because_the_upgrade_must_roll_out() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let mut live = live_of(&base);
        obj(&mut live, "DaemonSet", "calico-node")["spec"]["updateStrategy"] =
            json!({"type": "OnDelete"});
        let merged = carry_over(&base, &live, &target);
        let d = find_entry(&merged.report, "updateStrategy type");
        assert_eq!(d.status, Status::Dropped);
        assert!(d.reason.as_deref().unwrap().contains("OnDelete"));
        assert_eq!(
            merged.report.carried.len(),
            0,
            "{:#}",
            merged.report.to_json()
        );
        assert_eq!(merged.objects, target);
    }

    #[test]
    fn when_user_and_upstream_change_the_same_setting_the_live_value_wins_and_is_flagged() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        set_env(
            container(obj(&mut target, "DaemonSet", "calico-node"), "calico-node"),
            "CALICO_IPV4POOL_IPIP",
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": "CrossSubnet"}),
        );
        set_env(
            container(
                obj(&mut target, "Deployment", "calico-kube-controllers"),
                "calico-kube-controllers",
            ),
            "ENABLED_CONTROLLERS",
            json!({"name": "ENABLED_CONTROLLERS", "value": "node,loadbalancer"}),
        );
        obj(&mut target, "ConfigMap", "calico-config")["data"]["veth_mtu"] = json!("1500");
        let mut live = live_of(&base);
        set_env(
            container(obj(&mut live, "DaemonSet", "calico-node"), "calico-node"),
            "CALICO_IPV4POOL_IPIP",
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": "Never"}),
        );
        // The same change as upstream's is no conflict.
        set_env(
            container(
                obj(&mut live, "Deployment", "calico-kube-controllers"),
                "calico-kube-controllers",
            ),
            "ENABLED_CONTROLLERS",
            json!({"name": "ENABLED_CONTROLLERS", "value": "node,loadbalancer"}),
        );
        obj(&mut live, "ConfigMap", "calico-config")["data"]["veth_mtu"] = json!("1440");

        let merged = carry_over(&base, &live, &target);
        let r = &merged.report;
        let c = find_entry(r, "env CALICO_IPV4POOL_IPIP of container calico-node");
        assert_eq!((c.status, c.conflict), (Status::Carried, true));
        assert_eq!(
            (&c.live["value"], &c.upstream["value"], &c.applied["value"]),
            (&json!("Never"), &json!("CrossSubnet"), &json!("Never"))
        );
        let c = find_entry(r, "data veth_mtu");
        assert_eq!(
            (c.conflict, &c.applied, &c.upstream),
            (true, &json!("1440"), &json!("1500"))
        );
        let c = find_entry(
            r,
            "env ENABLED_CONTROLLERS of container calico-kube-controllers",
        );
        assert_eq!(
            (c.status, c.conflict, c.reason.as_deref()),
            (
                Status::Carried,
                false,
                Some("the target has the same value")
            )
        );
        assert_eq!(r.conflict_messages().len(), 2);
        assert!(
            r.conflict_messages()[0].contains("kept"),
            "{:?}",
            r.conflict_messages()
        );
        let json = r.to_json();
        assert_eq!(json["carried"][0]["conflict"], true);
        assert!(
            json["carried"][2].get("conflict").is_none(),
            "conflict: false is left out"
        );
    }

    #[test]
    fn settings_of_a_container_or_variable_upstream_removed_are_dropped() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        // Upstream renames an init container and drops a variable.
        let tds = obj(&mut target, "DaemonSet", "calico-node");
        container(tds, "mount-bpffs")["name"] = json!("ebpf-bootstrap");
        env(container(tds, "install-cni")).retain(|e| e["name"] != "SLEEP");
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        set_env(
            container(ds, "mount-bpffs"),
            "LOG_LEVEL",
            json!({"name": "LOG_LEVEL", "value": "debug"}),
        );
        container(ds, "mount-bpffs")["resources"] = json!({"limits": {"memory": "64Mi"}});
        set_env(
            container(ds, "install-cni"),
            "SLEEP",
            json!({"name": "SLEEP", "value": "true"}),
        );

        let merged = carry_over(&base, &live, &target);
        let r = &merged.report;
        assert!(r.carried.is_empty(), "{:#}", r.to_json());
        assert_eq!(r.dropped.len(), 3, "{:#}", r.to_json());
        let d = find_entry(r, "env LOG_LEVEL of init container mount-bpffs");
        assert_eq!(
            d.reason.as_deref(),
            Some("init container mount-bpffs is not in the target manifest")
        );
        assert_eq!((&d.upstream, &d.applied), (&Value::Null, &Value::Null));
        let d = find_entry(r, "env SLEEP of init container install-cni");
        assert!(d.reason.as_deref().unwrap().contains("no longer has it"));
        assert_eq!(merged.objects, target);
        assert_eq!(
            r.dropped_messages()[0],
            format!(
                "{}: {}",
                r.dropped[0].path,
                r.dropped[0].reason.clone().unwrap()
            )
        );
    }

    #[test]
    fn a_private_registry_in_the_live_images_moves_the_target_images_there() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        // Upstream moves registries (as 3.31 did, docker.io to quay.io): the mirror still wins.
        for o in target.iter_mut() {
            if let Some(spec) = pod_spec_mut(o) {
                for list in ["initContainers", "containers"] {
                    for c in spec
                        .get_mut(list)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        let i = c["image"]
                            .as_str()
                            .unwrap()
                            .replace("docker.io/", "quay.io/");
                        c["image"] = json!(i);
                    }
                }
            }
        }
        let mut live = live_of(&base);
        for o in live.iter_mut() {
            if let Some(spec) = pod_spec_mut(o) {
                for list in ["initContainers", "containers"] {
                    for c in spec
                        .get_mut(list)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        let i = c["image"]
                            .as_str()
                            .unwrap()
                            .replace("docker.io/", "registry.example.com:5000/mirror/");
                        c["image"] = json!(i);
                    }
                }
            }
        }
        // A pinned digest on one image is not carried: the version comes from the target.
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        container(ds, "calico-node")["image"] = json!(format!(
            "registry.example.com:5000/mirror/calico/node:{OLD}@sha256:abcd"
        ));

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        assert_eq!(
            container(ds, "calico-node")["image"],
            format!("registry.example.com:5000/mirror/calico/node:{NEW}")
        );
        assert_eq!(
            container(ds, "install-cni")["image"],
            format!("registry.example.com:5000/mirror/calico/cni:{NEW}")
        );
        let typha = obj(&mut out, "Deployment", "calico-typha");
        assert_eq!(
            container(typha, "calico-typha")["image"],
            format!("registry.example.com:5000/mirror/calico/typha:{NEW}")
        );
        let r = &merged.report;
        assert_eq!(r.carried.len(), 6, "{:#?}", paths(&r.carried));
        let c = find_entry(
            r,
            "DaemonSet kube-system/calico-node: image registry of init container install-cni",
        );
        assert_eq!(c.change, Change::Registry);
        assert_eq!(c.base, json!(image("cni", OLD)));
        assert_eq!(c.upstream, json!(format!("quay.io/calico/cni:{NEW}")));
        assert_eq!(
            c.applied,
            json!(format!("registry.example.com:5000/mirror/calico/cni:{NEW}"))
        );
        assert_eq!(r.dropped.len(), 1);
        let d = find_entry(r, "image of container calico-node");
        assert!(d.reason.as_deref().unwrap().contains("tag or digest"));
    }

    #[test]
    fn rewrite_registry_moves_every_image_and_is_idempotent() {
        let mut objs = vec![
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"},
                "spec": {"template": {"spec": {
                    "initContainers": [{"name": "install-cni", "image": "calico/cni:v3.28.5"}],
                    "containers": [{"name": "calico-node", "image": "docker.io/calico/node:v3.28.5"},
                                   {"name": "pinned", "image": "localhost:5000/calico/node@sha256:0123"}]}}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "tigera-operator", "namespace": "tigera-operator"},
                "spec": {"template": {"spec": {"containers": [{"name": "tigera-operator", "image": "quay.io/tigera/operator:v1.34.13"}]}}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"image": "docker.io/calico/node:v1"}}),
        ];
        let moved = rewrite_registry(&mut objs, " https://registry.local:5000/mirror/ ");
        let to: Vec<&str> = moved.iter().map(|m| m.to.as_str()).collect();
        assert_eq!(
            to,
            [
                "registry.local:5000/mirror/calico/cni:v3.28.5",
                "registry.local:5000/mirror/calico/node:v3.28.5",
                "registry.local:5000/mirror/calico/node@sha256:0123",
                "registry.local:5000/mirror/tigera/operator:v1.34.13",
            ]
        );
        assert_eq!(
            moved[0],
            ImageRewrite {
                object: "DaemonSet/kube-system/calico-node".into(),
                container: "install-cni".into(),
                from: "calico/cni:v3.28.5".into(),
                to: "registry.local:5000/mirror/calico/cni:v3.28.5".into(),
            }
        );
        assert_eq!(
            objs[1]["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.local:5000/mirror/tigera/operator:v1.34.13"
        );
        assert_eq!(
            objs[2]["data"]["image"], "docker.io/calico/node:v1",
            "only container images move"
        );
        assert!(
            rewrite_registry(&mut objs, "registry.local:5000/mirror").is_empty(),
            "a second run changes nothing"
        );
        assert!(rewrite_registry(&mut objs, "  ").is_empty());
    }

    #[test]
    fn deleted_typha_stays_deleted_but_calico_node_is_recreated() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let live: Vec<Value> = live_of(&base)
            .into_iter()
            .filter(|o| {
                name(o) != "calico-typha" && kind(o) != "DaemonSet" && kind(o) != "ClusterRole"
            })
            .collect();
        let merged = carry_over(&base, &live, &target);
        let names: Vec<String> = merged.objects.iter().map(Ctx::object_of).collect();
        assert_eq!(
            names,
            [
                "ServiceAccount/kube-system/calico-node",
                "ConfigMap/kube-system/calico-config",
                "ClusterRole/calico-node",
                "DaemonSet/kube-system/calico-node",
                "Deployment/kube-system/calico-kube-controllers"
            ]
        );
        let r = &merged.report;
        assert_eq!(
            paths(&r.carried),
            [
                "Deployment kube-system/calico-typha: the object",
                "Service kube-system/calico-typha: the object",
                "PodDisruptionBudget kube-system/calico-typha: the object",
            ]
        );
        assert!(
            r.carried
                .iter()
                .all(|c| c.change == Change::Deleted && c.applied.is_null())
        );
        // Nothing read from the cluster is no evidence of deletion.
        let merged = carry_over(&base, &[], &target);
        assert_eq!(merged.objects, target);
        assert!(merged.report.is_empty());
    }

    #[test]
    fn a_container_the_user_added_is_carried_in_its_place_unless_upstream_adds_one_of_that_name() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        let inits = ds
            .pointer_mut("/spec/template/spec/initContainers")
            .unwrap()
            .as_array_mut()
            .unwrap();
        inits.insert(1, json!({"name": "wait-for-disk", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}));
        let cs = ds
            .pointer_mut("/spec/template/spec/containers")
            .unwrap()
            .as_array_mut()
            .unwrap();
        cs.push(json!({"name": "log-shipper", "image": "fluent/fluent-bit:3.0"}));
        let tcs = obj(&mut target, "DaemonSet", "calico-node")
            .pointer_mut("/spec/template/spec/containers")
            .unwrap()
            .as_array_mut()
            .unwrap();
        tcs.push(json!({"name": "log-shipper", "image": "docker.io/calico/log-shipper:v3.28.5"}));

        let merged = carry_over(&base, &live, &target);
        let mut out = merged.objects.clone();
        let ps = obj(&mut out, "DaemonSet", "calico-node")["spec"]["template"]["spec"].clone();
        let inits: Vec<&str> = ps["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            inits,
            [
                "upgrade-ipam",
                "wait-for-disk",
                "install-cni",
                "mount-bpffs"
            ]
        );
        assert_eq!(
            ps["containers"][1]["image"],
            "docker.io/calico/log-shipper:v3.28.5"
        );
        assert_eq!(
            find_entry(&merged.report, "init container wait-for-disk").status,
            Status::Carried
        );
        assert_eq!(
            find_entry(&merged.report, "container log-shipper").status,
            Status::Dropped
        );
    }

    #[test]
    fn an_added_container_needing_a_volume_upstream_removed_is_dropped_not_left_invalid() {
        let base = upstream(OLD);
        let mut target = upstream(NEW);
        let tds = obj(&mut target, "DaemonSet", "calico-node");
        tds.pointer_mut("/spec/template/spec/volumes")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|v| v["name"] != "host-local-net-dir");
        tds.pointer_mut("/spec/template/spec/initContainers")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "upgrade-ipam");
        let mut live = live_of(&base);
        let ds = obj(&mut live, "DaemonSet", "calico-node");
        ds.pointer_mut("/spec/template/spec/containers")
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ipam-audit", "image": "example/audit:1",
                "volumeMounts": [{"name": "host-local-net-dir", "mountPath": "/data"}]}));
        // A duplicated variable is looked at once.
        let node = container(ds, "calico-node");
        env(node).push(json!({"name": "FELIX_LOGSEVERITYSCREEN", "value": "info"}));
        env(node).push(json!({"name": "FELIX_LOGSEVERITYSCREEN", "value": "info"}));

        let merged = carry_over(&base, &live, &target);
        let d = find_entry(&merged.report, "container ipam-audit");
        assert_eq!(d.status, Status::Dropped);
        assert!(d.reason.as_deref().unwrap().contains("host-local-net-dir"));
        let mut out = merged.objects.clone();
        let ds = obj(&mut out, "DaemonSet", "calico-node");
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let node = container(ds, "calico-node");
        assert_eq!(
            env_names(node)
                .iter()
                .filter(|n| *n == "FELIX_LOGSEVERITYSCREEN")
                .count(),
            1
        );
        assert_eq!(
            merged
                .report
                .carried
                .iter()
                .filter(|c| c.path.contains("FELIX_LOGSEVERITYSCREEN"))
                .count(),
            1
        );
    }

    #[test]
    fn an_upstream_object_gone_from_the_target_reports_its_customisations_as_dropped() {
        let base = upstream(OLD);
        let target: Vec<Value> = upstream(NEW)
            .into_iter()
            .filter(|o| name(o) != "calico-typha")
            .collect();
        let mut live = live_of(&base);
        obj(&mut live, "Deployment", "calico-typha")["spec"]["replicas"] = json!(3);
        let merged = carry_over(&base, &live, &target);
        let d = find_entry(
            &merged.report,
            "Deployment kube-system/calico-typha: replicas",
        );
        assert_eq!(d.status, Status::Dropped);
        assert_eq!(
            d.reason.as_deref(),
            Some("Deployment kube-system/calico-typha is not in the target manifest")
        );
        assert_eq!(merged.objects, target);
    }

    #[test]
    fn stepwise_hops_carry_the_same_customisations_again() {
        let (v1, v2, v3) = (upstream(OLD), upstream("v3.26.4"), upstream(NEW));
        let mut live = live_of(&v1);
        let node = container(obj(&mut live, "DaemonSet", "calico-node"), "calico-node");
        insert_env_after(
            node,
            "CALICO_IPV4POOL_VXLAN",
            json!({"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"}),
        );
        obj(&mut live, "Deployment", "calico-typha")["spec"]["replicas"] = json!(3);
        let hop1 = carry_over(&v1, &live, &v2);
        let hop2 = carry_over(&v2, &live_of(&hop1.objects), &v3);
        assert_eq!(paths(&hop1.report.carried), paths(&hop2.report.carried));
        let direct = carry_over(&v1, &live, &v3);
        assert_eq!(hop2.objects, direct.objects);
    }

    #[test]
    fn multi_line_text_merges_line_by_line_unless_both_change_the_same_lines() {
        let base = "{\n  \"log_level\": \"info\",\n  \"mtu\": __CNI_MTU__,\n  \"plugins\": [\n    {\"type\": \"portmap\"},\n    {\"type\": \"bandwidth\"}\n  ]\n}";
        let live = base.replace("\"info\"", "\"debug\"");
        let target = base.replace(",\n    {\"type\": \"bandwidth\"}", "");
        let merged = merge_lines(base, &live, &target).unwrap();
        assert_eq!(merged, live.replace(",\n    {\"type\": \"bandwidth\"}", ""));
        // Both change the same line: a conflict, left to the caller.
        assert_eq!(
            merge_lines(base, &live, &base.replace("\"info\"", "\"warning\"")),
            None
        );
        // Both make the same change: taken once.
        assert_eq!(
            merge_lines(base, &live, &live).as_deref(),
            Some(live.as_str())
        );
        // Edits on neighbouring lines touch: a conflict, as for git.
        let next = base.replace("__CNI_MTU__", "1400");
        assert_eq!(merge_lines(base, &live, &next), None);
        // Single-line values are never merged this way.
        assert_eq!(merge_lines("a", "b", "c"), None);
        // Insertions at the start and the end.
        assert_eq!(
            merge_lines("x\ny", "a\nx\ny", "x\ny\nz").as_deref(),
            Some("a\nx\ny\nz")
        );

        // Through carry_over: calico-config's CNI config with edits on both sides.
        let mut b = upstream(OLD);
        obj(&mut b, "ConfigMap", "calico-config")["data"]["cni_network_config"] = json!(base);
        let mut t = b.clone();
        obj(&mut t, "ConfigMap", "calico-config")["data"]["cni_network_config"] = json!(target);
        let mut l = live_of(&b);
        obj(&mut l, "ConfigMap", "calico-config")["data"]["cni_network_config"] = json!(live);
        let m = carry_over(&b, &l, &t);
        let c = find_entry(&m.report, "data cni_network_config");
        assert_eq!((c.status, c.conflict), (Status::Carried, false));
        assert_eq!(c.applied, json!(merged));
        assert_eq!(
            obj(&mut m.objects.clone(), "ConfigMap", "calico-config")["data"]["cni_network_config"],
            json!(merged)
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        let q = |s: &str| quantity_nanos(s);
        assert_eq!(q("250m"), q("0.25"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(
            q("0.0001"),
            q("1m"),
            "rounded up to milli-units like the API server"
        );
        assert_ne!(q("1G"), q("1Gi"));
        assert_eq!(q("abc"), None);
        assert_eq!(q(""), None);
        assert_eq!(q("9999999999999999999999999999999999999999Ei"), None);
        assert_eq!(q("1e999999"), None);
        assert_eq!(q("170141183460469231731687303715884105727e-1"), None);
        assert_eq!(q("-1"), q("-1000m"));
        assert_eq!(q("1.000000000e-2147483648"), None);
        assert_eq!(q("1e-40"), q("1n"), "tiny values round up to 1m");
        assert!(eq_quantity(Some(&json!(2)), Some(&json!("2000m"))));
    }

    #[test]
    fn image_references_are_split_at_the_registry_host() {
        let p = ImageRef::parse;
        assert_eq!(
            p("docker.io/calico/node:v3.28.5"),
            ImageRef {
                host: Some("docker.io".into()),
                path: "calico/node".into(),
                suffix: ":v3.28.5".into()
            }
        );
        assert_eq!(
            p("calico/node:v3.28.5"),
            ImageRef {
                host: None,
                path: "calico/node".into(),
                suffix: ":v3.28.5".into()
            }
        );
        assert_eq!(p("localhost:5000/calico/node").suffix, "");
        assert_eq!(
            p("localhost:5000/calico/node").host.as_deref(),
            Some("localhost:5000")
        );
        assert_eq!(p("quay.io/tigera/operator@sha256:ab").suffix, "@sha256:ab");
        assert_eq!(p("nginx").canonical(), "docker.io/library/nginx");
        assert_eq!(
            relate(&p("docker.io/calico/node:v1"), &p("calico/node:v1")),
            ImageRelation::Same
        );
        assert_eq!(
            relate(
                &p("docker.io/calico/node:v1"),
                &p("mirror.local/x/calico/node:v1")
            ),
            ImageRelation::Registry("mirror.local/x".into())
        );
        assert_eq!(
            relate(
                &p("docker.io/calico/node:v1"),
                &p("mirror.local/calico-node:v1")
            ),
            ImageRelation::Replaced
        );
    }

    #[test]
    fn malformed_input_never_panics() {
        let odd = vec![
            json!(null),
            json!("text"),
            json!({"kind": "DaemonSet"}),
            json!({"kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"}, "spec": "oops"}),
            json!({"kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"},
                "spec": {"template": {"spec": {"containers": "x", "volumes": [1, 2], "tolerations": {"a": 1}}}}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "calico-config", "namespace": "kube-system"}, "data": [1]}),
            json!({"kind": "Deployment", "metadata": {"name": "calico-typha", "namespace": "kube-system"},
                "spec": {"replicas": "x", "template": {"spec": {"containers": [{"name": 5, "env": "y", "resources": 3}, {"env": [null, {"name": null}]}]}}}}),
        ];
        let normal = upstream(OLD);
        for (b, l, t) in [
            (&odd, &normal, &normal),
            (&normal, &odd, &normal),
            (&normal, &normal, &odd),
            (&odd, &odd, &odd),
        ] {
            let mut merged = carry_over(b, l, t);
            let _ = merged.report.to_json();
            let _ = rewrite_registry(&mut merged.objects, "r.local");
        }
        let mut odd2 = odd.clone();
        let _ = rewrite_registry(&mut odd2, "r.local");
    }

    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }

    #[test]
    fn any_value_anywhere_never_panics() {
        let (base, target) = (upstream(OLD), upstream(NEW));
        let live = live_of(&base);
        let odd = [
            json!(null),
            json!("x"),
            json!(7),
            json!([]),
            json!({}),
            json!([{"name": 1}]),
        ];
        let mut runs = 0;
        for (i, o) in live.iter().enumerate() {
            let mut ptrs = Vec::new();
            pointers(o, String::new(), &mut ptrs);
            for ptr in ptrs.iter().filter(|p| !p.is_empty()) {
                for (k, v) in odd.iter().enumerate() {
                    for side in 0..3 {
                        // Every odd value at every path, each on one of the three sides.
                        if (k + side + ptr.len()) % 3 != 0 {
                            continue;
                        }
                        let (mut b, mut l, mut t) = (base.clone(), live.clone(), target.clone());
                        let list = [&mut b, &mut l, &mut t].into_iter().nth(side).unwrap();
                        let Some(slot) = list.get_mut(i).and_then(|o| o.pointer_mut(ptr)) else {
                            continue;
                        };
                        *slot = v.clone();
                        let mut merged = carry_over(&b, &l, &t);
                        let _ = merged.report.to_json();
                        let _ = rewrite_registry(&mut merged.objects, "r.local");
                        runs += 1;
                    }
                }
            }
        }
        assert!(runs > 500, "{runs}");
    }

    // --- the real upstream manifests ------------------------------------------------------------

    fn fixtures() -> Option<std::path::PathBuf> {
        let candidates = [
            std::env::var_os("CALICO_UPSTREAM_MANIFESTS").map(std::path::PathBuf::from),
            Some(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/fixtures/calico-manifests"),
            ),
            Some(std::path::PathBuf::from(
                "/work/shared/fixtures/calico-manifests",
            )),
        ];
        candidates.into_iter().flatten().find(|p| {
            p.join("v3.25.2/calico.yaml").is_file() && p.join("v3.28.5/calico.yaml").is_file()
        })
    }

    fn load(dir: &std::path::Path, version: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(version).join("calico.yaml")).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        docs.into_iter().filter(|d| d.is_object()).collect()
    }

    /// The edits a typical operator makes to calico.yaml (and to its images, for a mirror).
    fn operator_edits(objs: &mut [Value], mirror: bool) {
        let node = container(obj(objs, "DaemonSet", "calico-node"), "calico-node");
        insert_env_after(
            node,
            "CALICO_IPV6POOL_VXLAN",
            json!({"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"}),
        );
        set_env(
            node,
            "IP_AUTODETECTION_METHOD",
            json!({"name": "IP_AUTODETECTION_METHOD", "value": "interface=eth0"}),
        );
        // Calico's VXLAN-only setup: no IPIP, VXLAN always, no BIRD, so no BIRD health checks.
        set_env(
            node,
            "CALICO_IPV4POOL_IPIP",
            json!({"name": "CALICO_IPV4POOL_IPIP", "value": "Never"}),
        );
        set_env(
            node,
            "CALICO_IPV4POOL_VXLAN",
            json!({"name": "CALICO_IPV4POOL_VXLAN", "value": "Always"}),
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            node[probe]["exec"]["command"]
                .as_array_mut()
                .unwrap()
                .retain(|a| a != "-bird-live" && a != "-bird-ready");
        }
        node["resources"]["limits"] = json!({"memory": "1Gi"});
        obj(objs, "ConfigMap", "calico-config")["data"]["veth_mtu"] = json!("1440");
        obj(objs, "ConfigMap", "calico-config")["data"]["calico_backend"] = json!("vxlan");
        obj(objs, "Deployment", "calico-kube-controllers")["spec"]["replicas"] = json!(2);
        if mirror {
            for o in objs.iter_mut() {
                if let Some(spec) = pod_spec_mut(o) {
                    for list in ["initContainers", "containers"] {
                        for c in spec
                            .get_mut(list)
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            let i = c["image"]
                                .as_str()
                                .unwrap()
                                .replace("docker.io/", "registry.example.com/mirror/");
                            let i = i.replace("quay.io/", "registry.example.com/mirror/");
                            c["image"] = json!(i);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn real_upstream_manifests_v3_25_2_to_v3_28_5() {
        let Some(dir) = fixtures() else {
            eprintln!(
                "skipping: no upstream Calico manifests (set CALICO_UPSTREAM_MANIFESTS or provide ../shared/fixtures/calico-manifests)"
            );
            return;
        };
        let (base, target) = (load(&dir, "v3.25.2"), load(&dir, "v3.28.5"));
        assert!(base.len() > 20 && target.len() > 20);

        // Untouched cluster: nothing reported, exactly the new manifest applied.
        let merged = carry_over(&base, &live_of(&base), &target);
        assert!(merged.report.is_empty(), "{:#}", merged.report.to_json());
        assert_eq!(merged.objects, target);

        // A customised cluster: exactly the edits are reported, and carried onto v3.28.5.
        let mut edited = base.clone();
        operator_edits(&mut edited, true);
        let merged = carry_over(&base, &live_of(&edited), &target);
        let mut expected = target.clone();
        operator_edits(&mut expected, true);
        assert_objects(&merged.objects, &expected, "v3.25.2 -> v3.28.5");
        let r = &merged.report;
        assert!(r.dropped.is_empty(), "{:#}", r.to_json());
        let mut got = paths(&r.carried);
        got.sort();
        let mut want: Vec<String> = [
            "ConfigMap kube-system/calico-config: data calico_backend",
            "ConfigMap kube-system/calico-config: data veth_mtu",
            "DaemonSet kube-system/calico-node: env CALICO_IPV4POOL_CIDR of container calico-node",
            "DaemonSet kube-system/calico-node: env CALICO_IPV4POOL_IPIP of container calico-node",
            "DaemonSet kube-system/calico-node: env CALICO_IPV4POOL_VXLAN of container calico-node",
            "DaemonSet kube-system/calico-node: livenessProbe of container calico-node",
            "DaemonSet kube-system/calico-node: readinessProbe of container calico-node",
            "DaemonSet kube-system/calico-node: env IP_AUTODETECTION_METHOD of container calico-node",
            "DaemonSet kube-system/calico-node: image registry of container calico-node",
            "DaemonSet kube-system/calico-node: image registry of init container install-cni",
            "DaemonSet kube-system/calico-node: image registry of init container mount-bpffs",
            "DaemonSet kube-system/calico-node: image registry of init container upgrade-ipam",
            "DaemonSet kube-system/calico-node: resources limits.memory of container calico-node",
            "Deployment kube-system/calico-kube-controllers: image registry of container calico-kube-controllers",
            "Deployment kube-system/calico-kube-controllers: replicas",
        ]
        .map(String::from)
        .to_vec();
        want.sort();
        assert_eq!(got, want);
        assert!(r.carried.iter().all(|c| !c.conflict));
    }
    #[test]
    fn real_upstream_manifests_every_consecutive_release() {
        let Some(dir) = fixtures() else {
            eprintln!(
                "skipping: no upstream Calico manifests (set CALICO_UPSTREAM_MANIFESTS or provide ../shared/fixtures/calico-manifests)"
            );
            return;
        };
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|v| dir.join(v).join("calico.yaml").is_file())
            .collect();
        versions.sort_by_key(|v| {
            v.trim_start_matches('v')
                .split('.')
                .map(|n| n.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        for pair in versions.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            let (base, target) = (load(&dir, from), load(&dir, to));
            let merged = carry_over(&base, &live_of(&base), &target);
            assert!(
                merged.report.is_empty(),
                "{from} -> {to}: {:#}",
                merged.report.to_json()
            );
            assert_objects(&merged.objects, &target, &format!("{from} -> {to}"));

            let mut edited = base.clone();
            operator_edits(&mut edited, true);
            let merged = carry_over(&base, &live_of(&edited), &target);
            let mut expected = target.clone();
            operator_edits(&mut expected, true);
            assert_objects(&merged.objects, &expected, &format!("{from} -> {to}"));
            let r = &merged.report;
            assert!(r.dropped.is_empty(), "{from} -> {to}: {:#}", r.to_json());
            let settings = r
                .carried
                .iter()
                .filter(|c| c.change != Change::Registry)
                .count();
            assert_eq!(settings, 10, "{from} -> {to}: {:#?}", paths(&r.carried));
        }
        eprintln!(
            "checked {} upgrades between {} releases",
            versions.len().saturating_sub(1),
            versions.len()
        );
    }
}
