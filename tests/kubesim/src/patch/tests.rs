//! Scenario tests across the module: strategic merge of pod templates and server-side apply.

use serde_json::{Value, json};

use super::*;

/// The built-in rules of a Deployment.
pub(super) fn deploy_schema() -> BuiltinSchema {
    BuiltinSchema::for_kind("Deployment")
}

/// A field path element.
pub(super) fn f(s: &str) -> PathElement {
    PathElement::Field(s.to_string())
}

fn smp(kind: &str, target: Value, patch: Value) -> Value {
    match strategic_merge_patch(&target, &patch, &BuiltinSchema::for_kind(kind)) {
        Ok(v) => v,
        Err(e) => panic!("strategic merge failed: {e}"),
    }
}

fn smp_err(kind: &str, target: Value, patch: Value) -> PatchError {
    match strategic_merge_patch(&target, &patch, &BuiltinSchema::for_kind(kind)) {
        Ok(v) => panic!("strategic merge unexpectedly applied: {v}"),
        Err(e) => e,
    }
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|i| i[key].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

// ---- strategic merge patch ----

#[test]
fn smp_merges_containers_by_name_and_new_ones_lead() {
    let live = pod(json!({"containers": [
        {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "side", "image": "busybox"}
    ]}));
    let out = smp(
        "Pod",
        live,
        json!({"spec": {"containers": [
            {"name": "side", "image": "busybox:2"},
            {"name": "new", "image": "redis"}
        ]}}),
    );
    let cs = &out["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app", "side", "new"]);
    assert_eq!(cs[1]["image"], "busybox:2");
    assert_eq!(cs[0]["env"], json!([{"name": "A", "value": "1"}]));
    // An item new to the list goes before live items the patch does not mention, as on the
    // real server (the kubectl patch tutorial shows the patched-in container first).
    let out = smp(
        "Pod",
        out,
        json!({"spec": {"containers": [{"name": "redis", "image": "redis"}]}}),
    );
    assert_eq!(
        names(&out["spec"]["containers"], "name"),
        ["redis", "app", "side", "new"]
    );
    // Patching an item in the middle keeps it in place.
    let out = smp(
        "Pod",
        out,
        json!({"spec": {"containers": [{"name": "side", "image": "busybox:3"}]}}),
    );
    assert_eq!(
        names(&out["spec"]["containers"], "name"),
        ["redis", "app", "side", "new"]
    );
}

#[test]
fn smp_env_volumes_ports_and_null_deletes() {
    let live = pod(json!({
        "containers": [{"name": "app", "image": "i",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
        "tolerations": [{"key": "a", "operator": "Exists"}]
    }));
    let out = smp(
        "Pod",
        live,
        json!({"spec": {
            "containers": [{"name": "app",
                "env": [{"name": "B", "value": "two"}, {"name": "A", "$patch": "delete"}],
                "ports": [{"containerPort": 443}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "c2", "optional": null}}],
            "tolerations": [{"key": "b", "operator": "Exists"}]
        }}),
    );
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["env"], json!([{"name": "B", "value": "two"}]));
    assert_eq!(names(&c["ports"].clone(), "x").len(), 2);
    assert_eq!(c["ports"][0]["containerPort"], 443);
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data", "readOnly": true}])
    );
    assert_eq!(
        out["spec"]["volumes"][1],
        json!({"name": "cfg", "configMap": {"name": "c2"}})
    );
    // Lists without a merge key are replaced.
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists"}])
    );
}

