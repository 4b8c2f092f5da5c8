//! `calico_nettest`: prove the pod network works, node by node, without `kubectl exec`.
//!
//! One temporary namespace holds everything: agnhost `serve-hostname` servers (a DaemonSet on
//! the pod network and one on the host network), a ClusterIP Service, and one probe Job per node
//! that runs `probe.sh` over the targets generated for it and reports through its log and
//! termination message (`docs/probe-contract.md`). The namespace is deleted at the end whatever
//! happened, unless `cleanup: false`.

pub mod control_plane;
pub mod results;
pub mod scenarios;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::{self, Connection};
use crate::module::{self, Failure, Module, ModuleSpec, Outcome, Param, ParamType};
use crate::version::Version;
use results::{NotTested, ProbeResult};
use scenarios::{Layout, Server, Target};
use workloads::Settings;

/// The probe script, shipped inside the module and mounted into every probe pod.
pub const PROBE_SCRIPT: &str = include_str!("probe.sh");
/// The default probe and server image.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

/// The module's arguments.
pub static SPEC: ModuleSpec = ModuleSpec {
    name: "calico_nettest",
    short_description: "Prove pod networking works, node by node, without kubectl exec",
    params: &[
        Param::list("scenarios", ParamType::Str).help("Scenario ids or globs; !pattern excludes (e.g. ['!mtu']); default: every non-optional scenario"),
        Param::str("image").default_str(DEFAULT_IMAGE).help("The agnhost image (private registries: your mirror of it)"),
        Param::list("image_pull_secrets", ParamType::Str).help("Image pull secret names, created in the test namespace's service account"),
        Param::dict("node_selector").help("Only nodes with these labels are tested"),
        Param::list("tolerations", ParamType::Dict).help("Tolerations of the test pods; default: tolerate everything, so control-plane nodes are tested"),
        Param::str("namespace_prefix").default_str("calico-nettest").help("The temporary namespace is <prefix>-<run id>"),
        Param::int("connect_timeout").default_int(3).help("Seconds per connection attempt"),
        Param::int("timeout").default_int(300).help("Seconds for the whole test"),
        Param::int("retries").default_int(1).help("Re-probe only the failures, this many times"),
        Param::int("max_peers_per_node").default_int(10).help("Cross-node peers each node probes (a fair rotation); 0: every other node"),
        Param::str("expected_calico_version").text_only().help("Fail control_plane unless every calico-node runs this release"),
        Param::dict("baseline").help("The calico_nettest facts of an earlier run: failures that passed then are listed as regressions"),
        Param::path("junit_path").help("Write a JUnit XML report here"),
        Param::list("external_targets", ParamType::Str).help("host:port targets for the external scenario"),
        Param::bool("cleanup", true).help("Delete the test namespace at the end"),
        cluster::KUBECONFIG,
        cluster::CONTEXT,
        cluster::VALIDATE_CERTS,
    ],
};

#[derive(Debug, Clone)]
struct Options {
    scenarios: Vec<&'static str>,
    image: String,
    pull_secrets: Vec<String>,
    node_selector: BTreeMap<String, String>,
    tolerations: Value,
    prefix: String,
    connect_timeout: u64,
    timeout: Duration,
    retries: u32,
    max_peers: usize,
    expected: Option<Version>,
    baseline: Option<Value>,
    junit: Option<String>,
    external: Vec<String>,
    cleanup: bool,
    check_mode: bool,
}

