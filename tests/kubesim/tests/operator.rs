//! The Tigera operator emulation: installs through the operator quickstart, upgrades by a new
//! operator image, status reporting (TigeraStatus, Installation.status), registry moves and
//! crash-looping images.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_calico::catalog::catalog;
use kubesim::scenario::Scenario;
use kubesim::{Cluster, Handle, ImageFault, PatchType, WriteOptions};
use serde_json::{Value, json};

fn start(yaml: &str) -> Handle {
    Scenario::from_yaml(yaml)
        .expect("scenario")
        .start()
        .expect("scenario starts")
}

fn operator_of(calico: &str) -> String {
    catalog()
        .release(&calico.parse().unwrap())
        .unwrap()
        .operator
        .to_string()
}

fn condition(c: &Cluster, component: &str, type_: &str) -> Option<(String, String, String)> {
    let ts = c
        .get("operator.tigera.io/v1", "tigerastatuses", None, component)
        .ok()?;
    ts.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn status_is(c: &Cluster, type_: &str, want: &str) -> bool {
    condition(c, "calico", type_).is_some_and(|(s, _, _)| s == want)
}

fn installation(c: &Cluster) -> Value {
    c.get("operator.tigera.io/v1", "installations", None, "default")
        .expect("Installation default")
}

/// calico-node image per node (live pods only).
fn node_images(c: &Cluster) -> BTreeMap<String, (String, bool)> {
    c.list(
        "v1",
        "pods",
        Some("calico-system"),
        &kubesim::ListOptions {
            label_selector: Some("k8s-app=calico-node".into()),
            ..Default::default()
        },
    )
    .unwrap()
    .iter()
    .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
    .map(|p| {
        let ready = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        (
            p.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            (
                p.pointer("/spec/containers/0/image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                ready,
            ),
        )
    })
    .collect()
}

fn nodes(c: &Cluster) -> BTreeSet<String> {
    c.list("v1", "nodes", None, &Default::default())
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn set_operator_image(c: &Cluster, operator: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "tigera-operator", "image": format!("quay.io/tigera/operator:{operator}"),
         "env": [{"name": "TIGERA_OPERATOR_INIT_IMAGE_VERSION", "value": operator}]}]}}}});
    c.patch(
        "apps/v1",
        "deployments",
        Some("tigera-operator"),
        "tigera-operator",
        PatchType::StrategicMerge,
        patch.to_string().as_bytes(),
        None,
        &WriteOptions::manager("kubectl-patch"),
    )
    .expect("patch the operator");
}

const BASE: &str = "
nodes: {count: 4, control_plane: 1}
calico: {method: operator, version: v3.26.4}
timing: {time_scale: 0.005}
";

