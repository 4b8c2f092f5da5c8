//! Row 1: the same read, N tasks of `k8s_calico.calico.calico_matrix` against N tasks of
//! `kubernetes.core.k8s_info`, beside a binary module that does nothing (Ansible's floor for a
//! binary module), each in one `ansible-playbook` on localhost. The cost of one task is
//! (T(2N) − T(N)) / N, which cancels Ansible's start-up and the playbook's parsing.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{RowOutput, Verdict, at_least};
use crate::Ctx;
use crate::measure::{self, Sample, Stat, mb_from_kb, ratio, secs};

struct Tool {
    name: &'static str,
    /// The task, indented for a play's task list, with `{kubeconfig}` to fill in.
    task: &'static str,
}

/// Indexes into [`TOOLS`].
const MATRIX: usize = 0;
const COPIED: usize = 1;
const NOOP: usize = 2;
const K8S_INFO: usize = 3;

const TOOLS: &[Tool] = &[
    Tool {
        name: "k8s_calico.calico.calico_matrix",
        // No kubernetes_version: it reads /version and detects calico-node from its pods.
        task: "    - k8s_calico.calico.calico_matrix:\n        kubeconfig: \"{kubeconfig}\"\n",
    },
    Tool {
        name: "k8s_calico.calico.calico_matrix, copied",
        // What a task on another host pays: Ansible copies the binary for every task.
        task: "    - k8s_calico.calico.calico_matrix:\n        kubeconfig: \"{kubeconfig}\"\n      vars:\n        k8s_calico_copy_module: true\n",
    },
    Tool {
        name: "no-op binary module",
        task: "    - noop:\n",
    },
    Tool {
        name: "kubernetes.core.k8s_info",
        task: "    - kubernetes.core.k8s_info:\n        kind: DaemonSet\n        namespace: kube-system\n        name: calico-node\n        kubeconfig: \"{kubeconfig}\"\n",
    },
];

/// Target of issue 16: a module task costs at most this much more than the no-op module's.
const NOOP_LIMIT: f64 = 1.2;

