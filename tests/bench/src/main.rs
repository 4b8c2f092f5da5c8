//! `make bench`: the modules measured side by side with what users would otherwise run
//! (`kubernetes.core` through Ansible, `kubectl`), against kubesim, in one run; the report is
//! `docs/benchmarks.md` (issue 7).
//!
//! ```text
//! bench [--out FILE] [--quick | --full] [--only ROW[,ROW..]] [--reps N]
//!       [--modules DIR] [--venv DIR] [--kubectl PATH]
//! ```
//! Rows: `ansible`, `rollout`, `backup`, `nettest`, `binary`, `kubesim`. Every child process is
//! measured with `/usr/bin/time`; each figure is the median of several runs with the range.

mod measure;
mod rows;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every row, in the document's order, with its issue number.
pub const ROWS: &[(&str, &str)] = &[
    ("ansible", "1. Per-task cost through Ansible"),
    ("rollout", "2. Waiting for a rollout"),
    ("backup", "3. Backup"),
    ("nettest", "4. Network test at scale"),
    ("binary", "5. Binary size and start-up"),
    ("kubesim", "6. kubesim itself"),
];

/// How a run is configured.
pub struct Ctx {
    /// The repository root.
    pub repo: PathBuf,
    /// Small sizes, one repetition: a smoke test of the harness, not figures to publish.
    pub quick: bool,
    /// The largest sizes too (300,000-object backup).
    pub full: bool,
    /// Repetitions of each measured command.
    pub reps: usize,
    /// Where the module binaries are (the collection's `ansible/bin` after `make build`, each
    /// as `<module>_<architecture>`).
    pub modules: PathBuf,
    /// The bench virtualenv (ansible, kubernetes).
    pub venv: PathBuf,
    /// kubectl.
    pub kubectl: Option<PathBuf>,
    /// The flags that reproduce this run's sizes (`--quick`, `--full` or nothing).
    pub size_flag: &'static str,
}

impl Ctx {
    /// A module binary for this machine, which must exist.
    pub fn module(&self, name: &str) -> Result<PathBuf> {
        let p = self
            .modules
            .join(format!("{name}_{}", std::env::consts::ARCH));
        if !p.is_file() {
            bail!("{} is missing: run `make build`", p.display());
        }
        Ok(p)
    }

    /// A sibling binary of this one (built with `cargo build -p k8s-calico-bench --bins`).
    pub fn sibling(&self, name: &str) -> Result<PathBuf> {
        let me = std::env::current_exe()?;
        let p = me.with_file_name(name);
        if !p.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release -p k8s-calico-bench --bins` (make bench does)",
                p.display()
            );
        }
        Ok(p)
    }

    /// The command that reproduces one row.
    pub fn reproduce(&self, row: &str) -> String {
        let flag = if self.size_flag.is_empty() {
            String::new()
        } else {
            format!(" {}", self.size_flag)
        };
        format!("cargo run --release --locked -p k8s-calico-bench -- --only {row}{flag}")
    }
}

fn usage() -> &'static str {
    "usage: bench [--out FILE] [--quick | --full] [--only ROW[,ROW..]] [--reps N] [--modules DIR] [--venv DIR] [--kubectl PATH]\nrows: ansible, rollout, backup, nettest, binary, kubesim"
}

fn main() -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let mut out: Option<PathBuf> = None;
    let mut quick = false;
    let mut full = false;
    let mut only: Option<Vec<String>> = None;
    let mut reps: Option<usize> = None;
    let mut modules = repo.join("ansible/bin");
    let mut venv = repo.join(".venv-bench");
    let mut kubectl = measure::which("kubectl");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--quick" => quick = true,
            "--full" => full = true,
            "--only" => {
                only = Some(value()?.split(',').map(|s| s.trim().to_string()).collect());
            }
            "--reps" => reps = Some(value()?.parse().context("--reps")?),
            "--modules" => modules = PathBuf::from(value()?),
            "--venv" => venv = PathBuf::from(value()?),
            "--kubectl" => kubectl = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    if quick && full {
        bail!("--quick and --full exclude each other");
    }
    if let Some(list) = &only {
        for r in list {
            if !ROWS.iter().any(|(k, _)| k == r) {
                bail!("unknown row {r}\n{}", usage());
            }
        }
    }
    if !Path::new(measure::GNU_TIME).is_file() {
        bail!(
            "{} is missing: install the apt package `time` (make bench does)",
            measure::GNU_TIME
        );
    }
    // The children run in scratch directories: relative paths would point nowhere there.
    let modules = std::path::absolute(&modules)?;
    let venv = std::path::absolute(&venv)?;
    let ctx = Ctx {
        repo: repo.clone(),
        quick,
        full,
        reps: reps.unwrap_or(if quick { 1 } else { 5 }).max(1),
        modules,
        venv,
        kubectl,
        size_flag: if quick {
            "--quick"
        } else if full {
            "--full"
        } else {
            ""
        },
    };
    // kube-rs in the harness (rows that read through it) and kubesim both use ring.
    k8s_calico::cluster::install_crypto_provider();

    let mut doc = rows::header(&ctx, only.as_deref())?;
    let mut sections = String::new();
    let mut verdicts = Vec::new();
    for (key, title) in ROWS {
        if let Some(list) = &only
            && !list.iter().any(|r| r == key)
        {
            continue;
        }
        eprintln!("bench: {title} ...");
        let body = match rows::run(key, &ctx) {
            Ok(r) => {
                verdicts.extend(r.verdicts);
                r.body
            }
            Err(e) => {
                verdicts.push(rows::Verdict {
                    what: title.to_string(),
                    target: String::new(),
                    measured: String::new(),
                    status: "not measured (see the row)".into(),
                });
                format!("**Not measured**: {e:#}\n")
            }
        };
        let section = format!(
            "## {title}\n\n{body}\nReproduce: `{}`\n\n",
            ctx.reproduce(key)
        );
        eprint!("{section}");
        sections.push_str(&section);
        // A full run takes the better part of an hour: the document is rewritten after every
        // row, so a run stopped midway keeps what it measured and says where it stopped.
        if let Some(p) = &out {
            let partial = format!(
                "{doc}**Incomplete**: the run had finished up to \"{title}\" when this was \
                 written; the rows after it were not measured.\n\n{}{sections}",
                rows::summary(&verdicts)
            );
            write_doc(p, &partial)?;
        }
    }
    doc.push_str(&rows::summary(&verdicts));
    doc.push_str(&sections);
    match out {
        Some(p) => {
            write_doc(&p, &doc)?;
            eprintln!("bench: wrote {}", p.display());
        }
        None => print!("{doc}"),
    }
    Ok(())
}

/// Replaces the document atomically: a reader never sees half of it.
fn write_doc(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// Runs a command and returns its trimmed standard output, or `None` when it cannot run.
pub fn capture(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
