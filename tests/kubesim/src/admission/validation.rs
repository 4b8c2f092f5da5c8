//! Validation of names, labels and the built-in kinds' required and immutable fields, with
//! the field paths and wording of the real server, so 422 answers read the same.

use crate::pointer::At;
use serde_json::{Value, json};

use super::names::{
    DNS1035_MSG, LABEL_MSG, SUBDOMAIN_MSG, is_dns1035_label, is_dns1123_label,
    is_dns1123_subdomain, is_label_value, is_qualified_name,
};
use crate::catalog::ResourceType;
use crate::error::FieldCause;
use crate::selectors::LabelSelector;

/// Every problem with an object (empty when valid); `old` is the stored object on updates.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    validate_meta(rt, obj, &mut causes);
    if rt.builtin {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "pods") => {
                validate_pod_spec(obj.get("spec"), "spec", &mut causes, false);
                if let Some(old) = old {
                    pod_update(obj, old, &mut causes);
                }
            }
            ("", "services") => validate_service(obj, old, &mut causes),
            ("", "configmaps" | "secrets") => {
                if let Some(old) = old
                    && old.get("immutable").and_then(Value::as_bool) == Some(true)
                {
                    for f in ["data", "binaryData", "stringData"] {
                        if obj.get(f) != old.get(f) && f != "stringData" {
                            causes.push(FieldCause::forbidden(
                                f,
                                "field is immutable when `immutable` is set",
                            ));
                        }
                    }
                }
            }
            ("apps", "daemonsets" | "deployments" | "replicasets" | "statefulsets") => {
                validate_workload(rt, obj, old, &mut causes)
            }
            ("batch", "jobs") => validate_job(obj, old, &mut causes),
            ("apiextensions.k8s.io", "customresourcedefinitions") => validate_crd(obj, &mut causes),
            _ => {}
        }
    }
    causes
}

fn validate_meta(rt: &ResourceType, obj: &Value, causes: &mut Vec<FieldCause>) {
    let name = obj
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let field = "metadata.name";
    let value = json!(name);
    let rbac = rt.group == "rbac.authorization.k8s.io";
    let ok = if rbac {
        name != "." && name != ".." && !name.contains('/') && !name.contains('%')
    } else if rt.builtin && rt.group.is_empty() && rt.plural == "namespaces" {
        is_dns1123_label(name)
    } else if rt.builtin && rt.group.is_empty() && rt.plural == "services" {
        is_dns1035_label(name)
    } else {
        is_dns1123_subdomain(name)
    };
    if !ok {
        let msg = if rbac {
            "may not contain '/' or '%'"
        } else if rt.plural == "namespaces" {
            LABEL_MSG
        } else if rt.plural == "services" {
            DNS1035_MSG
        } else {
            SUBDOMAIN_MSG
        };
        causes.push(FieldCause::invalid(field, &value, msg));
    }
    // The real server caps all annotations together at 256 KiB: why client-side `kubectl
    // apply` of Calico's operator CRDs (last-applied annotation) fails on real clusters.
    let annotation_bytes: usize = obj
        .at("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if annotation_bytes > 262_144 {
        causes.push(FieldCause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: "Too long: must have at most 262144 bytes".into(),
        });
    }
    for (key, what) in [("labels", "label"), ("annotations", "annotation")] {
        let Some(map) = obj
            .at(&format!("/metadata/{key}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (k, v) in map {
            if !is_qualified_name(k) {
                causes.push(FieldCause::invalid(
                    format!("metadata.{key}"),
                    &json!(k),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ));
            }
            if what == "label" && !v.as_str().is_some_and(is_label_value) {
                causes.push(FieldCause::invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ));
            }
        }
    }
}

