//! The Tigera operator, as far as the product touches it.
//!
//! The operator is a workload: it does nothing until a pod of the `tigera-operator`
//! Deployment (namespace `tigera-operator`, label `name=tigera-operator`) is Running and Ready.
//! The Calico release it installs is fixed by that pod's image tag (each operator release
//! embeds exactly one Calico release: [`k8s_calico::catalog::Catalog::operator_embeds`]), so an
//! upgrade is a new operator image → a new pod → a new reconcile. With several Ready pods
//! (a rolling update of the operator), the oldest keeps the leader lease until it goes; a new
//! leader starts with fresh status managers, as a new process would.
//!
//! The leader reconciles (see [`render`]):
//! - `Installation default`: defaults written back into its spec (`fillDefaults`), validation
//!   (an invalid spec degrades TigeraStatus `calico` with `ResourceValidationError`), then
//!   `calico-system` with calico-node, calico-typha (scaled to the nodes as the Typha
//!   autoscaler does), calico-kube-controllers and csi-node-driver (3.25+), owned by the
//!   Installation; the IP pools (the operator's IP pool controller from 3.28, calico-node's
//!   first start before); `Installation.status` (`variant`, `calicoVersion`, `mtu`,
//!   `imageSet`, `computed`) only once the status manager reports everything available, as
//!   `core_controller.go` does, and `status.conditions` mirrored from the TigeraStatus
//!   (Available → Ready) from operator v1.30;
//! - `APIServer default` (once the Installation is available): the `calico-apiserver`
//!   Deployment (`controlPlaneReplicas` replicas), TigeraStatus `apiserver`, `status.state`;
//! - the TigeraStatus objects, through a [`status::StatusManager`] per component on a 5 s
//!   (simulated) ticker.
//!
//! Not modelled: the ImageSet digests, the Windows upgrader, certificates, the API server's
//! APIService, migration from a manifest install, Goldmane/Whisker workloads.

pub mod render;
pub mod status;

use crate::pointer::At;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_calico::catalog::catalog;
use k8s_calico::version::{Minor, Version};
use serde_json::{Value, json};

use crate::cluster::{Cluster, WriteOptions};
use crate::controllers::{ControllerSpec, Shutdown};
use crate::workloads::{deleting, pod_ready, s};
use status::{MANAGER, StatusManager};

/// Where the operator runs.
pub const OPERATOR_NS: &str = "tigera-operator";

/// The operator's controller, to start with the server (`controllers::builtin()` does).
pub fn controllers() -> Vec<ControllerSpec> {
    vec![ControllerSpec::new("tigera-operator", run)]
}

/// Runs the operator emulation until the server stops.
pub async fn run(cluster: Cluster, shutdown: Shutdown) {
    let mut op = Operator::default();
    crate::workloads::drive(
        cluster,
        shutdown,
        &[
            ("v1", "pods"),
            ("apps/v1", "deployments"),
            ("apps/v1", "daemonsets"),
            ("v1", "nodes"),
        ],
        move |c| op.reconcile(c),
    )
    .await;
}

/// The running operator process: who leads, and its status managers.
#[derive(Default)]
struct Operator {
    /// uid of the pod holding the leader lease.
    leader: Option<String>,
    calico: Option<Version>,
    operator: Option<Version>,
    status: BTreeMap<&'static str, StatusManager>,
    last_tick: Option<Instant>,
}

impl Operator {
    fn reconcile(&mut self, c: &Cluster) -> Option<Duration> {
        let tick = crate::workloads::scaled(c, 5.0).max(Duration::from_millis(20));
        if !self.elect(c) {
            return Some(Duration::from_secs(1));
        }
        let calico = self.calico.clone()?;
        self.reconcile_installation(c, &calico);
        self.reconcile_apiserver(c, &calico);
        let due = self.last_tick.is_none_or(|t| t.elapsed() >= tick);
        if due {
            self.last_tick = Some(Instant::now());
            for m in self.status.values_mut() {
                m.update_status(c);
            }
            // The status a reconcile reads is the one just synced.
            self.write_installation_status(c, &calico);
            self.write_apiserver_status(c);
        }
        Some(tick.min(Duration::from_millis(200)))
    }

