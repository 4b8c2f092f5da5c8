//! kube-rs drives kubesim over HTTPS as the product does: CRUD and the real server's errors,
//! every selector form, pagination, watchers through dropped streams and 410s, dry runs,
//! status isolation, generation, finalizers and garbage collection, and CRD lifecycle.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use common::{client, eventually, start};

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_with_real_errors() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();

    let dup = api_err(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion increases");

    // `changed` still carries rv1: a stale write.
    let stale = api_err(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let missing = api_err(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    let bad = api_err(
        cms.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert!(bad.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", bad.message);

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    let nowhere: Api<ConfigMap> = Api::namespaced(c.clone(), "no-such-ns");
    let e = api_err(
        nowhere
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "namespaces \"no-such-ns\" not found");

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(cms.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn list_with_every_selector_form() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (n, labels) in [
        ("web-1", json!({"app": "web", "tier": "front", "rank": "3"})),
        ("web-2", json!({"app": "web", "tier": "back", "rank": "7"})),
        ("db-1", json!({"app": "db", "tier": "back"})),
        ("bare", json!({})),
    ] {
        cms.create(&PostParams::default(), &cm(n, labels))
            .await
            .unwrap();
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let l = cms.list(&ListParams::default().labels(sel)).await.unwrap();
            l.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .filter(|n| n != "kube-root-ca.crt")
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, ["web-1", "web-2"]);
    assert_eq!(names("app==db").await, ["db-1"]);
    assert_eq!(names("app!=web").await, ["bare", "db-1"]);
    assert_eq!(
        names("tier in (front,back)").await,
        ["db-1", "web-1", "web-2"]
    );
    assert_eq!(names("tier notin (back)").await, ["bare", "web-1"]);
    assert_eq!(names("rank").await, ["web-1", "web-2"]);
    assert_eq!(names("!tier").await, ["bare"]);
    assert_eq!(names("app=web,tier=back").await, ["web-2"]);
    assert_eq!(names("rank>5").await, ["web-2"]);

    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=db-1"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = cms
        .list(&ListParams::default().fields("metadata.name!=db-1,metadata.namespace=default"))
        .await
        .unwrap();
    assert!(
        not_name
            .items
            .iter()
            .all(|o| o.metadata.name.as_deref() != Some("db-1"))
    );

    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for (n, node) in [("p1", "node-a"), ("p2", "node-b")] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": n},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    pods.patch_status(
        "p2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(on_a.items[0].metadata.name.as_deref(), Some("p1"));
    let running = pods
        .list(&ListParams::default().fields("status.phase==Running"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1);
    assert_eq!(running.items[0].metadata.name.as_deref(), Some("p2"));

    let bad = api_err(
        cms.list(&ListParams::default().fields("spec.nodeName=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (bad.code, bad.message.as_str()),
        (400, "field label not supported: spec.nodeName")
    );
    let bad = api_err(
        cms.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn pagination_by_continue_token() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let ns: Api<Namespace> = Api::all(c.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "pages"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "pages");
    // The namespace controller adds kube-root-ca.crt; wait for it so counts are stable.
    eventually(60, "kube-root-ca.crt", || {
        let cms = cms.clone();
        async move { cms.get_opt("kube-root-ca.crt").await.ok().flatten() }
    })
    .await;
    for i in 0..24 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("cm-{i:02}"), json!({"i": i.to_string()})),
        )
        .await
        .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let token = first.metadata.continue_.clone().expect("continue token");
    let snapshot_rv = first.metadata.resource_version.clone().unwrap();
    // Changes after the first page do not show in later pages (consistent snapshot).
    cms.create(&PostParams::default(), &cm("cm-99", json!({})))
        .await
        .unwrap();
    cms.delete("cm-20", &DeleteParams::default()).await.unwrap();
    let mut all: Vec<String> = first
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = cms
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(snapshot_rv.as_str())
        );
        all.extend(page.items.iter().filter_map(|o| o.metadata.name.clone()));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(all.len(), 25, "{all:?}");
    assert!(all.contains(&"cm-20".to_string()) && !all.contains(&"cm-99".to_string()));
    let sorted = {
        let mut s = all.clone();
        s.sort();
        s
    };
    assert_eq!(all, sorted, "pages come in key order");

    // After a compaction the old token is expired.
    let again = cms.list(&ListParams::default().limit(5)).await.unwrap();
    let old = again.metadata.continue_.unwrap();
    cms.create(&PostParams::default(), &cm("cm-100", json!({})))
        .await
        .unwrap();
    h.cluster().compact();
    let gone = api_err(
        cms.list(&ListParams::default().limit(5).continue_token(&old))
            .await
            .unwrap_err(),
    );
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn watcher_recovers_from_dropped_streams_and_410() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    h.faults().set_faults(kubesim::Faults {
        drop_watches_after_seconds: 1,
        ..Default::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let seen2 = seen.clone();
    let stream = watcher(cms.clone(), watcher::Config::default().labels("w=1")).applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        // Errors are what the watcher reports before it re-lists; keep consuming.
        while let Some(item) = s.next().await {
            if let Ok(o) = item {
                seen2
                    .lock()
                    .unwrap()
                    .insert(o.metadata.name.unwrap_or_default());
            }
        }
    });
    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("w-{i}"), json!({"w": "1"})),
        )
        .await
        .unwrap();
        if i == 4 {
            // Old resourceVersions are now compacted: the re-watch gets 410 and re-lists.
            h.cluster().compact();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually(90, "all ten configmaps through the watcher", || {
        let seen = seen.clone();
        async move { (seen.lock().unwrap().len() == 10).then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn raw_watch_reports_expired_versions() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let rv = a.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("y", json!({})))
        .await
        .unwrap();
    h.cluster().compact();
    let mut s = cms
        .watch(&kube::api::WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match s.try_next().await {
        Ok(Some(kube::core::WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410, got {other:?}"),
    }
}

#[tokio::test]
async fn dry_run_validates_but_stores_nothing() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(&PostParams::default(), &cm("keep", json!({})))
        .await
        .unwrap();
    h.faults().reset_counters();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = cms.create(&dry, &cm("ghost", json!({}))).await.unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("ghost"));
    assert!(cms.get_opt("ghost").await.unwrap().is_none());
    let e = api_err(cms.create(&dry, &cm("Bad!", json!({}))).await.unwrap_err());
    assert_eq!(e.code, 422);
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    cms.patch("keep", &pp, &Patch::Merge(json!({"data": {"k": "dry"}})))
        .await
        .unwrap();
    assert_eq!(cms.get("keep").await.unwrap().data.unwrap()["k"], "v");
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    cms.delete("keep", &dp).await.unwrap();
    assert!(cms.get_opt("keep").await.unwrap().is_some());
    let counters = h.faults().counters();
    assert_eq!(counters.total_writes, 0, "{counters:?}");
    assert!(
        counters
            .requests
            .get("create configmaps")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    // A real write is counted once; a no-op update is not.
    cms.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    assert_eq!(h.faults().counters().total_writes, 1);
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn status_is_kept_apart_and_generation_follows_spec() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut d = deployment("web");
    d.status = Some(serde_json::from_value(json!({"replicas": 9})).unwrap());
    let created = deps.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.status.as_ref().and_then(|s| s.replicas).is_none(),
        "status dropped on create"
    );
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );

    let s = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}, "spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status.unwrap().replicas, Some(3));
    assert_eq!(
        s.spec.unwrap().replicas,
        Some(1),
        "status writes ignore spec"
    );
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "status writes keep generation"
    );

    let m = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "status": {"replicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(
        m.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );
    assert_eq!(
        m.status.unwrap().replicas,
        Some(3),
        "main writes ignore status"
    );

    let g = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));

    let immutable = api_err(
        deps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(immutable.code, 422);
    assert!(
        immutable.message.contains("spec.selector: Invalid value"),
        "{}",
        immutable.message
    );
    assert!(
        immutable.message.contains("field is immutable"),
        "{}",
        immutable.message
    );

    let mut bad = deployment("bad");
    bad.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some([("app".to_string(), "zzz".to_string())].into());
    let e = api_err(deps.create(&PostParams::default(), &bad).await.unwrap_err());
    assert!(
        e.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        e.message
    );

    // A custom resource without a status subresource bumps generation on any non-metadata change.
    let crd_api: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crd_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(widget_crd(false)).unwrap(),
        )
        .await
        .unwrap();
    let widgets = widget_api(&c).await;
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}})).unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let w2 = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ok": true}})),
        )
        .await
        .unwrap();
    assert_eq!(w2.metadata.generation, Some(2));
}

