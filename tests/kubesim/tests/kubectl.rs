//! The real `kubectl` against kubesim: get with selectors and chunking, server-side apply of
//! every upstream Calico manifest in the fixtures and then get of the CRD-served kinds,
//! `get --watch`, and `delete namespace`. Skips (saying so) where kubectl or the fixtures
//! are absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubesim::Handle;

fn kubectl_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// Runs kubectl with the server's kubeconfig; returns (success, stdout, stderr).
fn kubectl(h: &Handle, args: &[&str], timeout_secs: u64) -> (bool, String, String) {
    let bin = kubectl_path().expect("kubectl checked by the caller");
    let mut child = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", h.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "kubectl {args:?} timed out after {timeout_secs}s\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(h: &Handle, args: &[&str]) -> String {
    let (success, out, err) = kubectl(h, args, 180);
    assert!(
        success,
        "kubectl {args:?} failed\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Whether a missing tool or fixture must fail the test (CI sets `K8S_CALICO_NO_SKIP=1`).
fn no_skip() -> bool {
    std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1")
}

fn skip_without_kubectl(test: &str) -> bool {
    if kubectl_path().is_none() {
        assert!(
            !no_skip(),
            "{test}: kubectl is not on PATH and K8S_CALICO_NO_SKIP=1"
        );
        println!("{test}: kubectl is not on PATH: skipping");
        return true;
    }
    false
}

/// The upstream manifests live beside the project (`../shared`), not in it: a clone without
/// them skips these tests, saying so, even under `K8S_CALICO_NO_SKIP` (which is about tools the
/// Makefile installs).
fn skip_without_fixtures(test: &str, what: &str) {
    println!("{test}: {what} missing (set CALICO_UPSTREAM_MANIFESTS): skipping");
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("CALICO_UPSTREAM_MANIFESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calico-manifests")
        });
    dir.is_dir().then_some(dir)
}

fn write_yaml(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn get_with_selectors_and_chunks() {
    if skip_without_kubectl("get_with_selectors_and_chunks") {
        return;
    }
    let h = common::start(true, "v1.30.6");
    let dir = tempfile::tempdir().unwrap();
    let mut docs = String::new();
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        docs.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: default\n  labels:\n    app: shop\n    tier: {tier}\ndata:\n  i: \"{i}\"\n"
        ));
    }
    let f = write_yaml(dir.path(), "cms.yaml", &docs);
    ok(&h, &["apply", "--server-side", "-f", f.to_str().unwrap()]);

    let out = ok(&h, &["get", "configmaps", "-l", "tier=front", "-o", "name"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(
        names,
        [
            "configmap/cm-0",
            "configmap/cm-2",
            "configmap/cm-4",
            "configmap/cm-6"
        ]
    );
    let out = ok(
        &h,
        &["get", "cm", "-l", "tier notin (front),app", "-o", "name"],
    );
    assert_eq!(out.lines().count(), 3);
    let out = ok(
        &h,
        &[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=cm-3",
            "-o",
            "name",
        ],
    );
    assert_eq!(out.trim(), "configmap/cm-3");

    // Chunked: every page is fetched with limit and continue, and the table has the real
    // columns.
    let (success, out, err) = kubectl(
        &h,
        &["get", "cm", "-l", "app=shop", "--chunk-size=2", "-v=6"],
        120,
    );
    assert!(success, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines().next().unwrap().contains("DATA") && out.lines().next().unwrap().contains("AGE"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 8, "{out}");
    assert!(err.contains("limit=2"), "{err}");
    assert!(err.contains("continue="), "{err}");

    assert_eq!(
        ok(&h, &["auth", "can-i", "delete", "pods", "-A"]).trim(),
        "yes"
    );
    assert!(ok(&h, &["create", "token", "default"]).starts_with("kubesim.default."));
    let pods = ok(&h, &["get", "namespaces"]);
    assert!(
        pods.starts_with("NAME") && pods.contains("STATUS") && pods.contains("kube-system"),
        "{pods}"
    );
}

#[test]
fn get_watch_prints_new_objects() {
    if skip_without_kubectl("get_watch_prints_new_objects") {
        return;
    }
    let h = common::start(true, "v1.30.6");
    let bin = kubectl_path().unwrap();
    let mut child = Command::new(bin)
        .args(["get", "configmaps", "--watch", "--output-watch-events"])
        .env("KUBECONFIG", h.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let cms = h.cluster();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    let mut created = false;
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
        // Create only once kubectl printed the initial state, so the event is a live one.
        if !created && lines.iter().any(|l| l.contains("kube-root-ca.crt")) {
            cms.create(
                "v1",
                "configmaps",
                Some("default"),
                serde_json::json!({"metadata": {"name": "watched"}, "data": {"a": "b"}}),
                &kubesim::WriteOptions::manager("test"),
            )
            .unwrap();
            cms.delete(
                "v1",
                "configmaps",
                Some("default"),
                "watched",
                &Default::default(),
            )
            .unwrap();
            created = true;
        }
        if lines
            .iter()
            .any(|l| l.contains("DELETED") && l.contains("watched"))
        {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines[0].starts_with("EVENT") && lines[0].contains("DATA"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ADDED") && l.contains("watched")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DELETED") && l.contains("watched")),
        "{lines:?}"
    );
}

#[test]
fn delete_namespace_empties_it_first() {
    if skip_without_kubectl("delete_namespace_empties_it_first") {
        return;
    }
    let h = common::start(true, "v1.30.6");
    ok(&h, &["create", "namespace", "doomed"]);
    ok(
        &h,
        &[
            "-n",
            "doomed",
            "create",
            "configmap",
            "a",
            "--from-literal=k=v",
        ],
    );
    ok(
        &h,
        &[
            "-n",
            "doomed",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
        ],
    );
    let out = ok(&h, &["delete", "namespace", "doomed", "--timeout=120s"]);
    assert!(out.contains("namespace \"doomed\" deleted"), "{out}");
    let (success, _, err) = kubectl(&h, &["get", "namespace", "doomed"], 60);
    assert!(!success);
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
}

fn calico_versions() -> Option<Vec<PathBuf>> {
    let dir = fixtures()?;
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Some(v)
}

fn apply_calico(h: &Handle, dir: &Path) {
    let file = |n: &str| dir.join(n);
    let version = dir.file_name().unwrap().to_string_lossy().to_string();
    ok(
        h,
        &[
            "apply",
            "--server-side",
            "-f",
            file("calico.yaml").to_str().unwrap(),
        ],
    );
    if file("operator-crds.yaml").is_file() {
        ok(
            h,
            &[
                "apply",
                "--server-side",
                "-f",
                file("operator-crds.yaml").to_str().unwrap(),
            ],
        );
    }
    ok(
        h,
        &[
            "apply",
            "--server-side",
            "-f",
            file("tigera-operator.yaml").to_str().unwrap(),
        ],
    );
    ok(
        h,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=120s",
        ],
    );
    ok(
        h,
        &[
            "apply",
            "--server-side",
            "-f",
            file("custom-resources.yaml").to_str().unwrap(),
        ],
    );

    let ds = ok(
        h,
        &[
            "get",
            "daemonset",
            "calico-node",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert!(ds.contains(&version), "{version}: calico-node image {ds}");
    let inst = ok(
        h,
        &[
            "get",
            "installations.operator.tigera.io",
            "default",
            "-o",
            "jsonpath={.metadata.name}",
        ],
    );
    assert_eq!(inst, "default", "{version}");
    let table = ok(h, &["get", "installation"]);
    assert!(
        table.starts_with("NAME") && table.contains("default"),
        "{version}: {table}"
    );
    let pools = ok(h, &["get", "ippools.crd.projectcalico.org", "-o", "name"]);
    assert!(pools.trim().is_empty(), "{version}: {pools}");
    let ts = ok(h, &["get", "tigerastatus"]);
    let _ = ts;
    let crds = ok(h, &["get", "crd", "-o", "name"]);
    assert!(
        crds.contains("felixconfigurations.crd.projectcalico.org"),
        "{version}"
    );
    // Re-applying the same manifests changes nothing.
    h.faults().reset_counters();
    ok(
        h,
        &[
            "apply",
            "--server-side",
            "-f",
            file("custom-resources.yaml").to_str().unwrap(),
        ],
    );
    assert_eq!(
        h.faults().counters().total_writes,
        0,
        "{version}: a repeated apply is a no-op"
    );
}

#[test]
fn server_side_apply_of_every_calico_manifest() {
    if skip_without_kubectl("server_side_apply_of_every_calico_manifest") {
        return;
    }
    let Some(versions) = calico_versions() else {
        skip_without_fixtures(
            "server_side_apply_of_every_calico_manifest",
            "the Calico fixtures",
        );
        return;
    };
    assert!(!versions.is_empty());
    // Each Calico release against a different simulated Kubernetes version, oldest with
    // oldest: the kubectl dispatcher then picks a different kubectl (1.27 to 1.33), and
    // discovery and OpenAPI vary (no aggregated discovery before 1.26, protobuf OpenAPI v2
    // for older kubectl, PSPs before 1.25).
    const KUBERNETES: [&str; 10] = [
        "v1.23.17", "v1.24.17", "v1.25.16", "v1.26.15", "v1.27.16", "v1.28.15", "v1.29.14",
        "v1.30.10", "v1.32.5", "v1.33.2",
    ];
    for (i, dir) in versions.iter().enumerate() {
        let h = common::start(true, KUBERNETES[i % KUBERNETES.len()]);
        apply_calico(&h, dir);
        h.shutdown();
    }
}

#[test]
fn client_side_apply_and_its_annotation_limit() {
    if skip_without_kubectl("client_side_apply_and_its_annotation_limit") {
        return;
    }
    let Some(dir) = fixtures().map(|d| d.join("v3.26.4")).filter(|d| d.is_dir()) else {
        skip_without_fixtures(
            "client_side_apply_and_its_annotation_limit",
            "the v3.26.4 Calico fixtures",
        );
        return;
    };
    let h = common::start(true, "v1.30.6");
    let calico = dir.join("calico.yaml");
    let out = ok(&h, &["apply", "-f", calico.to_str().unwrap()]);
    assert!(out.contains("daemonset.apps/calico-node created"), "{out}");
    let again = ok(&h, &["apply", "-f", calico.to_str().unwrap()]);
    assert!(
        again.contains("daemonset.apps/calico-node unchanged"),
        "{again}"
    );
    // The operator's Installation CRD is too large for the last-applied annotation: a real
    // server refuses it, which is why Calico documents `kubectl create` or server-side apply.
    let operator = dir.join("tigera-operator.yaml");
    let (success, _, err) = kubectl(&h, &["apply", "-f", operator.to_str().unwrap()], 180);
    assert!(!success);
    assert!(
        err.contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{err}"
    );
    let (_, out, err) = kubectl(&h, &["create", "-f", operator.to_str().unwrap()], 180);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/installations.operator.tigera.io created"
        ),
        "{out}"
    );
    assert!(
        err.contains("already exists"),
        "the rest was applied before: {err}"
    );
}

#[test]
fn custom_resources_are_pruned_and_validated_by_their_schema() {
    if skip_without_kubectl("custom_resources_are_pruned_and_validated_by_their_schema") {
        return;
    }
    let Some(dir) = fixtures().map(|d| d.join("v3.26.4")).filter(|d| d.is_dir()) else {
        skip_without_fixtures(
            "custom_resources_are_pruned_and_validated_by_their_schema",
            "the v3.26.4 Calico fixtures",
        );
        return;
    };
    let h = common::start(true, "v1.30.6");
    ok(
        &h,
        &[
            "apply",
            "--server-side",
            "-f",
            dir.join("tigera-operator.yaml").to_str().unwrap(),
        ],
    );
    ok(
        &h,
        &[
            "wait",
            "--for=condition=Established",
            "crd/installations.operator.tigera.io",
            "--timeout=120s",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let typo = write_yaml(
        tmp.path(),
        "typo.yaml",
        "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n  variant: Calico\n  registyr: example.com/\n",
    );
    // kubectl asks for Strict field validation: an undeclared field is refused...
    let (success, _, err) = kubectl(
        &h,
        &["apply", "--server-side", "-f", typo.to_str().unwrap()],
        120,
    );
    assert!(!success);
    assert!(
        err.contains(".spec.registyr: field not declared in schema"),
        "{err}"
    );
    // ...and pruned when validation is off.
    ok(
        &h,
        &[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            typo.to_str().unwrap(),
        ],
    );
    let spec = ok(
        &h,
        &["get", "installation", "default", "-o", "jsonpath={.spec}"],
    );
    assert!(
        spec.contains("Calico") && !spec.contains("registyr"),
        "{spec}"
    );
    let bad_enum = write_yaml(
        tmp.path(),
        "enum.yaml",
        "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n  variant: Cilium\n",
    );
    let (success, _, err) = kubectl(
        &h,
        &["apply", "--server-side", "-f", bad_enum.to_str().unwrap()],
        120,
    );
    assert!(!success);
    assert!(
        err.contains("spec.variant: Unsupported value: \"Cilium\""),
        "{err}"
    );
}

#[test]
fn kubectl_over_plain_http() {
    if skip_without_kubectl("kubectl_over_plain_http") {
        return;
    }
    let h = common::start(false, "v1.28.15");
    let out = ok(&h, &["get", "namespaces", "-o", "name"]);
    assert!(out.contains("namespace/kube-system"), "{out}");
    let v = ok(&h, &["version", "-o", "json"]);
    assert!(v.contains("\"gitVersion\": \"v1.28.15\""), "{v}");
}
