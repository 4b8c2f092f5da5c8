//! The real probe script (`src/nettest/probe.sh`), run by bash on this machine against real
//! listeners on loopback: the script is known to work, not only its simulation in kubesim.
//!
//! It uses the real curl, OpenBSD nc and nslookup the agnhost image ships (`make test` installs
//! them); only `agnhost connect` is a stand-in (`tests/fixtures/agnhost-standin`), because the
//! image's binary cannot run here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/nettest/probe.sh");
const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/agnhost-standin"
);

fn tools_present() -> bool {
    let missing: Vec<&str> = ["curl", "nc", "nslookup", "python3"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") {
        panic!(
            "the probe test needs {}: run `make test-tools`",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIPPED: the probe script test needs {} (run `make test-tools`)",
        missing.join(", ")
    );
    false
}

/// A TCP server answering every connection with `name`, like `agnhost serve-hostname --tcp`.
fn tcp_hostname(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(name.as_bytes());
        }
    });
    port
}

/// An HTTP server answering every request (GET, or POST of any size) with `name`.
fn http_hostname(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let mut s = s;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    port
}

/// A UDP server replying `name` to every datagram, like `agnhost serve-hostname --udp`.
fn udp_hostname(name: &'static str) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), from);
        }
    });
    port
}

/// A DNS server answering A queries for `known` with 127.0.0.1 and NXDOMAIN otherwise.
fn dns_server(known: &'static [&'static str]) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // Question name: length-prefixed labels from offset 12.
            let (mut i, mut labels) = (12usize, Vec::new());
            while i < n && buf[i] != 0 {
                let l = buf[i] as usize;
                labels.push(String::from_utf8_lossy(&buf[i + 1..(i + 1 + l).min(n)]).to_string());
                i += 1 + l;
            }
            let qend = (i + 5).min(n);
            let name = labels.join(".");
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let found = known.contains(&name.as_str());
            let mut resp = Vec::new();
            resp.extend_from_slice(&buf[0..2]);
            resp.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }]);
            resp.extend_from_slice(&[0, 1, 0, u8::from(found && qtype == 1), 0, 0, 0, 0]);
            resp.extend_from_slice(&buf[12..qend]);
            if found && qtype == 1 {
                resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]);
            }
            let _ = s.send_to(&resp, from);
        }
    });
    port
}

fn closed_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn closed_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

struct Run {
    lines: Vec<Value>,
    summary: Value,
    status: i32,
}

fn run_probe(dir: &Path, targets: &str, dns_port: u16) -> Run {
    let targets_path = dir.join("targets");
    std::fs::write(&targets_path, targets).unwrap();
    let summary_path: PathBuf = dir.join("termination-log");
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("PROBE_TARGETS", &targets_path)
        .env("PROBE_SUMMARY", &summary_path)
        .env("PROBE_AGNHOST", STANDIN)
        .env("PROBE_DNS_SERVER", "127.0.0.1")
        .env("PROBE_DNS_PORT", dns_port.to_string())
        .env("PROBE_TIMEOUT", "3")
        .env("NODE_NAME", "test-node")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "not JSON ({e}): {l}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    let summary = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Run {
        lines,
        summary,
        status: out.status.code().unwrap_or(-1),
    }
}

#[test]
fn the_probe_script_classifies_real_connections() {
    if !tools_present() {
        return;
    }
    let tcp = tcp_hostname("server-a");
    let http = http_hostname("server-a");
    let udp = udp_hostname("server-a");
    let dns = dns_server(&["nt-server.calico-nettest.svc.cluster.local"]);
    let refused_tcp = closed_tcp_port();
    let refused_udp = closed_udp_port();
    let targets = format!(
        "# id proto host port expect size\n\
         tcp-ok\ttcp\t127.0.0.1\t{tcp}\tserver-*\t-\n\
         tcp-wrong\ttcp\t127.0.0.1\t{tcp}\tserver-b\t-\n\
         tcp-refused\ttcp\t127.0.0.1\t{refused_tcp}\t-\t-\n\
         http-ok\thttp\t127.0.0.1\t{http}\tserver-a\t-\n\
         http-wrong\thttp\t127.0.0.1\t{http}\tserver-b\t-\n\
         http-mtu\thttp\t127.0.0.1\t{http}\tserver-a\t9000\n\
         http-refused\thttp\t127.0.0.1\t{refused_tcp}\t-\t-\n\
         http-dns\thttp\tno-such-host.invalid\t80\t-\t-\n\
         udp-ok\tudp\t127.0.0.1\t{udp}\tserver-a\t-\n\
         udp-mtu\tudp\t127.0.0.1\t{udp}\t-\t1400\n\
         udp-refused\tudp\t127.0.0.1\t{refused_udp}\t-\t-\n\
         dns-ok\tdns\tnt-server.calico-nettest.svc.cluster.local\t-\t127.0.0.1\t-\n\
         dns-missing\tdns\tno-such-service.calico-nettest.svc.cluster.local\t-\t-\t-\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = run_probe(dir.path(), &targets, dns);
    assert_eq!(run.status, 0);
    let verdicts: Vec<(String, String)> = run
        .lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("tcp-ok", "ok"),
        ("tcp-wrong", "wrong_backend"),
        ("tcp-refused", "refused"),
        ("http-ok", "ok"),
        ("http-wrong", "wrong_backend"),
        ("http-mtu", "ok"),
        ("http-refused", "refused"),
        ("http-dns", "dns"),
        ("udp-ok", "ok"),
        ("udp-mtu", "ok"),
        ("udp-refused", "refused"),
        ("dns-ok", "ok"),
        ("dns-missing", "dns"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(verdicts, expect, "log lines: {:#?}", run.lines);
    assert_eq!(run.lines[0]["answer"], "server-a");
    assert_eq!(run.summary["node"], "test-node");
    assert_eq!(run.summary["total"], 13);
    assert_eq!(run.summary["ok"], 6);
    assert_eq!(run.summary["failed"].as_array().unwrap().len(), 7);
    assert!(
        std::fs::read(dir.path().join("termination-log"))
            .unwrap()
            .len()
            <= 4096
    );
}

#[test]
fn the_summary_stays_under_four_kib() {
    if !tools_present() {
        return;
    }
    let refused = closed_tcp_port();
    // 80 failures with 60-character ids list well over 4 KiB; each probe starts a process, so
    // more would only make the test slower.
    let targets: String = (0..80)
        .map(|i| {
            format!(
                "probe-with-a-deliberately-long-identifier-for-the-summary-{i:04}\ttcp\t127.0.0.1\t{refused}\t-\t-\n"
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let run = run_probe(dir.path(), &targets, 9);
    assert_eq!(run.status, 0);
    assert_eq!(run.lines.len(), 80, "every probe is in the log");
    assert_eq!(run.summary["truncated"], true);
    assert_eq!(run.summary["total"], 80);
    assert!(
        std::fs::read(dir.path().join("termination-log"))
            .unwrap()
            .len()
            <= 4096
    );
}

#[test]
fn a_broken_setup_exits_non_zero() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("PROBE_TARGETS", dir.path().join("missing"))
        .env("PROBE_SUMMARY", dir.path().join("summary"))
        .env("PROBE_AGNHOST", STANDIN)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("probe_error"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary")).unwrap())
            .unwrap();
    assert!(summary["error"].as_str().unwrap().contains("not readable"));
}