fn widget_crd(status: bool) -> Value {
    let mut v = json!({"name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]});
    if status {
        v["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
                 "versions": [v]}
    })
}

async fn widget_api(c: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let probe = api.clone();
    eventually(60, "the Widget type to be served", move || {
        let probe = probe.clone();
        async move { probe.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
    api
}

#[tokio::test]
async fn finalizers_hold_objects_until_removed() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let out = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let obj = out.left().expect("still present: the object comes back");
    assert!(obj.metadata.deletion_timestamp.is_some());
    let e = api_err(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(cms.get_opt("held").await.unwrap().is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        cms.get_opt("held").await.unwrap().is_none(),
        "gone once the finalizers are"
    );
}

fn owned_cm(name: &str, owner: &ConfigMap, block: bool) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
            "uid": owner.metadata.uid, "blockOwnerDeletion": block
        }]}
    }))
    .unwrap()
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();

    // Background: dependents go with the owner.
    let owner = cms.create(&pp, &cm("owner-bg", json!({}))).await.unwrap();
    cms.create(&pp, &owned_cm("dep-bg", &owner, false))
        .await
        .unwrap();
    cms.delete("owner-bg", &DeleteParams::background())
        .await
        .unwrap();
    assert!(cms.get_opt("dep-bg").await.unwrap().is_none());

    // Orphan: dependents stay without the reference.
    let owner = cms.create(&pp, &cm("owner-or", json!({}))).await.unwrap();
    cms.create(&pp, &owned_cm("dep-or", &owner, false))
        .await
        .unwrap();
    cms.delete("owner-or", &DeleteParams::orphan())
        .await
        .unwrap();
    let dep = cms.get("dep-or").await.unwrap();
    assert!(dep.metadata.owner_references.is_none());

    // Foreground: the owner waits (foregroundDeletion) for blocking dependents.
    let owner = cms.create(&pp, &cm("owner-fg", json!({}))).await.unwrap();
    let mut dep = owned_cm("dep-fg", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp, &dep).await.unwrap();
    cms.delete(
        "owner-fg",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let waiting = cms.get("owner-fg").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    cms.patch(
        "dep-fg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("dep-fg").await.unwrap().is_none());
    assert!(
        cms.get_opt("owner-fg").await.unwrap().is_none(),
        "owner goes once its blockers have"
    );

    // Preconditions.
    let p = cms.create(&pp, &cm("pre", json!({}))).await.unwrap();
    let e = api_err(
        cms.delete(
            "pre",
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some("other".into()),
                    resource_version: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    cms.delete(
        "pre",
        &DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn crd_becomes_established_and_served_then_goes() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(c.clone(), &crd_ar);
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd(true)).unwrap(),
    )
    .await
    .unwrap();
    let established = eventually(60, "Established", || {
        let crds = crds.clone();
        async move {
            let o = crds.get("widgets.example.com").await.ok()?;
            let conds = o.data.pointer("/status/conditions")?.as_array()?.clone();
            conds
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
                .then_some(conds)
        }
    })
    .await;
    assert!(
        established
            .iter()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
    );
    let widgets = widget_api(&c).await;
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}, "status": {"ignored": true}})).unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status subresource: dropped on create"
    );
    let smp = api_err(
        widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 4}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        smp.code, 415,
        "strategic merge is refused for custom resources"
    );
    // Discovery lists the new kind with its short name.
    let discovery = kube::discovery::Discovery::new(c.clone())
        .run()
        .await
        .unwrap();
    let found = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .any(|(ar, _)| ar.kind == "Widget" && ar.plural == "widgets");
    assert!(found);
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert!(crds.get_opt("widgets.example.com").await.unwrap().is_none());
    let e = api_err(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn error_bursts_and_latency_faults() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    h.faults().set_faults(kubesim::Faults {
        error_bursts: vec![kubesim::ErrorBurst {
            rate: 1.0,
            code: 429,
            verbs: vec!["list".into()],
            resources: vec!["pods".into()],
            max_count: Some(1),
            retry_after_seconds: Some(1),
        }],
        latency_ms: 200,
        ..Default::default()
    });
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let started = std::time::Instant::now();
    // kube-rs retries 429 by itself (honouring Retry-After): the list succeeds after one
    // injected error. The exact answer is checked over raw HTTP in `http_level`.
    pods.list(&ListParams::default())
        .await
        .expect("retried past the burst");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "latency on both attempts"
    );
    assert_eq!(h.faults().counters().injected_errors, 1);
    assert_eq!(h.faults().counters().requests["list pods"], 2);
    h.faults().clear_faults();
}