#[test]
fn operator_install_reaches_available_with_calico_node_everywhere() {
    let h = start(BASE);
    let c = h.cluster();
    assert!(status_is(c, "Available", "True"));
    assert!(status_is(c, "Progressing", "False"));
    assert!(status_is(c, "Degraded", "False"));
    assert_eq!(
        condition(c, "calico", "Available").unwrap().1,
        "AllObjectsAvailable"
    );
    let images = node_images(c);
    assert_eq!(images.keys().cloned().collect::<BTreeSet<_>>(), nodes(c));
    for (node, (image, ready)) in &images {
        assert_eq!(image, "docker.io/calico/node:v3.26.4", "{node}");
        assert!(ready, "{node}");
    }
    // The operator wrote its defaults into the spec and, once available, the status.
    wait_for("Installation status", Duration::from_secs(10), || {
        installation(c).pointer("/status/calicoVersion") == Some(&json!("v3.26.4"))
    });
    let inst = installation(c);
    assert_eq!(inst["spec"]["variant"], "Calico");
    assert_eq!(inst["spec"]["controlPlaneReplicas"], 2);
    assert_eq!(
        inst["spec"]["calicoNetwork"]["nodeAddressAutodetectionV4"],
        json!({"firstFound": true})
    );
    assert_eq!(inst["status"]["variant"], "Calico");
    assert_eq!(inst["status"]["mtu"], 1450, "VXLANCrossSubnet: 1500 - 50");
    assert_eq!(inst["status"]["computed"], inst["spec"]);
    let ready = inst["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True");
    // What the operator rendered, owned by the Installation.
    let ds = c
        .get(
            "apps/v1",
            "daemonsets",
            Some("calico-system"),
            "calico-node",
        )
        .unwrap();
    assert_eq!(ds["metadata"]["ownerReferences"][0]["kind"], "Installation");
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("first-found") && env.contains("k8s,operator,bgp"),
        "{env}"
    );
    let typha = c
        .get(
            "apps/v1",
            "deployments",
            Some("calico-system"),
            "calico-typha",
        )
        .unwrap();
    assert_eq!(typha["spec"]["replicas"], 2, "4 nodes: 2 Typhas");
    assert!(
        c.get(
            "apps/v1",
            "daemonsets",
            Some("calico-system"),
            "csi-node-driver"
        )
        .is_ok()
    );
    let pool = c
        .get(
            "crd.projectcalico.org/v1",
            "ippools",
            None,
            "default-ipv4-ippool",
        )
        .unwrap();
    assert_eq!(pool["spec"]["cidr"], "192.168.0.0/16");
    assert_eq!(pool["spec"]["vxlanMode"], "CrossSubnet");
    // APIServer default: its own namespace before 3.30, controlPlaneReplicas replicas.
    assert!(condition(c, "apiserver", "Available").is_some_and(|c| c.0 == "True"));
    let api = c
        .get(
            "apps/v1",
            "deployments",
            Some("calico-apiserver"),
            "calico-apiserver",
        )
        .unwrap();
    assert_eq!(api["spec"]["replicas"], 2);
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/calico/apiserver:v3.26.4"
    );
    // A hand edit of a rendered object is reverted.
    c.modify(
        "apps/v1",
        "deployments",
        Some("calico-system"),
        "calico-kube-controllers",
        None,
        &WriteOptions::manager("kubectl-edit"),
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/x:1"),
    )
    .unwrap();
    wait_for(
        "the operator reverting a hand edit",
        Duration::from_secs(5),
        || {
            c.get(
                "apps/v1",
                "deployments",
                Some("calico-system"),
                "calico-kube-controllers",
            )
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
                == "docker.io/calico/kube-controllers:v3.26.4"
        },
    );
}

#[test]
fn new_operator_image_rolls_calico_node_node_by_node() {
    let h = start(BASE);
    let c = h.cluster();
    wait_for("Installation status", Duration::from_secs(10), || {
        installation(c).pointer("/status/calicoVersion") == Some(&json!("v3.26.4"))
    });
    let all = nodes(c);
    set_operator_image(c, &operator_of("v3.28.5"));
    let new = "docker.io/calico/node:v3.28.5";
    let mut saw_progressing = None;
    let mut mixed = 0;
    let mut order: Vec<String> = Vec::new();
    let mut max_unready = 0;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let images = node_images(c);
        if let Some((s, _, m)) = condition(c, "calico", "Progressing")
            && s == "True"
        {
            saw_progressing.get_or_insert(m);
        }
        let upgraded: Vec<&String> = images
            .iter()
            .filter(|(_, (i, r))| i == new && *r)
            .map(|(n, _)| n)
            .collect();
        for n in &upgraded {
            if !order.contains(n) {
                order.push((*n).clone());
            }
        }
        if !upgraded.is_empty() && upgraded.len() < all.len() {
            mixed += 1;
            // Until every node runs the new release, the status keeps the old one.
            assert_eq!(
                installation(c)["status"]["calicoVersion"],
                "v3.26.4",
                "calicoVersion moved before the rollout finished"
            );
        }
        let unready = all.len() - images.values().filter(|(_, r)| *r).count();
        max_unready = max_unready.max(unready);
        if upgraded.len() == all.len() && status_is(c, "Available", "True") {
            break;
        }
        assert!(Instant::now() < until, "rollout did not finish: {images:?}");
        std::thread::sleep(Duration::from_millis(3));
    }
    let msg = saw_progressing.expect("TigeraStatus calico was Progressing during the rollout");
    assert!(
        msg.contains("calico-system/calico-node") || msg.contains("calico-system/calico-typha"),
        "{msg}"
    );
    assert!(
        mixed > 0,
        "no observation with mixed versions: not node by node"
    );
    assert_eq!(order.len(), all.len());
    assert!(
        max_unready <= 1,
        "maxUnavailable 1, saw {max_unready} unready"
    );
    wait_for("calicoVersion v3.28.5", Duration::from_secs(10), || {
        installation(c).pointer("/status/calicoVersion") == Some(&json!("v3.28.5"))
    });
    assert!(status_is(c, "Progressing", "False"));
    // From 3.28 the operator's IP pool controller owns the pools; the old pool stays.
    assert!(
        c.get(
            "crd.projectcalico.org/v1",
            "ippools",
            None,
            "default-ipv4-ippool"
        )
        .is_ok()
    );
}

