//! Backups of everything Calico is, taken before the first write.
//!
//! What is saved: every object of every served `crd.projectcalico.org`, `operator.tigera.io` and
//! `policy.networking.k8s.io` kind (found by discovery, not a fixed list, so new kinds are never
//! missed), the CRDs that define them, all Kubernetes NetworkPolicies, and Calico's workloads,
//! ConfigMaps, ServiceAccounts, Services, RBAC and PodDisruptionBudgets in `kube-system` (those
//! named calico*/tigera*), `calico-system` and `tigera-operator`.
//!
//! How: one file per kind, each a `kind: List` that `kubectl apply -f` also understands, streamed
//! page by page (memory stays flat however many objects there are) into a private temporary
//! folder that is renamed into place only when complete, with an `index.json` of counts and
//! sha256 sums. Folders are 0700 and files 0600: backups hold the cluster's configuration.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::discovery::{self, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fsutil;

/// The index format written into every backup.
pub const FORMAT: &str = "k8s-calico-backup/1";
/// Objects per list request: big enough to be quick, small enough to keep memory flat.
const PAGE: u32 = 500;

/// Groups backed up entirely, discovered at run time.
pub const CALICO_GROUPS: &[&str] = &[
    "crd.projectcalico.org",
    "operator.tigera.io",
    "policy.networking.k8s.io",
];
/// Namespaces whose Calico objects are backed up.
pub const NAMESPACES: &[&str] = &["kube-system", "calico-system", "tigera-operator"];

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// File name within the backup folder.
    pub file: String,
    /// The objects' apiVersion.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The objects' kind.
    pub kind: String,
    /// The resource (plural).
    pub resource: String,
    /// Whether the kind is namespaced.
    pub namespaced: bool,
    /// How many objects.
    pub count: u64,
    /// sha256 of the file.
    pub sha256: String,
}

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: String,
    /// The cluster's name (kubeconfig cluster).
    pub cluster: String,
    /// When it was taken (UTC, RFC 3339).
    pub created: String,
    /// The Calico version running when it was taken.
    pub from_version: Option<String>,
    /// The version the upgrade was going to.
    pub to_version: Option<String>,
    /// operator or manifest.
    pub method: String,
    /// The Kubernetes version.
    pub kubernetes_version: String,
    /// The files, in restore order.
    pub files: Vec<FileEntry>,
    /// Total objects.
    pub total: u64,
}

/// What to describe a backup with.
#[derive(Debug, Clone)]
pub struct BackupMeta {
    /// Cluster name, used in the folder name.
    pub cluster: String,
    /// Running version.
    pub from_version: Option<String>,
    /// Target version.
    pub to_version: Option<String>,
    /// Install method.
    pub method: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
}

/// A kind to back up, with which of its objects.
struct Selection {
    ar: ApiResource,
    namespaced: bool,
    /// `None`: every namespace (or cluster-scoped).
    namespaces: Option<Vec<&'static str>>,
    /// Only objects whose name starts with one of these, in `kube-system` and cluster scope.
    name_prefixes: &'static [&'static str],
}

const CALICO_PREFIXES: &[&str] = &["calico", "tigera"];

fn builtin(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Makes a name safe for a folder name.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(63);
    if out.is_empty() {
        "cluster".into()
    } else {
        out
    }
}

/// `20261124T101500Z`.
pub fn compact_utc(ts: &k8s_openapi::jiff::Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

async fn selections(client: &Client) -> Result<Vec<Selection>> {
    let mut out = Vec::new();
    // CRD definitions first: a restore needs them before the objects.
    out.push(Selection {
        ar: builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
        namespaced: false,
        namespaces: None,
        name_prefixes: &[],
    });
    for (g, v, k, p, namespaced) in [
        ("", "v1", "Namespace", "namespaces", false),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        ("", "v1", "ServiceAccount", "serviceaccounts", true),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "Service", "services", true),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        ),
        ("apps", "v1", "DaemonSet", "daemonsets", true),
        ("apps", "v1", "Deployment", "deployments", true),
    ] {
        out.push(Selection {
            ar: builtin(g, v, k, p),
            namespaced,
            namespaces: namespaced.then(|| NAMESPACES.to_vec()),
            name_prefixes: CALICO_PREFIXES,
        });
    }
    out.push(Selection {
        ar: builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        namespaced: true,
        namespaces: None,
        name_prefixes: &[],
    });
    for group in CALICO_GROUPS {
        // Not served: nothing of it to back up.
        let Some(g) = crate::cluster::served_group(client, group).await? else {
            continue;
        };
        for (ar, caps) in g.recommended_resources() {
            if !caps.supports_operation(discovery::verbs::LIST) {
                continue;
            }
            out.push(Selection {
                ar,
                namespaced: caps.scope == Scope::Namespaced,
                namespaces: None,
                name_prefixes: &[],
            });
        }
    }
    Ok(out)
}