#[test]
fn smp_service_ports_by_port_and_node_pod_cidrs_as_set() {
    let svc = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "dns"}, {"port": 9153, "name": "m"}]}});
    let out = smp(
        "Service",
        svc,
        json!({"spec": {"ports": [{"port": 9153, "targetPort": 9154}]}}),
    );
    assert_eq!(
        out["spec"]["ports"][1],
        json!({"port": 9153, "name": "m", "targetPort": 9154})
    );
    let node = json!({"spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]}});
    let out = smp(
        "Node",
        node,
        json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"], "taints": []}}),
    );
    assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.0.0/24", "fd00::/64"]));
    assert_eq!(out["spec"]["taints"], json!([]));
}

#[test]
fn smp_map_directives_replace_and_delete() {
    let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let out = smp(
        "Deployment",
        live.clone(),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
    let out = smp(
        "Deployment",
        live.clone(),
        json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}),
    );
    assert_eq!(
        out["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {}})
    );
    let e = smp_err(
        "Deployment",
        live,
        json!({"metadata": {"labels": {"$patch": "merge"}}}),
    );
    assert_eq!(e.status_code(), 500);
    assert!(
        e.message().starts_with("unknown patch type: merge in map:"),
        "{e}"
    );
}

#[test]
fn smp_retain_keys_clears_other_fields() {
    let live =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let out = smp(
        "Deployment",
        live.clone(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let e = smp_err(
        "Deployment",
        live,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
    );
    assert_eq!(e.status_code(), 400);
    assert_eq!(e.message(), "invalid patch format of retainKeys");
}

#[test]
fn smp_list_replace_directive_and_primitive_deletes() {
    let live = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
    let out = smp(
        "Pod",
        live,
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "x"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "c", "image": "x"}])
    );

    let live = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let out = smp(
        "ConfigMap",
        live.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["d", "a", "c"]));
    let e = smp_err(
        "ConfigMap",
        live,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "b"}}),
    );
    assert_eq!(e.status_code(), 400);
}

#[test]
fn smp_set_element_order() {
    let live = pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
    let out = smp(
        "Pod",
        live.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"], "name"), ["c", "a", "b"]);
    let out = smp(
        "Pod",
        live.clone(),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "d"}, {"name": "a"}],
            "containers": [{"name": "d", "image": "x"}, {"name": "c", "$patch": "delete"}]
        }}),
    );
    assert_eq!(names(&out["spec"]["containers"], "name"), ["b", "d", "a"]);
    let e = smp_err(
        "Pod",
        live,
        json!({"spec": {"$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "zzz"}]}}),
    );
    assert!(e.message().starts_with("The order in patch list:"), "{e}");
}

#[test]
fn smp_errors_and_custom_resources() {
    let e = smp_err(
        "Pod",
        pod(json!({"containers": [{"name": "a"}]})),
        json!({"spec": {"containers": [{"image": "no-name"}]}}),
    );
    assert_eq!(e.status_code(), 500);
    assert!(
        e.message()
            .contains("does not contain declared merge key: name"),
        "{e}"
    );
    let e = strategic_merge_patch(
        &json!({}),
        &json!({}),
        &CrdSchema::new(&json!({"type": "object"})),
    )
    .expect_err("custom resources have no strategic merge");
    assert_eq!(e, PatchError::UnsupportedMediaType);
    assert_eq!(e.status_code(), 415);
    assert_eq!(smp_err("Pod", json!({}), json!([1])).status_code(), 400);
}

#[test]
fn smp_new_fields_lose_their_directives_and_nulls() {
    let out = smp(
        "Deployment",
        json!({"spec": {}}),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}], "args": null}
        ]}}}}),
    );
    assert_eq!(
        out,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}}})
    );
}

// ---- server-side apply ----

const T0: &str = "2024-05-01T10:00:00Z";
const T1: &str = "2024-05-01T11:00:00Z";
const T2: &str = "2024-05-01T12:00:00Z";

fn fm(now: &str) -> FieldManager<'static> {
    static SCHEMA: std::sync::OnceLock<BuiltinSchema> = std::sync::OnceLock::new();
    FieldManager::new(SCHEMA.get_or_init(deploy_schema), "apps/v1", now).ignore(&["status"])
}

fn deployment(image: &str, replicas: Option<i64>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-kube-controllers", "namespace": "kube-system", "labels": {"k8s-app": "ckc"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "ckc"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "ckc"}},
                "spec": {"containers": [{"name": "calico-node", "image": image}]}
            }
        }
    });
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

fn apply(
    fm: &FieldManager<'_>,
    live: Option<&Value>,
    cfg: &Value,
    mgr: &str,
    force: bool,
) -> Applied {
    match fm.apply(live, cfg, mgr, force) {
        Ok(a) => a,
        Err(e) => panic!("apply failed: {e}"),
    }
}

fn entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(ManagedFieldsEntry::from_json).collect())
        .unwrap_or_default()
}

fn entry<'e>(es: &'e [ManagedFieldsEntry], mgr: &str, op: Operation) -> &'e ManagedFieldsEntry {
    match es.iter().find(|e| e.manager == mgr && e.operation == op) {
        Some(e) => e,
        None => panic!("no {op:?} entry for {mgr}: {es:?}"),
    }
}