    /// Finds the pod holding the lease; a new leader starts afresh. False when no operator
    /// pod is Running and Ready with an image the catalog knows.
    fn elect(&mut self, c: &Cluster) -> bool {
        let pods = c
            .list(
                "v1",
                "pods",
                Some(OPERATOR_NS),
                &crate::ListOptions {
                    label_selector: Some("name=tigera-operator".into()),
                    ..Default::default()
                },
            )
            .unwrap_or_default();
        let mut ready: Vec<&Value> = pods
            .iter()
            .filter(|p| !deleting(p) && s(p, "/status/phase") == "Running" && pod_ready(p))
            .collect();
        ready.sort_by(|a, b| {
            s(a, "/metadata/creationTimestamp")
                .cmp(s(b, "/metadata/creationTimestamp"))
                .then_with(|| s(a, "/metadata/name").cmp(s(b, "/metadata/name")))
        });
        let leader = self
            .leader
            .as_deref()
            .and_then(|uid| ready.iter().find(|p| s(p, "/metadata/uid") == uid))
            .or(ready.first())
            .copied();
        let Some(leader) = leader else {
            self.leader = None;
            return false;
        };
        let uid = s(leader, "/metadata/uid").to_string();
        if self.leader.as_deref() != Some(uid.as_str()) {
            // A new process: its embedded release, fresh status managers.
            let image = leader
                .at("/spec/containers")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["name"] == "tigera-operator")
                        .or(cs.first())
                })
                .map(|c| s(c, "/image"))
                .unwrap_or("");
            self.operator = Version::from_image(image);
            self.calico = self
                .operator
                .as_ref()
                .and_then(|o| catalog().operator_embeds(o).cloned());
            self.leader = Some(uid);
            self.status.clear();
            self.last_tick = None;
        }
        self.calico.is_some()
    }

    fn manager(&mut self, component: &'static str) -> &mut StatusManager {
        self.status
            .entry(component)
            .or_insert_with(|| StatusManager::new(component))
    }

    fn reconcile_installation(&mut self, c: &Cluster, calico: &Version) {
        let opts = WriteOptions::manager(MANAGER);
        let inst = match c.get("operator.tigera.io/v1", "installations", None, "default") {
            Ok(i) if !deleting(&i) => i,
            _ => {
                self.manager("calico").on_cr_not_found();
                return;
            }
        };
        let generation = inst.at("/metadata/generation").and_then(Value::as_i64);
        self.manager("calico").on_cr_found(generation);
        let spec = render::fill_defaults(&inst["spec"], pod_subnet(c).as_deref());
        let inst = if spec != inst["spec"] {
            match c.modify(
                "operator.tigera.io/v1",
                "installations",
                None,
                "default",
                None,
                &opts,
                |o| o["spec"] = spec.clone(),
            ) {
                Ok(i) => i,
                Err(e) => {
                    self.manager("calico").set_degraded(
                        "ResourceUpdateError",
                        &format!("Failed to write defaults: {}", e.message),
                    );
                    return;
                }
            }
        } else {
            inst
        };
        if let Err(e) = render::validate(&inst["spec"]) {
            self.manager("calico").set_degraded(
                "ResourceValidationError",
                &format!("Error validating CRD resource: {e}"),
            );
            return;
        }
        let nodes = c
            .list("v1", "nodes", None, &Default::default())
            .unwrap_or_default()
            .iter()
            .filter(|n| n.at("/spec/unschedulable") != Some(&json!(true)))
            .count();
        for obj in render::calico_objects(&inst, calico, nodes) {
            if let Err(e) = ensure(c, &obj) {
                self.manager("calico").set_degraded(
                    "ResourceUpdateError",
                    &format!("Error creating / updating resource: {e}"),
                );
                return;
            }
        }
        self.ensure_pools(c, &inst, calico);
        let (ds, deps) = render::calico_monitored(calico);
        let ns = render::CALICO_NS;
        let ds: Vec<(&str, &str)> = ds.iter().map(|d| (ns, *d)).collect();
        let deps: Vec<(&str, &str)> = deps.iter().map(|d| (ns, *d)).collect();
        let m = self.manager("calico");
        m.monitor(&ds, &deps);
        m.ready_to_monitor();
        m.clear_degraded();
    }

    /// IP pools: created by the operator's IP pool controller (3.28+), or by calico-node from
    /// its environment on first start (earlier): either way once, and never deleted here.
    fn ensure_pools(&self, c: &Cluster, inst: &Value, calico: &Version) {
        let manager = if render::operator_manages_pools(calico) {
            MANAGER
        } else {
            "calico-node"
        };
        for p in inst
            .at("/spec/calicoNetwork/ipPools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let pool = render::ippool(p);
            let name = s(&pool, "/metadata/name").to_string();
            if c.resolve("crd.projectcalico.org/v1", "ippools").is_err() {
                return;
            }
            if c.get("crd.projectcalico.org/v1", "ippools", None, &name)
                .is_err()
            {
                let _ = c.create(
                    "crd.projectcalico.org/v1",
                    "ippools",
                    None,
                    pool,
                    &WriteOptions::manager(manager),
                );
            }
        }
    }

    /// `Installation.status`: conditions mirrored from TigeraStatus `calico` (operator
    /// v1.30+), and once available the version, variant, MTU and computed spec.
    fn write_installation_status(&mut self, c: &Cluster, calico: &Version) {
        let Some(m) = self.status.get("calico") else {
            return;
        };
        let available = m.is_available();
        let Ok(inst) = c.get("operator.tigera.io/v1", "installations", None, "default") else {
            return;
        };
        if deleting(&inst) {
            return;
        }
        let mut status = inst.get("status").cloned().unwrap_or_else(|| json!({}));
        if !status.is_object() {
            status = json!({});
        }
        if self
            .operator
            .as_ref()
            .is_some_and(|o| o.minor() >= Minor::new(1, 30))
            && let Ok(ts) = c.get("operator.tigera.io/v1", "tigerastatuses", None, "calico")
        {
            let mut conds: Vec<Value> =
                status["conditions"].as_array().cloned().unwrap_or_default();
            for tc in ts
                .at("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ctype = if tc["type"] == "Available" {
                    json!("Ready")
                } else {
                    tc["type"].clone()
                };
                let mut ic = json!({"type": ctype, "status": tc["status"], "reason": tc["reason"],
                    "message": tc["message"], "lastTransitionTime": tc["lastTransitionTime"]});
                if let Some(g) = tc.get("observedGeneration") {
                    ic["observedGeneration"] = g.clone();
                }
                match conds.iter_mut().find(|x| x["type"] == ic["type"]) {
                    Some(x) => *x = ic,
                    None => conds.push(ic),
                }
            }
            status["conditions"] = json!(conds);
        }
        if available {
            status["mtu"] = json!(render::effective_mtu(&inst["spec"]));
            status["variant"] = inst["spec"]["variant"].clone();
            status["calicoVersion"] = json!(calico.to_string());
            status["imageSet"] = json!("");
            status["computed"] = inst["spec"].clone();
        }
        if inst.get("status") != Some(&status) {
            let _ = c.modify(
                "operator.tigera.io/v1",
                "installations",
                None,
                "default",
                Some("status"),
                &WriteOptions::manager(MANAGER),
                |o| o["status"] = status,
            );
        }
    }

    /// `APIServer default`: waits for the Installation to be available, then renders.
    fn reconcile_apiserver(&mut self, c: &Cluster, calico: &Version) {
        let api = match c.get("operator.tigera.io/v1", "apiservers", None, "default") {
            Ok(a) if !deleting(&a) => a,
            _ => {
                if self.status.contains_key("apiserver") {
                    self.manager("apiserver").on_cr_not_found();
                }
                return;
            }
        };
        let generation = api.at("/metadata/generation").and_then(Value::as_i64);
        self.manager("apiserver").on_cr_found(generation);
        let Ok(inst) = c.get("operator.tigera.io/v1", "installations", None, "default") else {
            self.manager("apiserver")
                .set_degraded("ResourceNotFound", "Installation not found");
            return;
        };
        if inst.at("/status/computed").is_none() {
            self.manager("apiserver")
                .set_degraded("ResourceNotReady", "Waiting for Installation to be ready");
            return;
        }
        for obj in render::apiserver_objects(&api, &inst["spec"], calico) {
            if let Err(e) = ensure(c, &obj) {
                self.manager("apiserver").set_degraded(
                    "ResourceUpdateError",
                    &format!("Error creating / updating resource: {e}"),
                );
                return;
            }
        }
        let ns = render::apiserver_namespace(calico);
        let m = self.manager("apiserver");
        m.monitor(&[], &[(ns, "calico-apiserver")]);
        m.ready_to_monitor();
        m.clear_degraded();
    }

    fn write_apiserver_status(&mut self, c: &Cluster) {
        let Some(m) = self.status.get("apiserver") else {
            return;
        };
        if !m.is_available() {
            return;
        }
        let _ = c.modify(
            "operator.tigera.io/v1",
            "apiservers",
            None,
            "default",
            Some("status"),
            &WriteOptions::manager(MANAGER),
            |o| o["status"]["state"] = json!("Ready"),
        );
    }
}

