//! The HTTP surface checked byte for byte over plain HTTP: authentication, Status bodies,
//! Retry-After, method and media-type errors, the body limit, Tables, discovery by version
//! and the admin API.

mod common;

use common::{raw, start};
use serde_json::json;

#[test]
fn authentication_and_status_bodies() {
    let h = kubesim::Server::start(kubesim::ServerConfig {
        tls: false,
        anonymous_over_http: false,
        ..Default::default()
    })
    .unwrap();
    let r = raw(&h, "GET", "/api/v1/namespaces", None, &[], b"");
    assert_eq!(r.status, 401);
    let s = r.json();
    assert_eq!(
        (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_i64()),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
    assert_eq!(
        raw(&h, "GET", "/version", Some("wrong"), &[], b"").status,
        401
    );
    // By default plain HTTP serves requests without credentials (kubectl sends none over
    // HTTP), but a wrong token is still refused.
    let open = start(false, "v1.30.6");
    assert_eq!(
        raw(&open, "GET", "/api/v1/namespaces", None, &[], b"").status,
        200
    );
    assert_eq!(
        raw(&open, "GET", "/api/v1/namespaces", Some("wrong"), &[], b"").status,
        401
    );
    let t = Some(h.token());
    let v = raw(&h, "GET", "/version", t, &[], b"").json();
    assert_eq!(
        (
            v["gitVersion"].as_str(),
            v["major"].as_str(),
            v["minor"].as_str()
        ),
        (Some("v1.30.6"), Some("1"), Some("30"))
    );

    let nf = raw(
        &h,
        "GET",
        "/apis/apps/v1/namespaces/default/daemonsets/x",
        t,
        &[],
        b"",
    );
    assert_eq!(nf.status, 404);
    let s = nf.json();
    assert_eq!(s["message"], "daemonsets.apps \"x\" not found");
    assert_eq!(
        s["details"],
        json!({"name": "x", "group": "apps", "kind": "daemonsets"})
    );

    let na = raw(
        &h,
        "POST",
        "/api/v1/namespaces/default/pods/x",
        t,
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(na.status, 405);
    assert_eq!(na.json()["reason"], "MethodNotAllowed");

    let pb = raw(
        &h,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        t,
        &[("Content-Type", "application/vnd.kubernetes.protobuf")],
        b"x",
    );
    assert_eq!(pb.status, 415);

    let big = vec![b' '; 3 * 1024 * 1024 + 10];
    let tl = raw(
        &h,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        t,
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(tl.status, 413);

    // A 3 MiB object body is accepted (Calico's largest CRDs come close).
    let filler = "x".repeat(2 * 1024 * 1024);
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"f": filler}})).unwrap();
    assert_eq!(
        raw(
            &h,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            t,
            &[("Content-Type", "application/json")],
            &body
        )
        .status,
        201
    );

    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    assert_eq!(
        raw(
            &h,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            t,
            &[("Content-Type", "application/yaml")],
            yaml
        )
        .status,
        201
    );
}

#[test]
fn injected_429_carries_retry_after() {
    let h = start(false, "v1.30.6");
    let t = Some(h.token());
    let faults = json!({"errorBursts": [{"rate": 1.0, "code": 429, "verbs": ["get"], "retryAfterSeconds": 3}]});
    let set = raw(
        &h,
        "PUT",
        "/kubesim/faults",
        t,
        &[("Content-Type", "application/json")],
        faults.to_string().as_bytes(),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let r = raw(&h, "GET", "/api/v1/namespaces/default", t, &[], b"");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("3"));
    let s = r.json();
    assert_eq!(
        (
            s["reason"].as_str(),
            s["details"]["retryAfterSeconds"].as_i64()
        ),
        (Some("TooManyRequests"), Some(3))
    );
    // Lists are not gets: unaffected.
    assert_eq!(
        raw(&h, "GET", "/api/v1/namespaces", t, &[], b"").status,
        200
    );
    let five = json!({"errorBursts": [{"rate": 1.0, "code": 500, "resources": ["configmaps"]}]});
    raw(
        &h,
        "PUT",
        "/kubesim/faults",
        t,
        &[],
        five.to_string().as_bytes(),
    );
    let e = raw(
        &h,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        t,
        &[],
        b"",
    );
    assert_eq!(
        (e.status, e.json()["reason"].as_str().map(str::to_string)),
        (500, Some("InternalError".into()))
    );
    assert_eq!(
        raw(&h, "DELETE", "/kubesim/faults", t, &[], b"").status,
        200
    );
    assert_eq!(
        raw(
            &h,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            t,
            &[],
            b""
        )
        .status,
        200
    );
    let counters = raw(&h, "GET", "/kubesim/counters", t, &[], b"").json();
    assert!(counters["injectedErrors"].as_u64().unwrap() >= 2);
    assert_eq!(counters["totalWrites"], 0);
}

