//! `calico_upgrade` through the real binary: bad input is refused with a message naming the
//! parameter, before any cluster is contacted; the upgrades themselves run against kubesim.

mod support;

use serde_json::json;
use support::module::{failure, run};

const BIN: &str = env!("CARGO_BIN_EXE_calico_upgrade");

#[test]
fn bad_arguments_name_the_parameter_and_what_would_be_right() {
    let cases = [
        (
            json!({"timeout": 0}),
            "timeout must be a positive number of seconds, got 0",
        ),
        (json!({"backup_keep": 0}), "backup_keep must be 1 or more"),
        (
            json!({"manifest_url": "https://mirror.local/calico.yaml"}),
            "manifest_url must contain {version} and {file}",
        ),
        (
            json!({"manifest_checksums": {"calico.yaml": "abc"}}),
            "manifest_checksums.calico.yaml must be a sha256 of 64 hex digits",
        ),
        (
            json!({"state": "rolled_back"}),
            "state=rolled_back needs backup_path",
        ),
        (
            json!({"state": "downgraded"}),
            "value of state must be one of: upgraded, rolled_back, got: downgraded",
        ),
        (json!({"target_version": 3.3}), "target_version"),
        (json!({"target_version": "v4.0.0"}), "target_version"),
        (
            json!({"method": "helm"}),
            "value of method must be one of: auto, operator, manifest",
        ),
        (
            json!({"foo": 1}),
            "Unsupported parameters for (calico_upgrade) module: foo",
        ),
        (
            json!({"catalog": "/nonexistent/catalog.yaml"}),
            "catalog: cannot read /nonexistent/catalog.yaml",
        ),
        (
            json!({"catalog": concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")}),
            "Cargo.toml: catalog: ",
        ),
    ];
    for (args, want) in cases {
        let msg = failure(BIN, &args);
        assert!(msg.contains(want), "{args}: {msg}");
    }
}

#[test]
fn no_cluster_is_a_clear_failure_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let msg = failure(BIN, &json!({"kubeconfig": missing}));
    assert!(msg.contains("nope.conf"), "{msg}");
}

#[test]
fn help_and_version_answer_without_a_cluster() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for p in [
        "target_version",
        "backup_dir",
        "manifest_dir",
        "rollback_on_failure",
        "image_registry",
    ] {
        assert!(text.contains(p), "--help lacks {p}: {text}");
    }
    let (v, code) = run(
        BIN,
        &json!({"_ansible_check_mode": true, "kubeconfig": "/nonexistent/kubeconfig"}),
    );
    assert_eq!(code, 1);
    assert_eq!(v["failed"], json!(true));
}
