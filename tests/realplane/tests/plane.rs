//! A real plane from start to stop: the nodes as kubeadm and kubelets leave them, the real
//! version, RBAC for the admin and for a scoped ServiceAccount token, the audit log counting
//! exactly the writes a client made, and nothing left running after drop.

use std::path::Path;

use realplane::{Binaries, Options, RealPlane};
use serde_json::json;

fn plane(nodes: usize) -> Option<RealPlane> {
    let binaries = Binaries::for_test()?;
    let options = Options {
        nodes,
        ..Options::default()
    };
    Some(RealPlane::start_with(binaries, options).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn a_plane_serves_a_kubeadm_like_cluster_and_counts_writes() {
    let Some(plane) = plane(3) else { return };
    println!("started in {:?}", plane.started_in());

    let nodes = plane.list("v1", "nodes");
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["cp1", "w1", "w2"]);
    let cp = &nodes[0];
    assert_eq!(
        cp["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert_eq!(cp["spec"]["taints"][0]["effect"], "NoSchedule");
    assert_eq!(cp["status"]["nodeInfo"]["kubeletVersion"], "v1.34.4");
    assert_eq!(
        cp["status"]["addresses"][0],
        json!({"type": "InternalIP", "address": "10.0.0.10"})
    );

    let version = plane.kubectl(&["version", "-o", "json"]).unwrap();
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.34.4",
        "{version}"
    );
    assert_eq!(
        version["clientVersion"]["gitVersion"], "v1.34.4",
        "{version}"
    );

    // A ServiceAccount token with no role is authenticated and refused, by RBAC.
    let out = plane
        .kubectl(&["create", "serviceaccount", "scoped"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = plane.kubectl(&["create", "token", "scoped"]).unwrap();
    let token = String::from_utf8(token.stdout).unwrap();
    let denied = plane
        .kubectl(&[
            "--token",
            token.trim(),
            "--kubeconfig",
            "/dev/null",
            "--server",
            plane.server(),
            "--certificate-authority",
            &plane.dir().join("pki/ca.crt").display().to_string(),
            "get",
            "pods",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains(r#"User "system:serviceaccount:default:scoped" cannot list resource "pods""#),
        "{err}"
    );

    // Exactly the writes made with the admin kubeconfig, nothing of the controllers'.
    let mark = plane.mark().unwrap();
    let out = plane
        .kubectl(&["create", "configmap", "counted", "--from-literal=a=b"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = plane.kubectl(&["get", "configmaps", "-A"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let writes = plane.admin_writes_since(mark).unwrap();
    let shown: Vec<String> = writes.iter().map(ToString::to_string).collect();
    assert_eq!(writes.len(), 1, "{shown:#?}");
    assert_eq!(
        (writes[0].verb.as_str(), writes[0].name.as_str()),
        ("create", "counted")
    );
    assert!(writes[0].user_agent.starts_with("kubectl/"), "{shown:?}");
    assert!(
        plane
            .admin_writes_since(plane.mark().unwrap())
            .unwrap()
            .is_empty()
    );

    let pids = plane.pids();
    assert_eq!(pids.len(), 5, "{pids:?}");
    drop(plane);
    for (name, pid) in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) still runs"
        );
    }
}
