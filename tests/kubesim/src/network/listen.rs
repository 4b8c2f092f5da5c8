//! What a container listens on and what it answers.
//!
//! In kubesim what a container does is pluggable by image and command, so the caller describes
//! listeners through [`Behaviours`]. Two ready-made behaviours exist: [`DeclaredPorts`] (every
//! declared `containerPort` listens and answers the hostname, whatever the client speaks) and
//! [`Agnhost`] (reads `agnhost serve-hostname` and `agnhost netexec` command lines the way the
//! real binary parses them, including its start-up failures).

use crate::pointer::At;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Layer-4 protocol of a listener or a Kubernetes port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Transport {
    /// Parses a Kubernetes `protocol` value; absent means TCP, as the API defaults it.
    pub fn from_k8s(v: Option<&Value>) -> Option<Transport> {
        match v.and_then(Value::as_str) {
            None => Some(Transport::Tcp),
            Some(s) if s.eq_ignore_ascii_case("TCP") => Some(Transport::Tcp),
            Some(s) if s.eq_ignore_ascii_case("UDP") => Some(Transport::Udp),
            Some(s) if s.eq_ignore_ascii_case("SCTP") => Some(Transport::Sctp),
            Some(_) => None,
        }
    }

    /// `TCP`, `UDP` or `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
            Transport::Sctp => "SCTP",
        }
    }
}

/// The framing a stream listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaks {
    /// HTTP: answers a request with status 200 and the reply as body; says nothing first.
    Http,
    /// Raw: writes the reply as soon as a client connects (a greeting), then closes.
    Raw,
    /// TLS (e.g. the API server): a plain-HTTP client gets status 400.
    Tls,
    /// Lenient default for unknown software: a raw greeting and an HTTP 200 with the reply.
    Any,
}

/// What a listener answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Always this text (agnhost serve-hostname: the hostname).
    Text(String),
    /// The request itself (HTTP body or path, UDP datagram).
    Echo,
    /// agnhost netexec: `hostname`, `echo <msg>`, `clientip` over UDP; `/hostname`,
    /// `/echo?msg=`, `/clientip` and `/` over HTTP. Holds the hostname it reports.
    Netexec(String),
    /// Accepts but never answers.
    Silent,
}

/// One socket a container (or a node) listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// TCP, UDP or SCTP.
    pub transport: Transport,
    /// The port.
    pub port: u16,
    /// Framing, for stream listeners (ignored for UDP).
    pub speaks: Speaks,
    /// What it answers.
    pub reply: Reply,
}

impl Listener {
    /// An HTTP server on TCP `port` answering `text`.
    pub fn http(port: u16, text: &str) -> Listener {
        Listener {
            transport: Transport::Tcp,
            port,
            speaks: Speaks::Http,
            reply: Reply::Text(text.to_string()),
        }
    }

    /// A raw TCP server on `port` that writes `text` to every client.
    pub fn tcp_greeting(port: u16, text: &str) -> Listener {
        Listener {
            transport: Transport::Tcp,
            port,
            speaks: Speaks::Raw,
            reply: Reply::Text(text.to_string()),
        }
    }

    /// A UDP server on `port` answering every datagram with `text`.
    pub fn udp(port: u16, text: &str) -> Listener {
        Listener {
            transport: Transport::Udp,
            port,
            speaks: Speaks::Raw,
            reply: Reply::Text(text.to_string()),
        }
    }

    /// The lenient default for a declared port.
    pub fn any(transport: Transport, port: u16, text: &str) -> Listener {
        Listener {
            transport,
            port,
            speaks: Speaks::Any,
            reply: Reply::Text(text.to_string()),
        }
    }
}

/// Supplies the listeners of a container; `None` means "no opinion", and the model then falls
/// back to [`declared_listeners`]. An empty list means the container listens on nothing.
pub trait Behaviours {
    /// Listeners of `container` (an element of `spec.containers`) in `pod`, whose hostname is
    /// `hostname` (the node's name for hostNetwork pods).
    fn listeners(&self, pod: &Value, container: &Value, hostname: &str) -> Option<Vec<Listener>>;
}

