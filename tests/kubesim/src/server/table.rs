//! `meta.k8s.io/v1` Tables, which `kubectl get` asks for: the real columns of common built-in
//! kinds (cells already formatted as the real server formats them) and CRDs'
//! additionalPrinterColumns evaluated from their JSONPaths.

use crate::pointer::At;
use serde_json::{Value, json};

use crate::catalog::{PrinterColumn, ResourceType};
use crate::clock;

fn col(name: &str, type_: &str, priority: i64, description: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: if name == "Name" {
            "name".into()
        } else {
            String::new()
        },
        description: description.into(),
        priority,
        json_path: String::new(),
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.at(p).and_then(Value::as_str).unwrap_or_default()
}

fn i(v: &Value, p: &str) -> i64 {
    v.at(p).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn containers_and_images(spec: Option<&Value>) -> (String, String) {
    let list: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = list.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vals: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = s(e, "/key");
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    none_if_empty(parts.join(","))
}

fn map_string(m: Option<&Value>) -> String {
    none_if_empty(
        m.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

/// The STATUS column as kubectl's pod printer derives it: init containers first, then the
/// last container with a waiting or terminated reason, then Terminating.
fn pod_status_and_restarts(o: &Value) -> (String, usize, i64) {
    let list = |p: &str| {
        o.at(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut reason = {
        let r = s(o, "/status/reason");
        if r.is_empty() {
            s(o, "/status/phase").to_string()
        } else {
            r.to_string()
        }
    };
    let init_specs = o
        .at("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut restarts = 0i64;
    let mut ready = 0usize;
    let mut initializing = false;
    for (idx, c) in list("/status/initContainerStatuses").iter().enumerate() {
        restarts += i(c, "/restartCount");
        if c.at("/state/terminated").is_some() && i(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        reason = if c.at("/state/terminated").is_some() {
            let r = s(c, "/state/terminated/reason");
            if !r.is_empty() {
                format!("Init:{r}")
            } else if i(c, "/state/terminated/signal") != 0 {
                format!("Init:Signal:{}", i(c, "/state/terminated/signal"))
            } else {
                format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode"))
            }
        } else {
            let w = s(c, "/state/waiting/reason");
            if !w.is_empty() && w != "PodInitializing" {
                format!("Init:{w}")
            } else {
                format!("Init:{idx}/{init_specs}")
            }
        };
        initializing = true;
        break;
    }
    if !initializing {
        restarts = 0;
        let mut has_running = false;
        for c in list("/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            let w = s(c, "/state/waiting/reason");
            let t = s(c, "/state/terminated/reason");
            if !w.is_empty() {
                reason = w.to_string();
            } else if !t.is_empty() {
                reason = t.to_string();
            } else if c.at("/state/terminated").is_some() {
                reason = if i(c, "/state/terminated/signal") != 0 {
                    format!("Signal:{}", i(c, "/state/terminated/signal"))
                } else {
                    format!("ExitCode:{}", i(c, "/state/terminated/exitCode"))
                };
            } else if c.at("/state/running").is_some()
                && c.get("ready").and_then(Value::as_bool) == Some(true)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = o
                .at("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if o.at("/metadata/deletionTimestamp").is_some() {
        reason = if s(o, "/status/reason") == "NodeLost" {
            "Unknown".to_string()
        } else {
            "Terminating".to_string()
        };
    }
    (reason, ready, restarts)
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let total = o
        .at("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let (reason, ready, restarts) = pod_status_and_restarts(o);
    let none = |x: &str| {
        if x.is_empty() {
            "<none>".to_string()
        } else {
            x.to_string()
        }
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age_cell(o)),
        json!(none(s(o, "/status/podIP"))),
        json!(none(s(o, "/spec/nodeName"))),
        json!(none(s(o, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let ready = o
        .at("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.at("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = o
        .at("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    let addr = |t: &str| {
        o.at("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| s(a, "/type") == t)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(status),
        json!(none_if_empty(roles.join(","))),
        json!(clock::age_of(
            o.at("/metadata/creationTimestamp").and_then(Value::as_str)
        )),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(s(o, "/status/nodeInfo/osImage")),
        json!(s(o, "/status/nodeInfo/kernelVersion")),
        json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

/// Column definitions and a row builder for a built-in kind, if it has a coded table.
/// Builds the cells of one row.
type RowFn = fn(&Value) -> Vec<Value>;

fn builtin_table(rt: &ResourceType) -> Option<(Vec<PrinterColumn>, RowFn)> {
    let name_col = || {
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        )
    };
    let age = || {
        col(
            "Age",
            "string",
            0,
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        )
    };
    Some(match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => (
            vec![
                name_col(),
                col(
                    "Ready",
                    "string",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                col(
                    "Status",
                    "string",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                col(
                    "Restarts",
                    "string",
                    0,
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                ),
                age(),
                col(
                    "IP",
                    "string",
                    1,
                    "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                ),
                col(
                    "Node",
                    "string",
                    1,
                    "NodeName is a request to schedule this pod onto a specific node.",
                ),
                col(
                    "Nominated Node",
                    "string",
                    1,
                    "nominatedNodeName is set only when this pod preempts other pods on the node.",
                ),
                col(
                    "Readiness Gates",
                    "string",
                    1,
                    "If specified, all readiness gates will be evaluated for pod readiness.",
                ),
            ],
            pod_cells,
        ),
        ("", "nodes") => (
            vec![
                name_col(),
                col("Status", "string", 0, "The status of the node"),
                col("Roles", "string", 0, "The roles of the node"),
                age(),
                col(
                    "Version",
                    "string",
                    0,
                    "Kubelet Version reported by the node.",
                ),
                col(
                    "Internal-IP",
                    "string",
                    1,
                    "List of addresses reachable to the node. Queried from cloud provider, if available.",
                ),
                col(
                    "External-IP",
                    "string",
                    1,
                    "List of addresses reachable to the node. Queried from cloud provider, if available.",
                ),
                col(
                    "OS-Image",
                    "string",
                    1,
                    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
                ),
                col(
                    "Kernel-Version",
                    "string",
                    1,
                    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                ),
                col(
                    "Container-Runtime",
                    "string",
                    1,
                    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
                ),
            ],
            node_cells,
        ),
        ("", "namespaces") => (
            vec![
                name_col(),
                col("Status", "string", 0, "The status of the namespace"),
                age(),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/status/phase")),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("", "services") => (
            vec![
                name_col(),
                col(
                    "Type",
                    "string",
                    0,
                    "type determines how the Service is exposed.",
                ),
                col(
                    "Cluster-IP",
                    "string",
                    0,
                    "clusterIP is the IP address of the service and is usually assigned randomly.",
                ),
                col(
                    "External-IP",
                    "string",
                    0,
                    "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
                ),
                col(
                    "Port(s)",
                    "string",
                    0,
                    "The list of ports that are exposed by this service.",
                ),
                age(),
                col(
                    "Selector",
                    "string",
                    1,
                    "Route service traffic to pods with label keys and values matching this selector.",
                ),
            ],
            |o| {
                let ports: Vec<String> = o
                    .at("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let np = i(p, "/nodePort");
                        let proto = {
                            let x = s(p, "/protocol");
                            if x.is_empty() { "TCP" } else { x }
                        };
                        if np > 0 {
                            format!("{}:{np}/{proto}", i(p, "/port"))
                        } else {
                            format!("{}/{proto}", i(p, "/port"))
                        }
                    })
                    .collect();
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/type")),
                    json!(none_if_empty(s(o, "/spec/clusterIP").to_string())),
                    json!("<none>"),
                    json!(none_if_empty(ports.join(","))),
                    json!(age_cell(o)),
                    json!(map_string(o.at("/spec/selector"))),
                ]
            },
        ),
        ("", "configmaps") => (
            vec![
                name_col(),
                col("Data", "string", 0, "Data contains the configuration data."),
                age(),
            ],
            |o| {
                let n = o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
                    + o.get("binaryData")
                        .and_then(Value::as_object)
                        .map_or(0, |m| m.len());
                vec![json!(s(o, "/metadata/name")), json!(n), json!(age_cell(o))]
            },
        ),
        ("", "secrets") => (
            vec![
                name_col(),
                col(
                    "Type",
                    "string",
                    0,
                    "Used to facilitate programmatic handling of secret data.",
                ),
                col("Data", "string", 0, "Data contains the secret data."),
                age(),
            ],
            |o| {
                let n = o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/type")),
                    json!(n),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("", "serviceaccounts") => (vec![name_col(), age()], |o| {
            vec![json!(s(o, "/metadata/name")), json!(age_cell(o))]
        }),
        ("apps", "daemonsets") => (
            vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    0,
                    "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
                ),
                col(
                    "Current",
                    "integer",
                    0,
                    "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
                ),
                col(
                    "Ready",
                    "integer",
                    0,
                    "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
                ),
                col(
                    "Up-to-date",
                    "integer",
                    0,
                    "The total number of nodes that are running updated daemon pod",
                ),
                col(
                    "Available",
                    "integer",
                    0,
                    "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
                ),
                col(
                    "Node Selector",
                    "string",
                    0,
                    "NodeSelector is a selector which must be true for the pod to fit on a node.",
                ),
                age(),
                col(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                col(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                col(
                    "Selector",
                    "string",
                    1,
                    "A label query over pods that are managed by the daemon set.",
                ),
            ],
            |o| {
                let (c, im) = containers_and_images(o.at("/spec/template/spec"));
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(i(o, "/status/desiredNumberScheduled")),
                    json!(i(o, "/status/currentNumberScheduled")),
                    json!(i(o, "/status/numberReady")),
                    json!(i(o, "/status/updatedNumberScheduled")),
                    json!(i(o, "/status/numberAvailable")),
                    json!(map_string(o.at("/spec/template/spec/nodeSelector"))),
                    json!(age_cell(o)),
                    json!(c),
                    json!(im),
                    json!(selector_string(o.at("/spec/selector"))),
                ]
            },
        ),
        ("apps", "deployments") => (
            vec![
                name_col(),
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col(
                    "Up-to-date",
                    "string",
                    0,
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                col(
                    "Available",
                    "string",
                    0,
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age(),
                col(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                col(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                col(
                    "Selector",
                    "string",
                    1,
                    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                ),
            ],
            |o| {
                let (c, im) = containers_and_images(o.at("/spec/template/spec"));
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        i(o, "/status/readyReplicas"),
                        i(o, "/spec/replicas")
                    )),
                    json!(i(o, "/status/updatedReplicas")),
                    json!(i(o, "/status/availableReplicas")),
                    json!(age_cell(o)),
                    json!(c),
                    json!(im),
                    json!(selector_string(o.at("/spec/selector"))),
                ]
            },
        ),
        ("apps", "replicasets") => (
            vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    0,
                    "Replicas is the number of desired replicas.",
                ),
                col(
                    "Current",
                    "integer",
                    0,
                    "Replicas is the most recently observed number of replicas.",
                ),
                col(
                    "Ready",
                    "integer",
                    0,
                    "The number of ready replicas for this replica set.",
                ),
                age(),
                col(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                col(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
                col(
                    "Selector",
                    "string",
                    1,
                    "Selector is a label query over pods that should match the replica count.",
                ),
            ],
            |o| {
                let (c, im) = containers_and_images(o.at("/spec/template/spec"));
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(i(o, "/spec/replicas")),
                    json!(i(o, "/status/replicas")),
                    json!(i(o, "/status/readyReplicas")),
                    json!(age_cell(o)),
                    json!(c),
                    json!(im),
                    json!(selector_string(o.at("/spec/selector"))),
                ]
            },
        ),
        ("batch", "jobs") => (
            vec![
                name_col(),
                col(
                    "Completions",
                    "string",
                    0,
                    "The desired number of successfully finished pods the job should be run with.",
                ),
                col(
                    "Duration",
                    "string",
                    0,
                    "Time required to complete the job.",
                ),
                age(),
            ],
            |o| {
                let dur = match (
                    o.at("/status/startTime")
                        .and_then(Value::as_str)
                        .and_then(clock::parse_rfc3339),
                    o.at("/status/completionTime")
                        .and_then(Value::as_str)
                        .and_then(clock::parse_rfc3339),
                ) {
                    (Some(a), Some(b)) => clock::human_duration(b - a),
                    (Some(a), None) => clock::human_duration(clock::now_unix() - a),
                    _ => String::new(),
                };
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        i(o, "/status/succeeded"),
                        o.at("/spec/completions")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    )),
                    json!(dur),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("apps", "statefulsets") => (
            vec![
                name_col(),
                col("Ready", "string", 0, "Number of the pod with ready state"),
                age(),
                col(
                    "Containers",
                    "string",
                    1,
                    "Names of each container in the template.",
                ),
                col(
                    "Images",
                    "string",
                    1,
                    "Images referenced by each container in the template.",
                ),
            ],
            |o| {
                let (c, im) = containers_and_images(o.at("/spec/template/spec"));
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        i(o, "/status/readyReplicas"),
                        i(o, "/spec/replicas")
                    )),
                    json!(age_cell(o)),
                    json!(c),
                    json!(im),
                ]
            },
        ),
        ("apps", "controllerrevisions") => (
            vec![
                name_col(),
                col("Controller", "string", 0, "Controller of the object"),
                col(
                    "Revision",
                    "string",
                    0,
                    "Revision indicates the revision of the state represented by Data.",
                ),
                age(),
            ],
            |o| {
                let owner = o
                    .at("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                    })
                    .map(|r| {
                        let api = s(r, "/apiVersion");
                        let group = api.split_once('/').map_or("", |(g, _)| g);
                        let kind = s(r, "/kind").to_ascii_lowercase();
                        let qualified = if group.is_empty() {
                            kind
                        } else {
                            format!("{kind}.{group}")
                        };
                        format!("{qualified}/{}", s(r, "/name"))
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(owner),
                    json!(i(o, "/revision")),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("networking.k8s.io", "networkpolicies") => (
            vec![
                name_col(),
                col(
                    "Pod-Selector",
                    "string",
                    0,
                    "Selects the pods to which this NetworkPolicy object applies.",
                ),
                age(),
            ],
            |o| {
                let sel = selector_string(o.at("/spec/podSelector"));
                let sel = if sel == "<none>" { String::new() } else { sel };
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(sel),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("coordination.k8s.io", "leases") => (
            vec![
                name_col(),
                col(
                    "Holder",
                    "string",
                    0,
                    "holderIdentity contains the identity of the holder of a current lease.",
                ),
                age(),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/spec/holderIdentity")),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("scheduling.k8s.io", "priorityclasses") => (
            vec![
                name_col(),
                col(
                    "Value",
                    "integer",
                    0,
                    "value represents the integer value of this priority class.",
                ),
                col(
                    "Global-Default",
                    "boolean",
                    0,
                    "globalDefault specifies whether this PriorityClass should be considered as the default priority.",
                ),
                age(),
                col(
                    "PreemptionPolicy",
                    "string",
                    0,
                    "preemptionPolicy is the Policy for preempting pods with lower priority.",
                ),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(i(o, "/value")),
                    json!(
                        o.get("globalDefault")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    ),
                    json!(age_cell(o)),
                    json!(s(o, "/preemptionPolicy")),
                ]
            },
        ),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => (
            vec![
                name_col(),
                col("Role", "string", 0, "RoleRef is the reference to the role."),
                age(),
            ],
            |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        s(o, "/roleRef/kind"),
                        s(o, "/roleRef/name")
                    )),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("policy", "poddisruptionbudgets") => (
            vec![
                name_col(),
                col(
                    "Min Available",
                    "string",
                    0,
                    "The minimum number of pods that must be available simultaneously.",
                ),
                col(
                    "Max Unavailable",
                    "string",
                    0,
                    "The maximum number of pods that may be unavailable simultaneously.",
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    0,
                    "Calculated number of pods that may be disrupted at this time.",
                ),
                age(),
            ],
            |o| {
                let show = |p: &str| match o.at(p) {
                    Some(Value::String(x)) => x.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => "N/A".into(),
                };
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(show("/spec/minAvailable")),
                    json!(show("/spec/maxUnavailable")),
                    json!(i(o, "/status/disruptionsAllowed")),
                    json!(age_cell(o)),
                ]
            },
        ),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            (vec![name_col(), col("Created At", "date", 0, "")], |o| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/metadata/creationTimestamp")),
                ]
            })
        }
        ("", "events") => (
            vec![
                col("Last Seen", "string", 0, ""),
                col("Type", "string", 0, ""),
                col("Reason", "string", 0, ""),
                col("Object", "string", 0, ""),
                col("Message", "string", 0, ""),
            ],
            |o| {
                let last = o
                    .at("/lastTimestamp")
                    .and_then(Value::as_str)
                    .or_else(|| o.at("/eventTime").and_then(Value::as_str));
                vec![
                    json!(clock::age_of(last)),
                    json!(s(o, "/type")),
                    json!(s(o, "/reason")),
                    json!(format!(
                        "{}/{}",
                        s(o, "/involvedObject/kind").to_ascii_lowercase(),
                        s(o, "/involvedObject/name")
                    )),
                    json!(s(o, "/message")),
                ]
            },
        ),
        _ => return None,
    })
}

/// Builds the cells of one row, capturing CRD columns.
type RowBuilder = dyn Fn(&Value) -> Vec<Value>;

fn age_cell(o: &Value) -> String {
    clock::age_of(o.at("/metadata/creationTimestamp").and_then(Value::as_str))
}

/// Evaluates the simple JSONPaths CRDs use: `.a.b`, `.a[0]`, `.a[?(@.k=='v')].b`.
pub fn eval_json_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = filter.split_once("==")?;
                let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|e| e.get(k.trim()).and_then(Value::as_str) == Some(v))?;
            } else {
                let idx: usize = inner.trim().parse().ok()?;
                cur = cur.as_array()?.get(idx)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn crd_cell(o: &Value, c: &PrinterColumn) -> Value {
    let Some(v) = eval_json_path(o, &c.json_path) else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => json!(clock::age_of(v.as_str())),
        "integer" | "number" | "boolean" => v.clone(),
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// Builds a Table of objects. `include_object` is `None`, `Metadata` (default) or `Object`;
/// `headers` false leaves out column definitions (watch events after the first).
pub fn build(
    rt: &ResourceType,
    version: &str,
    objects: &[Value],
    include_object: &str,
    headers: bool,
    list_meta: Value,
) -> Value {
    let (columns, cells): (Vec<PrinterColumn>, Box<RowBuilder>) = if let Some((cols, f)) =
        builtin_table(rt)
    {
        (cols, Box::new(f))
    } else if !rt.builtin {
        let mut cols = vec![col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        )];
        let extra = rt
            .version(version)
            .map(|v| v.printer_columns.clone())
            .unwrap_or_default();
        cols.extend(extra.iter().cloned());
        (
            cols,
            Box::new(move |o: &Value| {
                let mut row = vec![json!(s(o, "/metadata/name"))];
                row.extend(extra.iter().map(|c| crd_cell(o, c)));
                row
            }),
        )
    } else {
        (
            vec![
                col(
                    "Name",
                    "string",
                    0,
                    "Name must be unique within a namespace.",
                ),
                PrinterColumn {
                    format: "date".into(),
                    ..col(
                        "Created At",
                        "date",
                        0,
                        "CreationTimestamp is a timestamp representing the server time when this object was created.",
                    )
                },
            ],
            Box::new(|o: &Value| {
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(s(o, "/metadata/creationTimestamp")),
                ]
            }),
        )
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_default(),
                }),
            };
            let mut row = json!({"cells": cells(o), "object": object});
            if object_is_null(&row) {
                row.as_object_mut().map(|m| m.shift_remove("object"));
            }
            row
        })
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
    });
    if headers {
        table["columnDefinitions"] = Value::Array(
            columns
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "type": c.type_, "format": c.format,
                        "description": c.description, "priority": c.priority
                    })
                })
                .collect(),
        );
    } else {
        table["columnDefinitions"] = Value::Null;
    }
    table["rows"] = Value::Array(rows);
    table
}

fn object_is_null(row: &Value) -> bool {
    row.get("object").is_some_and(Value::is_null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_reads_like_kubectl() {
        let crash = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "a", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            pod_status_and_restarts(&crash),
            ("CrashLoopBackOff".into(), 0, 4)
        );
        let init = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "restartCount": 0,
                "state": {"running": {}}}]}});
        assert_eq!(pod_status_and_restarts(&init).0, "Init:0/1");
        let running = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                                  {"name": "b", "ready": true, "restartCount": 1, "state": {"running": {}}}]}});
        assert_eq!(pod_status_and_restarts(&running), ("Running".into(), 2, 1));
        let done = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded",
            "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}});
        assert_eq!(pod_status_and_restarts(&done).0, "Completed");
        let going = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status_and_restarts(&going).0, "Terminating");
    }

    #[test]
    fn json_paths_of_calico_crds() {
        let o = json!({"status": {"conditions": [
            {"type": "Available", "status": "True"}, {"type": "Degraded", "status": "False"}
        ]}, "spec": {"priority": 5}});
        assert_eq!(
            eval_json_path(&o, ".status.conditions[?(@.type=='Degraded')].status"),
            Some(&json!("False"))
        );
        assert_eq!(eval_json_path(&o, ".spec.priority"), Some(&json!(5)));
        assert_eq!(
            eval_json_path(&o, ".status.conditions[1].type"),
            Some(&json!("Degraded"))
        );
        assert_eq!(eval_json_path(&o, ".missing"), None);
    }
}
