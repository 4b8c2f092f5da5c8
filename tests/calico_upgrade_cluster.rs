//! `calico_upgrade` through the real binary against simulated clusters (kubesim): the upgrade
//! itself, what it keeps, what it refuses, how it fails and rolls back. Every test reads the
//! cluster afterwards rather than trusting the module's own report.

mod support;

use serde_json::{Value, json};
use support::cluster::{SimCluster, backup_index, comparable, hops};
use support::module::run;

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

/// kubeadm 1.27, five nodes, Calico v3.25.2 from calico.yaml with the changes users make.
const CUSTOMISED_3_25: &str = "
kubernetes_version: v1.27.16
nodes: {count: 5, control_plane: 1}
calico:
  version: v3.25.2
  pool_cidr: 172.16.0.0/16
  env: {IP_AUTODETECTION_METHOD: 'interface=eth0', CALICO_IPV4POOL_IPIP: CrossSubnet}
  config: {veth_mtu: '1440'}
timing: {time_scale: 0.05}
";

fn calico_node_env(c: &SimCluster) -> Value {
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    Value::Object(
        env.as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("value").is_some())
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect(),
    )
}

#[test]
fn manifest_install_goes_stepwise_keeping_every_customisation_and_a_restorable_backup() {
    let c = SimCluster::start(
        CUSTOMISED_3_25,
        &["v3.25.2", "v3.26.5", "v3.27.5", "v3.28.5"],
    );
    // A replica count a user tuned (kube-controllers here: calico.yaml ships no typha).
    c.edit(
        "apps/v1",
        "deployments",
        Some("kube-system"),
        "calico-kube-controllers",
        json!({"spec": {"replicas": 2}}),
    );
    let before = c.list("crd.projectcalico.org/v1", "ippools");

    let (out, code) = run(
        BIN,
        &c.upgrade_args(json!({"target_version": "v3.28.5", "strategy": "stepwise"})),
    );
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(r["from_version"], "v3.25.2", "{r:#}");
    assert_eq!(r["to_version"], "v3.28.5", "{r:#}");
    assert_eq!(hops(r), ["v3.26.5", "v3.27.5", "v3.28.5"], "{r:#}");

    // What runs, on every node, is the target: the pods, not only the DaemonSet spec.
    let images = c.calico_node_images();
    assert_eq!(images.len(), 5, "{images:?}");
    for (node, image) in &images {
        assert!(image.ends_with("calico/node:v3.28.5"), "{node}: {image}");
    }
    // Every customisation is still there.
    let env = calico_node_env(&c);
    assert_eq!(env["IP_AUTODETECTION_METHOD"], "interface=eth0", "{env:#}");
    assert_eq!(env["CALICO_IPV4POOL_IPIP"], "CrossSubnet", "{env:#}");
    assert_eq!(env["CALICO_IPV4POOL_CIDR"], "172.16.0.0/16", "{env:#}");
    let config = c
        .get("v1", "configmaps", Some("kube-system"), "calico-config")
        .unwrap();
    assert_eq!(config["data"]["veth_mtu"], "1440", "{config:#}");
    let kc = c
        .get(
            "apps/v1",
            "deployments",
            Some("kube-system"),
            "calico-kube-controllers",
        )
        .unwrap();
    assert_eq!(kc["spec"]["replicas"], 2);
    assert!(
        kc["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(":v3.28.5")
    );
    assert_eq!(c.list("crd.projectcalico.org/v1", "ippools"), before);

    // The backup is complete (the CRDs, the pool, the workloads) and restores the v3.25.2 objects.
    let backups = c.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup = &backups[0];
    assert_eq!(r["backup_path"], backup.display().to_string());
    let index = backup_index(backup);
    let kinds: Vec<&str> = index["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "IPPool",
        "DaemonSet",
        "Deployment",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    let (out, code) = run(
        BIN,
        &c.upgrade_args(json!({"state": "rolled_back", "backup_path": backup})),
    );
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true, "{out:#}");
    assert_eq!(
        out["ansible_facts"]["calico_upgrade"]["differences"],
        json!([]),
        "{out:#}"
    );
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    assert!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with("calico/node:v3.25.2"),
        "{ds:#}"
    );
    assert_eq!(
        calico_node_env(&c)["IP_AUTODETECTION_METHOD"],
        "interface=eth0"
    );
}

