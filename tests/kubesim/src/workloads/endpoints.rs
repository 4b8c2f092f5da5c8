//! The Endpoints and EndpointSlice controllers (`pkg/controller/endpoint`,
//! `pkg/controller/endpointslice`), for Services with a selector (others, such as
//! `default/kubernetes`, are not theirs; ExternalName Services neither).
//!
//! A selected pod takes part when it has a pod IP and has not finished; a terminating pod
//! only in EndpointSlices (with `terminating: true`) or with `publishNotReadyAddresses`.
//! Ready pods (or all, with `publishNotReadyAddresses`) are `addresses`, the others
//! `notReadyAddresses`. Each Service port resolves its `targetPort` (a number, or a container
//! port name); a pod lacking a named port is left out of that port. Endpoints group
//! addresses by identical port sets (`RepackSubsets`); EndpointSlices (one per port set, up
//! to 100 endpoints each) carry `kubernetes.io/service-name`,
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io` and a
//! controller reference to the Service. Endpoints have no owner reference (upstream deletes
//! them itself when the Service goes).

use crate::pointer::At;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Obj;
use super::{deleting, drive, list, owner_ref, pod_ready, pod_terminal, s};
use crate::cluster::{Cluster, DeleteOptions, WriteOptions};
use crate::controllers::Shutdown;
use crate::selectors::LabelSelector;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const HEADLESS: &str = "service.kubernetes.io/headless";
const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const MAX_PER_SLICE: usize = 100;

/// Runs the Endpoints controller until shutdown.
pub async fn run_endpoints(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[("v1", "services"), ("v1", "pods"), ("v1", "endpoints")],
        |c| {
            let services = list(c, "v1", "services");
            let pods = list(c, "v1", "pods");
            let existing = list(c, "v1", "endpoints");
            sync_endpoints(c, &services, &pods, &existing);
            Some(Duration::from_secs(1))
        },
    )
    .await
}

/// Runs the EndpointSlice controller until shutdown.
pub async fn run_slices(cluster: Cluster, shutdown: Shutdown) {
    drive(
        cluster,
        shutdown,
        &[
            ("v1", "services"),
            ("v1", "pods"),
            ("discovery.k8s.io/v1", "endpointslices"),
        ],
        |c| {
            let services = list(c, "v1", "services");
            let pods = list(c, "v1", "pods");
            let nodes = list(c, "v1", "nodes");
            let slices = list(c, "discovery.k8s.io/v1", "endpointslices");
            sync_slices(c, &services, &pods, &nodes, &slices);
            Some(Duration::from_secs(1))
        },
    )
    .await
}

/// A Service these controllers manage: it has a selector and is not ExternalName.
fn managed(svc: &Value) -> bool {
    svc.at("/spec/selector")
        .and_then(Value::as_object)
        .is_some()
        && s(svc, "/spec/type") != "ExternalName"
}

fn key(v: &Value) -> (String, String) {
    (
        s(v, "/metadata/namespace").to_string(),
        s(v, "/metadata/name").to_string(),
    )
}

/// One Endpoints subset being built: ports, ready and not-ready addresses.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// One pod's part in a Service: its address fields and the resolved ports.
struct Member<'a> {
    pod: &'a Value,
    ready: bool,
    serving: bool,
    terminating: bool,
    ports: Vec<Value>,
}

/// The container port a Service port targets on `pod`.
fn find_port(pod: &Value, port: &Value) -> Option<i64> {
    let target = port.get("targetPort").or_else(|| port.get("port"))?;
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse::<i64>() {
        return Some(n);
    }
    let protocol = port["protocol"].as_str().unwrap_or("TCP");
    pod.at("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        .and_then(|p| p["containerPort"].as_i64())
}

/// The Service's pods that take part (`ShouldPodBeInEndpoints`), with their ports.
fn members<'a>(svc: &Value, pods: &'a [Obj], include_terminating: bool) -> Vec<Member<'a>> {
    let ns = s(svc, "/metadata/namespace");
    let Some(selector) = svc
        .at("/spec/selector")
        .map(|m| json!({"matchLabels": m}))
        .and_then(|m| LabelSelector::from_object(&m).ok())
    else {
        return Vec::new();
    };
    let publish = svc
        .at("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        == Some(true);
    let service_ports = svc
        .at("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for pod in pods {
        if s(pod, "/metadata/namespace") != ns || !selector.matches(pod) {
            continue;
        }
        if s(pod, "/status/podIP").is_empty() || pod_terminal(pod) {
            continue;
        }
        let terminating = deleting(pod);
        if terminating && !include_terminating && !publish {
            continue;
        }
        let ports = service_ports
            .iter()
            .filter_map(|sp| {
                let n = find_port(pod, sp)?;
                let mut p = json!({"name": sp["name"].as_str().unwrap_or(""), "port": n,
                    "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                if let Some(ap) = sp.get("appProtocol") {
                    p["appProtocol"] = ap.clone();
                }
                Some(p)
            })
            .collect::<Vec<_>>();
        if ports.is_empty() && !service_ports.is_empty() {
            continue;
        }
        let ready = pod_ready(pod);
        out.push(Member {
            pod,
            ready: publish || (ready && !terminating),
            serving: publish || ready,
            terminating,
            ports,
        });
    }
    out
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": pod.at("/metadata/namespace"),
        "name": pod.at("/metadata/name"), "uid": pod.at("/metadata/uid")})
}

/// `ShouldSetHostname`: the pod's hostname when its subdomain is the Service.
fn hostname(svc: &Value, pod: &Value) -> Option<String> {
    let h = s(pod, "/spec/hostname");
    (!h.is_empty() && s(pod, "/spec/subdomain") == s(svc, "/metadata/name")).then(|| h.to_string())
}

fn labels_for(svc: &Value) -> Map<String, Value> {
    let mut labels = svc
        .at("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if s(svc, "/spec/clusterIP") == "None" {
        labels.insert(HEADLESS.into(), json!(""));
    }
    labels
}

/// Port lists compare by name, port and protocol.
fn port_key(ports: &[Value]) -> String {
    let mut v: Vec<String> = ports.iter().map(Value::to_string).collect();
    v.sort();
    v.join(";")
}

fn sorted_ports(ports: &[Value]) -> Vec<Value> {
    let mut p = ports.to_vec();
    p.sort_by_key(Value::to_string);
    p
}

fn ip_order(ip: &str) -> (u8, Vec<u32>) {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => (4, v4.octets().iter().map(|o| u32::from(*o)).collect()),
        Ok(std::net::IpAddr::V6(v6)) => (6, v6.segments().iter().map(|o| u32::from(*o)).collect()),
        Err(_) => (0, Vec::new()),
    }
}

fn sync_endpoints(cluster: &Cluster, services: &[Obj], pods: &[Obj], existing: &[Obj]) {
    let opts = WriteOptions::manager("endpoint-controller");
    let wanted: BTreeSet<(String, String)> = services
        .iter()
        .filter(|s| managed(s))
        .map(|s| key(s))
        .collect();
    let current: BTreeMap<(String, String), &Value> =
        existing.iter().map(|e| (key(e), &e.value)).collect();
    for svc in services.iter().filter(|s| managed(s)) {
        let publish = svc
            .at("/spec/publishNotReadyAddresses")
            .and_then(Value::as_bool)
            == Some(true);
        // RepackSubsets: one subset per distinct port set.
        let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
        for m in members(svc, pods, publish) {
            let mut addr = json!({"ip": s(m.pod, "/status/podIP"), "targetRef": target_ref(m.pod)});
            let node = s(m.pod, "/spec/nodeName");
            if !node.is_empty() {
                addr["nodeName"] = json!(node);
            }
            if let Some(h) = hostname(svc, m.pod) {
                addr["hostname"] = json!(h);
            }
            let g = groups
                .entry(port_key(&m.ports))
                .or_insert_with(|| (sorted_ports(&m.ports), Vec::new(), Vec::new()));
            if m.ready || publish {
                g.1.push(addr);
            } else {
                g.2.push(addr);
            }
        }
        let subsets: Vec<Value> = groups
            .into_values()
            .map(|(ports, mut ready, mut not_ready)| {
                ready.sort_by_key(|a| ip_order(a["ip"].as_str().unwrap_or("")));
                not_ready.sort_by_key(|a| ip_order(a["ip"].as_str().unwrap_or("")));
                let mut subset = json!({});
                if !ready.is_empty() {
                    subset["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = json!(not_ready);
                }
                if !ports.is_empty() {
                    subset["ports"] = json!(ports);
                }
                subset
            })
            .collect();
        let labels = labels_for(svc);
        let (ns, name) = key(svc);
        match current.get(&(ns.clone(), name.clone())) {
            Some(ep) => {
                let same_subsets =
                    ep.get("subsets").cloned().unwrap_or_else(|| json!([])) == json!(subsets);
                let same_labels = ep
                    .at("/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
                    == labels;
                if same_subsets && same_labels {
                    continue;
                }
                let _ = cluster.modify("v1", "endpoints", Some(&ns), &name, None, &opts, |o| {
                    o["metadata"]["labels"] = Value::Object(labels.clone());
                    o["metadata"]["annotations"][TRIGGER] = json!(crate::clock::now_rfc3339());
                    if subsets.is_empty() {
                        o.as_object_mut().map(|m| m.remove("subsets"));
                    } else {
                        o["subsets"] = json!(subsets);
                    }
                });
            }
            None => {
                let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": labels,
                        "annotations": {TRIGGER: crate::clock::now_rfc3339()}}});
                if !subsets.is_empty() {
                    ep["subsets"] = json!(subsets);
                }
                let _ = cluster.create("v1", "endpoints", Some(&ns), ep, &opts);
            }
        }
    }
    // Endpoints of Services that are gone (only those this controller would manage: the
    // ones of selector-less Services belong to whoever wrote them).
    let all_services: BTreeSet<(String, String)> = services.iter().map(|s| key(s)).collect();
    for ((ns, name), ep) in &current {
        if !all_services.contains(&(ns.clone(), name.clone()))
            && !wanted.contains(&(ns.clone(), name.clone()))
            && ep
                .at(&format!(
                    "/metadata/annotations/{}",
                    TRIGGER.replace('/', "~1")
                ))
                .is_some()
        {
            let _ = cluster.delete("v1", "endpoints", Some(ns), name, &DeleteOptions::default());
        }
    }
}

fn sync_slices(cluster: &Cluster, services: &[Obj], pods: &[Obj], nodes: &[Obj], slices: &[Obj]) {
    let opts = WriteOptions::manager(SLICE_CONTROLLER);
    let zones: BTreeMap<&str, &str> = nodes
        .iter()
        .filter_map(|n| {
            let z = s(n, "/metadata/labels/topology.kubernetes.io~1zone");
            (!z.is_empty()).then(|| (s(n, "/metadata/name"), z))
        })
        .collect();
    let ours = |sl: &&Value| {
        s(
            sl,
            &format!("/metadata/labels/{}", MANAGED_BY.replace('/', "~1")),
        ) == SLICE_CONTROLLER
    };
    let mut by_service: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for sl in slices.iter().map(|o| &o.value).filter(ours) {
        let svc = s(
            sl,
            &format!("/metadata/labels/{}", SERVICE_NAME.replace('/', "~1")),
        );
        by_service
            .entry((s(sl, "/metadata/namespace").to_string(), svc.to_string()))
            .or_default()
            .push(sl);
    }
    for svc in services.iter().filter(|s| managed(s)) {
        let (ns, name) = key(svc);
        // Desired slices: per port set, chunks of MAX_PER_SLICE endpoints.
        let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
        for m in members(svc, pods, true) {
            let mut ep = json!({
                "addresses": [s(m.pod, "/status/podIP")],
                "conditions": {"ready": m.ready, "serving": m.serving, "terminating": m.terminating},
                "targetRef": target_ref(m.pod),
            });
            let node = s(m.pod, "/spec/nodeName");
            if !node.is_empty() {
                ep["nodeName"] = json!(node);
                if let Some(z) = zones.get(node) {
                    ep["zone"] = json!(z);
                }
            }
            if let Some(h) = hostname(svc, m.pod) {
                ep["hostname"] = json!(h);
            }
            groups
                .entry(port_key(&m.ports))
                .or_insert_with(|| (sorted_ports(&m.ports), Vec::new()))
                .1
                .push(ep);
        }
        let mut desired: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
        for (ports, mut eps) in groups.into_values() {
            eps.sort_by_key(|e| {
                ip_order(e.at("/addresses/0").and_then(Value::as_str).unwrap_or(""))
            });
            for chunk in eps.chunks(MAX_PER_SLICE) {
                desired.push((ports.clone(), chunk.to_vec()));
            }
        }
        let mut labels = labels_for(svc);
        labels.insert(SERVICE_NAME.into(), json!(name));
        labels.insert(MANAGED_BY.into(), json!(SLICE_CONTROLLER));
        let mut existing: Vec<&Value> = by_service
            .remove(&(ns.clone(), name.clone()))
            .unwrap_or_default();
        existing.sort_by(|a, b| s(a, "/metadata/name").cmp(s(b, "/metadata/name")));
        if desired.is_empty() {
            // A placeholder slice without endpoints or ports.
            desired.push((Vec::new(), Vec::new()));
        }
        let mut existing = existing.into_iter();
        for (ports, eps) in desired {
            let body = |o: &mut Value| {
                o["metadata"]["labels"] = Value::Object(labels.clone());
                o["addressType"] = json!("IPv4");
                o["endpoints"] = if eps.is_empty() {
                    Value::Null
                } else {
                    json!(eps)
                };
                o["ports"] = if ports.is_empty() {
                    Value::Null
                } else {
                    json!(ports)
                };
                if let Some(m) = o.as_object_mut() {
                    m.retain(|_, v| !v.is_null());
                }
            };
            match existing.next() {
                Some(sl) => {
                    let mut want = (*sl).clone();
                    body(&mut want);
                    if &want == sl {
                        continue;
                    }
                    let _ = cluster.modify(
                        "discovery.k8s.io/v1",
                        "endpointslices",
                        Some(&ns),
                        s(sl, "/metadata/name"),
                        None,
                        &opts,
                        |o| {
                            body(o);
                            o["metadata"]["annotations"][TRIGGER] =
                                json!(crate::clock::now_rfc3339());
                        },
                    );
                }
                None => {
                    let mut sl = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"generateName": format!("{name}-"), "namespace": ns,
                            "annotations": {TRIGGER: crate::clock::now_rfc3339()},
                            "ownerReferences": [owner_ref(&with_kind(svc))]}});
                    body(&mut sl);
                    let _ = cluster.create(
                        "discovery.k8s.io/v1",
                        "endpointslices",
                        Some(&ns),
                        sl,
                        &opts,
                    );
                }
            }
        }
        for extra in existing {
            let _ = cluster.delete(
                "discovery.k8s.io/v1",
                "endpointslices",
                Some(&ns),
                s(extra, "/metadata/name"),
                &DeleteOptions::default(),
            );
        }
    }
    // Slices of Services that no longer exist or no longer have a selector.
    for ((ns, _), list) in by_service {
        for sl in list {
            let _ = cluster.delete(
                "discovery.k8s.io/v1",
                "endpointslices",
                Some(&ns),
                s(sl, "/metadata/name"),
                &DeleteOptions::default(),
            );
        }
    }
}

/// Objects from `list` carry apiVersion and kind; make sure of it for the owner reference.
fn with_kind(svc: &Value) -> Value {
    let mut v = svc.clone();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Service");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_numbered_target_ports() {
        let pod = json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}});
        assert_eq!(
            find_port(&pod, &json!({"port": 80, "targetPort": "http"})),
            Some(8080)
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 80, "targetPort": 9376})),
            Some(9376)
        );
        assert_eq!(
            find_port(
                &pod,
                &json!({"port": 53, "targetPort": "dns", "protocol": "UDP"})
            ),
            Some(53)
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 53, "targetPort": "dns"})),
            None
        );
        assert_eq!(find_port(&pod, &json!({"port": 81})), Some(81));
    }
}
