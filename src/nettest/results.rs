//! Reading what the probes reported, and turning it into a verdict people can act on.
//!
//! The message names the worst cases first — "node w3 cannot reach pods on w1, w2 (timeout)" —
//! rather than "12 tests failed", which is what users of other connectivity tests complain about.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::scenarios::Target;

/// One probe's outcome, as the probe logs it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ProbeResult {
    /// Target id.
    pub id: String,
    /// ok, timeout, refused, dns, wrong_backend, other (or not_run).
    pub verdict: String,
    /// What answered.
    #[serde(default)]
    pub answer: String,
    /// Why not ok.
    #[serde(default)]
    pub detail: String,
    /// Milliseconds.
    #[serde(default)]
    pub ms: u64,
}

/// Parses a probe log: one JSON object per line; other lines are ignored.
pub fn parse_log(text: &str) -> Vec<ProbeResult> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The compact summary a probe leaves as its termination message.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct Summary {
    /// Node the probe ran on.
    #[serde(default)]
    pub node: String,
    /// Probes run.
    #[serde(default)]
    pub total: u64,
    /// Probes ok.
    #[serde(default)]
    pub ok: u64,
    /// Failed `[id, verdict]` pairs (empty when truncated).
    #[serde(default)]
    pub failed: Vec<(String, String)>,
    /// Whether `failed` did not fit and the log must be read.
    #[serde(default)]
    pub truncated: bool,
    /// A setup error of the probe itself.
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses a termination message.
pub fn parse_summary(text: &str) -> Option<Summary> {
    serde_json::from_str(text.trim()).ok()
}

/// A failed probe, as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// Scenario.
    pub scenario: String,
    /// Probing node.
    pub source_node: String,
    /// Node of the target, if it is one.
    pub target_node: Option<String>,
    /// Address or name probed, with port.
    pub target: String,
    /// Verdict.
    pub verdict: String,
    /// Detail from the probe.
    pub detail: String,
    /// Target id.
    pub id: String,
}

/// Why a node was not tested.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotTested {
    /// Node.
    pub node: String,
    /// Why (never scheduled, timed out, probe broke).
    pub reason: String,
}

/// Counts per scenario.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Probes run.
    pub run: u64,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
}

/// Combines targets with what the probes said.
pub fn failures(
    targets: &[Target],
    results: &HashMap<String, ProbeResult>,
) -> (Vec<Failure>, BTreeMap<String, Counts>) {
    let mut out = Vec::new();
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for t in targets {
        // A probe that did not run found nothing: its node is reported as not tested.
        let Some(r) = results.get(&t.id).filter(|r| r.verdict != "not_run") else {
            continue;
        };
        let c = counts.entry(t.scenario.to_string()).or_default();
        c.run += 1;
        if (r.verdict == "ok") != t.must_fail {
            c.passed += 1;
        } else {
            c.failed += 1;
            let (verdict, detail) = if t.must_fail {
                (
                    "not_blocked".to_string(),
                    "the NetworkPolicy should have blocked this connection".to_string(),
                )
            } else {
                (r.verdict.clone(), r.detail.clone())
            };
            out.push(Failure {
                scenario: t.scenario.to_string(),
                source_node: t.source_node.clone(),
                target_node: t.dest_node.clone(),
                target: if t.port == 0 {
                    t.host.clone()
                } else {
                    format!("{}:{}", t.host, t.port)
                },
                verdict,
                detail,
                id: t.id.clone(),
            });
        }
    }
    (out, counts)
}

/// The Service probes that were answered.
pub fn service_answers(targets: &[Target], results: &HashMap<String, ProbeResult>) -> usize {
    targets
        .iter()
        .filter(|t| t.backend_group.is_some())
        .filter(|t| results.get(&t.id).is_some_and(|r| r.verdict == "ok"))
        .count()
}

/// Answers through a Service needed before a backend that never answered is a finding rather
/// than chance. kube-proxy picks a backend at random for each connection, so `k` answers miss
/// a given one of `backends` with probability (1 − 1/backends)^k; this keeps the chance that
/// any backend is missed by a healthy Service under 1 in 10,000.
pub fn service_answers_needed(backends: usize) -> usize {
    if backends <= 1 {
        return 1;
    }
    let n = backends as f64;
    ((1e-4 / n).ln() / (1.0 - 1.0 / n).ln()).ceil() as usize
}

