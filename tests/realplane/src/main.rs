//! `realplane`: the real control plane from the command line, behind `make cluster-up` and
//! `make cluster-down`.
//!
//! ```text
//! realplane up   [--dir .cluster] [--nodes 5] [--control-plane-nodes 1] [--port N]
//! realplane down [--dir .cluster]
//! realplane run  --dir DIR ...     (the supervisor `up` starts; runs until SIGTERM)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use realplane::Options;
use realplane::supervisor::{self, StateDir};

struct Args {
    command: String,
    dir: PathBuf,
    options: Options,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or(
        "usage: realplane up|down|run [--dir DIR] [--nodes N] [--control-plane-nodes N] [--port N]",
    )?;
    let mut args = Args {
        command,
        dir: PathBuf::from(".cluster"),
        options: Options::default(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<usize, String> {
            value
                .parse()
                .map_err(|_| format!("{what}: '{value}' is not a number"))
        };
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(&value),
            "--nodes" => args.options.nodes = number("--nodes")?,
            "--control-plane-nodes" => {
                args.options.control_plane_nodes = number("--control-plane-nodes")?
            }
            "--port" => {
                let p = number("--port")?;
                args.options.apiserver_port =
                    Some(u16::try_from(p).map_err(|_| format!("--port: {p} is not a port"))?);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.options.nodes == 0 || args.options.control_plane_nodes > args.options.nodes {
        return Err(format!(
            "--nodes must be at least 1 and at least --control-plane-nodes ({} and {} given)",
            args.options.nodes, args.options.control_plane_nodes
        ));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("realplane: {e}");
            return ExitCode::from(2);
        }
    };
    let state = StateDir::new(&args.dir);
    let result = match args.command.as_str() {
        "up" => std::env::current_exe()
            .map_err(|e| supervisor::Error::Io {
                what: "finding realplane".into(),
                source: e,
            })
            .and_then(|exe| supervisor::up(&exe, &state, &args.options))
            .map(|kubeconfig| println!("{}", kubeconfig.display())),
        "run" => supervisor::run(&state, args.options),
        "down" => supervisor::down(&state).map(|was| {
            if !was {
                eprintln!(
                    "realplane: no plane was running from {}",
                    args.dir.display()
                );
            }
        }),
        other => {
            eprintln!("realplane: unknown command {other} (up, down, run)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realplane: {e}");
            ExitCode::FAILURE
        }
    }
}