/// Three nodes on v3.27.5 under Kubernetes 1.29: one hop to v3.28.5.
const PLAIN_3_27: &str = "
kubernetes_version: v1.29.10
nodes: {count: 3}
calico: {version: v3.27.5}
timing: {time_scale: 0.05}
";

#[test]
fn a_second_run_changes_nothing_and_writes_nothing() {
    let c = SimCluster::start(PLAIN_3_27, &["v3.27.5", "v3.28.5"]);
    let args = c.upgrade_args(json!({"target_version": "v3.28.5"}));
    let (out, code) = run(BIN, &args);
    assert_eq!((code, &out["changed"]), (0, &json!(true)), "{out:#}");

    c.handle.faults().reset_counters();
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], false, "{out:#}");
    let counters = c.handle.faults().counters();
    assert_eq!(counters.total_writes, 0, "{:#?}", counters.writes);
    // Nothing to do means no backup either: the one from the first run is all there is.
    assert_eq!(c.backups().len(), 1);
}

#[test]
fn a_forced_untested_upgrade_then_runs_with_and_without_force_write_nothing() {
    // Neither 3.28 nor 3.29 is tested on Kubernetes 1.33: the upgrade needs force.
    let c = SimCluster::start(
        "kubernetes_version: v1.33.5\nnodes: {count: 3}\ncalico: {version: v3.28.5}\ntiming: {time_scale: 0.05}\n",
        &["v3.28.5", "v3.29.7"],
    );
    let unforced = c.refused_upgrade(json!({"target_version": "v3.29.7"}));
    assert!(
        unforced.contains("not tested on Kubernetes 1.33"),
        "{unforced}"
    );
    let forced = c.upgrade_args(json!({"target_version": "v3.29.7", "force": true}));
    let (out, code) = run(BIN, &forced);
    assert_eq!((code, &out["changed"]), (0, &json!(true)), "{out:#}");
    assert_eq!(c.backups().len(), 1);

    for args in [forced, c.upgrade_args(json!({"target_version": "v3.29.7"}))] {
        c.handle.faults().reset_counters();
        let (out, code) = run(BIN, &args);
        assert_eq!(code, 0, "{args}: {out:#}");
        assert_eq!(out["changed"], false, "{args}: {out:#}");
        assert_eq!(
            out["msg"], "Calico v3.29.7 already runs: nothing to do",
            "{out:#}"
        );
        assert!(
            out["warnings"]
                .to_string()
                .contains("not tested on Kubernetes 1.33"),
            "{out:#}"
        );
        let counters = c.handle.faults().counters();
        assert_eq!(counters.total_writes, 0, "{args}: {:#?}", counters.writes);
        assert_eq!(c.backups().len(), 1, "{args}");
    }
}

#[test]
fn check_mode_writes_nothing_and_the_diff_names_the_objects() {
    let c = SimCluster::start(PLAIN_3_27, &["v3.27.5", "v3.28.5"]);
    c.handle.faults().reset_counters();
    let mut args = c.upgrade_args(json!({"target_version": "v3.28.5"}));
    args["_ansible_check_mode"] = json!(true);
    args["_ansible_diff"] = json!(true);
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(
        out["changed"], true,
        "check mode reports what would change: {out:#}"
    );
    let counters = c.handle.faults().counters();
    assert_eq!(counters.total_writes, 0, "{:#?}", counters.writes);
    assert!(c.backups().is_empty(), "check mode takes no backup");

    let would = &out["ansible_facts"]["calico_upgrade"]["would_change"];
    let would: Vec<&str> = would
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        would
            .iter()
            .any(|w| w.contains("DaemonSet kube-system/calico-node")),
        "{would:?}"
    );
    let diff = serde_json::to_string(&out["diff"]).unwrap();
    assert!(diff.contains("calico-node"), "{diff}");
    assert!(
        diff.contains("v3.27.5") && diff.contains("v3.28.5"),
        "{diff}"
    );
    for (_, image) in c.calico_node_images() {
        assert!(image.ends_with(":v3.27.5"), "{image}");
    }
}