#[tokio::test]
async fn pod_subresources_eviction_binding_log_scale() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "guarded"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
        }))
        .unwrap()
    };
    let created = pods
        .create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );

    // Binding sets the node once.
    h.cluster().bind("default", "p", "node-1").unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("node-1")
    );
    assert_eq!(
        h.cluster().bind("default", "p", "node-2").unwrap_err().code,
        409
    );
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();

    // Logs written by whatever plays the kubelet are served by pods/log.
    h.cluster().append_log("default", "p", "c", "one\ntwo\n");
    assert_eq!(
        pods.logs("p", &Default::default()).await.unwrap(),
        "one\ntwo\n"
    );

    // A PDB that allows no disruption blocks the eviction with 429.
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(c.clone(), "default");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pdbs.patch_status("guard", &PatchParams::default(), &Patch::Merge(json!({"status": {
        "observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})))
        .await
        .unwrap();
    // In-process: kube-rs would retry a 429 for minutes before giving up.
    let e = h
        .cluster()
        .evict("default", "p", &Default::default())
        .unwrap_err();
    assert_eq!(e.code, 429);
    assert_eq!(
        e.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    // The disruption controller owns the status: allow a disruption through the spec (with the
    // pod Ready, as a kubelet would report it) and wait until it says so; patching the status
    // would race with it.
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    pdbs.patch(
        "guard",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 0}})),
    )
    .await
    .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = pdbs.get_status("guard").await.unwrap().status.unwrap();
        if status.disruptions_allowed == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the disruption controller never allowed a disruption: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    pods.evict("p", &Default::default()).await.unwrap();
    // The pod is on a node: graceful deletion leaves it terminating for the kubelet.
    let terminating = pods.get("p").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        pdbs.get_status("guard")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        0
    );
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());

    // Scale subresource.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("scaled"))
        .await
        .unwrap();
    let s = deps.get_scale("scaled").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(1));
    deps.patch_scale(
        "scaled",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    let d = deps.get("scaled").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));
}