fn options(m: &Module) -> Result<Options, Failure> {
    let positive = |name: &str, default: i64| -> Result<i64, Failure> {
        let v = m.int(name).unwrap_or(default);
        if v < 0 {
            Err(Failure::new(format!("{name} must be 0 or more, got {v}")))
        } else {
            Ok(v)
        }
    };
    let scenarios = scenarios::select(&m.strings("scenarios")).map_err(Failure::new)?;
    let timeout = positive("timeout", 300)?;
    if timeout < 10 {
        return Err(Failure::new(format!(
            "timeout must be at least 10 seconds, got {timeout}"
        )));
    }
    let connect_timeout = positive("connect_timeout", 3)?.max(1);
    let node_selector = m
        .dict("node_selector")
        .map(|d| {
            d.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tolerations = match m.value("tolerations") {
        Value::Array(a) => Value::Array(a.clone()),
        _ => json!([{"operator": "Exists"}]),
    };
    let expected = m
        .str("expected_calico_version")
        .map(|s| {
            s.parse::<Version>()
                .map_err(|e| Failure::new(format!("expected_calico_version: {e}")))
        })
        .transpose()?;
    let external = m.strings("external_targets");
    if scenarios.contains(&"external") && external.is_empty() {
        return Err(Failure::new(
            "the external scenario needs external_targets (host:port, reachable from pods)",
        ));
    }
    let prefix = m
        .str("namespace_prefix")
        .unwrap_or("calico-nettest")
        .to_string();
    if prefix.len() > 40
        || !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(Failure::new(format!(
            "namespace_prefix must be lowercase letters, digits and '-', at most 40 characters; got {prefix}"
        )));
    }
    Ok(Options {
        scenarios,
        image: m.str("image").unwrap_or(DEFAULT_IMAGE).to_string(),
        pull_secrets: m.strings("image_pull_secrets"),
        node_selector,
        tolerations,
        prefix,
        connect_timeout: connect_timeout as u64,
        timeout: Duration::from_secs(timeout as u64),
        retries: positive("retries", 1)? as u32,
        max_peers: positive("max_peers_per_node", 10)? as usize,
        expected,
        baseline: m.dict("baseline").map(|d| Value::Object(d.clone())),
        junit: m.str("junit_path").map(module::expand_path),
        external,
        cleanup: m.bool("cleanup"),
        check_mode: m.check_mode(),
    })
}

/// The module body.
pub fn run(m: &mut Module) -> Result<Outcome, Failure> {
    let opts = options(m)?;
    let conn = Connection::from_module(m);
    let mut warnings = Vec::new();
    let out =
        module::block_on(async { Tester::new(opts, &conn, &mut warnings).await?.run().await })?;
    for w in warnings {
        m.warn(w);
    }
    out
}

/// Data-plane scenarios need pods; control_plane does not.
fn needs_pods(selected: &[&str]) -> bool {
    selected.iter().any(|s| *s != "control_plane")
}

struct Tester<'a> {
    client: Client,
    opts: Options,
    warnings: &'a mut Vec<String>,
    started: Instant,
    run_id: String,
    settings: Settings,
    /// Host names by node name.
    hostnames: BTreeMap<String, String>,
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (t as u64) ^ (u64::from(std::process::id()) << 32);
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = mix;
    (0..6)
        .map(|_| {
            let c = alphabet[(n % alphabet.len() as u64) as usize] as char;
            n /= alphabet.len() as u64;
            c
        })
        .collect()
}

impl<'a> Tester<'a> {
    async fn new(
        opts: Options,
        conn: &Connection,
        warnings: &'a mut Vec<String>,
    ) -> Result<Self, Failure> {
        let client = cluster::client(conn).await.map_err(Failure::from)?;
        let run_id = run_id();
        let settings = Settings {
            namespace: format!("{}-{run_id}", opts.prefix),
            run_id: run_id.clone(),
            image: opts.image.clone(),
            image_pull_secrets: opts.pull_secrets.clone(),
            node_selector: json!(opts.node_selector),
            tolerations: opts.tolerations.clone(),
            server_port: 9376,
            host_server_port: 31937,
            service_port: 80,
            probe_deadline: opts.timeout.as_secs(),
            connect_timeout: opts.connect_timeout,
        };
        Ok(Self {
            client,
            opts,
            warnings,
            started: Instant::now(),
            run_id,
            settings,
            hostnames: BTreeMap::new(),
        })
    }

    fn remaining(&self) -> Duration {
        self.opts.timeout.saturating_sub(self.started.elapsed())
    }

    /// The part of the timeout kept for deleting the namespace: a fifth, 2 s to 60 s.
    fn cleanup_reserve(&self) -> Duration {
        (self.opts.timeout / 5).clamp(Duration::from_secs(2), Duration::from_secs(60))
    }

    /// What is left for deploying and probing, the cleanup's share kept back.
    fn remaining_for_tests(&self) -> Duration {
        self.remaining().saturating_sub(self.cleanup_reserve())
    }

