//! `calico_matrix` driven through the real binary, the way Ansible runs it: an arguments file in,
//! one JSON object out.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_calico_matrix");

mod support;

fn run(args: Value) -> (Value, i32) {
    support::module::run(BIN, &args)
}

fn run_path(path: Option<&Path>) -> (Value, i32) {
    support::module::run_path(BIN, path)
}

fn facts(args: Value) -> Value {
    let (out, code) = run(args);
    assert_eq!(out["failed"], json!(false), "{out}");
    assert_eq!(code, 0);
    assert_eq!(out["changed"], json!(false));
    out["ansible_facts"]["calico_matrix"].clone()
}

fn failure(args: Value) -> String {
    support::module::failure(BIN, &args)
}

/// The catalog data read independently of the library, to check the binary against it.
struct Data {
    releases: Vec<(semver::Version, String, bool)>,
    tested: Vec<(String, Vec<String>)>,
    /// (operator minor, last patch of a range, embedded Calico)
    embeds: Vec<(String, u64, String)>,
}

impl Data {
    /// The operator deployed for a release: the newest patch of the minor its pin belongs to
    /// that embeds it.
    fn deployed_operator(&self, release: &semver::Version, pin: &str) -> String {
        let line = pin.rsplit_once('.').unwrap().0;
        let calico = format!("v{release}");
        let newest = self
            .embeds
            .iter()
            .filter(|(m, _, c)| m == line && *c == calico)
            .map(|(_, last, _)| *last)
            .max()
            .unwrap();
        format!("{line}.{newest}")
    }
}

