//! Running a module binary the way Ansible does: an arguments file in, one JSON object out.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Runs `bin` on `args` (written to a file) and returns (result, exit code).
pub fn run(bin: &str, args: &Value) -> (Value, i32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args");
    std::fs::write(&path, serde_json::to_vec(args).unwrap()).unwrap();
    run_path(bin, Some(&path))
}

/// Runs `bin` on an arguments file (or none), checking the protocol on the way: stdout is
/// exactly one line holding one JSON object. No developer kubeconfig is visible to it.
pub fn run_path(bin: &str, path: Option<&Path>) -> (Value, i32) {
    let mut cmd = Command::new(bin);
    if let Some(p) = path {
        cmd.arg(p);
    }
    cmd.env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG")
        .env_remove("K8S_AUTH_CONTEXT")
        .env("HOME", "/nonexistent");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout must be one line: {stdout:?}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.is_object());
    (v, out.status.code().unwrap())
}

/// The one-line message of a failed run (exit 1, `failed: true`).
pub fn failure(bin: &str, args: &Value) -> String {
    let (out, code) = run(bin, args);
    assert_eq!(out["failed"], json!(true), "{out}");
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap().to_string();
    assert!(!msg.contains('\n'), "{msg}");
    msg
}