fn image_path() -> Vec<PathElement> {
    vec![
        f("spec"),
        f("template"),
        f("spec"),
        f("containers"),
        PathElement::key(vec![("name".into(), json!("calico-node"))]),
        f("image"),
    ]
}

#[test]
fn ssa_create_records_apply_entry_in_real_encoding() {
    let created = apply(
        &fm(T0),
        None,
        &deployment("calico/kube-controllers:v3.26.4", Some(1)),
        "kubectl",
        false,
    );
    assert!(created.changed);
    let mf = &created.object["metadata"]["managedFields"];
    assert_eq!(
        mf,
        &json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:k8s-app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:k8s-app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"calico-node\"}": {
                            ".": {}, "f:image": {}, "f:name": {}
                        }}}
                    }
                }
            }
        }])
    );
    assert_eq!(created.object["spec"]["replicas"], 1);
}

#[test]
fn ssa_reapply_is_a_no_op() {
    let cfg = deployment("img:1", Some(1));
    let created = apply(&fm(T0), None, &cfg, "kubectl", false).object;
    let again = apply(&fm(T1), Some(&created), &cfg, "kubectl", false);
    assert!(!again.changed);
    assert_eq!(
        again.object, created,
        "same object, same managedFields time"
    );
}

#[test]
fn ssa_dropped_field_is_removed_unless_shared() {
    let created = apply(
        &fm(T0),
        None,
        &deployment("img:1", Some(3)),
        "kubectl",
        false,
    )
    .object;
    let pruned = apply(
        &fm(T1),
        Some(&created),
        &deployment("img:1", None),
        "kubectl",
        false,
    );
    assert!(pruned.changed);
    assert!(
        pruned.object["spec"].get("replicas").is_none(),
        "{}",
        pruned.object
    );
    let es = entries(&pruned.object);
    assert!(
        !entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    assert_eq!(
        entry(&es, "kubectl", Operation::Apply).time.as_deref(),
        Some(T1)
    );

    // Two managers apply the same value: both own it, no conflict, and it survives either
    // one dropping it.
    let shared = apply(
        &fm(T1),
        Some(&created),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "calico-kube-controllers"}, "spec": {"replicas": 3}}),
        "hpa-ish",
        false,
    );
    let es = entries(&shared.object);
    assert!(
        entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    assert!(
        entry(&es, "hpa-ish", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    let dropped = apply(
        &fm(T2),
        Some(&shared.object),
        &deployment("img:1", None),
        "kubectl",
        false,
    )
    .object;
    assert_eq!(dropped["spec"]["replicas"], 3);
    assert!(
        !entry(&entries(&dropped), "kubectl", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
}

#[test]
fn ssa_dropped_container_goes_with_its_unowned_fields() {
    let mut cfg = deployment("img:1", None);
    if let Some(a) = cfg["spec"]["template"]["spec"]["containers"].as_array_mut() {
        a.push(json!({"name": "extra", "image": "busybox"}));
    }
    let two = apply(&fm(T0), None, &cfg, "kubectl", false).object;
    // A defaulted field nobody owns, as admission would add.
    let mut live = two.clone();
    live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = json!("IfNotPresent");
    let one = apply(
        &fm(T1),
        Some(&live),
        &deployment("img:1", None),
        "kubectl",
        false,
    )
    .object;
    assert_eq!(
        names(&one["spec"]["template"]["spec"]["containers"], "name"),
        ["calico-node"]
    );
}

#[test]
fn ssa_conflict_with_another_applier_and_force() {
    let created = apply(
        &fm(T0),
        None,
        &deployment("img:1", Some(1)),
        "kubectl",
        false,
    )
    .object;
    let other = deployment("img:2", None);
    let err = fm(T1)
        .apply(Some(&created), &other, "calico-upgrade", false)
        .expect_err("conflict");
    let PatchError::Conflicts(cs) = &err else {
        panic!("expected conflicts, got {err:?}");
    };
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].manager, "kubectl");
    assert_eq!(
        cs[0].field(),
        ".spec.template.spec.containers[name=\"calico-node\"].image"
    );
    assert_eq!(cs[0].cause_message(), "conflict with \"kubectl\"");
    assert_eq!(err.status_code(), 409);
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.template.spec.containers[name=\"calico-node\"].image"
    );

    let forced = apply(&fm(T1), Some(&created), &other, "calico-upgrade", true);
    assert_eq!(
        forced.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "img:2"
    );
    let es = entries(&forced.object);
    assert!(
        entry(&es, "calico-upgrade", Operation::Apply)
            .fields
            .has(&image_path())
    );
    assert!(
        !entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&image_path())
    );
    // kubectl keeps what was not contested, and its replicas stay.
    assert!(
        entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    assert_eq!(forced.object["spec"]["replicas"], 1);
    // Re-applying kubectl's old config now conflicts the other way round.
    let back = fm(T2).apply(
        Some(&forced.object),
        &deployment("img:1", Some(1)),
        "kubectl",
        false,
    );
    assert!(matches!(back, Err(PatchError::Conflicts(ref c)) if c[0].manager == "calico-upgrade"));
}

#[test]
fn ssa_conflict_with_an_update_manager_after_a_merge_patch() {
    let created = apply(
        &fm(T0),
        None,
        &deployment("img:1", Some(1)),
        "kubectl",
        false,
    )
    .object;
    // `kubectl patch --type merge` changes the image and the replicas.
    let patched = merge_patch(
        &created,
        &json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "calico-node", "image": "img:9"}]}}}}),
    );
    let stored = match fm(T1).update(Some(&created), &patched, "kubectl-patch") {
        Ok(v) => v,
        Err(e) => panic!("update failed: {e}"),
    };
    let es = entries(&stored);
    let upd = entry(&es, "kubectl-patch", Operation::Update);
    assert!(upd.fields.has(&image_path()) && upd.fields.has(&[f("spec"), f("replicas")]));
    assert_eq!(upd.time.as_deref(), Some(T1));
    // The applier lost the fields someone else changed.
    assert!(
        !entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&image_path())
    );

    let err = fm(T2)
        .apply(
            Some(&stored),
            &deployment("img:1", Some(1)),
            "kubectl",
            false,
        )
        .expect_err("conflict");
    assert_eq!(
        err.message(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-patch\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"calico-node\"].image"
    );
    let PatchError::Conflicts(cs) = &err else {
        panic!("expected conflicts");
    };
    assert_eq!(
        cs[0].cause_message(),
        "conflict with \"kubectl-patch\" using apps/v1"
    );

    // Applying the value the updater set is not a conflict: ownership is shared.
    let same = apply(
        &fm(T2),
        Some(&stored),
        &deployment("img:9", Some(2)),
        "kubectl",
        false,
    );
    let es = entries(&same.object);
    assert!(
        entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&image_path())
    );
    assert!(
        entry(&es, "kubectl-patch", Operation::Update)
            .fields
            .has(&image_path())
    );
}