    /// The nodes under test, sorted, with their InternalIP and the host name their
    /// host-network processes see (the kubelet's `kubernetes.io/hostname` label, set from it;
    /// it may differ from the node name).
    #[allow(clippy::type_complexity)]
    async fn nodes(
        &self,
    ) -> Result<(
        Vec<String>,
        BTreeMap<String, String>,
        BTreeMap<String, String>,
    )> {
        let all = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        let mut names = Vec::new();
        let mut ips = BTreeMap::new();
        let mut hostnames = BTreeMap::new();
        for n in all.items {
            let labels = n.labels();
            if !self
                .opts
                .node_selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                continue;
            }
            if let Some(ip) = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
            {
                ips.insert(n.name_any(), ip);
            }
            if let Some(h) = labels
                .get("kubernetes.io/hostname")
                .filter(|h| !h.is_empty())
            {
                hostnames.insert(n.name_any(), h.clone());
            }
            names.push(n.name_any());
        }
        names.sort();
        Ok((names, ips, hostnames))
    }

    async fn run(mut self) -> Result<Outcome, Failure> {
        let (nodes, node_ips, hostnames) = self.nodes().await.map_err(Failure::from)?;
        self.hostnames = hostnames;
        if nodes.is_empty() {
            return Err(Failure::new(
                "no node matches node_selector: nothing to test",
            ));
        }
        let mut failures: Vec<results::Failure> = Vec::new();
        let mut counts: BTreeMap<String, results::Counts> = BTreeMap::new();
        let mut control = Vec::new();
        if self.opts.scenarios.contains(&"control_plane") {
            let findings = control_plane::check(&self.client, self.opts.expected.as_ref())
                .await
                .map_err(Failure::from)?;
            let c = counts.entry("control_plane".into()).or_default();
            for (name, ok, detail) in &findings {
                c.run += 1;
                if *ok {
                    c.passed += 1;
                } else {
                    c.failed += 1;
                    failures.push(results::Failure {
                        scenario: "control_plane".into(),
                        source_node: "api".into(),
                        target_node: None,
                        target: name.clone(),
                        verdict: "unhealthy".into(),
                        detail: detail.clone(),
                        id: format!("control_plane/{name}"),
                    });
                }
                control.push(json!({"check": name, "ok": ok, "detail": detail}));
            }
        }

        let mut facts = json!({
            "run_id": self.run_id,
            "namespace": self.settings.namespace,
            "scenarios_run": self.opts.scenarios,
            "control_plane": control,
        });

        if self.opts.check_mode {
            let per_node = if needs_pods(&self.opts.scenarios) {
                nodes.len()
            } else {
                0
            };
            facts["would_deploy"] = json!({
                "namespace": self.settings.namespace,
                "server_daemonsets": if per_node > 0 { 2 } else { 0 },
                "services": if per_node > 0 { 1 + usize::from(self.opts.scenarios.contains(&"nodeport")) } else { 0 },
                "probe_jobs": per_node * 2,
                "nodes": nodes,
            });
            return Ok(Outcome::ok(format!(
                "check mode: would deploy servers and {} probe jobs in namespace {} (nothing was created)",
                per_node * 2,
                self.settings.namespace
            ))
            .fact("calico_nettest", facts));
        }

        let mut not_tested: Vec<NotTested> = Vec::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut probe_results: HashMap<String, ProbeResult> = HashMap::new();
        let mut expected_backends = Vec::new();
        let data_plane = if needs_pods(&self.opts.scenarios) {
            let outcome = self
                .data_plane(
                    &nodes,
                    &node_ips,
                    &mut targets,
                    &mut probe_results,
                    &mut not_tested,
                    &mut expected_backends,
                )
                .await;
            let cleanup = self.cleanup().await;
            if let Err(e) = cleanup {
                self.warnings.push(format!(
                    "the test namespace {} was not fully removed: {e}",
                    self.settings.namespace
                ));
            }
            outcome
        } else {
            Ok(())
        };
        if let Err(e) = data_plane {
            let mut f = Failure::new(format!(
                "the network test could not run: {}",
                Failure::from(e).msg
            ));
            facts["not_tested"] = json!(not_tested);
            f.facts.insert("calico_nettest".into(), facts);
            return Err(f);
        }

        let (mut probe_failures, probe_counts) = results::failures(&targets, &probe_results);
        for (k, v) in probe_counts {
            counts.insert(k, v);
        }
        let silent = results::silent_backends(&targets, &probe_results, &expected_backends);
        if !silent.is_empty() {
            let c = counts.entry("pod_to_service".into()).or_default();
            c.run += 1;
            c.failed += 1;
            probe_failures.push(results::Failure {
                scenario: "pod_to_service".into(),
                source_node: "all".into(),
                target_node: None,
                target: format!("{}/{}", self.settings.namespace, "nt-server"),
                verdict: "wrong_backend".into(),
                detail: format!(
                    "backends never answered through the Service ({} answers from the others): {}",
                    results::service_answers(&targets, &probe_results),
                    silent.join(", ")
                ),
                id: "pod_to_service/backends".into(),
            });
        }
        failures.extend(probe_failures);
        let tested: BTreeSet<String> = nodes
            .iter()
            .filter(|n| !not_tested.iter().any(|x| &x.node == *n))
            .cloned()
            .collect();
        let regressions = self
            .opts
            .baseline
            .as_ref()
            .map(|b| results::regressions(b, &failures))
            .unwrap_or_default();
        let seconds = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let passed = failures.is_empty() && not_tested.is_empty();

        if let Some(path) = &self.opts.junit {
            let xml = results::junit(&targets, &probe_results, &not_tested, seconds);
            crate::fsutil::write_atomic(std::path::Path::new(path), xml.as_bytes(), 0o644)
                .map_err(Failure::from)?;
            facts["junit"] = json!(path);
        }
        facts["passed"] = json!(passed);
        facts["summary"] = results::summary_json(&counts);
        facts["failures"] = json!(failures);
        facts["regressions"] = json!(regressions);
        facts["nodes_tested"] = json!(tested);
        facts["not_tested"] = json!(not_tested);
        facts["duration_s"] = json!(seconds);

        let total: u64 = counts.values().map(|c| c.run).sum();
        if passed {
            return Ok(Outcome::ok(format!(
                "network test passed: {total} probes on {} nodes ({}) in {seconds}s",
                tested.len(),
                self.opts.scenarios.join(", ")
            ))
            .fact("calico_nettest", facts));
        }
        let mut msg = String::from("network test failed: ");
        if !regressions.is_empty() {
            msg.push_str(&format!(
                "{} regressions since the baseline: {}; ",
                regressions.len(),
                results::headline(&regressions, 2)
            ));
        }
        if !failures.is_empty() {
            msg.push_str(&results::headline(&failures, 3));
        }
        if !not_tested.is_empty() {
            let nt: Vec<String> = not_tested
                .iter()
                .take(5)
                .map(|n| format!("{} ({})", n.node, n.reason))
                .collect();
            msg.push_str(&format!(
                "{}nodes not tested: {}",
                if failures.is_empty() { "" } else { "; " },
                nt.join(", ")
            ));
        }
        let mut f = Failure::new(msg);
        f.facts.insert("calico_nettest".into(), facts);
        Err(f)
    }

    #[allow(clippy::too_many_arguments)]
    async fn data_plane(
        &mut self,
        nodes: &[String],
        node_ips: &BTreeMap<String, String>,
        targets: &mut Vec<Target>,
        results_out: &mut HashMap<String, ProbeResult>,
        not_tested: &mut Vec<NotTested>,
        expected_backends: &mut Vec<String>,
    ) -> Result<()> {
        let s = self.settings.clone();
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(workloads::namespace(&s))?,
            )
            .await
            .map_err(|e| anyhow!("creating namespace {}: {e}", s.namespace))?;
        let mut objs = vec![workloads::servers(&s), workloads::service(&s, false)];
        let want_host = self.opts.scenarios.contains(&"pod_to_node");
        if want_host {
            objs.push(workloads::host_servers(&s));
        }
        if self.opts.scenarios.contains(&"nodeport") {
            objs.push(workloads::service(&s, true));
        }
        let mut applier = crate::cluster::apply::Applier::new(self.client.clone(), false);
        applier.apply_all(&objs).await?;

        // Servers must be ready before anything probes them; a node whose server never becomes
        // ready cannot be a target, and says why.
        let server_deadline = self.remaining_for_tests() / 2;
        let (servers, host_servers, pending) =
            self.wait_servers(nodes, want_host, server_deadline).await?;
        for (node, why) in &pending {
            not_tested.push(NotTested {
                node: node.clone(),
                reason: why.clone(),
            });
        }
        *expected_backends = servers.values().map(|s| s.pod.clone()).collect();

        let svc_api: Api<Service> = Api::namespaced(self.client.clone(), &s.namespace);
        let svc = svc_api.get("nt-server").await?;
        let cluster_ip = svc
            .spec
            .as_ref()
            .and_then(|x| x.cluster_ip.clone())
            .unwrap_or_default();
        let node_port = if self.opts.scenarios.contains(&"nodeport") {
            svc_api
                .get("nt-nodeport")
                .await?
                .spec
                .and_then(|x| x.ports)
                .and_then(|p| p.first().and_then(|p| p.node_port))
                .map(|p| p as u16)
        } else {
            None
        };
        let apiserver = Api::<Service>::namespaced(self.client.clone(), "default")
            .get("kubernetes")
            .await
            .ok()
            .and_then(|k| k.spec.and_then(|x| x.cluster_ip))
            .unwrap_or_else(|| "kubernetes.default.svc".into());
        let layout = Layout {
            nodes: nodes
                .iter()
                .filter(|n| !pending.contains_key(*n))
                .cloned()
                .collect(),
            node_ips: node_ips.clone(),
            servers,
            host_servers,
            service: ("nt-server".into(), s.namespace.clone(), cluster_ip),
            node_port,
            server_port: s.server_port,
            host_server_port: s.host_server_port,
            service_port: s.service_port,
            apiserver,
            max_peers: self.opts.max_peers,
            mtu_payload: 9000,
            external: self.opts.external.clone(),
        };
        *targets = scenarios::targets(&layout, &self.opts.scenarios);

        let mut round = 0u32;
        let mut todo: Vec<Target> = targets.clone();
        loop {
            let got = self.probe_round(&todo, round).await?;
            results_out.extend(got);
            let failed: Vec<Target> = todo
                .iter()
                .filter(|t| results_out.get(&t.id).is_some_and(|r| r.verdict != "ok"))
                .cloned()
                .collect();
            if failed.is_empty()
                || round >= self.opts.retries
                || self.remaining_for_tests() < Duration::from_secs(self.opts.connect_timeout * 4)
            {
                break;
            }
            round += 1;
            todo = failed;
        }

        // Service probes pass one by one, but together every backend must answer. Backends are
        // picked at random per connection: before a backend that was never heard counts,
        // probe the Service from the nodes whose Service probes all passed until missing one
        // by chance is unlikely.
        let silent = results::silent_backends(targets, results_out, expected_backends);
        let answered = results::service_answers(targets, results_out);
        let needed = results::service_answers_needed(expected_backends.len());
        if !silent.is_empty()
            && answered < needed
            && self.remaining_for_tests() >= Duration::from_secs(self.opts.connect_timeout * 4)
        {
            let sources: Vec<String> = layout
                .nodes
                .iter()
                .filter(|n| {
                    let mut mine = targets
                        .iter()
                        .filter(|t| t.backend_group.is_some() && &t.source_node == *n)
                        .peekable();
                    mine.peek().is_some()
                        && mine.all(|t| results_out.get(&t.id).is_some_and(|r| r.verdict == "ok"))
                })
                .cloned()
                .collect();
            if !sources.is_empty() {
                let more = scenarios::more_service_targets(
                    &layout,
                    &sources,
                    // At most 50 more per node, however large the cluster.
                    (needed - answered).min(sources.len() * 50),
                    scenarios::service_probes_per_node(&layout),
                );
                round += 1;
                let got = self.probe_round(&more, round).await?;
                results_out.extend(got);
                targets.extend(more);
            }
        }

        if self.opts.scenarios.contains(&"network_policy") && !layout.nodes.is_empty() {
            let mut policy_api = crate::cluster::apply::Applier::new(self.client.clone(), false);
            policy_api.apply_all(&[workloads::deny_servers(&s)]).await?;
            let deny = scenarios::policy_targets(&layout, true);
            // Each round's objects are named after its number: never reuse one.
            round += 1;
            let got = self.probe_round(&deny, round).await?;
            results_out.extend(got);
            targets.extend(deny);
            policy_api.apply_all(&[workloads::allow_probes(&s)]).await?;
            let allow = scenarios::policy_targets(&layout, false);
            round += 1;
            let got = self.probe_round(&allow, round).await?;
            results_out.extend(got);
            targets.extend(allow);
        }
        // A node whose probe did not report in its last round was not tested.
        for t in targets.iter() {
            if let Some(r) = results_out.get(&t.id).filter(|r| r.verdict == "not_run")
                && !not_tested.iter().any(|n| n.node == t.source_node)
            {
                not_tested.push(NotTested {
                    node: t.source_node.clone(),
                    reason: r.detail.clone(),
                });
            }
        }
        Ok(())
    }

    /// Waits for the server pods; returns servers by node, host servers by node, and the nodes
    /// whose pod-network server is not ready, with why.
    async fn wait_servers(
        &self,
        nodes: &[String],
        want_host: bool,
        deadline: Duration,
    ) -> Result<(
        BTreeMap<String, Server>,
        BTreeMap<String, Server>,
        BTreeMap<String, String>,
    )> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", workloads::RUN_LABEL, self.run_id));
        let mut stream = watcher::watcher(pods, cfg).default_backoff().boxed();
        let mut seen: BTreeMap<String, Pod> = BTreeMap::new();
        let until = tokio::time::Instant::now() + deadline;
        let wanted: BTreeSet<&String> = nodes.iter().collect();
        let done = |seen: &BTreeMap<String, Pod>| {
            let ready = |role: &str| -> BTreeSet<String> {
                seen.values()
                    .filter(|p| {
                        p.labels().get(workloads::ROLE_LABEL).map(String::as_str) == Some(role)
                            && pod_ready(p)
                    })
                    .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                    .collect()
            };
            let pods_ready = ready("server");
            let host_ready = ready("host-server");
            wanted
                .iter()
                .all(|n| pods_ready.contains(*n) && (!want_host || host_ready.contains(*n)))
        };
        while !done(&seen) {
            match tokio::time::timeout_at(until, stream.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(_))) => continue,
                Ok(Some(Ok(ev))) => match ev {
                    Event::Apply(p) | Event::InitApply(p) => {
                        seen.insert(p.name_any(), p);
                    }
                    Event::Delete(p) => {
                        seen.remove(&p.name_any());
                    }
                    Event::Init => seen.clear(),
                    Event::InitDone => {}
                },
            }
        }
        let mut servers = BTreeMap::new();
        let mut host_servers = BTreeMap::new();
        let mut pending = BTreeMap::new();
        for p in seen.values() {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            if !pod_ready(p) {
                continue;
            }
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let server = Server {
                node: node.clone(),
                pod: p.name_any(),
                ip,
            };
            match p.labels().get(workloads::ROLE_LABEL).map(String::as_str) {
                Some("server") => {
                    servers.insert(node, server);
                }
                Some("host-server") => {
                    // A host-network server answers with its node's host name.
                    let hostname = self.hostnames.get(&node).cloned().unwrap_or(node.clone());
                    host_servers.insert(
                        node,
                        Server {
                            pod: hostname,
                            ..server
                        },
                    );
                }
                _ => {}
            }
        }
        for node in nodes {
            if !servers.contains_key(node) {
                let pod = seen.values().find(|p| {
                    p.labels().get(workloads::ROLE_LABEL).map(String::as_str) == Some("server")
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            == Some(node.as_str())
                });
                let why = match pod {
                    Some(p) => format!("its server pod {} is not ready: {}", p.name_any(), pod_state(p)),
                    None => "no server pod was placed on it (taints, node_selector, or the DaemonSet controller)".into(),
                };
                pending.insert(node.clone(), why);
            }
        }
        Ok((servers, host_servers, pending))
    }

    /// Runs one round of probe Jobs and collects their results. The targets of a probe that
    /// did not report (never ran, did not finish, failed, could not start) get the `not_run`
    /// verdict with the reason as detail: its node was not tested, its network not found wanting.
    async fn probe_round(
        &mut self,
        todo: &[Target],
        round: u32,
    ) -> Result<HashMap<String, ProbeResult>> {
        let s = self.settings.clone();
        let answers_needed: BTreeSet<&str> = todo
            .iter()
            .filter(|t| t.backend_group.is_some())
            .map(|t| t.id.as_str())
            .collect();
        let mut groups: BTreeMap<(String, bool), Vec<&Target>> = BTreeMap::new();
        for t in todo {
            groups
                .entry((t.source_node.clone(), t.host_network))
                .or_default()
                .push(t);
        }
        let cm_api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &s.namespace);
        let job_api: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(self.client.clone(), &s.namespace);
        let mut jobs: BTreeMap<String, (String, bool, Vec<String>)> = BTreeMap::new();
        for ((node, host), ts) in &groups {
            let name = workloads::node_slug(node, *host, round);
            let lines: Vec<String> = ts.iter().map(|t| t.line()).collect();
            let cm =
                workloads::targets_configmap(&s, &name, PROBE_SCRIPT, &(lines.join("\n") + "\n"));
            cm_api
                .create(&PostParams::default(), &serde_json::from_value(cm)?)
                .await
                .map_err(|e| anyhow!("creating ConfigMap {name}: {e}"))?;
            let job = workloads::probe_job(&s, &name, node, *host);
            job_api
                .create(&PostParams::default(), &serde_json::from_value(job)?)
                .await
                .map_err(|e| anyhow!("creating Job {name}: {e}"))?;
            jobs.insert(
                name,
                (
                    node.clone(),
                    *host,
                    ts.iter().map(|t| t.id.clone()).collect(),
                ),
            );
        }

        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace);
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", workloads::RUN_LABEL, self.run_id));
        let mut stream = watcher::watcher(pods.clone(), cfg)
            .default_backoff()
            .boxed();
        let mut finished: BTreeMap<String, Pod> = BTreeMap::new();
        let mut latest: BTreeMap<String, Pod> = BTreeMap::new();
        // Probe pods deleted before they finished (the Job's deadline, an eviction, a drain):
        // with backoffLimit 0 nothing replaces them, so waiting longer is pointless.
        let mut gone: BTreeSet<String> = BTreeSet::new();
        let job_of = |p: &Pod| -> Option<String> {
            let l = p.labels();
            l.get("job-name")
                .or_else(|| l.get("batch.kubernetes.io/job-name"))
                .filter(|j| jobs.contains_key(*j))
                .cloned()
        };
        let done = |p: &Pod| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        };
        let until = tokio::time::Instant::now() + self.remaining_for_tests();
        while finished.len() + gone.len() < jobs.len() {
            match tokio::time::timeout_at(until, stream.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(_))) => continue,
                Ok(Some(Ok(Event::Apply(p) | Event::InitApply(p)))) => {
                    let Some(job) = job_of(&p) else {
                        continue;
                    };
                    if done(&p) {
                        finished.insert(job.clone(), p.clone());
                    }
                    latest.insert(job, p);
                }
                Ok(Some(Ok(Event::Delete(p)))) => {
                    let Some(job) = job_of(&p) else {
                        continue;
                    };
                    if done(&p) {
                        finished.entry(job.clone()).or_insert_with(|| p.clone());
                    } else if !finished.contains_key(&job) {
                        gone.insert(job.clone());
                    }
                    latest.insert(job, p);
                }
                Ok(Some(Ok(_))) => {}
            }
        }

        let mut out = HashMap::new();
        for (job, (node, host, ids)) in &jobs {
            let who = if *host {
                format!("{node} (host network)")
            } else {
                node.clone()
            };
            let Some(pod) = finished.get(job) else {
                let reason = match latest.get(job) {
                    Some(p) if gone.contains(job) => format!(
                        "the probe pod on {who} was deleted before it reported (the Job's deadline, an eviction or a drain): {}",
                        pod_state(p)
                    ),
                    Some(p) => format!(
                        "the probe on {who} did not finish within the timeout: {}",
                        pod_state(p)
                    ),
                    None => format!("the probe pod on {who} was never created"),
                };
                for id in ids {
                    out.insert(
                        id.clone(),
                        ProbeResult {
                            id: id.clone(),
                            verdict: "not_run".into(),
                            answer: String::new(),
                            detail: reason.clone(),
                            ms: 0,
                        },
                    );
                }
                continue;
            };
            let terminated = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.clone());
            let summary = terminated
                .as_ref()
                .and_then(|t| t.message.as_deref())
                .and_then(results::parse_summary);
            let not_run = |detail: String| {
                ids.iter()
                    .map(|id| {
                        (
                            id.clone(),
                            ProbeResult {
                                id: id.clone(),
                                verdict: "not_run".into(),
                                answer: String::new(),
                                detail: detail.clone(),
                                ms: 0,
                            },
                        )
                    })
                    .collect::<Vec<_>>()
            };
            if let Some(err) = summary.as_ref().and_then(|s| s.error.clone()) {
                out.extend(not_run(format!("the probe on {who} could not run: {err}")));
                continue;
            }
            // Without a summary a failed probe pod broke (killed at the Job's deadline, out of
            // memory, evicted): a broken probe, never a broken network (the probe contract).
            if summary.is_none()
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            {
                let how = match &terminated {
                    Some(t) => format!(
                        "{} (exit code {})",
                        t.reason.clone().unwrap_or_else(|| "terminated".into()),
                        t.exit_code
                    ),
                    None => pod
                        .status
                        .as_ref()
                        .and_then(|s| s.reason.clone().or(s.message.clone()))
                        .unwrap_or_else(|| "no container status".into()),
                };
                out.extend(not_run(format!(
                    "the probe on {who} failed without a report: {how}"
                )));
                continue;
            }
            // The termination message holds the verdicts of the failures; the log has every
            // probe, and is only read when it must be.
            // Service probes need their answers too: which backend replied.
            let need_log = summary
                .as_ref()
                .is_none_or(|s| s.truncated || !s.failed.is_empty())
                || ids.iter().any(|id| answers_needed.contains(id.as_str()));
            let mut per_id: HashMap<String, ProbeResult> = HashMap::new();
            if need_log {
                let log = pods
                    .logs(&pod.name_any(), &LogParams::default())
                    .await
                    .unwrap_or_default();
                for r in results::parse_log(&log) {
                    per_id.insert(r.id.clone(), r);
                }
            }
            if let Some(sum) = &summary {
                for (id, verdict) in &sum.failed {
                    per_id.entry(id.clone()).or_insert_with(|| ProbeResult {
                        id: id.clone(),
                        verdict: verdict.clone(),
                        answer: String::new(),
                        detail: String::new(),
                        ms: 0,
                    });
                }
            }
            for id in ids {
                let r = per_id.remove(id).unwrap_or_else(|| {
                    if summary.is_some() && !need_log {
                        ProbeResult {
                            id: id.clone(),
                            verdict: "ok".into(),
                            answer: String::new(),
                            detail: String::new(),
                            ms: 0,
                        }
                    } else {
                        ProbeResult {
                            id: id.clone(),
                            verdict: "not_run".into(),
                            answer: String::new(),
                            detail: format!("missing from the report of the probe on {who}"),
                            ms: 0,
                        }
                    }
                });
                out.insert(id.clone(), r);
            }
        }
        Ok(out)
    }

    /// Deletes the namespace and waits until it is gone.
    async fn cleanup(&mut self) -> Result<()> {
        if !self.opts.cleanup {
            self.warnings.push(format!(
                "cleanup is false: namespace {} is left for inspection",
                self.settings.namespace
            ));
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .delete(&self.settings.namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => {
                return Err(anyhow!(
                    "deleting namespace {}: {e}",
                    self.settings.namespace
                ));
            }
        }
        // The deletion is requested and finishes server-side in any case: wait for it only
        // as long as the timeout allows (its cleanup share, at least a second).
        let wait = kube::runtime::wait::await_condition(
            api.clone(),
            &self.settings.namespace,
            |o: Option<&Namespace>| o.is_none(),
        );
        let patience = self.remaining().max(Duration::from_secs(1));
        tokio::time::timeout(patience, wait)
            .await
            .map_err(|_| {
                anyhow!(
                    "namespace {} is still being deleted after {:.0}s (a finalizer or a stuck pod holds it; the deletion was requested and goes on in the background)",
                    self.settings.namespace,
                    patience.as_secs_f64()
                )
            })?
            .map_err(|e| anyhow!("waiting for namespace deletion: {e}"))?;
        Ok(())
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_state(p: &Pod) -> String {
    let st = p.status.as_ref();
    if let Some(c) = st.and_then(|s| s.conditions.as_ref()).and_then(|c| {
        c.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    }) {
        return format!(
            "not scheduled: {}",
            c.message
                .clone()
                .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        );
    }
    if let Some(w) = st
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
    {
        return format!(
            "{} {}",
            w.reason.clone().unwrap_or_default(),
            w.message.clone().unwrap_or_default()
        )
        .trim()
        .to_string();
    }
    st.and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}
