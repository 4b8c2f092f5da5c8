//! The role runs `calico_matrix` through the real `ansible-playbook`.

mod support;

use serde_json::Value;
use support::ansible::{Workspace, recap, text};

fn workspace() -> Option<Workspace> {
    Workspace::new(&[
        ("calico_matrix", env!("CARGO_BIN_EXE_calico_matrix")),
        ("calico_upgrade", env!("CARGO_BIN_EXE_calico_upgrade")),
        ("calico_nettest", env!("CARGO_BIN_EXE_calico_nettest")),
    ])
}

#[test]
fn the_plan_is_a_fact_later_tasks_can_use() {
    let Some(ws) = workspace() else { return };
    std::fs::copy(
        support::ansible::repo().join("tests/ansible/plan_facts.yml"),
        ws.root().join("playbooks/plan_facts.yml"),
    )
    .unwrap();
    let facts_out = ws.root().join("facts.json");
    let out = ws.playbook(&[
        "-i",
        "inventory/demo/hosts",
        "playbooks/plan_facts.yml",
        "-e",
        "k8s_calico_kubernetes_version=1.27.16",
        "-e",
        "k8s_calico_current_version=v3.25.2",
        "-e",
        "k8s_target_version=1.28.15",
        "-e",
        "k8s_calico_stage=plan",
        "-e",
        "expected_recommended=v3.28.5",
        "-e",
        &format!("facts_out={}", facts_out.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let facts: Value = serde_json::from_slice(&std::fs::read(&facts_out).unwrap()).unwrap();
    let hops: Vec<&str> = facts["upgrade_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["v3.26.5", "v3.27.5", "v3.28.5"]);
    assert_eq!(facts["target_kubernetes_minor"], "1.28");
    assert!(
        text(&out).contains("Path: v3.26.5 -> v3.27.5 -> v3.28.5"),
        "{}",
        text(&out)
    );
    assert_eq!(recap(&out, "demo-cp1")["failed"], 0);
}

#[test]
fn tags_calico_runs_the_plan_through_the_real_playbook() {
    let Some(ws) = workspace() else { return };
    let out = ws.playbook(&[
        "-i",
        "inventory/demo/hosts",
        "playbooks/upgrade.yml",
        "--tags",
        "calico",
        "--check",
        "-e",
        "k8s_calico_stage=plan",
        "-e",
        "k8s_calico_kubernetes_version=1.30.2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("Kubernetes 1.30.2: recommended Calico v3.29.7 (operator v1.36.16)"),
        "{t}"
    );
    assert_eq!(recap(&out, "demo-cp1")["changed"], 0);
}

#[test]
fn a_wrong_matrix_fails_the_play_with_the_modules_message() {
    let Some(ws) = workspace() else { return };
    ws.write(
        "vars/seed.yml",
        "calico_version_matrix:\n  \"1.23\": {recommended_version: v3.24.6, minimum_version: v3.22.0, operator_version: v1.30.9}\n",
    );
    let out = ws.playbook(&[
        "-i",
        "inventory/demo/hosts",
        "playbooks/upgrade.yml",
        "-e",
        "@vars/seed.yml",
        "-e",
        "k8s_calico_stage=plan",
        "-e",
        "k8s_calico_kubernetes_version=1.23.17",
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains(
            "operator v1.30.9 ships Calico v3.26.4; Calico v3.24.6 ships with operator v1.28.15"
        ),
        "{t}"
    );
}

#[test]
fn disabled_skips_cleanly_and_bad_values_are_refused_before_any_task() {
    let Some(ws) = workspace() else { return };
    let out = ws.playbook(&[
        "-i",
        "inventory/demo/hosts",
        "playbooks/upgrade.yml",
        "-e",
        "k8s_calico_upgrade_enabled=false",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("k8s_calico_upgrade_enabled is false"));
    let out = ws.playbook(&[
        "-i",
        "inventory/demo/hosts",
        "playbooks/upgrade.yml",
        "-e",
        "k8s_calico_strategy=leap",
        "-e",
        "k8s_calico_kubernetes_version=1.27",
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("k8s_calico_strategy") && t.contains("stepwise, direct"),
        "{t}"
    );
    assert!(
        t.contains("TASK [Check the k8s_calico variables]") && !t.contains("TASK [k8s_calico"),
        "a task ran before validation: {t}"
    );
}

#[test]
fn ansible_doc_shows_the_module() {
    let Some(ws) = workspace() else { return };
    let out = ws
        .command("ansible-doc")
        .args(["k8s_calico.calico.calico_matrix"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for expected in [
        "calico_matrix",
        "kubernetes_version",
        "target_kubernetes_version",
        "EXAMPLES",
        "RETURN VALUES",
        "bridge_version",
    ] {
        assert!(
            t.contains(expected),
            "ansible-doc output lacks {expected}: {t}"
        );
    }
}