#[test]
fn ssa_update_tracks_creates_removals_and_subresources() {
    let schema = BuiltinSchema::for_kind("Deployment");
    let fm0 = FieldManager::new(&schema, "apps/v1", T0).ignore(&["status"]);
    let obj = deployment("img:1", Some(1));
    let created = match fm0.update(None, &obj, "kubectl-create") {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    let es = entries(&created);
    let c = entry(&es, "kubectl-create", Operation::Update);
    // New maps and list items are owned as nodes too (".": {}).
    assert!(c.fields.has(&[f("spec"), f("template")]) && c.fields.has(&image_path()));
    assert!(!c.fields.has(&[f("metadata"), f("name")]) && !c.fields.has(&[f("metadata")]));

    // A status write through the subresource is tracked apart.
    let fm_status = FieldManager::new(&schema, "apps/v1", T1)
        .subresource(Some("status"))
        .ignore(&["spec"]);
    let mut with_status = created.clone();
    with_status["status"] =
        json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
    let st = match fm_status.update(Some(&created), &with_status, "kube-controller-manager") {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    let es = entries(&st);
    let kcm = entry(&es, "kube-controller-manager", Operation::Update);
    assert_eq!(kcm.subresource.as_deref(), Some("status"));
    assert!(kcm.fields.has(&[f("status"), f("replicas")]));
    let st_json = &st["metadata"]["managedFields"];
    assert!(
        st_json
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["subresource"] == "status"))
    );

    // Removing a field takes it from its owner; a no-op write changes nothing.
    let mut removed = st.clone();
    if let Some(spec) = removed["spec"].as_object_mut() {
        spec.shift_remove("replicas");
    }
    let after =
        match FieldManager::new(&schema, "apps/v1", T2).update(Some(&st), &removed, "kubectl-edit")
        {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
    let es = entries(&after);
    assert!(
        !entry(&es, "kubectl-create", Operation::Update)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    assert!(
        es.iter().all(|e| e.manager != "kubectl-edit"),
        "removing only gives no ownership"
    );
    let noop = match FieldManager::new(&schema, "apps/v1", T2).update(Some(&after), &after, "x") {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(noop, after);
    // `managedFields: [{}]` resets the list, as on the real server.
    let mut reset = after.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    let cleared = match FieldManager::new(&schema, "apps/v1", T2).update(Some(&after), &reset, "x")
    {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert!(cleared["metadata"].get("managedFields").is_none());
}

#[test]
fn ssa_main_resource_apply_ignores_status() {
    let mut cfg = deployment("img:1", None);
    cfg["status"] = json!({"replicas": 5});
    let created = apply(&fm(T0), None, &cfg, "kubectl", false).object;
    assert!(created.get("status").is_none());
    assert!(
        !entry(&entries(&created), "kubectl", Operation::Apply)
            .fields
            .has(&[f("status"), f("replicas")])
    );
}

#[test]
fn ssa_list_map_merge_with_crd_schema() {
    let schema = CrdSchema::new(&json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "pools": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["cidr"],
                    "items": {"type": "object", "properties": {
                        "cidr": {"type": "string"}, "nat": {"type": "boolean"}, "block": {"type": "integer"}
                    }}
                },
                "nodeSelectors": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }
    }));
    let fm0 = FieldManager::new(&schema, "crd.projectcalico.org/v1", T0);
    let base = |pools: Value, sels: Value| {
        json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPoolSet", "metadata": {"name": "s"},
            "spec": {"pools": pools, "nodeSelectors": sels}
        })
    };
    let a = apply(
        &fm0,
        None,
        &base(
            json!([{"cidr": "10.0.0.0/16", "nat": true}]),
            json!(["all()"]),
        ),
        "operator",
        false,
    )
    .object;
    let fm1 = FieldManager::new(&schema, "crd.projectcalico.org/v1", T1);
    let b = apply(
        &fm1,
        Some(&a),
        &base(
            json!([{"cidr": "10.1.0.0/16", "block": 26}]),
            json!(["zone == 'b'"]),
        ),
        "admin",
        false,
    );
    let pools = &b.object["spec"]["pools"];
    assert_eq!(names(pools, "cidr"), ["10.0.0.0/16", "10.1.0.0/16"]);
    assert_eq!(
        b.object["spec"]["nodeSelectors"],
        json!(["all()", "zone == 'b'"])
    );
    let es = entries(&b.object);
    let admin = entry(&es, "admin", Operation::Apply);
    let k = PathElement::key(vec![("cidr".into(), json!("10.1.0.0/16"))]);
    assert!(
        admin
            .fields
            .has(&[f("spec"), f("pools"), k.clone(), f("block")])
    );
    assert!(admin.fields.has(&[
        f("spec"),
        f("nodeSelectors"),
        PathElement::value(&json!("zone == 'b'"))
    ]));
    // Same key, different value: a conflict on the item's field only.
    let c = fm1
        .apply(
            Some(&b.object),
            &base(json!([{"cidr": "10.0.0.0/16", "nat": false}]), json!([])),
            "admin",
            false,
        )
        .expect_err("conflict");
    assert_eq!(
        c.message(),
        "Apply failed with 1 conflict: conflict with \"operator\": .spec.pools[cidr=\"10.0.0.0/16\"].nat"
    );
    // Admin dropping its pool removes only that pool.
    let d = apply(
        &fm1,
        Some(&b.object),
        &base(json!([]), json!([])),
        "admin",
        false,
    )
    .object;
    assert_eq!(names(&d["spec"]["pools"], "cidr"), ["10.0.0.0/16"]);
    assert_eq!(d["spec"]["nodeSelectors"], json!(["all()"]));
}

