//! Where the control plane's binaries are: built by `tests/realplane/binaries/build.sh` (run by
//! `make controlplane`) into a cache outside the checkout, keyed by a hash of the wrapper Go
//! modules and the script.
//!
//! Tests never build them (a cold build takes about ten minutes of two cores): they ask the
//! script which directory the current inputs map to and use it if it is complete, or report
//! that `make controlplane` has not been run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the binaries cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The build script could not be run (no bash, no Go).
    #[error("running {script}: {reason}")]
    Script {
        /// The script.
        script: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The cache has no complete build for the current inputs.
    #[error(
        "the control-plane binaries are not built for these inputs ({dir} is missing): run `make controlplane` (about 10 minutes of two cores the first time)"
    )]
    NotBuilt {
        /// The directory they would be in.
        dir: PathBuf,
    },
}

/// The names of the binaries, as the build script writes them.
pub const NAMES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// A complete set of built binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

/// The build script, beside this crate's sources.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("binaries/build.sh")
}

impl Binaries {
    /// Uses the binaries in `dir` if every one is there and the build completed.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let complete =
            dir.join(".complete").is_file() && NAMES.iter().all(|n| dir.join(n).is_file());
        if complete {
            Ok(Self { dir })
        } else {
            Err(Error::NotBuilt { dir })
        }
    }

    /// Finds the binaries: `K8S_CALICO_CONTROLPLANE_BIN` when set (the Makefile sets it after
    /// building), else the cache directory the build script names for the current inputs.
    pub fn locate() -> Result<Self, Error> {
        if let Some(dir) = std::env::var_os("K8S_CALICO_CONTROLPLANE_BIN") {
            return Self::in_dir(PathBuf::from(dir));
        }
        Self::in_dir(run_script(&["--print-dir"])?)
    }

    /// For tests: the binaries, or `None` with a line saying why the test is skipped. Under
    /// `make test` (`K8S_CALICO_NO_SKIP=1`) missing binaries fail the test instead.
    pub fn for_test() -> Option<Self> {
        match Self::locate() {
            Ok(b) => Some(b),
            Err(e) if std::env::var("K8S_CALICO_NO_SKIP").as_deref() == Ok("1") => {
                panic!("the real control plane is needed: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: {e}");
                None
            }
        }
    }

    /// Builds them if needed (minutes the first time, nothing afterwards) and returns them.
    pub fn build() -> Result<Self, Error> {
        Self::in_dir(run_script(&[])?)
    }

    /// The directory holding them (put it first on `PATH` to use this kubectl).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one binary, e.g. `kubectl`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn run_script(args: &[&str]) -> Result<PathBuf, Error> {
    let script = build_script();
    let fail = |reason: String| Error::Script {
        script: script.clone(),
        reason,
    };
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("").trim();
    if line.is_empty() {
        return Err(fail("printed no directory".into()));
    }
    Ok(PathBuf::from(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_directory_is_not_built() {
        let dir = tempfile::tempdir().unwrap();
        for n in NAMES {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        assert!(matches!(
            Binaries::in_dir(dir.path()),
            Err(Error::NotBuilt { .. })
        ));
        std::fs::write(dir.path().join(".complete"), "built").unwrap();
        assert_eq!(Binaries::in_dir(dir.path()).unwrap().dir(), dir.path());
    }
}