#[test]
fn crash_looping_new_calico_node_leaves_tigerastatus_degraded() {
    let h = start(BASE);
    let c = h.cluster();
    c.sim().update_faults(|f| {
        f.crash_loop.push(ImageFault {
            image: "*calico/node:v3.28.5".into(),
            nodes: vec![],
        })
    });
    set_operator_image(c, &operator_of("v3.28.5"));
    wait_for(
        "TigeraStatus calico Degraded",
        Duration::from_secs(30),
        || status_is(c, "Degraded", "True"),
    );
    let (_, reason, message) = condition(c, "calico", "Degraded").unwrap();
    assert_eq!(reason, "Some pods are failing");
    assert!(
        message.contains("has crash looping container: calico-node")
            && message.contains("Pod calico-system/calico-node-"),
        "{message}"
    );
    assert!(status_is(c, "Available", "False"));
    // Failing wins over progressing, as upstream.
    assert!(status_is(c, "Progressing", "False"));
    // The rollout stalls on the first node (maxUnavailable 1): the others keep the old release.
    std::thread::sleep(Duration::from_millis(300));
    let images = node_images(c);
    let old = images
        .values()
        .filter(|(i, _)| i.ends_with(":v3.26.4"))
        .count();
    assert_eq!(old, images.len() - 1, "{images:?}");
    assert_eq!(installation(c)["status"]["calicoVersion"], "v3.26.4");
    // Fixing the image lets the rollout finish and the status recover.
    c.sim().update_faults(|f| f.crash_loop.clear());
    wait_for("Available after the fix", Duration::from_secs(60), || {
        status_is(c, "Available", "True")
            && installation(c).pointer("/status/calicoVersion") == Some(&json!("v3.28.5"))
    });
    assert!(status_is(c, "Degraded", "False"));
}

#[test]
fn spec_registry_moves_every_image() {
    let h = start(
        "
nodes: {count: 3, control_plane: 1}
calico: {method: operator, version: v3.26.4, installation: {registry: mirror.example.com/team}}
timing: {time_scale: 0.005}
",
    );
    let c = h.cluster();
    // Set at install: the operator completes it with a slash and uses it for every image.
    assert_eq!(
        installation(c)["spec"]["registry"],
        "mirror.example.com/team/"
    );
    for (node, (image, _)) in node_images(c) {
        assert_eq!(
            image, "mirror.example.com/team/calico/node:v3.26.4",
            "{node}"
        );
    }
    // Moved afterwards (as the product does for image_registry): everything follows.
    c.patch(
        "operator.tigera.io/v1",
        "installations",
        None,
        "default",
        PatchType::Merge,
        br#"{"spec":{"registry":"registry.internal:5000/"}}"#,
        None,
        &WriteOptions::manager("k8s-calico"),
    )
    .unwrap();
    wait_for("images moved", Duration::from_secs(30), || {
        let images = node_images(c);
        images.len() == 3
            && images
                .values()
                .all(|(i, r)| i == "registry.internal:5000/calico/node:v3.26.4" && *r)
            && status_is(c, "Available", "True")
    });
    for d in ["calico-typha", "calico-kube-controllers"] {
        let dep = c
            .get("apps/v1", "deployments", Some("calico-system"), d)
            .unwrap();
        let image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            image.starts_with("registry.internal:5000/calico/"),
            "{image}"
        );
    }
    let ds = c
        .get(
            "apps/v1",
            "daemonsets",
            Some("calico-system"),
            "calico-node",
        )
        .unwrap();
    assert!(
        ds["spec"]["template"]["spec"]["initContainers"]
            .to_string()
            .contains("registry.internal:5000/calico/cni:v3.26.4")
    );
}

