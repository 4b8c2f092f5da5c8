//! The plane's processes: each component runs as a child with its output in a log file, dies
//! with the thread that started it (a parent-death signal, so a test that panics or is killed
//! leaves nothing behind) and is stopped on drop, gracefully first.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Why a component could not be started or stopped running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started.
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        /// The component.
        name: String,
        /// The program.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It exited although it should be serving.
    #[error("{name} exited ({status}); the end of {log}:\n{tail}")]
    Exited {
        /// The component.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
}

/// A running component.
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, PathBuf)>,
}

impl Component {
    /// Starts `program` with `args`, stdout and stderr appended to `log`, in its own process
    /// group, with `env` added to the environment.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        log: &Path,
    ) -> Result<Self, Error> {
        let mut c = Self {
            name: name.to_string(),
            child: None,
            log: log.to_path_buf(),
            program: program.to_path_buf(),
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_path_buf()))
                .collect(),
        };
        c.child = Some(c.start()?);
        Ok(c)
    }

    /// Stops it and starts it again with the same command line. Like [`Component::spawn`],
    /// the new process dies with the calling thread.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop(std::time::Duration::from_secs(5));
        self.start_again()
    }

    /// Starts it again with the same command line if it is not running.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.child.is_none() {
            self.child = Some(self.start()?);
        }
        Ok(())
    }

    fn start(&self) -> Result<Child, Error> {
        let (name, program, log) = (&self.name, &self.program, &self.log);
        let spawn_err = |source| Error::Spawn {
            name: name.to_string(),
            program: program.to_path_buf(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs in
        // the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(spawn_err)
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails, with the end of its log, if it has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Err(Error::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: tail(&self.log, 40),
                })
            }
            _ => Ok(()),
        }
    }

    /// Sends SIGTERM, waits up to `grace` for it to exit, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1, as the kernel hands out ephemeral ports. Another process may
/// take it before the component binds it; the launcher then starts the plane again.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_that_exits_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut c = Component::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "echo broken config; exit 3".into()],
            &[],
            &log,
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = c.check_running() {
                break e;
            }
            assert!(Instant::now() < until, "sh did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = err.to_string();
        assert!(text.contains("broken config"), "{text}");
        assert!(text.contains("sh exited"), "{text}");
    }

    #[test]
    fn stop_ends_a_process_that_ignores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Component::spawn(
            "sleep",
            Path::new("/bin/sleep"),
            &["600".into()],
            &[],
            &dir.path().join("sleep.log"),
        )
        .unwrap();
        let pid = c.pid().unwrap();
        c.stop(Duration::from_secs(5));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
