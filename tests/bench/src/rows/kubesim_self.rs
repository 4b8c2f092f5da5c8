//! Row 6: kubesim's own speed, so that a slow simulator never hides or fakes a result. The
//! approach of `tests/kubesim/examples/scale.rs` (raw HTTP/1.1, no client library in the way),
//! with repetitions and the 1,000-node cluster started as the other rows start theirs.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kubesim::{Server, ServerConfig, WriteOptions};
use serde_json::json;

use super::{RowOutput, Verdict};
use crate::Ctx;
use crate::measure::{Stat, secs};

pub fn run(ctx: &Ctx) -> Result<RowOutput> {
    let (objects, watchers, writes, nodes) = if ctx.quick {
        (10_000, 10, 200, 50)
    } else {
        (100_000, 50, 1_000, 1_000)
    };
    let mut body = String::new();
    let mut verdicts = Vec::new();

    let handle = Server::start(ServerConfig {
        tls: false,
        builtin_controllers: false,
        ..Default::default()
    })?;
    let c = handle.cluster();
    let opts = WriteOptions::manager("bench");
    let addr = handle.url().trim_start_matches("http://").to_string();
    let token = handle.token().to_string();

    let t = Instant::now();
    for i in 0..objects {
        c.create(
            "v1",
            "configmaps",
            Some("default"),
            json!({"metadata": {"name": format!("cm-{i:06}"), "labels": {"shard": (i % 10).to_string()}},
                "data": {"key": "value"}}),
            &opts,
        )
        .map_err(|e| anyhow::anyhow!("configmap {i}: {e}"))?;
    }
    let created = t.elapsed().as_secs_f64();

    let mut lists = Vec::new();
    for _ in 0..ctx.reps {
        let t = Instant::now();
        let (total, _pages) = paginated_list(&addr, &token)?;
        lists.push(t.elapsed().as_secs_f64());
        if total != objects {
            bail!("the paginated list returned {total} of {objects} ConfigMaps");
        }
    }
    let list = Stat::of(&lists);

    let mut fanouts = Vec::new();
    for round in 0..ctx.reps {
        fanouts.push(fan_out(c, &addr, &token, watchers, writes, round)?);
    }
    let fan = Stat::of(&fanouts);
    drop(handle);

    let mut starts = Vec::new();
    let mut start_error = None;
    for _ in 0..ctx.reps.min(3) {
        let t = Instant::now();
        match super::calico_cluster(nodes) {
            Ok(h) => {
                starts.push(t.elapsed().as_secs_f64());
                drop(h);
            }
            Err(e) => {
                start_error = Some(format!("{e:#}"));
                break;
            }
        }
    }

    writeln!(body, "| measurement | time |\n| --- | ---: |")?;
    writeln!(
        body,
        "| create {objects} ConfigMaps in-process (once) | {} |",
        secs(created)
    )?;
    writeln!(
        body,
        "| list {objects} ConfigMaps over HTTP in pages of 500 | {} |",
        list.show(secs)
    )?;
    writeln!(
        body,
        "| {writes} writes fanned out to {watchers} HTTP watchers ({} events) | {} |",
        writes * watchers,
        fan.show(secs)
    )?;
    match &start_error {
        None => writeln!(
            body,
            "| start a {nodes}-node cluster (kubeadm objects, Calico manifest applied, every pod Ready) | {} |",
            Stat::of(&starts).show(secs)
        )?,
        Some(e) => writeln!(
            body,
            "| start a {nodes}-node cluster | not measured: {} |",
            e.replace('|', "\\|").replace('\n', " ")
        )?,
    }
    writeln!(
        body,
        "\nNo target: these bound what the other rows can show. A module's wait can never look \
         faster than kubesim delivers events, and a backup never faster than kubesim lists.\n"
    )?;
    if !ctx.quick {
        writeln!(
            body,
            "Earlier: the full run at 22788fc9 started the 1,000-node cluster in 32.5 s \
             (31.6–33.6 s). perf then put most of the start in the write path: each kubelet \
             status write copied the pod about six times (the status merge, the field manager's \
             copies without managedFields, pod validation masking both specs). Since 7e88f6ad \
             and 342bdc88 a status write moves what the sender left unchanged, the field \
             manager compares in place and skips equal subtrees, and validation returns at once \
             for an unchanged spec.\n"
        )?;
    }
    verdicts.push(Verdict {
        what: format!("6. kubesim: list {objects} / {watchers} watchers / {nodes}-node start"),
        target: "(none: context)".into(),
        measured: format!(
            "{} / {} / {}",
            secs(list.median),
            secs(fan.median),
            if starts.is_empty() {
                "not measured".into()
            } else {
                secs(Stat::of(&starts).median)
            }
        ),
        status: "—".into(),
    });
    Ok(RowOutput { body, verdicts })
}

fn get(addr: &str, token: &str, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP headers")?
        + 4;
    Ok(dechunk(&buf[at..]))
}

fn paginated_list(addr: &str, token: &str) -> Result<(usize, usize)> {
    let mut cont = String::new();
    let mut total = 0;
    let mut pages = 0;
    loop {
        let body = get(
            addr,
            token,
            &format!("/api/v1/namespaces/default/configmaps?limit=500{cont}"),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&body).context("list JSON")?;
        total += v["items"].as_array().map_or(0, Vec::len);
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = format!("&continue={c}"),
            _ => return Ok((total, pages)),
        }
    }
}

/// Seconds from the first of `writes` patches until every watcher has seen all of them.
fn fan_out(
    c: &kubesim::Cluster,
    addr: &str,
    token: &str,
    watchers: usize,
    writes: usize,
    round: usize,
) -> Result<f64> {
    let rv = c.current_resource_version();
    let mut threads = Vec::new();
    for _ in 0..watchers {
        let addr = addr.to_string();
        let token = token.to_string();
        threads.push(std::thread::spawn(move || -> Result<usize> {
            let mut s = TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            write!(s, "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")?;
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
            Ok(seen)
        }));
    }
    // Let every watch be established before the clock starts, as scale.rs does.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let patch = format!(r#"{{"data":{{"key":"round-{round}"}}}}"#);
    for i in 0..writes {
        c.patch(
            "v1",
            "configmaps",
            Some("default"),
            &format!("cm-{i:06}"),
            kubesim::PatchType::Merge,
            patch.as_bytes(),
            None,
            &WriteOptions::manager("bench"),
        )
        .map_err(|e| anyhow::anyhow!("patch: {e}"))?;
    }
    let mut delivered = 0;
    for w in threads {
        delivered += w
            .join()
            .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    }
    let elapsed = t.elapsed().as_secs_f64();
    if delivered != writes * watchers {
        bail!(
            "watch fan-out delivered {delivered} of {} events",
            writes * watchers
        );
    }
    Ok(elapsed)
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
        if size == 0 || rest.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
}