fn data() -> Data {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/catalog.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let releases = doc["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v = semver::Version::parse(r["version"].as_str().unwrap().trim_start_matches('v'))
                .unwrap();
            (
                v,
                r["operator"].as_str().unwrap().to_string(),
                r.get("install").is_none(),
            )
        })
        .collect();
    let tested = doc["minors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(m, i)| {
            let ks = i["k8s_tested"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            (m.clone(), ks)
        })
        .collect();
    let embeds = doc["operator_embeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let patches = e["patches"].as_str().unwrap();
            let last = patches.rsplit('-').next().unwrap().parse().unwrap();
            (
                e["operator"].as_str().unwrap().to_string(),
                last,
                e["calico"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Data {
        releases,
        tested,
        embeds,
    }
}

#[test]
fn every_kubernetes_minor_is_consistent_with_the_catalog() {
    let d = data();
    for minor in 23..=36 {
        let k = format!("1.{minor}");
        let f = facts(json!({"kubernetes_version": format!("{k}.3")}));
        assert_eq!(f["kubernetes_minor"], json!(k));
        let tested: Vec<&String> = d
            .tested
            .iter()
            .filter(|(_, ks)| ks.contains(&k))
            .map(|(m, _)| m)
            .collect();
        let newest = tested
            .iter()
            .max_by_key(|m| m.split('.').nth(1).unwrap().parse::<u64>().unwrap())
            .unwrap();
        let oldest = tested
            .iter()
            .min_by_key(|m| m.split('.').nth(1).unwrap().parse::<u64>().unwrap())
            .unwrap();
        let in_minor = |m: &str| {
            d.releases
                .iter()
                .filter(move |(v, _, _)| format!("{}.{}", v.major, v.minor) == m)
                .collect::<Vec<_>>()
        };
        let rec = in_minor(newest)
            .into_iter()
            .filter(|(_, _, ok)| *ok)
            .max_by(|a, b| a.0.cmp(&b.0))
            .unwrap();
        let min = in_minor(oldest)
            .into_iter()
            .min_by(|a, b| a.0.cmp(&b.0))
            .unwrap();
        assert_eq!(
            f["recommended_version"],
            json!(format!("v{}", rec.0)),
            "{k}"
        );
        assert_eq!(
            f["operator_version"],
            json!(d.deployed_operator(&rec.0, &rec.1)),
            "{k}"
        );
        assert_eq!(f["minimum_version"], json!(format!("v{}", min.0)), "{k}");
        assert_eq!(f["matrix_source"], json!("builtin"));
    }
}

#[test]
fn the_seeds_matrix_as_an_override_is_refused_naming_the_right_operator() {
    let seed = json!({
        "1.23": {"recommended_version": "v3.24.6", "minimum_version": "v3.22.0", "operator_version": "v1.30.9"},
        "1.24": {"recommended_version": "v3.25.2", "minimum_version": "v3.23.0", "operator_version": "v1.32.7"},
        "1.25": {"recommended_version": "v3.26.4", "minimum_version": "v3.24.0", "operator_version": "v1.34.3"},
        "1.26": {"recommended_version": "v3.27.4", "minimum_version": "v3.25.0", "operator_version": "v1.36.1"},
        "1.27": {"recommended_version": "v3.28.2", "minimum_version": "v3.26.0", "operator_version": "v1.38.1"}
    });
    let msg = failure(json!({"kubernetes_version": "1.27", "matrix": seed}));
    for expected in [
        "[1.23] operator v1.30.9 ships Calico v3.26.4; Calico v3.24.6 ships with operator v1.28.15",
        "[1.24] operator v1.32.7 ships Calico v3.27.3; Calico v3.25.2 ships with operator v1.29.8",
        "[1.25] operator v1.34.3 ships Calico v3.28.1; Calico v3.26.4 ships with operator v1.30.10",
        "[1.26] operator v1.36.1 ships Calico v3.29.0; Calico v3.27.4 ships with operator v1.32.11",
        "[1.27] operator v1.38.1 ships Calico v3.30.1; Calico v3.28.2 ships with operator v1.34.7",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in {msg}");
    }
}

#[test]
fn a_corrected_override_is_used() {
    let f = facts(
        json!({"kubernetes_version": "1.27", "calico_version": "3.26.4", "matrix": {
        "1.27": {"recommended_version": "v3.27.5", "minimum_version": "v3.26.0", "operator_version": "v1.32.12"}}}),
    );
    assert_eq!(f["matrix_source"], json!("override"));
    assert_eq!(f["recommended_version"], json!("v3.27.5"));
    assert_eq!(
        f["upgrade_path"],
        json!([{"version": "v3.27.5", "operator_version": "v1.32.13", "tested": true}])
    );
}

#[test]
fn old_unknown_and_malformed_versions_are_refused() {
    assert_eq!(
        failure(json!({"kubernetes_version": "1.22.17"})),
        "Kubernetes 1.22 is not supported; supported: 1.23 to 1.36"
    );
    assert!(failure(json!({"kubernetes_version": "1.37.0"})).contains("allow_untested"));
    let msg = failure(json!({"kubernetes_version": "one.two"}));
    assert!(
        msg.starts_with("kubernetes_version: 'one.two' is not a Kubernetes version"),
        "{msg}"
    );
    let msg = failure(json!({"kubernetes_version": "1.27", "calico_version": "3.x"}));
    assert!(
        msg.starts_with("calico_version: '3.x' is not a release version"),
        "{msg}"
    );
    let msg = failure(json!({"kubernetes_version": 1.3}));
    assert!(msg.contains("quote it"), "{msg}");
    let msg = failure(json!({"kubernetes_version": "1.27", "target_calico_version": "v3.26.2"}));
    assert!(
        msg.contains("must not be installed: tagged but never published"),
        "{msg}"
    );
}

#[test]
fn stepwise_and_direct_paths() {
    let f = facts(json!({"kubernetes_version": "v1.27.16", "calico_version": "v3.25.2"}));
    let hops: Vec<&str> = f["upgrade_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["v3.26.5", "v3.27.5", "v3.28.5"]);
    assert_eq!(f["upgrade_needed"], json!(true));
    assert_eq!(f["current_supported"], json!(true));
    let f = facts(
        json!({"kubernetes_version": "v1.27.16", "calico_version": "v3.25.2", "strategy": "direct"}),
    );
    assert_eq!(
        f["upgrade_path"],
        json!([{"version": "v3.28.5", "operator_version": "v1.34.14", "tested": true}])
    );
    let (out, _) = run(json!({"kubernetes_version": "1.27", "calico_version": "v3.29.7"}));
    assert_eq!(
        out["ansible_facts"]["calico_matrix"]["upgrade_needed"],
        json!(false)
    );
    assert!(
        out["warnings"][0]
            .as_str()
            .unwrap()
            .contains("never downgraded"),
        "{out}"
    );
}

#[test]
fn bridge_versions_for_each_kubernetes_upgrade() {
    // Running the recommendation of the old minor: is a bridge needed before kubeadm moves?
    let cases = [
        ("1.23", "1.24", "v3.25.2", Value::Null),
        ("1.24", "1.25", "v3.26.5", Value::Null),
        ("1.25", "1.26", "v3.26.5", Value::Null),
        ("1.26", "1.27", "v3.26.5", Value::Null),
        ("1.27", "1.28", "v3.28.5", Value::Null),
        ("1.28", "1.29", "v3.28.5", Value::Null),
        ("1.29", "1.30", "v3.29.7", Value::Null),
        // Running an older release that the next minor is not tested with:
        ("1.23", "1.24", "v3.23.5", json!("v3.25.2")),
        ("1.24", "1.25", "v3.24.5", Value::Null),
        ("1.25", "1.26", "v3.24.5", json!("v3.26.5")),
        ("1.26", "1.27", "v3.25.2", Value::Null),
        ("1.27", "1.28", "v3.26.5", Value::Null),
        ("1.28", "1.29", "v3.26.5", json!("v3.28.5")),
        ("1.29", "1.30", "v3.27.5", json!("v3.29.7")),
    ];
    for (from, to, running, bridge) in cases {
        let f = facts(
            json!({"kubernetes_version": from, "target_kubernetes_version": to,
            "calico_version": running, "target_calico_version": running}),
        );
        assert_eq!(f["target_kubernetes_minor"], json!(to));
        assert_eq!(
            f["bridge_version"], bridge,
            "{from}->{to} running {running}"
        );
        assert_eq!(f["kubernetes_path"].as_array().unwrap().len(), 1);
    }
    let f = facts(
        json!({"kubernetes_version": "1.27", "target_kubernetes_version": "1.30", "calico_version": "v3.26.4"}),
    );
    let steps: Vec<(&str, &str)> = f["kubernetes_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["to"].as_str().unwrap(),
                s["recommended_version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("1.28", "v3.28.5"),
            ("1.29", "v3.29.7"),
            ("1.30", "v3.29.7")
        ]
    );
}

impl Data {
    fn tested(&self, calico: &str, kubernetes: &str) -> bool {
        self.tested
            .iter()
            .any(|(m, ks)| m == calico && ks.iter().any(|k| k == kubernetes))
    }

    /// Every Calico minor, oldest first.
    fn minors(&self) -> Vec<String> {
        let mut m: Vec<String> = self.tested.iter().map(|(m, _)| m.clone()).collect();
        m.sort_by_key(|m| m.split('.').nth(1).unwrap().parse::<u64>().unwrap());
        m
    }

    /// The latest installable release of a Calico minor.
    fn latest(&self, minor: &str) -> Option<semver::Version> {
        self.releases
            .iter()
            .filter(|(v, _, ok)| *ok && format!("{}.{}", v.major, v.minor) == minor)
            .map(|(v, _, _)| v.clone())
            .max()
    }
}

/// Every Kubernetes minor step 1.23 -> 1.24 ... 1.36 -> 1.37, with the latest installable
/// patch of every Calico minor as the running release: the bridge the planner names is the
/// one the catalog data says, the no-bridge cases fail (or, with allow_untested, say so), and
/// the summary line never contradicts the warnings.
#[test]
fn the_bridge_for_every_kubernetes_step_and_every_running_minor() {
    let d = data();
    let (mut needed, mut none_needed, mut impossible) = (0, 0, 0);
    for from_minor in 23..=36 {
        let (from, to) = (format!("1.{from_minor}"), format!("1.{}", from_minor + 1));
        for minor in d.minors() {
            let running = d.latest(&minor).unwrap();
            let args = json!({"kubernetes_version": from, "target_kubernetes_version": to,
                "calico_version": format!("v{running}"), "target_calico_version": format!("v{running}"),
                "allow_untested": from_minor == 36});
            let ctx = format!("{from} -> {to} running v{running}");
            let expected = if d.tested(&minor, &from) && d.tested(&minor, &to) {
                Some(None)
            } else {
                d.minors()
                    .into_iter()
                    .filter(|m| d.tested(m, &from) && d.tested(m, &to))
                    .filter_map(|m| d.latest(&m))
                    .filter(|v| v >= &running)
                    .max()
                    .map(|v| Some(format!("v{v}")))
            };
            let (out, code) = run(args.clone());
            let summary = out["msg"].as_str().unwrap_or("").to_string();
            let warnings = out["warnings"].to_string();
            match expected {
                Some(None) => {
                    assert_eq!(code, 0, "{ctx}: {out:#}");
                    let f = &out["ansible_facts"]["calico_matrix"];
                    assert_eq!(f["bridge_version"], Value::Null, "{ctx}");
                    assert!(summary.contains(&format!("Kubernetes {to} needs no Calico bridge (v{running} is tested on {from} and {to})")), "{ctx}: {summary}");
                    assert!(!warnings.contains("bridge"), "{ctx}: {warnings}");
                    none_needed += 1;
                }
                Some(Some(bridge)) => {
                    assert_eq!(code, 0, "{ctx}: {out:#}");
                    let f = &out["ansible_facts"]["calico_matrix"];
                    assert_eq!(f["bridge_version"], json!(bridge), "{ctx}");
                    assert!(
                        summary.contains(&format!("before Kubernetes {to}: Calico {bridge}")),
                        "{ctx}: {summary}"
                    );
                    assert!(!summary.contains("needs no Calico bridge"), "{ctx}");
                    needed += 1;
                }
                None if from_minor == 36 => {
                    // Nothing is tested on 1.37: with allow_untested the plan names an untested
                    // bridge and says so, in the summary and the warnings alike.
                    assert_eq!(code, 0, "{ctx}: {out:#}");
                    let f = &out["ansible_facts"]["calico_matrix"];
                    assert_eq!(f["kubernetes_path"][0]["bridge_untested"], true, "{ctx}");
                    assert!(
                        summary.contains("no release is tested on both"),
                        "{ctx}: {summary}"
                    );
                    assert!(
                        warnings.contains("no Calico bridge exists for Kubernetes 1.36 -> 1.37"),
                        "{ctx}: {warnings}"
                    );
                    impossible += 1;
                }
                None => {
                    assert_eq!(code, 1, "{ctx}: {out:#}");
                    assert!(
                        summary.starts_with(&format!("no Calico bridge exists for Kubernetes {from} -> {to}: Calico v{running} runs")),
                        "{ctx}: {summary}"
                    );
                    impossible += 1;
                }
            }
        }
    }
    // Every kind of answer occurs: the table above is not vacuous.
    assert!(
        needed > 20 && none_needed > 20 && impossible > 10,
        "{needed} {none_needed} {impossible}"
    );
}

#[test]
fn the_bridge_is_counted_from_the_release_running_now_not_from_the_planned_path() {
    // v3.27.5 is not tested on 1.30; the path to the 1.29 recommendation ends on v3.29.7, which
    // is. The bridge is still v3.29.7: it must run before kubeadm moves.
    let f = facts(
        json!({"kubernetes_version": "1.29", "target_kubernetes_version": "1.30",
        "calico_version": "v3.27.5"}),
    );
    assert_eq!(f["bridge_version"], "v3.29.7", "{f:#}");
    assert_eq!(f["bridge_operator_version"], "v1.36.16", "{f:#}");
    // A release newer than any tested on both minors: no bridge exists, and the plan says so.
    let msg = failure(
        json!({"kubernetes_version": "1.30", "target_kubernetes_version": "1.31",
        "calico_version": "v3.30.7", "allow_untested": false}),
    );
    assert!(msg.starts_with("no Calico bridge exists for Kubernetes 1.30 -> 1.31: Calico v3.30.7 runs, and no installable release at or above it is tested on both 1.30 and 1.31 (tested on both: 3.29)"), "{msg}");
}

/// The compiled-in catalog with one more release: v3.32.2, pinning and embedded by operator
/// v1.42.5, as a catalog published after this build would have it.
fn newer_catalog(dir: &Path) -> std::path::PathBuf {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/catalog.yaml")).unwrap();
    let release = "  - {version: v3.32.1, date: \"2026-06-24\", operator: v1.42.3}\n";
    let embed = "  - {operator: v1.42, patches: \"3-4\", calico: v3.32.1}\n";
    assert!(text.contains(release) && text.contains(embed));
    let newer = text
        .replacen("updated: \"2026-08-22\"", "updated: \"2026-09-15\"", 1)
        .replacen(
            release,
            &format!(
                "{release}  - {{version: v3.32.2, date: \"2026-09-10\", operator: v1.42.5}}\n"
            ),
            1,
        )
        .replacen(
            embed,
            &format!("{embed}  - {{operator: v1.42, patches: \"5\", calico: v3.32.2}}\n"),
            1,
        );
    let path = dir.join("catalog.yaml");
    std::fs::write(&path, newer).unwrap();
    path
}

#[test]
fn a_newer_catalog_file_plans_a_release_published_after_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = newer_catalog(dir.path());
    let args = json!({"kubernetes_version": "1.34.4", "calico_version": "v3.32.1"});
    let built_in = facts(args.clone());
    assert_eq!(built_in["recommended_version"], "v3.32.1");
    assert_eq!(built_in["upgrade_path"], json!([]));

    let mut given = args;
    given["catalog"] = json!(catalog);
    let f = facts(given);
    assert_eq!(f["recommended_version"], "v3.32.2", "{f:#}");
    assert_eq!(f["operator_version"], "v1.42.5", "{f:#}");
    assert_eq!(
        f["upgrade_path"],
        json!([{"version": "v3.32.2", "operator_version": "v1.42.5", "tested": true}])
    );
    let pinned = facts(
        json!({"kubernetes_version": "1.36", "target_calico_version": "3.32.2",
        "catalog": catalog}),
    );
    assert_eq!(pinned["target_version"], "v3.32.2");
}

#[test]
fn a_catalog_file_older_than_the_build_or_broken_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/catalog.yaml")).unwrap();
    let older = dir.path().join("older.yaml");
    std::fs::write(
        &older,
        text.replacen("updated: \"2026-08-22\"", "updated: \"2025-01-01\"", 1),
    )
    .unwrap();
    let msg = failure(json!({"kubernetes_version": "1.34", "catalog": older}));
    assert!(msg.starts_with("catalog "), "{msg}");
    assert!(msg.contains("before the compiled-in catalog"), "{msg}");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "schema: 1\nreleases: [\n").unwrap();
    let msg = failure(json!({"kubernetes_version": "1.34", "catalog": broken}));
    assert!(msg.starts_with("catalog "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn bad_arguments_give_one_clean_json_failure() {
    let msg = failure(json!({"kubernetes_version": "1.27", "foo": 1}));
    assert!(msg.starts_with("Unsupported parameters for (calico_matrix) module: foo. Supported parameters include: allow_untested, calico_version, catalog, context,"), "{msg}");
    assert!(msg.ends_with("(verify_ssl)."), "{msg}");
    let msg = failure(json!({"kubernetes_version": "1.27", "allow_untested": "perhaps"}));
    assert!(
        msg.starts_with(
            "argument 'allow_untested' is of type str and we were unable to convert to bool"
        ),
        "{msg}"
    );
    let msg = failure(json!({"kubernetes_version": "1.27", "strategy": "fast"}));
    assert_eq!(
        msg,
        "value of strategy must be one of: stepwise, direct, got: fast"
    );
    let msg = failure(json!({"kubernetes_version": "1.27", "matrix": [1, 2]}));
    assert!(
        msg.starts_with("argument 'matrix' is of type list"),
        "{msg}"
    );
}

#[test]
fn missing_or_broken_args_files_give_one_clean_json_failure() {
    let (out, code) = run_path(Some(Path::new("/nonexistent/args")));
    assert_eq!((out["failed"].clone(), code), (json!(true), 1));
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("cannot read the arguments file")
    );
    let (out, code) = run_path(None);
    assert_eq!((out["failed"].clone(), code), (json!(true), 1));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("args");
    std::fs::write(&p, b"{not json").unwrap();
    let (out, _) = run_path(Some(&p));
    assert!(out["msg"].as_str().unwrap().contains("is not valid JSON"));
}

#[test]
fn check_mode_and_ansible_keys_are_accepted() {
    let (out, code) = run(
        json!({"kubernetes_version": "1.28", "_ansible_check_mode": true, "_ansible_diff": true,
        "_ansible_verbosity": 2, "_ansible_version": "2.19.4", "_ansible_tmpdir": "/tmp/x/", "_ansible_new_thing": [1]}),
    );
    assert_eq!(code, 0);
    assert_eq!(out["changed"], json!(false));
    assert_eq!(
        out["ansible_facts"]["calico_matrix"]["recommended_version"],
        json!("v3.28.5")
    );
}

/// A one-shot stand-in API server that answers `/version`, to prove the version is read from the
/// cluster when not given (the full simulator is exercised by the upgrade tests).
fn version_server(git_version: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut auth = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("authorization:") {
                auth = line.trim().to_string();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let body = json!({"major": "1", "minor": "29", "gitVersion": git_version, "gitCommit": "x",
            "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.21",
            "compiler": "gc", "platform": "linux/amd64"})
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(resp.as_bytes()).unwrap();
        format!("{} {}", request_line.trim(), auth)
    });
    (format!("http://{addr}"), handle)
}

#[test]
fn the_kubernetes_version_is_read_from_the_cluster_when_omitted() {
    let (url, server) = version_server("v1.29.4+rke2r1");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{token: abc}}\ncontexts:\n- name: ctx\n  context: {{cluster: c, user: u}}\ncurrent-context: ctx\n"
        ),
    )
    .unwrap();
    let f = facts(json!({"kubeconfig": kubeconfig, "calico_version": "3.27.5"}));
    assert_eq!(f["kubernetes_version"], json!("1.29.4"));
    assert_eq!(f["recommended_version"], json!("v3.29.7"));
    let seen = server.join().unwrap();
    assert!(seen.starts_with("GET /version HTTP/1.1"), "{seen}");
    assert!(
        seen.ends_with("Bearer abc"),
        "the token must be sent: {seen}"
    );
}

#[test]
fn an_unreachable_cluster_is_a_clean_failure() {
    let msg = failure(json!({"calico_version": "3.27.5"}));
    assert!(
        msg.starts_with("kubernetes_version not given and it could not be read from the cluster"),
        "{msg}"
    );
    assert!(msg.contains("give kubeconfig"), "{msg}");
}
