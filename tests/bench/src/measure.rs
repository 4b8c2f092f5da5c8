//! Measuring child processes with GNU time, and summarising repeated measurements.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// GNU time, the tool a user would reach for: user and system CPU and peak RSS come from it.
pub const GNU_TIME: &str = "/usr/bin/time";

/// One measured run of a child process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Wall-clock seconds, taken by the harness around spawn and wait (GNU time's `%e` has
    /// only 10 ms resolution, too coarse for module start-up).
    pub wall: f64,
    /// User CPU seconds (GNU time `%U`), the child and every descendant it waited for.
    pub user: f64,
    /// System CPU seconds (`%S`).
    pub sys: f64,
    /// Peak resident set size in KiB (`%M`): the largest single process of the tree.
    pub max_rss_kb: u64,
}

impl Sample {
    /// User plus system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// What a measured run printed.
pub struct Outcome {
    /// The measurement.
    pub sample: Sample,
    /// Standard output (empty when it went to a file).
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` under `/usr/bin/time -f "%U %S %M"`, its standard output to `stdout_to` when
/// given. Fails when the command fails, showing its output: a failed run is never a figure.
pub fn timed(cmd: &Command, stdout_to: Option<&Path>) -> Result<Outcome> {
    let (outcome, status) = timed_status(cmd, stdout_to)?;
    if !status.success() {
        bail!(
            "{} failed ({status}):\n{}\n{}",
            show(cmd),
            tail(&outcome.stdout),
            tail(&outcome.stderr)
        );
    }
    Ok(outcome)
}

/// Like [`timed`], but a command that exits non-zero is measured too, for callers that judge
/// its output themselves (a network test that ran every probe and found a failure still cost
/// what it cost).
pub fn timed_status(
    cmd: &Command,
    stdout_to: Option<&Path>,
) -> Result<(Outcome, std::process::ExitStatus)> {
    let report = tempfile::NamedTempFile::new()?;
    let mut wrapped = Command::new(GNU_TIME);
    wrapped
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.stdin(Stdio::null());
    match stdout_to {
        Some(p) => {
            wrapped.stdout(std::fs::File::create(p).with_context(|| p.display().to_string())?);
        }
        None => {
            wrapped.stdout(Stdio::piped());
        }
    }
    wrapped.stderr(Stdio::piped());
    let start = Instant::now();
    let out = wrapped
        .spawn()
        .with_context(|| format!("running {GNU_TIME} (apt package `time`)"))?
        .wait_with_output()?;
    let wall = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(report.path())?;
    // GNU time writes its line last; anything before it would be the child's own complaints.
    let line = text.lines().last().unwrap_or("");
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 3 {
        bail!(
            "unexpected {GNU_TIME} output {text:?} from {}:\n{}",
            show(cmd),
            tail(&out.stderr)
        );
    }
    let outcome = Outcome {
        sample: Sample {
            wall,
            user: f[0].parse()?,
            sys: f[1].parse()?,
            max_rss_kb: f[2].parse()?,
        },
        stdout: out.stdout,
        stderr: out.stderr,
    };
    Ok((outcome, out.status))
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A command line as a user would type it (environment assignments first).
pub fn show(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        parts.push(quote(&a.to_string_lossy()));
    }
    parts.join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Median, minimum and maximum of repeated measurements.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Stat {
    /// Summarises `values` (at least one).
    pub fn of(values: &[f64]) -> Stat {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stat {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `median (min–max)` with `f` formatting each value.
    pub fn show(&self, f: impl Fn(f64) -> String) -> String {
        let (median, min, max) = (f(self.median), f(self.min), f(self.max));
        // A range that prints as one value says nothing.
        if min == max {
            median
        } else {
            format!("{median} ({min}–{max})")
        }
    }
}

/// Seconds with a unit that keeps three significant figures readable.
pub fn secs(s: f64) -> String {
    if s.abs() < 0.01 {
        format!("{:.2} ms", s * 1e3)
    } else if s.abs() < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// KiB as MB (10⁶ bytes).
pub fn mb_from_kb(kb: f64) -> String {
    format!("{:.1} MB", kb * 1024.0 / 1e6)
}

/// A ratio as `4.2×`.
pub fn ratio(r: f64) -> String {
    format!("{r:.1}×")
}

/// Finds a tool on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}