impl<F> Behaviours for F
where
    F: Fn(&Value, &Value, &str) -> Option<Vec<Listener>>,
{
    fn listeners(&self, pod: &Value, container: &Value, hostname: &str) -> Option<Vec<Listener>> {
        self(pod, container, hostname)
    }
}

/// No behaviour: every container gets [`declared_listeners`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeclaredPorts;

impl Behaviours for DeclaredPorts {
    fn listeners(
        &self,
        _pod: &Value,
        _container: &Value,
        _hostname: &str,
    ) -> Option<Vec<Listener>> {
        None
    }
}

/// agnhost containers as the real binary behaves ([`agnhost_listeners`]); other containers fall
/// back to their declared ports. A container whose agnhost command line would make the binary
/// exit listens on nothing (kubesim's container behaviour reports the crash itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct Agnhost;

impl Behaviours for Agnhost {
    fn listeners(&self, _pod: &Value, container: &Value, hostname: &str) -> Option<Vec<Listener>> {
        agnhost_listeners(container, hostname).map(|r| r.unwrap_or_default())
    }
}

/// The hostname a pod's processes see: `spec.hostname` or the pod name, cut to 63 characters as
/// the kubelet does; a hostNetwork pod sees its node's hostname (`spec.nodeName`).
/// The host name of a node, as its host-network processes see it (`hostname`, Go's
/// `os.Hostname()`): the kubelet's `kubernetes.io/hostname` label, which it sets from that
/// host name (lower-cased, or `--hostname-override`), else the `Hostname` address, else the
/// node name. The node name itself may differ, e.g. a cloud provider's DNS name.
pub fn node_hostname(node: &Value) -> String {
    node.at("/metadata/labels/kubernetes.io~1hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .or_else(|| {
            node.at("/status/addresses")
                .and_then(Value::as_array)?
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some("Hostname"))
                .and_then(|a| a.get("address").and_then(Value::as_str))
        })
        .or_else(|| node.at("/metadata/name").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

/// A pod's host name. Host-network pods see their node's host name: without the node object
/// at hand, the node name stands in for it ([`node_hostname`] with the node is exact).
pub fn pod_hostname(pod: &Value) -> String {
    if pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
        && let Some(node) = pod.at("/spec/nodeName").and_then(Value::as_str)
    {
        return node.to_string();
    }
    let name = pod
        .at("/spec/hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .or_else(|| pod.at("/metadata/name").and_then(Value::as_str))
        .unwrap_or("");
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The default: every `ports[]` entry of the container listens (protocol defaults to TCP) and
/// answers `hostname`, both as a greeting and over HTTP, since nothing more is known.
pub fn declared_listeners(container: &Value, hostname: &str) -> Vec<Listener> {
    let ports = container.get("ports").and_then(Value::as_array);
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p
                .get("containerPort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())?;
            let transport = Transport::from_k8s(p.get("protocol"))?;
            Some(Listener::any(transport, port, hostname))
        })
        .collect()
}

/// Reads an agnhost container's command line. `None`: not agnhost, or a sub-command this model
/// does not know (the caller decides). `Some(Err(message))`: the real binary would exit at
/// start-up with that message. `Some(Ok(listeners))`: what it serves.
///
/// From `test/images/agnhost` (read, not copied): `serve-hostname` has `--tcp`, `--udp` (default
/// false), `--http` (default true), `--close`, `--port` (default 9376) and exits with "Can't
/// server TCP/UDP mode and HTTP mode at the same time" when HTTP is combined with TCP or UDP; its
/// TCP mode writes the hostname and closes, UDP answers every datagram with it. `netexec` serves
/// HTTP on `--http-port` (default 8080) and UDP on `--udp-port` (default 8081, -1 disables).
pub fn agnhost_listeners(
    container: &Value,
    hostname: &str,
) -> Option<Result<Vec<Listener>, String>> {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let strings = |k: &str| -> Vec<String> {
        container
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = strings("command");
    let mut argv = command.clone();
    argv.extend(strings("args"));
    let is_agnhost =
        image.contains("agnhost") && (command.is_empty() || command[0].ends_with("agnhost"));
    if !is_agnhost {
        return None;
    }
    let start = usize::from(!command.is_empty());
    let sub = argv.get(start)?.as_str();
    let flags = &argv[start + 1..];
    match sub {
        "serve-hostname" => Some(serve_hostname(flags, hostname)),
        "netexec" => Some(netexec(flags, hostname)),
        _ => None,
    }
}

/// Splits pflag-style `--name=value` / `--name value` arguments.
fn parse_flags(flags: &[String], bools: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        let f = &flags[i];
        let Some(body) = f.strip_prefix("--") else {
            return Err(format!("Error: unknown command or argument {f:?}"));
        };
        if let Some((k, v)) = body.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        } else if bools.contains(&body) {
            // A bare boolean flag means true; pflag never takes its value from the next word.
            out.push((body.to_string(), "true".to_string()));
        } else if let Some(v) = flags.get(i + 1) {
            out.push((body.to_string(), v.clone()));
            i += 1;
        } else {
            return Err(format!("Error: flag needs an argument: --{body}"));
        }
        i += 1;
    }
    Ok(out)
}

fn parse_bool(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("Error: invalid argument {v:?} for \"--{k}\" flag")),
    }
}