/// Whether an object of a selection belongs in the backup.
fn wanted(sel: &Selection, obj: &DynamicObject) -> bool {
    let name = obj.metadata.name.as_deref().unwrap_or("");
    let ns = obj.metadata.namespace.as_deref();
    if sel.ar.kind == "CustomResourceDefinition" {
        let group = obj
            .data
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        return CALICO_GROUPS.contains(&group);
    }
    if sel.ar.kind == "Namespace" {
        return name == "calico-system" || name == "tigera-operator";
    }
    if sel.name_prefixes.is_empty() {
        return true;
    }
    // Everything in Calico's own namespaces; only Calico's objects elsewhere.
    match ns {
        Some("calico-system") | Some("tigera-operator") => name != "kube-root-ca.crt",
        _ => sel.name_prefixes.iter().any(|p| name.starts_with(p)),
    }
}

/// Writes bytes while hashing them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn file_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        format!("{}.json", ar.plural)
    } else {
        format!("{}.{}.json", ar.plural, ar.group)
    }
}

async fn write_kind(
    client: &Client,
    sel: &Selection,
    dir: &Path,
    index: usize,
) -> Result<FileEntry> {
    let file = format!("{index:02}-{}", file_name(&sel.ar));
    let path = dir.join(&file);
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(256 * 1024, f),
        hasher: Sha256::new(),
    };
    write!(w, "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[")?;
    let mut count = 0u64;
    let scopes: Vec<Option<&str>> = match &sel.namespaces {
        Some(list) => list.iter().map(|n| Some(*n)).collect(),
        None => vec![None],
    };
    for scope in scopes {
        let api: Api<DynamicObject> = match scope {
            Some(ns) if sel.namespaced => Api::namespaced_with(client.clone(), ns, &sel.ar),
            _ => Api::all_with(client.clone(), &sel.ar),
        };
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| anyhow!("listing {} for the backup: {e}", sel.ar.plural))?;
            for mut obj in page.items {
                if !wanted(sel, &obj) {
                    continue;
                }
                // List items of built-in kinds come without apiVersion/kind; a restore needs them.
                obj.types = Some(kube::api::TypeMeta {
                    api_version: sel.ar.api_version.clone(),
                    kind: sel.ar.kind.clone(),
                });
                obj.metadata.managed_fields = None;
                if count > 0 {
                    w.write_all(b",")?;
                }
                serde_json::to_writer(&mut w, &obj)?;
                count += 1;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = ListParams::default().limit(PAGE).continue_token(&token),
                None => break,
            }
        }
    }
    w.write_all(b"]}\n")?;
    w.flush()?;
    let sha256: String = w
        .hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let inner = w
        .inner
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    inner.sync_all()?;
    Ok(FileEntry {
        file,
        api_version: sel.ar.api_version.clone(),
        kind: sel.ar.kind.clone(),
        resource: sel.ar.plural.clone(),
        namespaced: sel.namespaced,
        count,
        sha256,
    })
}

/// Takes a backup into `backup_dir` and returns its folder and index.
pub async fn take(
    client: &Client,
    backup_dir: &Path,
    meta: &BackupMeta,
) -> Result<(PathBuf, Index)> {
    fsutil::create_private_dir(backup_dir)?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let name = format!(
        "{}-{}-{}-to-{}",
        sanitize(&meta.cluster),
        compact_utc(&now),
        meta.from_version.as_deref().unwrap_or("unknown"),
        meta.to_version.as_deref().unwrap_or("unknown")
    );
    let final_dir = backup_dir.join(&name);
    if final_dir.exists() {
        bail!("backup folder {} already exists", final_dir.display());
    }
    let partial = backup_dir.join(format!(".{name}.partial"));
    fsutil::create_private_dir(&partial)?;
    let result = async {
        let mut files = Vec::new();
        for (i, sel) in selections(client).await?.iter().enumerate() {
            files.push(write_kind(client, sel, &partial, i).await?);
        }
        let index = Index {
            format: FORMAT.into(),
            cluster: meta.cluster.clone(),
            created: now.to_string(),
            from_version: meta.from_version.clone(),
            to_version: meta.to_version.clone(),
            method: meta.method.clone(),
            kubernetes_version: meta.kubernetes_version.clone(),
            total: files.iter().map(|f| f.count).sum(),
            files,
        };
        fsutil::write_atomic(
            &partial.join("index.json"),
            &serde_json::to_vec_pretty(&index)?,
            0o600,
        )?;
        Ok::<_, anyhow::Error>(index)
    }
    .await;
    match result {
        Ok(index) => {
            fs::rename(&partial, &final_dir)
                .with_context(|| format!("moving the backup into {}", final_dir.display()))?;
            Ok((final_dir, index))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            Err(e.context("taking the backup (nothing was changed on the cluster)"))
        }
    }
}

