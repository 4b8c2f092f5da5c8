//! `bench-backup --kubeconfig PATH --dir DIR`: one backup by the product's own code
//! (`k8s_calico::upgrade::backup::take`), as `calico_upgrade` takes it before its first write.
//!
//! A process of its own so that `/usr/bin/time` measures the backup alone (time and peak RSS),
//! beside `kubectl get ... -o json` against the same server. Prints `{"total": N, "files": K}`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use k8s_calico::cluster::{self, Connection};
use k8s_calico::upgrade::backup::{self, BackupMeta};

fn main() -> Result<()> {
    let mut kubeconfig = None;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = args.next().map(PathBuf::from),
            "--dir" => dir = args.next().map(PathBuf::from),
            other => {
                bail!("unknown argument {other}; usage: bench-backup --kubeconfig PATH --dir DIR")
            }
        }
    }
    let (Some(kubeconfig), Some(dir)) = (kubeconfig, dir) else {
        bail!("usage: bench-backup --kubeconfig PATH --dir DIR");
    };
    let conn = Connection {
        kubeconfig: Some(kubeconfig),
        context: None,
        validate_certs: true,
    };
    // The modules run on a current-thread runtime; so does this, for the same memory profile.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (path, index) = rt
        .block_on(async {
            let client = cluster::client(&conn).await?;
            let meta = BackupMeta {
                cluster: cluster::cluster_name(&conn),
                from_version: None,
                to_version: None,
                method: "manifest".into(),
                kubernetes_version: "unknown".into(),
            };
            backup::take(&client, &dir, &meta).await
        })
        .context("backup")?;
    println!(
        "{}",
        serde_json::json!({"total": index.total, "files": index.files.len(), "path": path})
    );
    Ok(())
}