#[tokio::test]
async fn services_get_cluster_ips_that_do_not_change() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    let k = svcs.get("kubernetes").await.unwrap();
    assert_eq!(k.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
    let s = svcs
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        })).unwrap())
        .await
        .unwrap();
    let spec = s.spec.unwrap();
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    let e = api_err(
        svcs.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": "10.96.0.200"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.clusterIP"), "{}", e.message);
}

#[tokio::test]
async fn server_side_apply_conflicts_force_and_strategic_merge() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let config = |replicas: i64, image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [
                    {"name": "main", "image": image, "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "side", "image": "busybox:1.36"}
                ]}}
            }
        })
    };
    let created = deps
        .patch(
            "app",
            &PatchParams::apply("alice"),
            &Patch::Apply(config(2, "nginx:1.25")),
        )
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    let e = api_err(
        deps.patch(
            "app",
            &PatchParams::apply("bob"),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
                "spec": {"replicas": 3}
            })),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
    let forced = deps
        .patch(
            "app",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
                "spec": {"replicas": 3}
            })),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(3));
    assert!(
        forced
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("bob"))
    );

    // Strategic merge of containers and env by name keeps what the patch does not mention.
    let patched = deps
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "spec": {"template": {"spec": {"containers": [
                    {"name": "main", "env": [{"name": "B", "value": "changed"}]}
                ]}}}
            })),
        )
        .await
        .unwrap();
    let pod_spec = patched.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod_spec.containers.len(), 2, "the side container stays");
    let env = pod_spec.containers[0].env.clone().unwrap();
    let pairs: Vec<(String, Option<String>)> = env.into_iter().map(|e| (e.name, e.value)).collect();
    assert_eq!(
        pairs,
        [
            ("A".to_string(), Some("1".to_string())),
            ("B".to_string(), Some("changed".to_string()))
        ]
    );
    assert_eq!(pod_spec.containers[0].image.as_deref(), Some("nginx:1.25"));

    // A repeated identical apply writes nothing.
    h.faults().reset_counters();
    deps.patch(
        "app",
        &PatchParams::apply("bob").force(),
        &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
            "spec": {"replicas": 3}
        })),
    )
    .await
    .unwrap();
    assert_eq!(h.faults().counters().total_writes, 0);

    // JSON patch.
    let j = deps
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/replicas", "value": 5}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(j.spec.unwrap().replicas, Some(5));
    // Update operations are recorded too, under the fieldManager or the User-Agent.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..Default::default()
    };
    let made = cms.create(&pp, &cm("owned", json!({}))).await.unwrap();
    let entry = &made.metadata.managed_fields.unwrap()[0];
    assert_eq!(
        (entry.manager.as_deref(), entry.operation.as_deref()),
        (Some("creator"), Some("Update"))
    );
}