#[test]
fn a_node_crash_looping_on_the_new_release_rolls_everything_back_and_is_named() {
    let c = SimCluster::start(
        "
kubernetes_version: v1.29.10
nodes: {count: 4}
calico: {version: v3.27.5, env: {IP_AUTODETECTION_METHOD: 'can-reach=10.0.0.1'}}
faults: {crash_loop: [{image: '*calico/node:v3.28.5', nodes: [w2]}]}
timing: {time_scale: 0.05}
",
        &["v3.27.5", "v3.28.5"],
    );
    let (out, code) = run(
        BIN,
        &c.upgrade_args(json!({"target_version": "v3.28.5", "timeout": 15})),
    );
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["failed"], true);
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.contains("w2"), "{msg}");
    assert!(msg.contains("rolled back"), "{msg}");
    // The message says why, as kubectl would: the pod's init container crash-loops.
    assert!(msg.contains("CrashLoopBackOff"), "{msg}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(r["rolled_back"], true, "{r:#}");
    assert_eq!(r["differences"], json!([]), "{r:#}");

    // The cluster agrees: every backed-up object is as it was, and v3.27.5 runs everywhere.
    let backup = &c.backups()[0];
    let index = backup_index(backup);
    let mut compared = 0;
    for f in index["files"].as_array().unwrap() {
        let kind = f["kind"].as_str().unwrap();
        if [
            "IPAMBlock",
            "IPAMHandle",
            "BlockAffinity",
            "ClusterInformation",
        ]
        .contains(&kind)
        {
            continue;
        }
        let list: Value = serde_json::from_slice(
            &std::fs::read(backup.join(f["file"].as_str().unwrap())).unwrap(),
        )
        .or_else(|_| {
            serde_saphyr::from_str(
                &std::fs::read_to_string(backup.join(f["file"].as_str().unwrap())).unwrap(),
            )
        })
        .unwrap();
        for saved in list["items"].as_array().unwrap() {
            let ns = saved["metadata"]["namespace"].as_str();
            let name = saved["metadata"]["name"].as_str().unwrap();
            let live = c
                .get(
                    f["apiVersion"].as_str().unwrap(),
                    f["resource"].as_str().unwrap(),
                    ns,
                    name,
                )
                .unwrap_or_else(|| panic!("{kind} {name} is gone"));
            assert_eq!(
                comparable(&live)["spec"],
                comparable(saved)["spec"],
                "{kind} {name}"
            );
            assert_eq!(
                comparable(&live)["data"],
                comparable(saved)["data"],
                "{kind} {name}"
            );
            compared += 1;
        }
    }
    assert!(compared > 20, "only {compared} objects compared");
    let images = c.calico_node_images();
    assert_eq!(images.len(), 4);
    for (node, image) in images {
        assert!(image.ends_with("calico/node:v3.27.5"), "{node}: {image}");
    }
}

#[test]
fn api_errors_and_dropped_watches_during_the_upgrade_are_ridden_out() {
    let c = SimCluster::start(PLAIN_3_27, &["v3.27.5", "v3.28.5"]);
    c.handle.faults().set_faults(kubesim::faults::Faults {
        error_bursts: vec![
            kubesim::faults::ErrorBurst {
                rate: 0.3,
                code: 429,
                retry_after_seconds: Some(1),
                max_count: Some(15),
                ..Default::default()
            },
            kubesim::faults::ErrorBurst {
                rate: 0.2,
                code: 500,
                max_count: Some(10),
                ..Default::default()
            },
        ],
        drop_watches_after_seconds: 1,
        ..Default::default()
    });
    let (out, code) = run(BIN, &c.upgrade_args(json!({"target_version": "v3.28.5"})));
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["changed"], true);
    assert!(c.handle.faults().counters().injected_errors >= 10);
    for (node, image) in c.calico_node_images() {
        assert!(image.ends_with("calico/node:v3.28.5"), "{node}: {image}");
    }
}

