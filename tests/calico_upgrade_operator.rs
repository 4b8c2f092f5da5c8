//! `calico_upgrade` through the real binary against operator installs in kubesim (its Tigera
//! operator emulation): the upgrade goes through the operator (new operator image, the
//! operator rolls calico-node), hop by hop, with a backup, and from 3.30 with the operator's
//! CRDs applied from operator-crds.yaml. Every test reads the cluster afterwards.

mod support;

use k8s_calico::catalog::{InstallMethod, catalog};
use serde_json::{Value, json};
use support::cluster::{SimCluster, backup_index, hops};
use support::module::run;

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

/// A simulated cluster whose manifests folder holds the operator install files.
struct OperatorCluster(SimCluster);

impl std::ops::Deref for OperatorCluster {
    type Target = SimCluster;
    fn deref(&self) -> &SimCluster {
        &self.0
    }
}

impl OperatorCluster {
    fn start(scenario: &str, releases: &[&str]) -> Self {
        Self(SimCluster::start_with(
            scenario,
            releases,
            InstallMethod::Operator,
        ))
    }

    fn args(&self, extra: Value) -> Value {
        self.upgrade_args(extra)
    }

    fn operator_image(&self) -> String {
        self.get(
            "apps/v1",
            "deployments",
            Some("tigera-operator"),
            "tigera-operator",
        )
        .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn tigera_status(&self, type_: &str) -> String {
        self.get("operator.tigera.io/v1", "tigerastatuses", None, "calico")
            .and_then(|t| {
                t["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == type_)
                    .map(|c| c["status"].as_str().unwrap_or("").to_string())
            })
            .unwrap_or_default()
    }
}

/// The operator a hop deploys for a release: the catalog's newest patch that embeds it.
fn operator_of(calico: &str) -> String {
    catalog()
        .release(&calico.parse().unwrap())
        .unwrap()
        .operator
        .to_string()
}

/// The operator a release's manifests pin, which the cluster was installed with.
fn pinned_operator_of(calico: &str) -> String {
    catalog()
        .release(&calico.parse().unwrap())
        .unwrap()
        .pinned_operator
        .to_string()
}

#[test]
fn operator_install_upgrades_stepwise_through_the_operator() {
    let c = OperatorCluster::start(
        "
kubernetes_version: v1.27.16
nodes: {count: 4, control_plane: 1}
calico: {method: operator, version: v3.26.4}
timing: {time_scale: 0.02}
",
        &["v3.26.4", "v3.27.5", "v3.28.5"],
    );
    let (out, code) = run(
        BIN,
        &c.args(json!({"target_version": "v3.28.5", "strategy": "stepwise"})),
    );
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(r["method"], "operator", "{r:#}");
    assert_eq!(r["from_version"], "v3.26.4", "{r:#}");
    assert_eq!(hops(r), ["v3.27.5", "v3.28.5"], "{r:#}");
    for h in r["hops"].as_array().unwrap() {
        let v = h["version"].as_str().unwrap();
        assert_eq!(h["operator_version"], operator_of(v), "{h:#}");
    }

    // The operator, not the module, rolled calico-node: every node runs the target.
    assert_eq!(
        c.operator_image(),
        format!("quay.io/tigera/operator:{}", operator_of("v3.28.5"))
    );
    let images = c.calico_node_images();
    assert_eq!(images.len(), 4, "{images:?}");
    for (node, image) in &images {
        assert_eq!(image, "docker.io/calico/node:v3.28.5", "{node}");
    }
    let inst = c
        .get("operator.tigera.io/v1", "installations", None, "default")
        .unwrap();
    assert_eq!(inst["status"]["calicoVersion"], "v3.28.5");
    assert_eq!(c.tigera_status("Available"), "True");
    assert_eq!(c.tigera_status("Degraded"), "False");
    // No calico.yaml objects were created beside the operator's.
    assert!(
        c.get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
            .is_none()
    );

    // One backup, of the install as it was.
    let backups = c.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(r["backup_path"], json!(backups[0]), "{r:#}");
    let index = backup_index(&backups[0]);
    assert_eq!(index["from_version"], "v3.26.4", "{index:#}");
    assert_eq!(index["method"], "operator", "{index:#}");
    let text = std::fs::read_dir(&backups[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    assert!(
        text.contains(&format!(
            "quay.io/tigera/operator:{}",
            pinned_operator_of("v3.26.4")
        )),
        "the backup holds the operator Deployment as it was"
    );

    // A second run has nothing to do.
    let (again, code) = run(BIN, &c.args(json!({"target_version": "v3.28.5"})));
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changed"], false, "{again:#}");
}

#[test]
fn operator_install_to_3_30_applies_operator_crds() {
    let c = OperatorCluster::start(
        "
kubernetes_version: v1.31.4
nodes: {count: 3, control_plane: 1}
calico: {method: operator, version: v3.29.7}
timing: {time_scale: 0.02}
",
        &["v3.29.7", "v3.30.7"],
    );
    // The 3.30 operator's new CRDs are not there yet: tigera-operator.yaml of 3.29 carried
    // the CRDs itself.
    assert!(
        c.get(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            "goldmanes.operator.tigera.io"
        )
        .is_none()
    );
    let (out, code) = run(BIN, &c.args(json!({"target_version": "v3.30.7"})));
    assert_eq!(code, 0, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(hops(r), ["v3.30.7"], "{r:#}");
    for crd in [
        "goldmanes.operator.tigera.io",
        "whiskers.operator.tigera.io",
        "installations.operator.tigera.io",
        "stagednetworkpolicies.crd.projectcalico.org",
    ] {
        let o = c
            .get(
                "apiextensions.k8s.io/v1",
                "customresourcedefinitions",
                None,
                crd,
            )
            .unwrap_or_else(|| panic!("CRD {crd} missing"));
        // Applied by the module with server-side apply, as the 3.30 docs require.
        let managers: Vec<&str> = o["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        if crd.starts_with("goldmanes") || crd.starts_with("whiskers") {
            assert!(managers.contains(&"k8s-calico"), "{crd}: {managers:?}");
        }
    }
    for (node, image) in c.calico_node_images() {
        assert_eq!(image, "docker.io/calico/node:v3.30.7", "{node}");
    }
    let inst = c
        .get("operator.tigera.io/v1", "installations", None, "default")
        .unwrap();
    assert_eq!(inst["status"]["calicoVersion"], "v3.30.7");
    assert_eq!(c.tigera_status("Available"), "True");
}

#[test]
fn a_crash_looping_release_fails_the_hop_and_the_operator_install_is_rolled_back() {
    let c = OperatorCluster::start(
        "
kubernetes_version: v1.27.16
nodes: {count: 3, control_plane: 1}
calico: {method: operator, version: v3.26.4}
faults: {crash_loop: [{image: '*calico/node:v3.27.5', nodes: [w2]}]}
timing: {time_scale: 0.01}
",
        &["v3.26.4", "v3.27.5"],
    );
    let (out, code) = run(
        BIN,
        &c.args(json!({"target_version": "v3.27.5", "timeout": 20})),
    );
    assert_eq!(code, 1, "{out:#}");
    let msg = out["msg"].as_str().unwrap();
    // The wait names what the operator reports.
    assert!(msg.contains("upgrade to v3.27.5 failed"), "{msg}");
    assert!(
        msg.contains("TigeraStatus calico Degraded (Some pods are failing)")
            && msg.contains("has crash looping container: calico-node"),
        "{msg}"
    );
    assert!(msg.contains("rolled back to v3.26.4"), "{msg}");
    assert_eq!(out["rolled_back"], true, "{out:#}");
    // The operator is back at the release the cluster ran, and so is every node.
    assert_eq!(
        c.operator_image(),
        format!("quay.io/tigera/operator:{}", pinned_operator_of("v3.26.4"))
    );
    for (node, image) in c.calico_node_images() {
        assert_eq!(image, "docker.io/calico/node:v3.26.4", "{node}");
    }
    assert_eq!(c.tigera_status("Available"), "True");
}