fn parse_port(k: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>()
        .map_err(|_| format!("Error: invalid argument {v:?} for \"--{k}\" flag"))
}

fn serve_hostname(flags: &[String], hostname: &str) -> Result<Vec<Listener>, String> {
    let (mut tcp, mut udp, mut http, mut port) = (false, false, true, 9376i64);
    for (k, v) in parse_flags(flags, &["tcp", "udp", "http", "close"])? {
        match k.as_str() {
            "tcp" => tcp = parse_bool(&k, &v)?,
            "udp" => udp = parse_bool(&k, &v)?,
            "http" => http = parse_bool(&k, &v)?,
            "close" => {
                parse_bool(&k, &v)?;
            }
            "port" => port = parse_port(&k, &v)?,
            other => return Err(format!("Error: unknown flag: --{other}")),
        }
    }
    if http && (tcp || udp) {
        return Err("Can't server TCP/UDP mode and HTTP mode at the same time".into());
    }
    let port =
        u16::try_from(port).map_err(|_| format!("listen tcp: address {port}: invalid port"))?;
    let mut out = Vec::new();
    if tcp {
        out.push(Listener::tcp_greeting(port, hostname));
    }
    if udp {
        out.push(Listener::udp(port, hostname));
    }
    if http {
        out.push(Listener::http(port, hostname));
    }
    Ok(out)
}