#[test]
fn other_cnis_and_the_etcd_datastore_are_refused_naming_what_was_found() {
    for (cni, namespace) in [
        ("flannel", "kube-flannel"),
        ("multus", "kube-system"),
        ("canal", "kube-system"),
    ] {
        let c = SimCluster::start(
            &format!("{PLAIN_3_27}other_cni: [{cni}]\nwait_ready: false\n"),
            &["v3.27.5", "v3.28.5"],
        );
        let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
        assert!(msg.contains(cni), "{cni}: {msg}");
        assert!(msg.contains(namespace), "{cni}: {msg}");
    }
    let c = SimCluster::start(
        "kubernetes_version: v1.29.10\nnodes: {count: 2}\ncalico: {version: v3.27.5, datastore: etcd}\nwait_ready: false\n",
        &["v3.27.5", "v3.28.5"],
    );
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
    assert!(msg.contains("etcd"), "{msg}");
}

#[test]
fn kubernetes_1_22_is_refused_with_the_supported_range() {
    let c = SimCluster::start(
        "kubernetes_version: v1.22.17\nnodes: {count: 2}\ncalico: {version: v3.24.5}\nwait_ready: false\n",
        &["v3.24.5", "v3.25.2"],
    );
    let msg = c.refused_upgrade(json!({"target_version": "v3.25.2"}));
    assert!(msg.contains("1.22"), "{msg}");
    assert!(msg.contains("1.23"), "{msg}");
}

#[test]
fn a_checksum_mismatch_an_unreachable_mirror_and_a_concurrent_run_are_refused() {
    let c = SimCluster::start(PLAIN_3_27, &["v3.27.5", "v3.28.5"]);
    let zeros = "0".repeat(64);
    let msg = c.refused_upgrade(
        json!({"target_version": "v3.28.5", "manifest_checksums": {"v3.28.5/calico.yaml": zeros}}),
    );
    assert!(
        msg.starts_with("checksum mismatch for calico.yaml of Calico v3.28.5"),
        "{msg}"
    );
    assert!(msg.contains(&zeros), "{msg}");

    // Nothing listens on port 9 of the loopback address.
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5", "manifest_dir": null,
            "manifest_url": "http://127.0.0.1:9/calico/{version}/{file}"}));
    assert!(msg.contains("127.0.0.1:9"), "{msg}");

    // Another run holds the lock (a Lease renewed just now, for ten minutes).
    let now = kubesim::clock::now_rfc3339_micros();
    c.create(
        "coordination.k8s.io/v1",
        "leases",
        Some("kube-system"),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "k8s-calico-upgrade", "namespace": "kube-system"},
            "spec": {"holderIdentity": "admin@bastion pid 4242", "leaseDurationSeconds": 600,
                "acquireTime": now, "renewTime": now}}),
    );
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
    assert!(msg.contains("admin@bastion pid 4242"), "{msg}");
    for (_, image) in c.calico_node_images() {
        assert!(image.ends_with(":v3.27.5"), "{image}");
    }
}

/// The upstream manifests (`CALICO_UPSTREAM_MANIFESTS`, else `../shared/fixtures/...` beside
/// the checkout); `None`, said out loud, where this clone has neither.
fn upstream_manifests(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CALICO_UPSTREAM_MANIFESTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/calico-manifests")
        });
    if dir.join("v3.28.5/calico.yaml").is_file() {
        Some(dir)
    } else {
        println!(
            "{test}: the upstream Calico manifests are not at {} (set CALICO_UPSTREAM_MANIFESTS): skipping",
            dir.display()
        );
        None
    }
}