/// The cluster's pod network as kubeadm recorded it (`podSubnet`), which the operator's pod
/// CIDR detection uses for the default pool.
fn pod_subnet(c: &Cluster) -> Option<String> {
    let cm = c
        .get("v1", "configmaps", Some("kube-system"), "kubeadm-config")
        .ok()?;
    let text = s(&cm, "/data/ClusterConfiguration");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("podSubnet:"))
        .map(|v| v.trim().to_string())
}

/// Create-or-update as the operator's component handler does: the rendered fields replace the
/// live ones (a hand edit is reverted), labels and annotations are merged, the owner set. Writes
/// that change nothing are no-ops in the API.
fn ensure(c: &Cluster, obj: &Value) -> Result<(), String> {
    let api = obj["apiVersion"].as_str().unwrap_or("v1");
    let kind = obj["kind"].as_str().unwrap_or("");
    let ns = obj.at("/metadata/namespace").and_then(Value::as_str);
    let name = s(obj, "/metadata/name");
    let opts = WriteOptions::manager(MANAGER);
    let describe = |e: crate::ApiError| format!("{kind} {name}: {}", e.message);
    match c.get(api, kind, ns, name) {
        Err(e) if e.code == 404 => c
            .create(api, kind, ns, obj.clone(), &opts)
            .map(|_| ())
            .map_err(describe),
        Err(e) => Err(describe(e)),
        Ok(live) => {
            if deleting(&live) {
                return Ok(());
            }
            let mut want = live.clone();
            apply_rendered(&mut want, obj);
            if want == live {
                return Ok(());
            }
            c.modify(api, kind, ns, name, None, &opts, |o| apply_rendered(o, obj))
                .map(|_| ())
                .map_err(describe)
        }
    }
}