/// Reads and checks a backup's index: every file present with its recorded sha256.
pub fn open(path: &Path) -> Result<Index> {
    let index_path = path.join("index.json");
    let bytes = fs::read(&index_path).with_context(|| {
        format!(
            "{} is not a k8s-calico backup: cannot read {}",
            path.display(),
            index_path.display()
        )
    })?;
    let index: Index = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid backup index", index_path.display()))?;
    if index.format != FORMAT {
        bail!(
            "{} has backup format {}, this module reads {FORMAT}",
            path.display(),
            index.format
        );
    }
    for f in &index.files {
        let bytes = fs::read(path.join(&f.file))
            .with_context(|| format!("backup file {} is missing", f.file))?;
        let sum = crate::upgrade::manifests::sha256_hex(&bytes);
        if sum != f.sha256 {
            bail!(
                "backup file {} is damaged: sha256 {sum}, index says {}",
                f.file,
                f.sha256
            );
        }
    }
    Ok(index)
}

/// Reads the objects of one backup file.
pub fn read_objects(path: &Path, entry: &FileEntry) -> Result<Vec<Value>> {
    let bytes = fs::read(path.join(&entry.file))
        .with_context(|| format!("reading backup file {}", entry.file))?;
    #[derive(Deserialize)]
    struct List {
        items: Vec<Value>,
    }
    let list: List = serde_json::from_slice(&bytes)
        .with_context(|| format!("backup file {} is not a List", entry.file))?;
    Ok(list.items)
}

/// Deletes the oldest backups of a cluster beyond `keep`, returning what was removed.
pub fn rotate(backup_dir: &Path, cluster: &str, keep: usize) -> Result<Vec<PathBuf>> {
    let prefix = format!("{}-", sanitize(cluster));
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for entry in
        fs::read_dir(backup_dir).with_context(|| format!("reading {}", backup_dir.display()))?
    {
        let p = entry?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with(&prefix) || !p.join("index.json").exists() {
            continue;
        }
        let created = fs::read(p.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
            .map(|i| i.created)
            .unwrap_or_default();
        found.push((created, p));
    }
    found.sort();
    let excess = found.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, p) in found.into_iter().take(excess) {
        fs::remove_dir_all(&p).with_context(|| format!("removing old backup {}", p.display()))?;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: Option<&str>, name: &str) -> DynamicObject {
        let mut o = DynamicObject::new(name, &builtin("", "v1", "ConfigMap", "configmaps"));
        o.metadata.namespace = ns.map(str::to_string);
        o
    }

    #[test]
    fn only_calicos_objects_outside_its_namespaces() {
        let sel = Selection {
            ar: builtin("", "v1", "ConfigMap", "configmaps"),
            namespaced: true,
            namespaces: None,
            name_prefixes: CALICO_PREFIXES,
        };
        assert!(wanted(&sel, &obj(Some("kube-system"), "calico-config")));
        assert!(!wanted(&sel, &obj(Some("kube-system"), "coredns")));
        assert!(wanted(&sel, &obj(Some("calico-system"), "cni-config")));
        assert!(!wanted(
            &sel,
            &obj(Some("calico-system"), "kube-root-ca.crt")
        ));
    }

    #[test]
    fn rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for (i, created) in [
            "2026-01-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
        ]
        .iter()
        .enumerate()
        {
            let p = dir.path().join(format!("prod-{i}"));
            fs::create_dir(&p).unwrap();
            let index = Index {
                format: FORMAT.into(),
                cluster: "prod".into(),
                created: created.to_string(),
                from_version: None,
                to_version: None,
                method: "manifest".into(),
                kubernetes_version: "1.27".into(),
                files: vec![],
                total: 0,
            };
            fs::write(p.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        }
        fs::create_dir(dir.path().join("other-0")).unwrap();
        let removed = rotate(dir.path(), "prod", 2).unwrap();
        assert_eq!(removed, vec![dir.path().join("prod-0")]);
        assert!(dir.path().join("other-0").exists());
    }

    #[test]
    fn folder_names_are_safe() {
        assert_eq!(sanitize("Prod Cluster/1"), "prod-cluster-1");
        assert_eq!(sanitize(""), "cluster");
    }
}