#[test]
fn ssa_managed_fields_round_trip_through_json() {
    let created = apply(
        &fm(T0),
        None,
        &deployment("img:1", Some(1)),
        "kubectl",
        false,
    )
    .object;
    let es = entries(&created);
    let back: Vec<Value> = es.iter().map(ManagedFieldsEntry::to_json).collect();
    assert_eq!(Value::Array(back), created["metadata"]["managedFields"]);
    // Also through text, as the store keeps it.
    let text = serde_json::to_string(&created).unwrap_or_default();
    let reparsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(entries(&reparsed), es);
}

#[test]
fn ssa_rejects_bad_configs() {
    let mut cfg = deployment("img:1", None);
    cfg["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        fm(T0)
            .apply(None, &cfg, "k", false)
            .map(|_| ())
            .unwrap_err()
            .status_code(),
        400
    );
    let mut dup = deployment("img:1", None);
    dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
    let e = fm(T0)
        .apply(None, &dup, "k", false)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e.message(),
        ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
    );
    assert!(fm(T0).apply(None, &json!([1]), "k", false).is_err());
}

#[test]
fn ssa_first_apply_to_an_unmanaged_object_conflicts_with_before_first_apply() {
    let unmanaged = deployment("img:1", Some(1));
    let err = fm(T0)
        .apply(
            Some(&unmanaged),
            &deployment("img:1", Some(4)),
            "kubectl",
            false,
        )
        .expect_err("conflict");
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
    );
    // The same values are no conflict; ownership is then shared with the placeholder.
    let ok = apply(
        &fm(T0),
        Some(&unmanaged),
        &deployment("img:1", Some(1)),
        "kubectl",
        false,
    );
    assert!(ok.changed);
    let es = entries(&ok.object);
    assert!(
        entry(&es, "before-first-apply", Operation::Update)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
    assert!(
        entry(&es, "kubectl", Operation::Apply)
            .fields
            .has(&[f("spec"), f("replicas")])
    );
}

