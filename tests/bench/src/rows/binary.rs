//! Row 5: each module's size as Ansible copies it, and `calico_matrix`'s offline answer time.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{RowOutput, Verdict, under};
use crate::Ctx;
use crate::measure::{self, Stat};

const MODULES: &[&str] = &["calico_matrix", "calico_upgrade", "calico_nettest"];
/// Issue 7: under 8 MB each (MB = 10⁶ bytes, the stricter reading).
const SIZE_LIMIT: f64 = 8e6;
/// Issue 7: under 10 ms to answer offline.
const START_LIMIT: f64 = 0.010;
const STARTS: usize = 50;

pub fn run(ctx: &Ctx) -> Result<RowOutput> {
    let mut body = String::new();
    let mut verdicts = Vec::new();
    writeln!(
        body,
        "Sizes of the binaries in `{}` (what Ansible copies to every host on every task). \
         Target: under 8 MB each (MB = 10⁶ bytes).\n",
        ctx.modules.display()
    )?;
    writeln!(
        body,
        "| module | bytes | MB | stripped |\n| --- | ---: | ---: | --- |"
    )?;
    for m in MODULES {
        let p = ctx.module(m)?;
        let size = std::fs::metadata(&p)?.len() as f64;
        // `file` says "not stripped" when symbols remain; no `file`, no claim.
        let stripped = crate::capture("file", &["-b", &p.to_string_lossy()])
            .map(|f| {
                if f.contains("not stripped") {
                    "no"
                } else if f.contains("stripped") {
                    "yes"
                } else {
                    "?"
                }
            })
            .unwrap_or("? (no `file`)");
        writeln!(
            body,
            "| `{m}` | {size:.0} | {:.2} | {stripped} |",
            size / 1e6
        )?;
        verdicts.push(Verdict {
            what: format!("5. `{m}` size"),
            target: "< 8 MB".into(),
            measured: format!("{:.2} MB", size / 1e6),
            status: under(size, SIZE_LIMIT),
        });
    }

    // The figures the build settings were chosen by; kept here because this document is
    // rewritten on every run and the issue asks for both.
    writeln!(
        body,
        "\nHow the build settings were chosen (measured 2026-12-02 on the same machine, LTO, one \
         codegen unit, stripped, `panic = \"unwind\"` in both): `opt-level = \"s\"` gave \
         `calico_matrix` 6.61 MB, `calico_upgrade` 8.89 MB, `calico_nettest` 8.46 MB; \
         `opt-level = \"z\"` gave 6.23, 8.27 and 7.91 MB with the same offline start-up \
         (3.6 ms best of 60 either way), so the release profile uses \"z\". `panic = \"abort\"` \
         would save more but is not an option: the module protocol turns a panic into a JSON \
         failure.\n\n\
         That left `calico_upgrade` 3.4 % over 8 MB: it alone downloads manifests, and did so \
         through reqwest, a second HTTP client beside kube-rs's hyper stack. The download now \
         goes through the hyper-util client and hyper-rustls connector kube-rs already links \
         (`src/upgrade/download.rs`; proxies from the environment, redirects and timeouts \
         kept), which measured 8.27 -> 7.50 MB for `calico_upgrade`, 7.91 -> 7.63 MB for \
         `calico_nettest` and 6.23 -> 5.94 MB for `calico_matrix` (h2, url and the ICU \
         crates left every binary).\n"
    )?;
    if verdicts.iter().any(|v| v.status != "met") {
        writeln!(
            body,
            "\nA module is over the target again: find what grew with `cargo bloat --release \
             --crates --bin <module>` (or by comparing `cargo tree -e normal` with the last \
             commit under the target) before changing build settings.\n"
        )?;
    }

    // Offline start-up: an args file with kubernetes_version, so the module never reads a
    // cluster. Wall time is taken here around spawn and wait: GNU time has 10 ms resolution.
    let dir = super::scratch()?;
    let args = dir.path().join("args.json");
    std::fs::write(&args, br#"{"kubernetes_version": "1.27"}"#)?;
    let bin = ctx.module("calico_matrix")?;
    let mut cmd = Command::new(&bin);
    cmd.arg(&args)
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG")
        .env("HOME", dir.path());
    // Warm the page cache first: Ansible runs a module right after copying it.
    for _ in 0..3 {
        check(&cmd)?;
    }
    let mut walls = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let t = Instant::now();
        check(&cmd)?;
        walls.push(t.elapsed().as_secs_f64());
    }
    let wall = Stat::of(&walls);
    let rss: Vec<f64> = (0..ctx.reps.min(5))
        .map(|_| measure::timed(&cmd, None).map(|o| o.sample.max_rss_kb as f64))
        .collect::<Result<_>>()?;
    let rss = Stat::of(&rss);
    writeln!(
        body,
        "\n`calico_matrix` answering offline (`{{\"kubernetes_version\": \"1.27\"}}` in its args \
         file, as Ansible passes it), {STARTS} runs after 3 warm-up runs, wall time around \
         spawn and wait: **{}**; peak RSS {}. Target: under 10 ms.\n",
        wall.show(measure::secs),
        rss.show(measure::mb_from_kb)
    )?;
    verdicts.push(Verdict {
        what: "5. `calico_matrix` offline start-up".into(),
        target: "< 10 ms".into(),
        measured: measure::secs(wall.median),
        status: under(wall.median, START_LIMIT),
    });
    writeln!(
        body,
        "Build settings (`[profile.release]` of the root `Cargo.toml`, used by `make build`):\n\n```toml\n{}\n```\n",
        release_profile(ctx)?
    )?;
    writeln!(
        body,
        "Measured: `{} {}` (×{STARTS}).\n",
        bin.display(),
        args.file_name().unwrap_or_default().to_string_lossy()
    )?;
    Ok(RowOutput { body, verdicts })
}

/// Runs the module and checks that it answered successfully.
fn check(cmd: &Command) -> Result<()> {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().context("running calico_matrix")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "calico_matrix printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    if !out.status.success() || v["failed"] == true {
        bail!("calico_matrix failed: {v}");
    }
    Ok(())
}

/// The `[profile.release]` section as written, comments included.
fn release_profile(ctx: &Ctx) -> Result<String> {
    let text = std::fs::read_to_string(ctx.repo.join("Cargo.toml"))?;
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line.trim() == "[profile.release]";
        }
        if inside {
            out.push(line);
        }
    }
    if out.is_empty() {
        bail!("no [profile.release] in Cargo.toml");
    }
    Ok(out.join("\n").trim_end().to_string())
}