/// Backends of a Service that never answered any probe, given the expected pod names: Service
/// probes pass one by one, but together every backend must have answered. Empty when no
/// Service probe was answered at all: those probes' own failures say what is wrong.
pub fn silent_backends(
    targets: &[Target],
    results: &HashMap<String, ProbeResult>,
    expected: &[String],
) -> Vec<String> {
    let heard: BTreeSet<&str> = targets
        .iter()
        .filter(|t| t.backend_group.is_some())
        .filter_map(|t| results.get(&t.id))
        .filter(|r| r.verdict == "ok")
        .map(|r| r.answer.as_str())
        .collect();
    if heard.is_empty() {
        return Vec::new();
    }
    expected
        .iter()
        .filter(|p| !heard.contains(p.as_str()))
        .cloned()
        .collect()
}

/// Failures that passed in `baseline` (an earlier run's `ansible_facts.calico_nettest`).
pub fn regressions(baseline: &Value, failures: &[Failure]) -> Vec<Failure> {
    let set = |key: &str| -> BTreeSet<String> {
        baseline
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let scenarios = set("scenarios_run");
    let nodes = set("nodes_tested");
    let failed_before: BTreeSet<String> = baseline
        .get("failures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    failures
        .iter()
        .filter(|f| scenarios.contains(&f.scenario))
        .filter(|f| nodes.contains(&f.source_node))
        .filter(|f| f.target_node.as_ref().is_none_or(|n| nodes.contains(n)))
        .filter(|f| !failed_before.contains(&f.id))
        .cloned()
        .collect()
}

/// The worst cases first, on one line.
pub fn headline(failures: &[Failure], limit: usize) -> String {
    if failures.is_empty() {
        return String::new();
    }
    // How often each node is the source, and the target, of a failure.
    let mut as_source: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
    let mut as_target: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
    let mut groups: Vec<(usize, String)> = Vec::new();
    for f in failures {
        if f.source_node == "all" {
            // A finding of the whole run (a Service backend nobody heard), not of one node.
            groups.push((1, format!("{}: {}", f.target, f.detail)));
            continue;
        }
        as_source.entry(f.source_node.as_str()).or_default().push(f);
        if let Some(t) = &f.target_node {
            as_target.entry(t.as_str()).or_default().push(f);
        }
    }
    for (node, fs) in &as_target {
        let sources: BTreeSet<&str> = fs
            .iter()
            .map(|f| f.source_node.as_str())
            .filter(|s| s != node)
            .collect();
        if sources.len() >= 2 {
            groups.push((
                fs.len(),
                format!(
                    "pods on {node} cannot be reached from {} ({})",
                    join(&sources),
                    verdicts(fs)
                ),
            ));
        }
    }
    for (node, fs) in &as_source {
        let dests: BTreeSet<&str> = fs.iter().filter_map(|f| f.target_node.as_deref()).collect();
        let what = if dests.is_empty() {
            let scen: BTreeSet<&str> = fs.iter().map(|f| f.scenario.as_str()).collect();
            format!("node {node} fails {} ({})", join(&scen), verdicts(fs))
        } else {
            let scen: BTreeSet<&str> = fs.iter().map(|f| f.scenario.as_str()).collect();
            format!(
                "node {node} cannot reach {} on {} ({})",
                if scen
                    .iter()
                    .all(|s| s.contains("node") && !s.starts_with("pod_to_pod"))
                {
                    "nodes"
                } else {
                    "pods"
                },
                join(&dests),
                verdicts(fs)
            )
        };
        groups.push((fs.len(), what));
    }
    groups.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let shown: Vec<String> = groups.iter().take(limit).map(|g| g.1.clone()).collect();
    let mut s = shown.join("; ");
    if groups.len() > limit {
        s.push_str(&format!("; and {} more", groups.len() - limit));
    }
    s
}

fn join(set: &BTreeSet<&str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}

fn verdicts(fs: &[&Failure]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for f in fs {
        *by.entry(f.verdict.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = by.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

/// A JUnit report: one suite per scenario, one case per probing node.
pub fn junit(
    targets: &[Target],
    results: &HashMap<String, ProbeResult>,
    not_tested: &[NotTested],
    seconds: f64,
) -> String {
    let mut by: BTreeMap<&str, BTreeMap<&str, Vec<&Target>>> = BTreeMap::new();
    for t in targets {
        by.entry(t.scenario)
            .or_default()
            .entry(t.source_node.as_str())
            .or_default()
            .push(t);
    }
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = by.values().map(|m| m.len()).sum();
    x.push_str(&format!(
        "<testsuites name=\"calico_nettest\" tests=\"{total}\" time=\"{seconds:.1}\">\n"
    ));
    for (scenario, nodes) in &by {
        let failed = nodes
            .values()
            .filter(|ts| {
                ts.iter()
                    .any(|t| results.get(&t.id).is_none_or(|r| r.verdict != "ok"))
            })
            .count();
        x.push_str(&format!(
            "  <testsuite name=\"{scenario}\" tests=\"{}\" failures=\"{failed}\">\n",
            nodes.len()
        ));
        for (node, ts) in nodes {
            x.push_str(&format!(
                "    <testcase classname=\"calico_nettest.{scenario}\" name=\"{}\">\n",
                esc(node)
            ));
            let bad: Vec<String> = ts
                .iter()
                .filter_map(|t| match results.get(&t.id) {
                    Some(r) if r.verdict == "ok" => None,
                    Some(r) => Some(format!("{}: {} {}", t.id, r.verdict, r.detail)),
                    None => Some(format!("{}: not_run", t.id)),
                })
                .collect();
            if !bad.is_empty() {
                x.push_str(&format!(
                    "      <failure message=\"{} of {} probes failed\">{}</failure>\n",
                    bad.len(),
                    ts.len(),
                    esc(&bad.join("\n"))
                ));
            }
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    if !not_tested.is_empty() {
        x.push_str(&format!(
            "  <testsuite name=\"not_tested\" tests=\"{0}\" failures=\"{0}\">\n",
            not_tested.len()
        ));
        for n in not_tested {
            x.push_str(&format!("    <testcase classname=\"calico_nettest.not_tested\" name=\"{}\"><failure message=\"{}\"/></testcase>\n", esc(&n.node), esc(&n.reason)));
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// The facts' summary block.
pub fn summary_json(counts: &BTreeMap<String, Counts>) -> Value {
    let run: u64 = counts.values().map(|c| c.run).sum();
    let passed: u64 = counts.values().map(|c| c.passed).sum();
    json!({"probes_run": run, "passed": passed, "failed": run - passed, "by_scenario": counts})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(scenario: &str, src: &str, dst: &str, verdict: &str) -> Failure {
        Failure {
            scenario: scenario.into(),
            source_node: src.into(),
            target_node: Some(dst.into()),
            target: "x".into(),
            verdict: verdict.into(),
            detail: String::new(),
            id: format!("{scenario}/{src}->{dst}/http"),
        }
    }

    #[test]
    fn logs_and_summaries_parse() {
        let log = "noise\n{\"id\":\"a\",\"verdict\":\"ok\",\"ms\":3,\"answer\":\"p\",\"detail\":\"\"}\n{\"id\":\"b\",\"verdict\":\"timeout\"}\n";
        let r = parse_log(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].verdict, "timeout");
        let s = parse_summary(
            r#"{"v":1,"node":"w1","total":2,"ok":1,"failed":[["b","timeout"]],"truncated":false}"#,
        )
        .unwrap();
        assert_eq!(s.failed, vec![("b".to_string(), "timeout".to_string())]);
        assert!(parse_summary("garbage").is_none());
    }

    #[test]
    fn the_partitioned_node_is_named_first() {
        let mut fs = vec![];
        for other in ["w1", "w2", "w4"] {
            fs.push(f("pod_to_pod_cross_node", "w3", other, "timeout"));
            fs.push(f("pod_to_pod_cross_node", other, "w3", "timeout"));
        }
        let h = headline(&fs, 2);
        assert!(
            h.starts_with("node w3 cannot reach pods on w1, w2, w4 (timeout)")
                || h.starts_with("pods on w3 cannot be reached from w1, w2, w4 (timeout)"),
            "{h}"
        );
        assert!(h.contains("w3"));
    }

    #[test]
    fn a_silent_backend_is_told_as_such_not_as_a_node_called_all() {
        let silent = Failure {
            scenario: "pod_to_service".into(),
            source_node: "all".into(),
            target_node: None,
            target: "ns/nt-server".into(),
            verdict: "wrong_backend".into(),
            detail: "backends never answered through the Service (40 answers from the others): nt-server-x".into(),
            id: "pod_to_service/backends".into(),
        };
        let h = headline(&[silent], 3);
        assert_eq!(
            h,
            "ns/nt-server: backends never answered through the Service (40 answers from the others): nt-server-x"
        );
    }

    #[test]
    fn regressions_are_failures_that_passed_before() {
        let baseline = json!({"scenarios_run": ["pod_to_pod_cross_node"], "nodes_tested": ["w1", "w2", "w3"],
            "failures": [{"id": "pod_to_pod_cross_node/w1->w2/http"}]});
        let now = vec![
            f("pod_to_pod_cross_node", "w1", "w2", "timeout"),
            f("pod_to_pod_cross_node", "w1", "w3", "timeout"),
            f("mtu", "w1", "w3", "timeout"),
            f("pod_to_pod_cross_node", "w1", "w9", "timeout"),
        ];
        let r = regressions(&baseline, &now);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, "pod_to_pod_cross_node/w1->w3/http");
    }

    #[test]
    fn enough_service_answers_to_hear_every_backend() {
        assert_eq!(service_answers_needed(0), 1);
        assert_eq!(service_answers_needed(1), 1);
        for n in [2usize, 3, 5, 10, 100, 500] {
            let k = service_answers_needed(n);
            let miss = n as f64 * (1.0 - 1.0 / n as f64).powi(k as i32);
            let miss_one_fewer = n as f64 * (1.0 - 1.0 / n as f64).powi(k as i32 - 1);
            assert!(miss <= 1e-4 && miss_one_fewer > 1e-4, "{n}: {k}");
        }
        // Linear enough in the cluster size: n·ln(10⁴·n).
        assert!(service_answers_needed(500) < 500 * 16);
    }

    #[test]
    fn no_backend_is_silent_when_the_service_answered_nobody() {
        let t = |i: usize| Target {
            id: format!("pod_to_service/w1->nt-server/http/{i}"),
            scenario: "pod_to_service",
            source_node: "w1".into(),
            host_network: false,
            dest_node: None,
            protocol: crate::nettest::scenarios::Protocol::Http,
            host: "10.96.0.50".into(),
            port: 80,
            expect: "*".into(),
            payload: 0,
            backend_group: Some("service".into()),
            must_fail: false,
        };
        let ts = vec![t(0), t(1)];
        let r = |i: usize, verdict: &str, answer: &str| {
            (
                ts[i].id.clone(),
                ProbeResult {
                    id: ts[i].id.clone(),
                    verdict: verdict.into(),
                    answer: answer.into(),
                    detail: String::new(),
                    ms: 0,
                },
            )
        };
        let expected = vec!["a".to_string(), "b".to_string()];
        let none: HashMap<_, _> = [r(0, "timeout", ""), r(1, "timeout", "")].into();
        assert!(silent_backends(&ts, &none, &expected).is_empty());
        assert_eq!(service_answers(&ts, &none), 0);
        let one: HashMap<_, _> = [r(0, "ok", "a"), r(1, "timeout", "")].into();
        assert_eq!(silent_backends(&ts, &one, &expected), ["b"]);
        assert_eq!(service_answers(&ts, &one), 1);
    }

    #[test]
    fn junit_is_well_formed_enough() {
        let x = junit(
            &[],
            &HashMap::new(),
            &[NotTested {
                node: "w<1>".into(),
                reason: "never scheduled".into(),
            }],
            1.0,
        );
        assert!(x.contains("name=\"w&lt;1&gt;\""));
        assert!(x.starts_with("<?xml"));
    }
}