fn apply_rendered(live: &mut Value, rendered: &Value) {
    let Some(r) = rendered.as_object() else {
        return;
    };
    for (k, v) in r {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for key in ["labels", "annotations"] {
                    if let Some(m) = v.get(key).and_then(Value::as_object) {
                        for (lk, lv) in m {
                            live["metadata"][key][lk] = lv.clone();
                        }
                    }
                }
                if let Some(o) = v.get("ownerReferences") {
                    live["metadata"]["ownerReferences"] = o.clone();
                }
            }
            "spec" if live.get("spec").is_some_and(Value::is_object) && v.is_object() => {
                // Fields the API server defaulted stay; rendered ones win.
                merge_rendered(&mut live["spec"], v);
            }
            _ => live[k] = v.clone(),
        }
    }
}

/// Rendered values replace live ones; maps merge so API-server defaults survive; lists are
/// replaced unless equal after defaulting (containers keep their defaulted fields when the
/// rendered ones match).
fn merge_rendered(live: &mut Value, rendered: &Value) {
    match (live, rendered) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, v) in r {
                match l.get_mut(k) {
                    Some(lv) => merge_rendered(lv, v),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => {
            for (lv, rv) in l.iter_mut().zip(r) {
                merge_rendered(lv, rv);
            }
        }
        (l, r) => *l = r.clone(),
    }
}