#[test]
fn upstream_manifests_upgrade_stepwise_from_v3_28_to_v3_30() {
    let Some(upstream) =
        upstream_manifests("upstream_manifests_upgrade_stepwise_from_v3_28_to_v3_30")
    else {
        return;
    };
    let c = SimCluster::start(
        "kubernetes_version: v1.31.4\nnodes: {count: 3}\ntiming: {time_scale: 0.05}\n",
        &[],
    );
    // Installed as the quick start says: kubectl apply -f calico.yaml, unmodified.
    let text = std::fs::read_to_string(upstream.join("v3.28.5/calico.yaml")).unwrap();
    let objects = kubesim::calico::parse_yaml(&text).unwrap();
    let cluster = c.handle.cluster();
    kubesim::scenario::kubectl_apply(cluster, &objects).unwrap();
    kubesim::scenario::wait_ready(cluster, std::time::Duration::from_secs(60)).unwrap();

    let args = c.upgrade_args(json!({"target_version": "v3.30.7", "manifest_dir": upstream}));
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    let r = &out["ansible_facts"]["calico_upgrade"];
    assert_eq!(hops(r), ["v3.29.7", "v3.30.7"], "{r:#}");
    let images = c.calico_node_images();
    assert_eq!(images.len(), 3);
    for (node, image) in images {
        assert!(image.ends_with("calico/node:v3.30.7"), "{node}: {image}");
    }
    // And once more: nothing left to do, nothing written.
    c.handle.faults().reset_counters();
    let (out, code) = run(BIN, &args);
    assert_eq!((code, &out["changed"]), (0, &json!(false)), "{out:#}");
    assert_eq!(c.handle.faults().counters().total_writes, 0);
}

#[test]
fn a_not_ready_node_blocks_the_upgrade_and_is_named() {
    let c = SimCluster::start(
        "kubernetes_version: v1.29.10\nnodes: {count: 3}\ncalico: {version: v3.27.5}\ntiming: {node_heartbeat_ms: 50}\n",
        &["v3.27.5", "v3.28.5"],
    );
    // w2's kubelet stops posting status: the node goes Unknown, as when a host dies.
    c.handle
        .cluster()
        .sim()
        .update_faults(|f| f.not_ready_nodes = vec!["w2".into()]);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.get("v1", "nodes", None, "w2").unwrap()["status"]["conditions"]
        .to_string()
        .contains("KubeletReady")
    {
        assert!(std::time::Instant::now() < until, "w2 never went NotReady");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let msg = c.refused_upgrade(json!({"target_version": "v3.28.5"}));
    assert!(msg.contains("w2"), "{msg}");
    assert!(
        msg.contains("nodes_ready") || msg.contains("not Ready"),
        "{msg}"
    );
}

#[test]
fn a_private_registry_moves_every_image_and_a_second_run_keeps_it() {
    let c = SimCluster::start(PLAIN_3_27, &["v3.27.5", "v3.28.5"]);
    let args = c.upgrade_args(json!({"target_version": "v3.28.5",
        "image_registry": "registry.local:5000/mirror"}));
    let (out, code) = run(BIN, &args);
    assert_eq!(code, 0, "{out:#}");
    let rewrites = &out["ansible_facts"]["calico_upgrade"]["image_rewrites"];
    assert!(
        rewrites
            .to_string()
            .contains("registry.local:5000/mirror/calico/node:v3.28.5"),
        "{rewrites:#}"
    );
    for (node, image) in c.calico_node_images() {
        assert_eq!(
            image, "registry.local:5000/mirror/calico/node:v3.28.5",
            "{node}"
        );
    }
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    for list in ["initContainers", "containers"] {
        for container in ds["spec"]["template"]["spec"][list].as_array().unwrap() {
            let image = container["image"].as_str().unwrap();
            assert!(
                image.starts_with("registry.local:5000/mirror/calico/"),
                "{image}"
            );
        }
    }
    c.handle.faults().reset_counters();
    let (out, code) = run(BIN, &args);
    assert_eq!((code, &out["changed"]), (0, &json!(false)), "{out:#}");
    assert_eq!(c.handle.faults().counters().total_writes, 0);
}
