//! The faults the product must survive, on the real plane: kwok Stage objects made from the
//! same vocabulary as kubesim's faults ([`SimFaults`]), so one test names a fault once and
//! runs in either world.
//!
//! | kubesim fault | here |
//! |---|---|
//! | `crash_loop` {image, nodes} | containers exit 1 again and again: `CrashLoopBackOff`, restartCount rising |
//! | `never_pull` {image, nodes} | `ErrImagePull`, then `ImagePullBackOff`, alternating; the pod stays Pending |
//! | `slow_ready` {image, nodes, seconds} | running but not Ready for `seconds`; over a day ([`NEVER`]) means never |
//! | `not_ready_nodes` | the node's conditions go `Unknown` ("Kubelet stopped posting node status.") |
//! | `network` | answered by the probe runner ([`crate::probes`]), not by a stage |
//!
//! Images are matched with kubesim's globs (`*calico/node:v3.28.5`, `*` any run of
//! characters), on the pod's containers and init containers; `nodes` empty means every node.
//! Behaviour stages weigh 1 and the default lifecycle 0, so where both match kwok applies the
//! behaviour. Lifting a fault lets pods and nodes recover (`stages/pod-recover.yaml`, the
//! default node stage).

use kubesim::sim::{ImageFault, SimFaults};
use serde_json::{Value, json};

/// A `slow_ready` delay of more than this many seconds is a pod that never becomes Ready.
pub const NEVER: f64 = 86_400.0;

/// The label every behaviour stage carries (they are told apart from the default lifecycle).
pub const BEHAVIOUR_LABEL: &str = "realplane.k8s-calico.test/behaviour";

/// A glob as an anchored regular expression that needs no backslashes (they would have to
/// survive YAML, Go template and jq quoting): metacharacters go into character classes.
pub fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '.' | '+' | '?' | '(' | ')' | '|' | '{' | '}' | '$' | '^' | '[' | ']' => {
                re.push('[');
                re.push(c);
                re.push(']');
            }
            '"' | '\\' => {}
            c => re.push(c),
        }
    }
    re.push('$');
    re
}

fn parse(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("the stages shipped with realplane parse")
}

fn matches_image(re: &str) -> Value {
    json!({"key": format!(
        "[(.spec.containers // [])[], (.spec.initContainers // [])[] | .image | test(\"{re}\")] | any"),
        "operator": "In", "values": ["true"]})
}

fn on_nodes(nodes: &[String]) -> Option<Value> {
    (!nodes.is_empty()).then(|| json!({"key": ".spec.nodeName", "operator": "In", "values": nodes}))
}

fn waiting_reason(op: &str, reasons: &[&str]) -> Value {
    json!({"key": format!(
        "[(.status.containerStatuses // [])[], (.status.initContainerStatuses // [])[] | .state.waiting.reason // \"\"] | any(. == {})",
        reasons.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(" or . == ")),
        "operator": op, "values": ["true"]})
}

/// One stage from a shipped template: named, labelled, `__IMAGE_RE__` and `extra` filled in,
/// `more` selectors added.
fn stage(
    template: &str,
    name: String,
    re: &str,
    extra: &[(&str, &str)],
    more: Vec<Value>,
) -> Value {
    let mut text = template.replace("__IMAGE_RE__", re);
    for (k, v) in extra {
        text = text.replace(k, v);
    }
    let mut s = parse(&text);
    s["metadata"]["name"] = json!(name);
    s["metadata"]["labels"] = json!({BEHAVIOUR_LABEL: "true"});
    let exprs = s["spec"]["selector"]["matchExpressions"]
        .as_array_mut()
        .expect("behaviour stages have matchExpressions");
    exprs.extend(more);
    s
}

fn image_selectors(f: &ImageFault) -> (String, Vec<Value>) {
    let re = glob_regex(&f.image);
    let mut sel = vec![matches_image(&re)];
    sel.extend(on_nodes(&f.nodes));
    (re, sel)
}

fn crash_loop(i: usize, f: &ImageFault) -> Vec<Value> {
    let (re, sel) = image_selectors(f);
    let t = include_str!("../stages/behaviour-crash-loop.yaml");
    vec![stage(t, format!("realplane-crash-loop-{i}"), &re, &[], sel)]
}

fn never_pull(i: usize, f: &ImageFault) -> Vec<Value> {
    let (re, sel) = image_selectors(f);
    let t = include_str!("../stages/behaviour-image-pull.yaml");
    let pull = ["ErrImagePull", "ImagePullBackOff"];
    let with = |extra: Value, more: Value| {
        let mut s = sel.clone();
        s.push(more);
        (extra, s)
    };
    let steps = [
        (
            "new",
            "ErrImagePull",
            with(Value::Null, waiting_reason("NotIn", &pull)),
        ),
        (
            "backoff",
            "ImagePullBackOff",
            with(json!(1000), waiting_reason("In", &["ErrImagePull"])),
        ),
        (
            "retry",
            "ErrImagePull",
            with(json!(4000), waiting_reason("In", &["ImagePullBackOff"])),
        ),
    ];
    steps
        .into_iter()
        .map(|(step, reason, (delay, more))| {
            let mut s = stage(
                t,
                format!("realplane-never-pull-{i}-{step}"),
                &re,
                &[("__REASON__", reason)],
                more,
            );
            if !delay.is_null() {
                s["spec"]["delay"] = json!({"durationMilliseconds": delay});
            }
            s
        })
        .collect()
}

