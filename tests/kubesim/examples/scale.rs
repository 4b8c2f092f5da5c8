//! Scale figures for kubesim (issue item 9): 1,000 nodes and 100,000 objects in memory, a
//! paginated list of the 100,000 over HTTP, and watch fan-out to 50 watchers.
//!
//! `cargo run --release -p kubesim --example scale` prints one line per measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kubesim::{Server, ServerConfig, WriteOptions};
use serde_json::json;

fn get(addr: &str, token: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers")
        + 4;
    buf.split_off(at)
}

fn main() {
    let handle = Server::start(ServerConfig {
        tls: false,
        builtin_controllers: false,
        ..Default::default()
    })
    .expect("server");
    let c = handle.cluster();
    let opts = WriteOptions::manager("scale");
    let addr = handle.url().trim_start_matches("http://").to_string();
    let token = handle.token().to_string();

    let t = Instant::now();
    for i in 0..1_000 {
        c.create(
            "v1",
            "nodes",
            None,
            json!({"metadata": {"name": format!("node-{i:04}"),
            "labels": {"kubernetes.io/hostname": format!("node-{i:04}")}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            &opts,
        )
        .expect("node");
    }
    println!("create 1,000 nodes in-process: {:?}", t.elapsed());

    let t = Instant::now();
    for i in 0..100_000 {
        c.create(
            "v1",
            "configmaps",
            Some("default"),
            json!({"metadata": {"name": format!("cm-{i:06}"),
            "labels": {"shard": (i % 10).to_string()}}, "data": {"key": "value"}}),
            &opts,
        )
        .expect("configmap");
    }
    println!("create 100,000 configmaps in-process: {:?}", t.elapsed());

    let t = Instant::now();
    let mut token_param = String::new();
    let mut total = 0usize;
    let mut pages = 0;
    loop {
        let body = get(
            &addr,
            &token,
            &format!("/api/v1/namespaces/default/configmaps?limit=500{token_param}"),
        );
        let body = dechunk(&body);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
        total += v["items"].as_array().map_or(0, Vec::len);
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => token_param = format!("&continue={c}"),
            _ => break,
        }
    }
    println!(
        "paginated list of {total} configmaps over HTTP ({pages} pages of 500): {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let body = dechunk(&get(
        &addr,
        &token,
        "/api/v1/configmaps?labelSelector=shard%3D3",
    ));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
    println!(
        "label-selected list ({} of 100,000) over HTTP: {:?}",
        v["items"].as_array().map_or(0, Vec::len),
        t.elapsed()
    );

    let rv = c.current_resource_version();
    let writes = 1_000;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        let addr = addr.clone();
        let token = token.clone();
        watchers.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(120))).ok();
            write!(s, "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").expect("write");
            let mut seen = 0;
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"type\":\"MODIFIED\"") {
                    seen += 1;
                    if seen == writes {
                        break;
                    }
                }
            }
            seen
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for i in 0..writes {
        c.patch(
            "v1",
            "configmaps",
            Some("default"),
            &format!("cm-{i:06}"),
            kubesim::PatchType::Merge,
            br#"{"data":{"key":"changed"}}"#,
            None,
            &opts,
        )
        .expect("patch");
    }
    let delivered: usize = watchers
        .into_iter()
        .map(|w| w.join().expect("watcher"))
        .sum();
    println!(
        "{writes} writes fanned out to 50 watchers ({delivered} events delivered): {:?}",
        t.elapsed()
    );
}

/// Removes HTTP/1.1 chunked framing.
fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut rest = b;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if out.is_empty() { b.to_vec() } else { out };
        };
        let Ok(size) =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("x").trim(), 16)
        else {
            return if out.is_empty() { b.to_vec() } else { out };
        };
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
}
