//! `calico_upgrade` on a manifest install made from `calico-typha.yaml` (upstream's manifest for
//! clusters above 50 nodes: calico.yaml plus the calico-typha Deployment, Service and
//! PodDisruptionBudget, and `typha_service_name: calico-typha` in calico-config), through the
//! real binary against kubesim. The upgrade must use calico-typha.yaml for the running release
//! and every hop: otherwise typha keeps its old image and typha_service_name looks like a local
//! change.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::SimCluster;
use support::module::run;

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

/// kubeadm 1.29, four nodes, Calico v3.27.5 from calico-typha.yaml.
const TYPHA_3_27: &str = "
kubernetes_version: v1.29.10
nodes: {count: 4, control_plane: 1}
calico:
  version: v3.27.5
  manifest: calico-typha.yaml
timing: {time_scale: 0.05}
";

fn typha(c: &SimCluster) -> Value {
    c.get(
        "apps/v1",
        "deployments",
        Some("kube-system"),
        "calico-typha",
    )
    .expect("Deployment kube-system/calico-typha exists")
}

/// The image of every live calico-typha pod (what really runs).
fn typha_pod_images(c: &SimCluster) -> Vec<String> {
    c.list("v1", "pods")
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == "kube-system")
        .filter(|p| p["metadata"]["labels"]["k8s-app"] == "calico-typha")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Scales typha as a user does (`kubectl edit`) and waits until the replicas are available.
fn scale_typha(c: &SimCluster, replicas: i64) {
    c.edit(
        "apps/v1",
        "deployments",
        Some("kube-system"),
        "calico-typha",
        json!({"spec": {"replicas": replicas}}),
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let d = typha(c);
        if d["status"]["availableReplicas"] == json!(replicas)
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "typha never reached {replicas} available replicas: {:#}",
            d["status"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_typha_install_is_upgraded_from_calico_typha_yaml_keeping_its_replicas() {
    let c = SimCluster::start(TYPHA_3_27, &["v3.27.5", "v3.28.5"]);
    // The install is what calico-typha.yaml makes.
    assert!(
        typha(&c)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with("calico/typha:v3.27.5")
    );
    assert!(
        c.get("v1", "services", Some("kube-system"), "calico-typha")
            .is_some()
    );
    scale_typha(&c, 2);

    let args = c.upgrade_args(json!({"target_version": "v3.28.5"}));
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(r["install"]["manifest_file"], "calico-typha.yaml", "{r:#}");
    assert_eq!(r["to_version"], "v3.28.5", "{r:#}");

    // calico-node runs the target on every node.
    let images = c.calico_node_images();
    assert_eq!(images.len(), 4, "{images:?}");
    for (node, image) in &images {
        assert!(image.ends_with("calico/node:v3.28.5"), "{node}: {image}");
    }
    // So does typha: the Deployment and every pod, still at the user's two replicas.
    let d = typha(&c);
    assert_eq!(d["spec"]["replicas"], 2, "{d:#}");
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with("calico/typha:v3.28.5"),
        "{d:#}"
    );
    let pods = typha_pod_images(&c);
    assert_eq!(pods.len(), 2, "{pods:?}");
    for image in &pods {
        assert!(image.ends_with("calico/typha:v3.28.5"), "{pods:?}");
    }
    let config = c
        .get("v1", "configmaps", Some("kube-system"), "calico-config")
        .unwrap();
    assert_eq!(config["data"]["typha_service_name"], "calico-typha");

    // typha_service_name is upstream's value in calico-typha.yaml, not a customisation; the
    // replica count is one, and is carried.
    let report = r["customizations"].to_string();
    assert!(!report.contains("typha_service_name"), "{report}");
    let carried: Vec<&str> = r["customizations"]["carried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        carried
            .iter()
            .any(|p| p.contains("calico-typha") && p.contains("replicas")),
        "{carried:?}"
    );
    assert_eq!(r["customizations"]["dropped"], json!([]), "{r:#}");

    // A second run finds nothing to do and writes nothing.
    c.handle.faults().reset_counters();
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], false, "{out:#}");
    let counters = c.handle.faults().counters();
    assert_eq!(counters.total_writes, 0, "{:#?}", counters.writes);
    assert_eq!(typha(&c)["spec"]["replicas"], 2);
}

#[test]
fn a_manifest_dir_without_calico_typha_yaml_is_refused_naming_the_file() {
    let c = SimCluster::start(TYPHA_3_27, &["v3.27.5", "v3.28.5"]);
    let dir = c.manifest_dir();
    // calico.yaml is there for both releases; only the flavour the cluster runs is missing.
    assert!(dir.join("v3.28.5/calico.yaml").is_file());

    // The target's file.
    let target = dir.join("v3.28.5/calico-typha.yaml");
    let saved = std::fs::read(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
    assert!(
        msg.contains("manifest_dir has no calico-typha.yaml for Calico v3.28.5"),
        "{msg}"
    );
    assert!(msg.contains("installed from calico-typha.yaml"), "{msg}");
    std::fs::write(&target, saved).unwrap();

    // The running release's file, needed to tell customisations from upstream defaults.
    std::fs::remove_file(dir.join("v3.27.5/calico-typha.yaml")).unwrap();
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
    assert!(
        msg.contains("cannot load the manifest of the running Calico v3.27.5")
            && msg.contains("manifest_dir has no calico-typha.yaml for Calico v3.27.5"),
        "{msg}"
    );

    // Nothing changed: typha still runs the old release.
    assert!(
        typha(&c)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with("calico/typha:v3.27.5")
    );
}