fn slow_ready(i: usize, f: &kubesim::sim::SlowReady) -> Vec<Value> {
    let fault = ImageFault {
        image: f.image.clone(),
        nodes: f.nodes.clone(),
    };
    let (re, sel) = image_selectors(&fault);
    let start = stage(
        include_str!("../stages/behaviour-not-ready.yaml"),
        format!("realplane-slow-ready-{i}-start"),
        &re,
        &[],
        sel.clone(),
    );
    // Then, once running and not ready: ready after the delay, or a stage that changes
    // nothing (so the default recovery never applies).
    let mut later = parse(include_str!("../stages/pod-recover.yaml"));
    later["metadata"] = json!({"name": format!("realplane-slow-ready-{i}-ready"), "labels": {BEHAVIOUR_LABEL: "true"}});
    later["spec"]["weight"] = json!(1);
    later["spec"]["selector"]["matchExpressions"]
        .as_array_mut()
        .expect("pod-recover has matchExpressions")
        .extend(sel);
    if f.seconds > NEVER {
        later["spec"]["next"] = json!({"statusTemplate": "phase: Running\n"});
        later["spec"].as_object_mut().map(|s| s.remove("delay"));
    } else {
        let ms = (f.seconds.max(0.0) * 1000.0) as u64;
        later["spec"]["delay"] = json!({"durationMilliseconds": ms});
    }
    vec![start, later]
}

/// A node whose kubelet is gone: its conditions go Unknown, and its pods neither start nor
/// finish deleting (no kubelet confirms it; they stay Terminating, as on a real cluster,
/// until the node comes back or is removed).
fn node_down(node: &str) -> Vec<Value> {
    let on_node = json!([{"key": ".metadata.name", "operator": "In", "values": [node]}]);
    let mut conditions = parse(include_str!("../stages/behaviour-node-down.yaml"));
    conditions["metadata"] =
        json!({"name": format!("realplane-node-down-{node}"), "labels": {BEHAVIOUR_LABEL: "true"}});
    conditions["spec"]["selector"]["matchExpressions"] = on_node;
    // Pods on it: a stage that matches and changes nothing keeps every other stage away.
    let hold = |what: &str, phase_or_deleted: Value| {
        json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage",
            "metadata": {"name": format!("realplane-node-down-{node}-{what}"), "labels": {BEHAVIOUR_LABEL: "true"}},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"}, "weight": 1,
                "selector": {"matchExpressions": [
                    {"key": ".spec.nodeName", "operator": "In", "values": [node]}, phase_or_deleted]},
                "next": {"finalizers": {"add": []}}}})
    };
    vec![
        conditions,
        hold(
            "pods-pending",
            json!({"key": ".status.phase", "operator": "In", "values": ["Pending"]}),
        ),
        hold(
            "pods-terminating",
            json!({"key": ".metadata.deletionTimestamp", "operator": "Exists"}),
        ),
    ]
}

/// The stages that make the plane behave as `faults` say (the network faults excepted).
pub fn stages(faults: &SimFaults) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, f) in faults.crash_loop.iter().enumerate() {
        out.extend(crash_loop(i, f));
    }
    for (i, f) in faults.never_pull.iter().enumerate() {
        out.extend(never_pull(i, f));
    }
    for (i, f) in faults.slow_ready.iter().enumerate() {
        out.extend(slow_ready(i, f));
    }
    for n in &faults.not_ready_nodes {
        out.extend(node_down(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_anchored_regexes_without_backslashes() {
        assert_eq!(
            glob_regex("*calico/node:v3.28.5"),
            "^.*calico/node:v3[.]28[.]5$"
        );
        assert_eq!(glob_regex("nginx"), "^nginx$");
    }

    #[test]
    fn each_fault_becomes_labelled_stages_with_its_selectors() {
        let faults: SimFaults = serde_json::from_value(json!({
            "crash_loop": [{"image": "*calico/node:v3.27.5", "nodes": ["w2"]}],
            "never_pull": [{"image": "*:missing"}],
            "slow_ready": [{"image": "*slow*", "seconds": 2.0}, {"image": "*never*", "seconds": 1e9}],
            "not_ready_nodes": ["w3"],
        }))
        .unwrap();
        let s = stages(&faults);
        let names: Vec<&str> = s
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "realplane-crash-loop-0",
                "realplane-never-pull-0-new",
                "realplane-never-pull-0-backoff",
                "realplane-never-pull-0-retry",
                "realplane-slow-ready-0-start",
                "realplane-slow-ready-0-ready",
                "realplane-slow-ready-1-start",
                "realplane-slow-ready-1-ready",
                "realplane-node-down-w3",
                "realplane-node-down-w3-pods-pending",
                "realplane-node-down-w3-pods-terminating"
            ]
        );
        assert!(
            s.iter()
                .all(|s| s["metadata"]["labels"][BEHAVIOUR_LABEL] == "true")
        );
        let crash = s[0].to_string();
        assert!(
            crash.contains(r#"test(\"^.*calico/node:v3[.]27[.]5$\")"#),
            "{crash}"
        );
        assert!(crash.contains(r#""values":["w2"]"#), "{crash}");
        assert!(!crash.contains("__IMAGE_RE__"));
        assert_eq!(s[2]["spec"]["delay"]["durationMilliseconds"], 1000);
        assert!(s[2].to_string().contains("ImagePullBackOff"));
        assert_eq!(s[5]["spec"]["delay"]["durationMilliseconds"], 2000);
        assert_eq!(s[7]["spec"]["next"]["statusTemplate"], "phase: Running\n");
    }
}
