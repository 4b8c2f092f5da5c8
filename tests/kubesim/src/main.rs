//! The `kubesim` binary: starts a server, prints its URL and kubeconfig path once ready, and
//! runs until SIGTERM or SIGINT.
//!
//! `kubesim --port 0 --kubeconfig <path> [--http] [--version v1.27.16] [--scenario <file>]`

use std::path::PathBuf;
use std::process::ExitCode;

use kubesim::{KubeVersion, Server, ServerConfig};

const USAGE: &str = "usage: kubesim [--port N] [--kubeconfig PATH] [--http] [--version v1.X.Y] [--token T] [--scenario FILE]";

fn parse_args() -> Result<(ServerConfig, Option<PathBuf>), String> {
    let mut config = ServerConfig::default();
    let mut scenario = None;
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
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((config, scenario))
}

fn main() -> ExitCode {
    let (config, scenario) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = scenario {
        // Hook for the scenario loader: once `kubesim::scenario` exists, load `path` here
        // (before or right after start) instead of refusing.
        eprintln!(
            "kubesim: --scenario {} is not supported yet: this build has no scenario loader",
            path.display()
        );
        return ExitCode::from(2);
    }
    let handle = match Server::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("kubesim: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", handle.url());
    println!("{}", handle.kubeconfig_path().display());
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