#[test]
fn operator_does_nothing_until_its_pod_is_ready() {
    let h = start(
        "
nodes: {count: 2, control_plane: 1}
calico: {method: operator, version: v3.26.4}
faults: {never_pull: [{image: '*tigera/operator:*'}]}
timing: {time_scale: 0.005}
wait_ready: false
",
    );
    let c = h.cluster();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.get(
            "apps/v1",
            "daemonsets",
            Some("calico-system"),
            "calico-node"
        )
        .is_err()
    );
    assert!(
        c.get("operator.tigera.io/v1", "tigerastatuses", None, "calico")
            .is_err()
    );
    c.sim().update_faults(|f| f.never_pull.clear());
    kubesim::scenario::wait_ready(c, Duration::from_secs(60)).expect("ready once pulled");
    assert_eq!(node_images(c).len(), 2);
}

#[test]
fn calico_3_30_installs_from_separate_operator_crds() {
    let h = start(
        "
nodes: {count: 2, control_plane: 1}
calico: {method: operator, version: v3.30.7}
timing: {time_scale: 0.005}
",
    );
    let c = h.cluster();
    for (_, (image, _)) in node_images(c) {
        assert_eq!(image, "docker.io/calico/node:v3.30.7");
    }
    // The Goldmane and Whisker CRs of custom-resources.yaml are accepted; the API server
    // lives in calico-system from 3.30.
    assert!(
        c.get("operator.tigera.io/v1", "goldmanes", None, "default")
            .is_ok()
    );
    assert!(
        c.get(
            "apps/v1",
            "deployments",
            Some("calico-system"),
            "calico-apiserver"
        )
        .is_ok()
    );
    assert_eq!(installation(c)["status"]["calicoVersion"], "v3.30.7");
}

/// Found by the rollback of an operator install: a restore replaces calico-node with its
/// backed-up copy, `deprecated.daemonset.template.generation` included. The API server owns
/// that annotation (ignores the client's, bumps it on a template change), so the old pods do
/// not pass for updated and are replaced.
#[test]
fn replacing_a_daemonset_with_an_old_copy_still_rolls_its_pods() {
    let h = start(
        "
nodes: {count: 3, control_plane: 1}
calico: {version: v3.26.4}
timing: {time_scale: 0.005}
",
    );
    let c = h.cluster();
    let saved = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    let images = |c: &Cluster| -> Vec<String> {
        c.list(
            "v1",
            "pods",
            Some("kube-system"),
            &kubesim::ListOptions {
                label_selector: Some("k8s-app=calico-node".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
    };
    c.modify(
        "apps/v1",
        "daemonsets",
        Some("kube-system"),
        "calico-node",
        None,
        &WriteOptions::manager("kubectl"),
        |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] =
                json!("docker.io/calico/node:v3.27.5")
        },
    )
    .unwrap();
    wait_for("v3.27.5 everywhere", Duration::from_secs(30), || {
        let i = images(c);
        i.len() == 3 && i.iter().all(|i| i.ends_with(":v3.27.5"))
    });
    let mut restore = saved.clone();
    restore["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    c.update(
        "apps/v1",
        "daemonsets",
        Some("kube-system"),
        restore,
        &WriteOptions::manager("k8s-calico"),
    )
    .unwrap();
    let ds = c
        .get("apps/v1", "daemonsets", Some("kube-system"), "calico-node")
        .unwrap();
    assert_eq!(
        ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"], "3",
        "the client's older value is ignored"
    );
    wait_for("v3.26.4 everywhere again", Duration::from_secs(30), || {
        let i = images(c);
        i.len() == 3 && i.iter().all(|i| i.ends_with(":v3.26.4"))
    });
}
