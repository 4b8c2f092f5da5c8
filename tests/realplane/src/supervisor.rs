//! The plane behind `make cluster-up` and `make cluster-down`: `up` starts a detached
//! supervisor process (`realplane run`) that owns a [`RealPlane`] until it is told to stop;
//! `down` tells it and waits until no process of the plane is left.
//!
//! The state directory (`.cluster/` by default) holds `kubeconfig` (the admin kubeconfig),
//! `supervisor.pid`, `pids` (every component), `ready` once the nodes are Ready, the
//! supervisor's log and the plane's own files under `plane/`.

use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::plane::{self, Options, RealPlane};

/// Why `up`, `run` or `down` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plane failed.
    #[error(transparent)]
    Plane(#[from] plane::Error),
    /// A state file could not be read or written, or the supervisor not started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A plane is already running from this directory.
    #[error(
        "a plane is already running from {dir} (supervisor pid {pid}); run `make cluster-down` first"
    )]
    AlreadyRunning {
        /// The state directory.
        dir: PathBuf,
        /// The supervisor.
        pid: i32,
    },
    /// The supervisor exited before the plane was ready.
    #[error("the plane did not start; the end of {log}:\n{tail}")]
    StartFailed {
        /// The supervisor's log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Processes were still there after stopping.
    #[error("processes of the plane were still running and were killed: {0:?}")]
    Leftovers(Vec<i32>),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The files of a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir` (made absolute: process command lines name it).
    pub fn new(dir: &Path) -> Self {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self { dir }
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The admin kubeconfig `up` writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.file("kubeconfig")
    }

    fn read_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.file(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    fn component_pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.file("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// Whether `pid` is a live process of this directory's plane: its command line names the
    /// directory (so a recycled pid of another program is never signalled).
    fn ours(&self, pid: i32) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = self.dir.display().to_string();
        alive(pid) && String::from_utf8_lossy(&cmdline).contains(needle.as_str())
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is as good as gone: it holds no resources and its parent reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid read from our own state file; at worst ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Starts a detached supervisor (`exe run ...`) and waits until its plane is ready.
pub fn up(exe: &Path, state: &StateDir, options: &Options) -> Result<PathBuf, Error> {
    if let Some(pid) = state.read_pid("supervisor.pid").filter(|p| state.ours(*p)) {
        return Err(Error::AlreadyRunning {
            dir: state.dir.clone(),
            pid,
        });
    }
    if state.dir.exists() {
        std::fs::remove_dir_all(&state.dir)
            .map_err(io(format!("clearing {}", state.dir.display())))?;
    }
    std::fs::create_dir_all(&state.dir).map_err(io(format!("creating {}", state.dir.display())))?;
    let log_path = state.file("supervisor.log");
    let log = std::fs::File::create(&log_path).map_err(io("creating the supervisor log"))?;
    let err = log.try_clone().map_err(io("opening the supervisor log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--dir")
        .arg(&state.dir)
        .args(["--nodes", &options.nodes.to_string()])
        .args([
            "--control-plane-nodes",
            &options.control_plane_nodes.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    if let Some(p) = options.apiserver_port {
        cmd.args(["--port", &p.to_string()]);
    }
    // SAFETY: setsid(2) in the forked child before exec: the supervisor outlives `make`.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(io(format!("starting {}", exe.display())))?;
    let deadline = Instant::now() + options.timeout + Duration::from_secs(10);
    loop {
        if state.file("ready").exists() {
            return Ok(state.kubeconfig());
        }
        let exited = child
            .try_wait()
            .map_err(io("watching the supervisor"))?
            .is_some();
        if exited || Instant::now() > deadline {
            if !exited {
                let _ = child.kill();
            }
            return Err(Error::StartFailed {
                tail: crate::process::tail(&log_path, 40),
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The supervisor: starts the plane, records it, and keeps it until SIGTERM or SIGINT, or
/// until a component exits (then it stops the rest and fails).
pub fn run(state: &StateDir, options: Options) -> Result<(), Error> {
    let write = |name: &str, text: &str| {
        let tmp = state.file(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, state.file(name)))
            .map_err(io(format!("writing {name}")))
    };
    write("supervisor.pid", &std::process::id().to_string())?;
    let mut plane = RealPlane::start(Options {
        dir: Some(state.file("plane")),
        ..options
    })?;
    let pids: String = plane
        .pids()
        .iter()
        .map(|(n, p)| format!("{n} {p}\n"))
        .collect();
    write("pids", &pids)?;
    let kubeconfig =
        std::fs::read_to_string(plane.kubeconfig()).map_err(io("reading the admin kubeconfig"))?;
    crate::pki::write_file(&state.kubeconfig(), &kubeconfig, true)
        .map_err(io("writing the kubeconfig"))?;
    write("ready", &format!("{}\n", plane.server()))?;
    println!(
        "realplane: {} ready in {:.1} s with {} nodes",
        plane.server(),
        plane.started_in().as_secs_f64(),
        plane.nodes().len()
    );
    let _ = std::io::stdout().flush();

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the signal runtime"))?;
    let outcome = signals.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(io("handling SIGTERM"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io("handling SIGINT"))?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = plane.check_running() {
                        return Err(Error::Plane(e));
                    }
                }
            }
        }
    });
    plane.stop();
    let _ = std::fs::remove_file(state.file("ready"));
    println!("realplane: stopped");
    outcome
}

/// Stops the supervisor of `state` and every component it recorded; `Ok(false)` when none
/// was running.
pub fn down(state: &StateDir) -> Result<bool, Error> {
    let supervisor = state.read_pid("supervisor.pid").filter(|p| state.ours(*p));
    let components = state.component_pids();
    if let Some(pid) = supervisor {
        signal(pid, libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        while alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    let left: Vec<i32> = components
        .iter()
        .copied()
        .filter(|p| state.ours(*p))
        .collect();
    for p in &left {
        signal(*p, libc::SIGKILL);
    }
    let _ = std::fs::remove_file(state.file("ready"));
    let _ = std::fs::remove_file(state.file("supervisor.pid"));
    if !left.is_empty() {
        return Err(Error::Leftovers(left));
    }
    Ok(supervisor.is_some())
}
