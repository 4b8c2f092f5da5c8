//! `calico_upgrade` on the real control plane (kube-apiserver 1.34.4 with etcd, the
//! controller-manager, the scheduler and kwok nodes; `tests/realplane`), through the real
//! binary: Calico installed from the unmodified upstream `calico.yaml` with the real `kubectl
//! apply`, as Calico's manifest install says, then upgraded along the releases tested on
//! Kubernetes 1.34 (v3.30.7 -> v3.31.7 -> v3.32.1) with the upstream manifests.
//!
//! Every test reads the cluster afterwards instead of trusting the module's report, counts the
//! writes from the API server's audit log, and compares whole objects.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{backup_index, comparable, hops};
use support::module::run;
use support::world::{Backend, RealCluster, upstream_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

/// A five-node plane with Calico `version` installed from upstream calico.yaml by `kubectl
/// apply` and rolled out; `None` when the plane or the manifests are missing (said).
fn installed(test: &str, version: &str) -> Option<(RealCluster, PathBuf)> {
    let upstream = upstream_manifests(test)?;
    let c = RealCluster::start(5)?;
    c.kubectl_apply(&upstream.join(version).join("calico.yaml"));
    c.wait_rolled_out(Duration::from_secs(180));
    Some((c, upstream))
}

fn image_of(o: &Value, list: &str) -> Vec<String> {
    o["spec"]["template"]["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["image"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The objects a backup holds, by `kind namespace/name`.
fn backed_up(backup: &std::path::Path) -> Vec<(String, Value)> {
    let index = backup_index(backup);
    let mut out = Vec::new();
    for f in index["files"].as_array().unwrap() {
        let text = std::fs::read_to_string(backup.join(f["file"].as_str().unwrap())).unwrap();
        let list: Value = serde_json::from_str(&text)
            .or_else(|_| serde_saphyr::from_str(&text))
            .unwrap();
        for o in list["items"].as_array().unwrap() {
            let key = format!(
                "{} {}/{}",
                f["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            out.push((key, o.clone()));
        }
    }
    out
}

#[test]
fn upstream_calico_yaml_upgrades_stepwise_to_v3_32_with_a_backup_and_a_second_run_writes_nothing() {
    let Some((c, upstream)) = installed(
        "upstream_calico_yaml_upgrades_stepwise_to_v3_32_with_a_backup_and_a_second_run_writes_nothing",
        "v3.30.7",
    ) else {
        return;
    };
    let ks = Some("kube-system");
    let node_ds_before = c.get("apps/v1", "daemonsets", ks, "calico-node").unwrap();
    let kube_proxy_before = c.get("apps/v1", "daemonsets", ks, "kube-proxy").unwrap();
    let coredns_before = c.get("apps/v1", "deployments", ks, "coredns").unwrap();

    let args = c.upgrade_args(json!({"target_version": "v3.32.1", "strategy": "stepwise",
        "manifest_dir": upstream}));
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(r["from_version"], "v3.30.7", "{r:#}");
    assert_eq!(r["to_version"], "v3.32.1", "{r:#}");
    assert_eq!(hops(r), ["v3.31.7", "v3.32.1"], "{r:#}");

    // What runs, on every node, is the target: the pods the real DaemonSet controller made.
    let images = c.calico_node_images();
    assert_eq!(images.len(), 5, "{images:?}");
    for (node, image) in &images {
        assert!(image.ends_with("calico/node:v3.32.1"), "{node}: {image}");
    }
    let ds = c.get("apps/v1", "daemonsets", ks, "calico-node").unwrap();
    assert!(
        image_of(&ds, "containers")[0].ends_with("calico/node:v3.32.1"),
        "{ds:#}"
    );
    let kc = c
        .get("apps/v1", "deployments", ks, "calico-kube-controllers")
        .unwrap();
    assert!(
        image_of(&kc, "containers")[0].ends_with("calico/kube-controllers:v3.32.1"),
        "{kc:#}"
    );
    // Every CRD v3.32.1 defines is served.
    let text = std::fs::read_to_string(upstream.join("v3.32.1/calico.yaml")).unwrap();
    let crds: Vec<String> = kubesim::calico::parse_yaml(&text)
        .unwrap()
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(crds.len() > 20, "{crds:?}");
    for name in &crds {
        let crd = c.get(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            name,
        );
        assert!(crd.is_some(), "CRD {name} missing after the upgrade");
    }
    // What is not Calico's is exactly as it was.
    let unchanged = |api: &str, res: &str, name: &str, before: &Value| {
        assert_eq!(
            comparable(&c.get(api, res, ks, name).unwrap()),
            comparable(before),
            "{name}"
        );
    };
    unchanged("apps/v1", "daemonsets", "kube-proxy", &kube_proxy_before);
    unchanged("apps/v1", "deployments", "coredns", &coredns_before);

    // One backup, taken before the first write: the v3.30.7 objects as they were.
    let backups = c.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(r["backup_path"], backups[0].display().to_string());
    let saved = backed_up(&backups[0]);
    let kinds: std::collections::BTreeSet<&str> = saved
        .iter()
        .map(|(k, _)| k.split(' ').next().unwrap())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "ConfigMap",
        "ServiceAccount",
        "ClusterRole",
    ] {
        assert!(
            kinds.contains(kind),
            "{kind} missing from the backup: {kinds:?}"
        );
    }
    let (_, saved_ds) = saved
        .iter()
        .find(|(k, _)| k == "DaemonSet kube-system/calico-node")
        .expect("the calico-node DaemonSet is backed up");
    assert_eq!(comparable(saved_ds), comparable(&node_ds_before));

    // Once more: nothing left to do, not one write, no second backup.
    let mark = c.mark();
    let (out, code) = run(BIN, &args);
    assert_eq!((code, &out["changed"]), (0, &json!(false)), "{out:#}");
    assert_eq!(c.writes_since(&mark), Vec::<String>::new());
    assert_eq!(c.backups().len(), 1);
}

#[test]
fn check_mode_on_upstream_calico_yaml_writes_nothing_and_names_what_would_change() {
    let Some((c, upstream)) = installed(
        "check_mode_on_upstream_calico_yaml_writes_nothing_and_names_what_would_change",
        "v3.30.7",
    ) else {
        return;
    };
    let ks = Some("kube-system");
    let before = c.get("apps/v1", "daemonsets", ks, "calico-node").unwrap();
    let mut args = c.upgrade_args(json!({"target_version": "v3.32.1", "manifest_dir": upstream}));
    args["_ansible_check_mode"] = json!(true);
    args["_ansible_diff"] = json!(true);

    let mark = c.mark();
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(
        out["changed"], true,
        "check mode reports what would change: {out:#}"
    );
    assert_eq!(c.writes_since(&mark), Vec::<String>::new());
    assert!(c.backups().is_empty(), "check mode takes no backup");
    let would = out["ansible_facts"]["calico_upgrade"]["would_change"].to_string();
    assert!(
        would.contains("DaemonSet kube-system/calico-node"),
        "{would}"
    );

    // The cluster is as it was: v3.30.7 everywhere, the DaemonSet untouched.
    assert_eq!(
        comparable(&c.get("apps/v1", "daemonsets", ks, "calico-node").unwrap()),
        comparable(&before)
    );
    for (node, image) in c.calico_node_images() {
        assert!(image.ends_with("calico/node:v3.30.7"), "{node}: {image}");
    }
}

/// What kubectl applied and the new release dropped must go: v3.31 renamed calico-node's
/// `mount-bpffs` init container to `ebpf-bootstrap`.
///
/// Fails today: the module's server-side apply (field manager `k8s-calico`) leaves the fields
/// that `kubectl-client-side-apply` owns, so the v3.30.7 `mount-bpffs` init container (image
/// calico/node:v3.30.7) stays in the upgraded DaemonSet and would run on every node. Found on
/// the real plane (kubesim does not track field ownership across client-side and server-side
/// apply); issue 13 (field ownership) removes the ignore.
#[test]
#[ignore = "issue 13: server-side apply after kubectl client-side apply keeps the old release's fields"]
fn an_upgrade_after_kubectl_apply_keeps_nothing_the_new_release_dropped() {
    let Some((c, upstream)) = installed(
        "an_upgrade_after_kubectl_apply_keeps_nothing_the_new_release_dropped",
        "v3.30.7",
    ) else {
        return;
    };
    let args = c.upgrade_args(json!({"target_version": "v3.31.7", "manifest_dir": upstream}));
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    let init: Vec<&str> = ds["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        init,
        ["upgrade-ipam", "install-cni", "ebpf-bootstrap"],
        "{ds:#}"
    );
    for image in image_of(&ds, "containers")
        .iter()
        .chain(&image_of(&ds, "initContainers"))
    {
        assert!(image.ends_with(":v3.31.7"), "{image}");
    }
}
