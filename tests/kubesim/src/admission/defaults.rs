//! Defaulting of built-in kinds: the fields the real server fills in that kubectl output,
//! controllers and product code read back (strategies, grace periods, pull policies, service
//! fields, namespace finalizers, Job selectors).

use crate::pointer::At;
use serde_json::{Map, Value, json};

use crate::catalog::ResourceType;

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = Value::Object(Map::new());
    }
    v[key].as_object_mut().expect("just made an object")
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// Fills defaults of a built-in object in place; `old` is the stored object on updates.
pub fn default_object(rt: &ResourceType, obj: &mut Value, old: Option<&Value>) {
    if !rt.builtin {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            default_pod_spec(obj_mut(obj, "spec"), true);
            if old.is_none() {
                let qos = qos_class(obj.get("spec"));
                obj_mut(obj, "status").insert("qosClass".into(), json!(qos));
            }
        }
        ("", "namespaces") => {
            let name = obj
                .at("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let meta = obj_mut(obj, "metadata");
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
            if old.is_none() {
                let spec = obj_mut(obj, "spec");
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
        }
        ("", "services") => default_service(obj_mut(obj, "spec")),
        ("", "secrets") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
            }
        }
        ("apps", "daemonsets") => {
            let spec = obj_mut(obj, "spec");
            let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
            if let Some(s) = strategy.as_object_mut() {
                set_default(s, "type", json!("RollingUpdate"));
                if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            default_template(spec);
        }
        ("apps", "deployments") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
            if let Some(s) = strategy.as_object_mut() {
                set_default(s, "type", json!("RollingUpdate"));
                if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            default_template(spec);
        }
        ("apps", "replicasets") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("apps", "statefulsets") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            default_template(spec);
        }
        ("batch", "jobs") => default_job(obj, old),
        ("batch", "cronjobs") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
        }
        ("networking.k8s.io", "networkpolicies") => {
            let spec = obj_mut(obj, "spec");
            if spec
                .get("policyTypes")
                .is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
            {
                let mut types = vec![json!("Ingress")];
                if spec.get("egress").is_some_and(|e| !e.is_null()) {
                    types.push(json!("Egress"));
                }
                spec.insert("policyTypes".into(), Value::Array(types));
            }
            for dir in ["ingress", "egress"] {
                for rule in spec
                    .get_mut(dir)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for p in rule
                        .get_mut("ports")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(p) = p.as_object_mut() {
                            set_default(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let spec = obj_mut(obj, "spec");
            set_default(spec, "conversion", json!({"strategy": "None"}));
            if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
                let kind = names
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                set_default(names, "singular", json!(kind.to_ascii_lowercase()));
                set_default(names, "listKind", json!(format!("{kind}List")));
            }
        }
        _ => {}
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        let ps = t.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = ps.as_object_mut() {
            default_pod_spec(ps, false);
        }
    }
}

/// Pod spec defaults; `is_pod` adds what admission plugins add to real pods only.
fn default_pod_spec(spec: &mut Map<String, Value>, is_pod: bool) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                default_container(c);
            }
        }
    }
    if is_pod {
        set_default(spec, "enableServiceLinks", json!(true));
        set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        let priority = match spec.get("priorityClassName").and_then(Value::as_str) {
            Some("system-node-critical") => 2_000_001_000i64,
            Some("system-cluster-critical") => 2_000_000_000,
            _ => 0,
        };
        set_default(spec, "priority", json!(priority));
        if spec.get("serviceAccountName").is_none_or(Value::is_null) {
            let sa = spec
                .get("serviceAccount")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            spec.insert("serviceAccountName".into(), json!(sa));
        }
        if spec.get("serviceAccount").is_none() {
            let sa = spec.get("serviceAccountName").cloned().unwrap_or_default();
            spec.insert("serviceAccount".into(), sa);
        }
        // DefaultTolerationSeconds admission.
        let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let covered = list.iter().any(|t| {
                    let k = t.get("key").and_then(Value::as_str);
                    let effect = t.get("effect").and_then(Value::as_str);
                    (k == Some(key)
                        || (k.is_none()
                            && t.get("operator").and_then(Value::as_str) == Some("Exists")))
                        && effect.is_none_or(|e| e == "NoExecute" || e.is_empty())
                });
                if !covered {
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    let untagged_or_latest =
        !image.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
    set_default(
        c,
        "imagePullPolicy",
        json!(if untagged_or_latest {
            "Always"
        } else {
            "IfNotPresent"
        }),
    );
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    for p in c
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for e in c
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(fr) = e
            .pointer_mut("/valueFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
        }
    }
}

fn default_service(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let mut next_node_port = 30000 + (spec.len() as i64 * 37) % 2700;
    for p in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
            if kind == "NodePort" || kind == "LoadBalancer" {
                set_default(p, "nodePort", json!(next_node_port));
                next_node_port += 1;
            }
        }
    }
}

fn default_job(obj: &mut Value, old: Option<&Value>) {
    let uid = obj
        .at("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = obj
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = obj_mut(obj, "spec");
    let parallelism_set = spec.get("parallelism").is_some();
    let completions_set = spec.get("completions").is_some();
    if !parallelism_set && !completions_set {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if old.is_none() && !manual {
        // The real server generates the selector from the Job's uid and labels the template.
        let labels = json!({
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        });
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let template = spec.entry("template").or_insert_with(|| json!({}));
        if let Some(t) = template.as_object_mut() {
            let meta = t.entry("metadata").or_insert_with(|| json!({}));
            if !meta.is_object() {
                *meta = json!({});
            }
            let l = meta
                .as_object_mut()
                .expect("object")
                .entry("labels")
                .or_insert_with(|| json!({}));
            if let (Some(l), Some(add)) = (l.as_object_mut(), labels.as_object()) {
                for (k, v) in add {
                    l.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        let ps = t.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = ps.as_object_mut() {
            // Jobs must choose Never or OnFailure; validation reports a missing one, so the
            // Always default is not applied here.
            let had_policy = ps.contains_key("restartPolicy");
            default_pod_spec(ps, false);
            if !had_policy {
                ps.shift_remove("restartPolicy");
            }
        }
    }
}

/// The QoS class the real server records on pod creation: Guaranteed when every container
/// has CPU and memory limits equal to its requests, BestEffort when none has any, else
/// Burstable.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| {
            spec.and_then(|s| s.get(*l))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = c.at("/resources/requests").and_then(Value::as_object);
        let limits = c.at("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|m| !m.is_empty()) || limits.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let limit = limits.and_then(|m| m.get(r));
            // A request defaults to the limit when only the limit is set.
            let request = requests.and_then(|m| m.get(r)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let c = |r: Value| json!({"containers": [{"name": "a", "resources": r}]});
        assert_eq!(qos_class(Some(&c(json!({})))), "BestEffort");
        assert_eq!(
            qos_class(Some(&c(json!({"requests": {"cpu": "100m"}})))),
            "Burstable"
        );
        assert_eq!(
            qos_class(Some(&c(json!({"limits": {"cpu": "1", "memory": "1Gi"}})))),
            "Guaranteed"
        );
    }
}