#[tokio::test]
async fn delete_collection_by_selector() {
    let h = start(true, "v1.30.6");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (n, l) in [("x1", "x"), ("x2", "x"), ("y1", "y")] {
        cms.create(&PostParams::default(), &cm(n, json!({"g": l})))
            .await
            .unwrap();
    }
    h.faults().reset_counters();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("g=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default().labels("g"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(left, ["y1"]);
    assert_eq!(
        h.faults().counters().writes["deletecollection configmaps"],
        2
    );
}

#[tokio::test]
async fn in_process_modify_and_subscriptions() {
    let h = start(true, "v1.30.6");
    let cluster = h.cluster().clone();
    let opts = kubesim::WriteOptions::manager("test-controller");
    let mut sub = cluster.subscribe("apps/v1", "Deployment", None).unwrap();
    let c = client(&h).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("ctl"))
        .await
        .unwrap();
    let added = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(added.event_type, kubesim::store::EventType::Added);
    // A controller's status write goes through the status path and is not a client write.
    h.faults().reset_counters();
    let out = cluster
        .modify(
            "apps/v1",
            "deployments",
            Some("default"),
            "ctl",
            Some("status"),
            &opts,
            |d| {
                d["status"] = json!({"replicas": 1, "readyReplicas": 1});
                d["spec"]["replicas"] = json!(7);
            },
        )
        .unwrap();
    assert_eq!(out["status"]["readyReplicas"], 1);
    assert_eq!(out["spec"]["replicas"], 1, "status writes ignore spec");
    assert_eq!(h.faults().counters().total_writes, 0);
    let modified = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(modified.event_type, kubesim::store::EventType::Modified);
    assert_eq!(modified.object.value["status"]["readyReplicas"], 1);
    let mf = out["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        mf.iter()
            .any(|m| m["manager"] == "test-controller" && m["subresource"] == "status"),
        "{mf:?}"
    );
}

#[tokio::test]
async fn watcher_with_streaming_lists() {
    let h = start(true, "v1.32.5");
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(&PostParams::default(), &cm("before", json!({"s": "1"})))
        .await
        .unwrap();
    let stream = watcher(
        cms.clone(),
        watcher::Config::default().labels("s=1").streaming_lists(),
    );
    let mut s = std::pin::pin!(stream);
    let mut init_done = false;
    let mut names = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), s.next()).await else {
            continue;
        };
        match ev.unwrap() {
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                names.insert(o.metadata.name.unwrap());
            }
            watcher::Event::InitDone => {
                init_done = true;
                cms.create(&PostParams::default(), &cm("after", json!({"s": "1"})))
                    .await
                    .unwrap();
            }
            _ => {}
        }
        if names.len() == 2 {
            break;
        }
    }
    assert!(
        init_done,
        "the initial-events-end bookmark ended the initial list"
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["after", "before"]);
}