#[test]
fn tables_for_kubectl() {
    let h = start(false, "v1.30.6");
    let t = Some(h.token());
    let table_accept = (
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    );
    let r = raw(&h, "GET", "/api/v1/namespaces", t, &[table_accept], b"");
    let tbl = r.json();
    assert_eq!(tbl["kind"], "Table");
    let cols: Vec<&str> = tbl["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    assert_eq!(tbl["rows"][0]["cells"][0], "default");
    assert_eq!(tbl["rows"][0]["cells"][1], "Active");
    assert_eq!(tbl["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
    raw(
        &h,
        "POST",
        "/api/v1/namespaces/default/pods",
        t,
        &[],
        pod.to_string().as_bytes(),
    );
    let p = raw(
        &h,
        "GET",
        "/api/v1/namespaces/default/pods",
        t,
        &[table_accept],
        b"",
    )
    .json();
    let cols: Vec<&str> = p["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(p["rows"][0]["cells"][1], "0/2");
    assert_eq!(p["rows"][0]["cells"][2], "Pending");
}

#[test]
fn discovery_follows_the_simulated_version() {
    let agg = (
        "Accept",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
    );
    let old = start(false, "v1.24.17");
    let t = Some(old.token());
    let r = raw(&old, "GET", "/apis", t, &[agg], b"");
    assert_eq!(
        r.json()["kind"],
        "APIGroupList",
        "1.24 has no aggregated discovery"
    );
    let psp = raw(&old, "GET", "/apis/policy/v1beta1", t, &[], b"").json();
    assert!(
        psp["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "podsecuritypolicies")
    );

    let mid = start(false, "v1.27.16");
    let t = Some(mid.token());
    let r = raw(&mid, "GET", "/apis", t, &[agg], b"");
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
    );
    assert_eq!(
        raw(&mid, "GET", "/apis/policy/v1beta1", t, &[], b"").status,
        404,
        "PSPs are gone in 1.25+"
    );
    let core = raw(&mid, "GET", "/api/v1", t, &[], b"").json();
    let pods_eviction = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            pods_eviction["group"].as_str(),
            pods_eviction["kind"].as_str()
        ),
        (Some("policy"), Some("Eviction"))
    );
    let ds = raw(&mid, "GET", "/apis/apps/v1", t, &[], b"").json();
    let entry = ds["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "daemonsets")
        .cloned()
        .unwrap();
    assert_eq!(entry["shortNames"], json!(["ds"]));
    assert_eq!(entry["categories"], json!(["all"]));

    let new = start(false, "v1.31.4");
    let t = Some(new.token());
    let r = raw(&new, "GET", "/api", t, &[agg], b"");
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    let doc = r.json();
    let pods = doc["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .cloned()
        .unwrap();
    assert_eq!(pods["scope"], "Namespaced");
    assert!(
        pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "log")
    );

    // The admin API changes the reported version, and discovery with it.
    let set = raw(
        &new,
        "PUT",
        "/kubesim/version",
        t,
        &[],
        br#"{"version":"v1.24.3"}"#,
    );
    assert_eq!(set.status, 200);
    assert_eq!(
        raw(&new, "GET", "/version", t, &[], b"").json()["gitVersion"],
        "v1.24.3"
    );
    assert_eq!(
        raw(&new, "GET", "/apis", t, &[agg], b"").json()["kind"],
        "APIGroupList"
    );
}

fn watch_lines(h: &kubesim::Handle, path: &str) -> Vec<serde_json::Value> {
    let r = raw(h, "GET", path, Some(h.token()), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn watch_streams_initial_events_bookmarks_and_selector_transitions() {
    let h = start(false, "v1.30.6");
    let c = h.cluster().clone();
    let opts = kubesim::WriteOptions::manager("test");
    for (n, tier) in [("a", "front"), ("b", "back")] {
        c.create(
            "v1",
            "configmaps",
            Some("default"),
            json!({"metadata": {"name": n, "labels": {"tier": tier}}}),
            &opts,
        )
        .unwrap();
    }
    // Changes made while the watch below is open: written only once the watch is registered
    // (its request is counted in the same poll that subscribes it), so they are live events.
    let h_ref = &h;
    let events = std::thread::scope(|scope| {
        scope.spawn(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !h_ref
                .faults()
                .counters()
                .requests
                .contains_key("watch configmaps")
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the watch never started"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            // "a" leaves the selector: its watchers see DELETED; "b" joins: ADDED.
            c.patch(
                "v1",
                "configmaps",
                Some("default"),
                "a",
                kubesim::PatchType::Merge,
                br#"{"metadata":{"labels":{"tier":"back"}}}"#,
                None,
                &opts,
            )
            .unwrap();
            c.patch(
                "v1",
                "configmaps",
                Some("default"),
                "b",
                kubesim::PatchType::Merge,
                br#"{"metadata":{"labels":{"tier":"front"}}}"#,
                None,
                &opts,
            )
            .unwrap();
        });
        watch_lines(
            h_ref,
            "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=tier%3Dfront&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3",
        )
    });
    let summary: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK" || e["object"]["metadata"]["annotations"].is_object())
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ADDED".into(), "a".into()),
            ("BOOKMARK".into(), "".into()),
            ("DELETED".into(), "a".into()),
            ("ADDED".into(), "b".into())
        ],
        "{events:?}"
    );
    let end = &events[1];
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Periodic bookmarks (every second in tests) carry the newest resourceVersion.
    let periodic: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "BOOKMARK" && !e["object"]["metadata"]["annotations"].is_object())
        .collect();
    assert!(!periodic.is_empty(), "{events:?}");
    assert_eq!(periodic[0]["object"]["kind"], "ConfigMap");

    // Without a resourceVersion a watch starts with synthetic ADDED events; from one it
    // replays what came after.
    let rv = c.current_resource_version();
    c.delete(
        "v1",
        "configmaps",
        Some("default"),
        "b",
        &Default::default(),
    )
    .unwrap();
    let replay = watch_lines(
        &h,
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ),
    );
    assert_eq!(replay.len(), 1);
    assert_eq!(
        (
            replay[0]["type"].as_str(),
            replay[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("b"))
    );
    let legacy = watch_lines(
        &h,
        "/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=1",
    );
    assert!(legacy.iter().all(|e| e["type"] == "ADDED"));
    assert!(
        legacy
            .iter()
            .any(|e| e["object"]["metadata"]["name"] == "a")
    );
}

#[test]
fn the_binary_prints_its_address_and_stops_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args([
            "--port",
            "0",
            "--http",
            "--version",
            "v1.27.16",
            "--kubeconfig",
            kc.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let mut words = ready
        .strip_prefix("kubesim: ready ")
        .expect(&ready)
        .split(' ');
    let url = words.next().unwrap().to_string();
    let path = words.next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(path, kc.to_str().unwrap());
    let config: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /version HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.contains("\"gitVersion\":\"v1.27.16\""), "{out}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());

    // A scenario that cannot be read is an error naming the file, before anything listens.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["--scenario", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.yaml"));
    assert!(missing.stdout.is_empty());

    // A misspelt flag is a usage error (exit 2), as for any command-line tool.
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: kubesim"));
}