/// A small deterministic generator of awkward JSON: keys that hit the merge tables and the
/// directives, mixed types, duplicates and nulls.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'k>(&mut self, items: &[&'k str]) -> &'k str {
        let n = items.len() as u64;
        items[usize::try_from(self.next() % n).unwrap_or(0)]
    }

    fn value(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "spec",
            "template",
            "containers",
            "name",
            "env",
            "ports",
            "containerPort",
            "protocol",
            "image",
            "metadata",
            "finalizers",
            "labels",
            "status",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$deleteFromPrimitiveList/finalizers",
            "volumes",
            "managedFields",
            "replicas",
        ];
        let roll = if depth == 0 {
            self.next() % 5
        } else {
            self.next() % 8
        };
        match roll {
            0 => Value::Null,
            1 => json!(self.next() % 3),
            2 => json!(self.pick(&["a", "b", "replace", "delete", "merge", "TCP"])),
            3 => json!(self.next().is_multiple_of(2)),
            4 => json!(1.5),
            5 | 6 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.next() % 4 {
                    let k = self.pick(KEYS);
                    let v = self.value(depth - 1);
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }
            _ => Value::Array(
                (0..self.next() % 4)
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
        }
    }
}

#[test]
fn no_input_makes_any_algorithm_panic() {
    let mut g = Gen(7);
    let builtin = BuiltinSchema::for_kind("Deployment");
    let crd = CrdSchema::new(
        &json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"containers": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}}}}}),
    );
    let schemas: [&dyn Schema; 3] = [&builtin, &crd, &DeducedSchema];
    for round in 0..3000 {
        let a = g.value(5);
        let b = g.value(5);
        let ops = json!([{"op": g.pick(&["add", "remove", "replace", "move", "copy", "test"]),
            "path": g.pick(&["", "/spec", "/spec/containers/0", "/spec/containers/-", "/a~1b", "x"]),
            "from": g.pick(&["/spec", "/metadata/labels", "/"]), "value": g.value(2)}]);
        let _ = merge_patch(&a, &b);
        let _ = json_patch(&a, &ops);
        let schema = schemas[round % 3];
        let _ = strategic_merge_patch(&a, &b, schema);
        let fm = FieldManager::new(schema, "v1", T0).ignore(&["status"]);
        if let Ok(applied) = fm.apply(Some(&a), &b, "m", round.is_multiple_of(2)) {
            let _ = fm.apply(Some(&applied.object), &a, "n", false);
            let _ = fm.update(Some(&applied.object), &b, "u");
        }
        let _ = fm.update(Some(&a), &b, "u");
        let _ = fm.apply(None, &b, "m", false);
    }
}
