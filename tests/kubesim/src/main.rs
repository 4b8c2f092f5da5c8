//! The `kubesim` binary: starts a server, prints its URL and kubeconfig path once ready, and
//! runs until SIGTERM or SIGINT.
//!
//! `kubesim --port 0 --kubeconfig <path> [--http] [--version v1.27.16] [--scenario <file>]
//! [--write-manifests <dir>]`
//!
//! With `--scenario` it prints `kubesim: ready <url> <kubeconfig>` once the scenario's cluster
//! is up (and rolled out, unless the scenario says `wait_ready: false`). `--write-manifests`
//! writes generated Calico manifests (`<dir>/vX.Y.Z/<file>`) for the scenario's release and
//! every later minor's latest patch: what `calico_upgrade`'s `manifest_dir` reads.

use std::path::PathBuf;
use std::process::ExitCode;

use kubesim::{KubeVersion, Server, ServerConfig};

const USAGE: &str = "usage: kubesim [--port N] [--kubeconfig PATH] [--http] [--version v1.X.Y] [--token T] [--scenario FILE] [--write-manifests DIR]";

struct Args {
    config: ServerConfig,
    scenario: Option<PathBuf>,
    manifests: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut config = ServerConfig::default();
    let mut scenario = None;
    let mut manifests = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--port" => {
                config.port = value("--port")?
                    .parse()
                    .map_err(|_| "--port must be a number".to_string())?
            }
            "--kubeconfig" => config.kubeconfig_path = Some(PathBuf::from(value("--kubeconfig")?)),
            "--http" => config.tls = false,
            "--version" => config.version = KubeVersion::parse(&value("--version")?)?,
            "--token" => config.token = Some(value("--token")?),
            "--scenario" => scenario = Some(PathBuf::from(value("--scenario")?)),
            "--write-manifests" => manifests = Some(PathBuf::from(value("--write-manifests")?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if manifests.is_some() && scenario.is_none() {
        return Err(format!(
            "--write-manifests needs --scenario (it writes the scenario's releases)\n{USAGE}"
        ));
    }
    Ok(Args {
        config,
        scenario,
        manifests,
    })
}

fn main() -> ExitCode {
    let Args {
        config,
        scenario,
        manifests,
    } = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = match scenario {
        Some(path) => start_scenario(&path, config, manifests.as_deref()),
        None => Server::start(config).map_err(|e| format!("{e:#}")),
    };
    let handle = match started {
        Ok(h) => h,
        Err(e) => {
            eprintln!("kubesim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "kubesim: ready {} {}",
        handle.url(),
        handle.kubeconfig_path().display()
    );
    let waited = handle.runtime().block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::io::Result::Ok(())
    });
    handle.shutdown();
    match waited {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubesim: waiting for signals: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start_scenario(
    path: &std::path::Path,
    config: ServerConfig,
    manifests: Option<&std::path::Path>,
) -> Result<kubesim::Handle, String> {
    let scenario = kubesim::scenario::Scenario::from_file(path).map_err(|e| format!("{e:#}"))?;
    if let (Some(dir), Some(calico)) = (manifests, &scenario.calico) {
        let method = calico.method().map_err(|e| format!("{e:#}"))?;
        let releases =
            kubesim::calico::releases_from(&calico.version).map_err(|e| format!("{e:#}"))?;
        let refs: Vec<&str> = releases.iter().map(String::as_str).collect();
        kubesim::calico::write_manifest_dir(dir, &refs, method).map_err(|e| format!("{e:#}"))?;
    }
    scenario.start_with(config).map_err(|e| format!("{e:#}"))
}