/// A collection `k8s_calico.calico` in `dir` with the repository's plugins and `ctx`'s builds,
/// and a library with the no-op module.
fn install(ctx: &Ctx, dir: &Path) -> Result<()> {
    let root = dir.join("collections/ansible_collections/k8s_calico/calico");
    for part in ["galaxy.yml", "meta", "plugins"] {
        copy_tree(&ctx.repo.join("ansible").join(part), &root.join(part))?;
    }
    std::fs::create_dir_all(root.join("bin"))?;
    for m in ["calico_matrix", "calico_upgrade", "calico_nettest"] {
        let name = format!("{m}_{}", std::env::consts::ARCH);
        std::fs::copy(ctx.module(m)?, root.join("bin").join(name))?;
    }
    std::fs::create_dir_all(dir.join("library"))?;
    std::fs::copy(ctx.sibling("bench-noop")?, dir.join("library/noop"))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_file() {
        std::fs::copy(from, to).with_context(|| from.display().to_string())?;
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() != "__pycache__" {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx) -> Result<RowOutput> {
    let playbook_bin = ctx.venv.join("bin/ansible-playbook");
    if !playbook_bin.is_file() {
        bail!(
            "{} is missing: `make bench` creates the virtualenv from tests/bench/requirements.txt",
            playbook_bin.display()
        );
    }
    let n = if ctx.quick { 3 } else { 20 };
    let dir = super::scratch()?;
    install(ctx, dir.path())?;
    let handle = super::calico_cluster(3)?;
    let kubeconfig = handle.kubeconfig_path().to_string_lossy().to_string();
    std::fs::write(
        dir.path().join("hosts"),
        format!(
            "localhost ansible_connection=local ansible_python_interpreter={}\n",
            ctx.venv.join("bin/python").display()
        ),
    )?;
    let playbooks = write_playbooks(dir.path(), n, &kubeconfig)?;
    let (samples, shown) = measure_all(ctx, dir.path(), n, &playbooks)?;
    drop(handle);
    report(n, &samples, &shown)
}

/// One playbook per tool and task count: (tool, count, path).
fn write_playbooks(
    dir: &Path,
    n: usize,
    kubeconfig: &str,
) -> Result<Vec<(usize, usize, std::path::PathBuf)>> {
    let mut playbooks = Vec::new();
    for (t, tool) in TOOLS.iter().enumerate() {
        for count in [n, 2 * n] {
            let mut text = format!(
                "- name: {count} tasks of {}\n  hosts: localhost\n  gather_facts: false\n  tasks:\n",
                tool.name
            );
            for _ in 0..count {
                text.push_str(&tool.task.replace("{kubeconfig}", kubeconfig));
            }
            let path = dir.join(format!("tool{t}-{count}.yml"));
            std::fs::write(&path, text)?;
            playbooks.push((t, count, path));
        }
    }
    Ok(playbooks)
}

/// Per tool, the samples of N tasks and of 2N tasks; and the commands of the first 2N runs.
type Samples = Vec<[Vec<Sample>; 2]>;

fn measure_all(
    ctx: &Ctx,
    dir: &Path,
    n: usize,
    playbooks: &[(usize, usize, std::path::PathBuf)],
) -> Result<(Samples, Vec<String>)> {
    let mut samples: Samples = TOOLS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut shown = Vec::new();
    for rep in 0..ctx.reps {
        // Interleave the tools and alternate their order, so drift on a shared machine hits
        // all alike.
        let mut order: Vec<&(usize, usize, std::path::PathBuf)> = playbooks.iter().collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for (t, count, path) in order {
            let cmd = playbook(ctx, dir, path);
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
    Ok((samples, shown))
}

fn report(n: usize, samples: &Samples, shown: &[String]) -> Result<RowOutput> {
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
         each task reading the cluster: `k8s_calico.calico.calico_matrix` without \
         `kubernetes_version` (reads `/version`, detects calico-node from its pods) and \
         `kubernetes.core.k8s_info` of the calico-node DaemonSet in kube-system; beside them a \
         binary module that prints `{{\"changed\": false}}` and nothing else (Ansible's floor \
         for a binary module: its copy, its arguments file, its run). `calico_matrix` runs \
         through the collection's action plugin, which starts the controller's build in place; \
         \"copied\" is the same task with `k8s_calico_copy_module: true`, what a task on \
         another host pays (the whole binary copied for every task). Per task = (T({}) − \
         T({n})) / {n}, which cancels Ansible's own start-up. CPU is user + system of \
         `ansible-playbook` and everything it ran (controller and module are the same machine \
         here). Targets: at most {NOOP_LIMIT}× the no-op module, and 5× below k8s_info.\n",
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
        let walls = |i: usize| Stat::of(&samples[t][i].iter().map(|s| s.wall).collect::<Vec<_>>());
        writeln!(
            body,
            "| `{}` | {} | {} | {} | {} | {} |",
            tool.name,
            walls(0).show(secs),
            walls(1).show(secs),
            w.show(secs),
            c.show(secs),
            Stat::of(&rss).show(mb_from_kb)
        )?;
        wall_pt.push(w.median);
        cpu_pt.push(c.median);
    }
    // With small N on a busy machine, T(2N) − T(N) can drown in noise; a ratio over a
    // non-positive or tiny difference would be a made-up number.
    for t in [MATRIX, NOOP] {
        if wall_pt[t] <= 0.005 || cpu_pt[t] <= 0.005 {
            bail!(
                "{}'s per-task cost is below what {n} extra tasks resolve here (wall {}, CPU {} per task): raise N (run without --quick)",
                TOOLS[t].name,
                secs(wall_pt[t]),
                secs(cpu_pt[t])
            );
        }
    }
    let ratios = Ratios {
        noop_wall: wall_pt[MATRIX] / wall_pt[NOOP],
        noop_cpu: cpu_pt[MATRIX] / cpu_pt[NOOP],
        k8s_wall: wall_pt[K8S_INFO] / wall_pt[MATRIX],
        k8s_cpu: cpu_pt[K8S_INFO] / cpu_pt[MATRIX],
        copied_wall: wall_pt[COPIED] / wall_pt[MATRIX],
    };
    explain(&mut body, &ratios, shown)?;
    Ok(RowOutput {
        body,
        verdicts: ratios.verdicts(),
    })
}

/// The row's ratios per task.
struct Ratios {
    noop_wall: f64,
    noop_cpu: f64,
    k8s_wall: f64,
    k8s_cpu: f64,
    copied_wall: f64,
}

impl Ratios {
    fn verdicts(&self) -> Vec<Verdict> {
        let at_most = |r: f64| {
            if r <= NOOP_LIMIT {
                "met".to_string()
            } else {
                format!("**missed** by {:.0} %", (r / NOOP_LIMIT - 1.0) * 100.0)
            }
        };
        vec![
            Verdict {
                what: "1. per-task wall, calico_matrix ÷ no-op binary module".into(),
                target: format!("≤ {NOOP_LIMIT}×"),
                measured: format!("{:.2}×", self.noop_wall),
                status: at_most(self.noop_wall),
            },
            Verdict {
                what: "1. per-task CPU, calico_matrix ÷ no-op binary module".into(),
                target: format!("≤ {NOOP_LIMIT}×"),
                measured: format!("{:.2}×", self.noop_cpu),
                status: at_most(self.noop_cpu),
            },
            Verdict {
                what: "1. per-task wall, k8s_info ÷ calico_matrix".into(),
                target: "≥ 5×".into(),
                measured: ratio(self.k8s_wall),
                status: at_least(self.k8s_wall, 5.0),
            },
            Verdict {
                what: "1. per-task CPU, k8s_info ÷ calico_matrix".into(),
                target: "≥ 5×".into(),
                measured: ratio(self.k8s_cpu),
                status: at_least(self.k8s_cpu, 5.0),
            },
        ]
    }
}

fn explain(body: &mut String, r: &Ratios, shown: &[String]) -> Result<()> {
    writeln!(
        body,
        "\nPer task: calico_matrix ÷ no-op module wall **{:.2}×**, CPU **{:.2}×**; k8s_info ÷ \
         calico_matrix wall **{}**, CPU **{}**; copied ÷ in place wall {}.\n",
        r.noop_wall,
        r.noop_cpu,
        ratio(r.k8s_wall),
        ratio(r.k8s_cpu),
        ratio(r.copied_wall)
    )?;
    writeln!(
        body,
        "Every task goes through the same Ansible task executor (templating, a fork per task), \
         which no module can avoid. The no-op module adds what every binary module pays: a \
         remote temporary directory, the copy of the binary and of its arguments, a chmod, the \
         run and the clean-up, each a shell command. In place, calico_matrix skips those and \
         spends the time on its own work instead (TLS to the API server, two reads); \
         kubernetes.core pays Python's interpreter start, the AnsiballZ payload and the \
         kubernetes client's import.\n"
    )?;
    writeln!(
        body,
        "Earlier: the full run at f0abfcf5 measured `calico_matrix` at 86 ms per task (70–95 \
         ms) of wall and 90 ms of CPU, when it ran from the role's `library/` and Ansible copied \
         its 5.94 MB binary for every task, against 840 ms for k8s_info; issue 16 measured a \
         no-op binary module at about 43 ms beside it. Since the collection (issue 16) its \
         action plugin runs the controller's build in place.\n"
    )?;
    writeln!(
        body,
        "Measured commands:\n\n```sh\n{}\n```\n",
        shown.join("\n")
    )?;
    Ok(())
}

/// `ansible-playbook` from the bench virtualenv with a private Ansible home, the collection and
/// the no-op module's library of `dir`, and no user configuration in the way.
fn playbook(ctx: &Ctx, dir: &Path, path: &Path) -> Command {
    let mut cmd = Command::new(ctx.venv.join("bin/ansible-playbook"));
    cmd.arg("-i")
        .arg(dir.join("hosts"))
        .arg(path)
        .current_dir(dir)
        .env("ANSIBLE_LIBRARY", dir.join("library"))
        .env("ANSIBLE_COLLECTIONS_PATH", dir.join("collections"))
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_CONFIG", dir.join("no-ansible.cfg"))
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG");
    cmd
}
