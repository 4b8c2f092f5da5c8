//! Row 1: the same read, N tasks of `calico_matrix` against N tasks of
//! `kubernetes.core.k8s_info`, each in one `ansible-playbook` on localhost. The cost of one
//! task is (T(2N) − T(N)) / N, which cancels Ansible's start-up and the playbook's parsing.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use super::{RowOutput, Verdict, at_least};
use crate::Ctx;
use crate::measure::{self, Sample, Stat, mb_from_kb, ratio, secs};

struct Tool {
    name: &'static str,
    /// The task, indented for a play's task list, with `{kubeconfig}` to fill in.
    task: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "calico_matrix",
        // No kubernetes_version: it reads /version and detects calico-node from its pods.
        task: "    - calico_matrix:\n        kubeconfig: \"{kubeconfig}\"\n",
    },
    Tool {
        name: "kubernetes.core.k8s_info",
        task: "    - kubernetes.core.k8s_info:\n        kind: DaemonSet\n        namespace: kube-system\n        name: calico-node\n        kubeconfig: \"{kubeconfig}\"\n",
    },
];

pub fn run(ctx: &Ctx) -> Result<RowOutput> {
    let playbook_bin = ctx.venv.join("bin/ansible-playbook");
    if !playbook_bin.is_file() {
        bail!(
            "{} is missing: `make bench` creates the virtualenv from tests/bench/requirements.txt",
            playbook_bin.display()
        );
    }
    ctx.module("calico_matrix")?;
    let n = if ctx.quick { 3 } else { 20 };
    let handle = super::calico_cluster(3)?;
    let kubeconfig = handle.kubeconfig_path().to_string_lossy().to_string();
    let dir = super::scratch()?;
    std::fs::write(
        dir.path().join("hosts"),
        format!(
            "localhost ansible_connection=local ansible_python_interpreter={}\n",
            ctx.venv.join("bin/python").display()
        ),
    )?;
    let mut playbooks = Vec::new();
    for (t, tool) in TOOLS.iter().enumerate() {
        for count in [n, 2 * n] {
            let mut text = format!(
                "- name: {count} tasks of {}\n  hosts: localhost\n  gather_facts: false\n  tasks:\n",
                tool.name
            );
            for _ in 0..count {
                text.push_str(&tool.task.replace("{kubeconfig}", &kubeconfig));
            }
            let path = dir.path().join(format!("{}-{count}.yml", tool.name));
            std::fs::write(&path, text)?;
            playbooks.push((t, count, path));
        }
    }
    // samples[tool][0 for N, 1 for 2N]
    let mut samples: Vec<[Vec<Sample>; 2]> =
        TOOLS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut shown = Vec::new();
    for rep in 0..ctx.reps {
        // Interleave the tools and alternate their order, so drift on a shared machine hits
        // both alike.
        let mut order: Vec<&(usize, usize, std::path::PathBuf)> = playbooks.iter().collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for (t, count, path) in order {
            let cmd = playbook(ctx, dir.path(), path);
            let o = measure::timed(&cmd, None)?;
            let out = String::from_utf8_lossy(&o.stdout);
            // Every task must have run and succeeded: "ok=N" in the recap, nothing failed.
            if !out.contains(&format!("ok={count} ")) || !out.contains("failed=0") {
                bail!(
                    "{} did not run {count} tasks cleanly:\n{out}",
                    measure::show(&cmd)
                );
            }
            samples[*t][usize::from(*count != n)].push(o.sample);
            if rep == 0 && *count == 2 * n {
                shown.push(measure::show(&cmd));
            }
        }
    }
    drop(handle);

    let per_task = |t: usize, f: &dyn Fn(&Sample) -> f64| -> Stat {
        let v: Vec<f64> = samples[t][0]
            .iter()
            .zip(&samples[t][1])
            .map(|(a, b)| (f(b) - f(a)) / n as f64)
            .collect();
        Stat::of(&v)
    };
    let mut body = String::new();
    writeln!(
        body,
        "{n} and {} tasks in one `ansible-playbook` on localhost (`ansible_connection=local`), \
         each task reading the cluster: `calico_matrix` without `kubernetes_version` (reads \
         `/version`, detects calico-node from its pods) and `kubernetes.core.k8s_info` of the \
         calico-node DaemonSet in kube-system. Per task = (T({}) − T({n})) / {n}, which cancels \
         Ansible's own start-up. CPU is user + system of `ansible-playbook` and everything it \
         ran (controller and module are the same machine here). Target: 5× lower per task.\n",
        2 * n,
        2 * n
    )?;
    writeln!(
        body,
        "| tool | wall, {n} tasks | wall, {} tasks | wall per task | CPU per task | peak RSS |",
        2 * n
    )?;
    writeln!(body, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    let mut wall_pt = Vec::new();
    let mut cpu_pt = Vec::new();
    for (t, tool) in TOOLS.iter().enumerate() {
        let w = per_task(t, &|s| s.wall);
        let c = per_task(t, &|s| s.cpu());
        let rss: Vec<f64> = samples[t]
            .iter()
            .flatten()
            .map(|s| s.max_rss_kb as f64)
            .collect();
        writeln!(
            body,
            "| `{}` | {} | {} | {} | {} | {} |",
            tool.name,
            Stat::of(&samples[t][0].iter().map(|s| s.wall).collect::<Vec<_>>()).show(secs),
            Stat::of(&samples[t][1].iter().map(|s| s.wall).collect::<Vec<_>>()).show(secs),
            w.show(secs),
            c.show(secs),
            Stat::of(&rss).show(mb_from_kb)
        )?;
        wall_pt.push(w.median);
        cpu_pt.push(c.median);
    }
    // With small N on a busy machine, T(2N) − T(N) can drown in noise; a ratio over a
    // non-positive or tiny difference would be a made-up number.
    if wall_pt[0] <= 0.005 || cpu_pt[0] <= 0.005 {
        bail!(
            "calico_matrix's per-task cost is below what {n} extra tasks resolve here (wall {}, CPU {} per task): raise N (run without --quick)",
            secs(wall_pt[0]),
            secs(cpu_pt[0])
        );
    }
    let wall_ratio = wall_pt[1] / wall_pt[0];
    let cpu_ratio = cpu_pt[1] / cpu_pt[0];
    writeln!(
        body,
        "\nRatio k8s_info ÷ calico_matrix per task: wall **{}**, CPU **{}**.\n",
        ratio(wall_ratio),
        ratio(cpu_ratio)
    )?;
    writeln!(
        body,
        "Both tasks go through the same Ansible task executor (templating, module transfer, a \
         fork per task), which neither side can avoid; the binary module saves Python's \
         interpreter start, the AnsiballZ payload and the kubernetes client's import.\n"
    )?;
    writeln!(
        body,
        "Measured commands:\n\n```sh\n{}\n```\n",
        shown.join("\n")
    )?;
    let verdicts = vec![
        Verdict {
            what: "1. per-task wall, k8s_info ÷ calico_matrix".into(),
            target: "≥ 5×".into(),
            measured: ratio(wall_ratio),
            status: at_least(wall_ratio, 5.0),
        },
        Verdict {
            what: "1. per-task CPU, k8s_info ÷ calico_matrix".into(),
            target: "≥ 5×".into(),
            measured: ratio(cpu_ratio),
            status: at_least(cpu_ratio, 5.0),
        },
    ];
    Ok(RowOutput { body, verdicts })
}

/// `ansible-playbook` from the bench virtualenv with a private Ansible home, the modules'
/// directory as its library, and no user configuration in the way.
fn playbook(ctx: &Ctx, dir: &Path, path: &Path) -> Command {
    let mut cmd = Command::new(ctx.venv.join("bin/ansible-playbook"));
    cmd.arg("-i")
        .arg(dir.join("hosts"))
        .arg(path)
        .current_dir(dir)
        .env("ANSIBLE_LIBRARY", &ctx.modules)
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_CONFIG", dir.join("no-ansible.cfg"))
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG");
    cmd
}