fn netexec(flags: &[String], hostname: &str) -> Result<Vec<Listener>, String> {
    let (mut http_port, mut udp_port, mut tls) = (8080i64, 8081i64, false);
    for (k, v) in parse_flags(flags, &[])? {
        match k.as_str() {
            "http-port" => http_port = parse_port(&k, &v)?,
            "udp-port" => udp_port = parse_port(&k, &v)?,
            "tls-cert-file" => tls = !v.is_empty(),
            // netexec has many more flags (delays, SCTP, addresses); none changes what answers.
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(p) = u16::try_from(http_port) {
        let speaks = if tls { Speaks::Tls } else { Speaks::Http };
        out.push(Listener {
            transport: Transport::Tcp,
            port: p,
            speaks,
            reply: Reply::Netexec(hostname.to_string()),
        });
    }
    if udp_port >= 0
        && let Ok(p) = u16::try_from(udp_port)
    {
        out.push(Listener {
            transport: Transport::Udp,
            port: p,
            speaks: Speaks::Raw,
            reply: Reply::Netexec(hostname.to_string()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const AGN: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";

    #[test]
    fn serve_hostname_modes() {
        let c = json!({"image": AGN, "args": ["serve-hostname", "--port=8080"]});
        assert_eq!(
            agnhost_listeners(&c, "h"),
            Some(Ok(vec![Listener::http(8080, "h")]))
        );
        let c = json!({"image": AGN, "args": ["serve-hostname", "--http=false", "--udp", "--tcp", "--port", "81"]});
        assert_eq!(
            agnhost_listeners(&c, "h"),
            Some(Ok(vec![
                Listener::tcp_greeting(81, "h"),
                Listener::udp(81, "h")
            ]))
        );
        let c = json!({"image": AGN, "command": ["/agnhost"], "args": ["serve-hostname"]});
        assert_eq!(
            agnhost_listeners(&c, "h"),
            Some(Ok(vec![Listener::http(9376, "h")]))
        );
    }

    #[test]
    fn serve_hostname_refuses_http_with_udp() {
        // The exact command line calico_nettest's server DaemonSet used when this was written.
        let c = json!({"image": AGN, "args": ["serve-hostname", "--http=true", "--udp=true", "--port=9376"]});
        let err = agnhost_listeners(&c, "h").unwrap().unwrap_err();
        assert!(err.contains("HTTP mode at the same time"), "{err}");
        assert_eq!(Agnhost.listeners(&json!({}), &c, "h"), Some(vec![]));
        let c = json!({"image": AGN, "args": ["serve-hostname", "--bogus"]});
        assert!(agnhost_listeners(&c, "h").unwrap().is_err());
    }

    #[test]
    fn netexec_defaults_and_disabled_udp() {
        let c = json!({"image": AGN, "args": ["netexec"]});
        let l = agnhost_listeners(&c, "h").unwrap().unwrap();
        assert_eq!(
            l.iter().map(|x| (x.transport, x.port)).collect::<Vec<_>>(),
            [(Transport::Tcp, 8080), (Transport::Udp, 8081)]
        );
        let c = json!({"image": AGN, "args": ["netexec", "--http-port=9000", "--udp-port=-1"]});
        let l = agnhost_listeners(&c, "h").unwrap().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].reply, Reply::Netexec("h".into()));
    }

    #[test]
    fn non_agnhost_is_none_and_declared_ports_default() {
        let c = json!({"image": AGN, "command": ["bash", "-c", "probe.sh"]});
        assert_eq!(agnhost_listeners(&c, "h"), None);
        let c = json!({"image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]});
        assert_eq!(agnhost_listeners(&c, "h"), None);
        assert_eq!(
            declared_listeners(&c, "h"),
            vec![
                Listener::any(Transport::Tcp, 80, "h"),
                Listener::any(Transport::Udp, 53, "h")
            ]
        );
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            pod_hostname(&json!({"metadata": {"name": "web-0"}})),
            "web-0"
        );
        assert_eq!(
            pod_hostname(&json!({"metadata": {"name": "web-0"}, "spec": {"hostname": "db"}})),
            "db"
        );
        assert_eq!(
            pod_hostname(
                &json!({"metadata": {"name": "x"}, "spec": {"hostNetwork": true, "nodeName": "w1"}})
            ),
            "w1"
        );
        assert_eq!(
            node_hostname(
                &json!({"metadata": {"name": "ip-10-0-0-11.ec2.internal", "labels": {"kubernetes.io/hostname": "ip-10-0-0-11"}}})
            ),
            "ip-10-0-0-11"
        );
        assert_eq!(
            node_hostname(
                &json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "Hostname", "address": "host-1"}]}})
            ),
            "host-1"
        );
        assert_eq!(node_hostname(&json!({"metadata": {"name": "n1"}})), "n1");
        let long = "a".repeat(70);
        assert_eq!(pod_hostname(&json!({"metadata": {"name": long}})).len(), 63);
    }
}