fn validate_pod_spec(
    spec: Option<&Value>,
    path: &str,
    causes: &mut Vec<FieldCause>,
    template: bool,
) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(FieldCause::required(format!("{path}.containers")));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(FieldCause::required(format!("{path}.containers"))),
        Some(list) if list.is_empty() => {
            causes.push(FieldCause::required(format!("{path}.containers")))
        }
        Some(_) => {}
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = format!("{path}.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(FieldCause::required(format!("{p}.name"))),
                Some(n) => {
                    if !is_dns1123_label(n) {
                        causes.push(FieldCause::invalid(
                            format!("{p}.name"),
                            &json!(n),
                            LABEL_MSG,
                        ));
                    }
                    if seen.contains(&n) {
                        causes.push(FieldCause::duplicate(format!("{p}.name"), &json!(n)));
                    }
                    seen.push(n);
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && !template
            {
                causes.push(FieldCause::required(format!("{p}.image")));
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&rp)
    {
        causes.push(FieldCause::not_supported(
            format!("{path}.restartPolicy"),
            &json!(rp),
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// Pod updates may change only images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds; everything else in spec is fixed.
fn pod_update(new: &Value, old: &Value, causes: &mut Vec<FieldCause>) {
    // Status writes, the kubelet's many, leave the spec as it was: nothing to mask.
    if new.get("spec") == old.get("spec") {
        return;
    }
    let mask = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or_default();
        if let Some(m) = s.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.shift_remove(f);
            }
            for list in ["containers", "initContainers"] {
                for c in m
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_object_mut() {
                        c.shift_remove("image");
                    }
                }
            }
        }
        s
    };
    let (a, b) = (mask(new), mask(old));
    if a != b {
        // Binding sets nodeName once through pods/binding; a plain update may not.
        causes.push(FieldCause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, causes: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").cloned().unwrap_or_default();
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let supported = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !supported.contains(&kind) {
        causes.push(FieldCause::not_supported(
            "spec.type",
            &json!(kind),
            &supported,
        ));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get("ports").and_then(Value::as_array);
    if kind != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        causes.push(FieldCause::required("spec.ports"));
    }
    let ports = ports.cloned().unwrap_or_default();
    for (i, p) in ports.iter().enumerate() {
        if ports.len() > 1
            && p.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            causes.push(FieldCause::required(format!("spec.ports[{i}].name")));
        }
        match p.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(FieldCause::invalid(
                format!("spec.ports[{i}].port"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            )),
            None => causes.push(FieldCause::required(format!("spec.ports[{i}].port"))),
        }
    }
    if let Some(old) = old {
        let old_ip = old.at("/spec/clusterIP").and_then(Value::as_str);
        let new_ip = obj.at("/spec/clusterIP").and_then(Value::as_str);
        if old_ip.is_some_and(|o| !o.is_empty()) && new_ip != old_ip && kind != "ExternalName" {
            causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                &json!(obj.at("/spec/clusterIPs").cloned().unwrap_or_default()),
                "may not change once set",
            ));
            causes.push(FieldCause::invalid(
                "spec.clusterIP",
                &json!(new_ip.unwrap_or_default()),
                "field is immutable",
            ));
        }
    }
}

fn validate_workload(
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
    causes: &mut Vec<FieldCause>,
) {
    let selector = obj.at("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(FieldCause::required("spec.selector")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if empty {
                causes.push(FieldCause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                ));
            } else {
                match LabelSelector::from_object(sel) {
                    Err(e) => causes.push(FieldCause::invalid("spec.selector", sel, &e)),
                    Ok(s) => {
                        let labels = obj
                            .at("/spec/template/metadata/labels")
                            .and_then(Value::as_object);
                        if !s.matches_labels(labels) {
                            causes.push(FieldCause::invalid(
                                "spec.template.metadata.labels",
                                &json!(labels.cloned().unwrap_or_default()),
                                "`selector` does not match template `labels`",
                            ));
                        }
                    }
                }
            }
        }
    }
    validate_pod_spec(
        obj.at("/spec/template/spec"),
        "spec.template.spec",
        causes,
        false,
    );
    if matches!(
        rt.plural.as_str(),
        "daemonsets" | "deployments" | "replicasets" | "statefulsets"
    ) && let Some(rp) = obj
        .at("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        && rp != "Always"
    {
        causes.push(FieldCause::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(rp),
            &["Always"],
        ));
    }
    if let Some(n) = obj.at("/spec/replicas").and_then(Value::as_i64)
        && n < 0
    {
        causes.push(FieldCause::invalid(
            "spec.replicas",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(old) = old
        && old.at("/spec/selector") != obj.at("/spec/selector")
    {
        causes.push(FieldCause::invalid(
            "spec.selector",
            obj.at("/spec/selector").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

fn validate_job(obj: &Value, old: Option<&Value>, causes: &mut Vec<FieldCause>) {
    let rp = obj
        .at("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str);
    match rp {
        Some("Never") | Some("OnFailure") => {}
        Some(other) => causes.push(FieldCause::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(other),
            &["OnFailure", "Never"],
        )),
        None => causes.push(FieldCause::required("spec.template.spec.restartPolicy")),
    }
    validate_pod_spec(
        obj.at("/spec/template/spec"),
        "spec.template.spec",
        causes,
        false,
    );
    if let Some(old) = old {
        if old.at("/spec/selector") != obj.at("/spec/selector") {
            causes.push(FieldCause::invalid(
                "spec.selector",
                obj.at("/spec/selector").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
        if old.at("/spec/template") != obj.at("/spec/template") {
            causes.push(FieldCause::invalid(
                "spec.template",
                obj.at("/spec/template").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

fn validate_crd(obj: &Value, causes: &mut Vec<FieldCause>) {
    let s = |p: &str| obj.at(p).and_then(Value::as_str).unwrap_or_default();
    let (group, plural, kind) = (
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
    );
    if group.is_empty() {
        causes.push(FieldCause::required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(FieldCause::required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(FieldCause::required("spec.names.kind"));
    }
    let name = s("/metadata/name");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(FieldCause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match s("/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => causes.push(FieldCause::required("spec.scope")),
        other => causes.push(FieldCause::not_supported(
            "spec.scope",
            &json!(other),
            &["Cluster", "Namespaced"],
        )),
    }
    let versions = obj
        .at("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(FieldCause::required("spec.versions"));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .count();
        if storage != 1 {
            causes.push(FieldCause::invalid(
                "spec.versions",
                &Value::Array(
                    versions
                        .iter()
                        .map(|v| v.get("name").cloned().unwrap_or_default())
                        .collect(),
                ),
                "must have exactly one version marked as storage version",
            ));
        }
    }
}
