//! `calico_upgrade`: detect, check, back up, upgrade, wait, roll back.
//!
//! The order is the safety: nothing is written before detection, planning, pre-checks and the
//! loading (and checksum verification) of every manifest the run will apply have succeeded; the
//! first write is the lock, the second the backup, and every hop is waited for before the next.
//! A failed hop restores the backup and proves it restored it.

pub mod backup;
pub mod customize;
pub mod download;
pub mod manifests;
pub mod operator;
pub mod precheck;
pub mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use kube::Client;
use serde_json::{Map, Value, json};

use crate::catalog::{InstallMethod, catalog};
use crate::cluster::apply::{Applied, Applier};
use crate::cluster::detect::{self, Datastore, Install};
use crate::cluster::lock::{self, Lock};
use crate::cluster::objects;
use crate::cluster::wait::{self, RolloutGoal};
use crate::cluster::{self, Connection};
use crate::matrix::{self, CalicoTarget, MatrixOverride, Plan, PlanInput, Strategy};
use crate::module::{self, Failure, Module, ModuleSpec, Outcome, Param, progress};
use crate::version::{KubernetesVersion, Version};
use manifests::ManifestSource;

/// The module's arguments.
pub static SPEC: ModuleSpec = ModuleSpec {
    name: "calico_upgrade",
    short_description: "Upgrade Calico safely: detect, check, back up, upgrade, wait, roll back",
    params: &[
        Param::str("state")
            .default_str("upgraded")
            .choices(&["upgraded", "rolled_back"])
            .help("upgraded: upgrade to target_version; rolled_back: restore the backup at backup_path"),
        Param::str("target_version")
            .text_only()
            .help("The Calico release (or minor) to end at; default: the recommendation for the running Kubernetes minor"),
        Param::str("kubernetes_version").text_only().help("Override the Kubernetes version read from the cluster"),
        Param::str("method")
            .default_str("auto")
            .choices(&["auto", "operator", "manifest"])
            .help("How Calico is installed; auto detects it, the others also check it"),
        Param::str("strategy")
            .default_str("stepwise")
            .choices(&["stepwise", "direct"])
            .help("stepwise: one hop per Calico minor; direct: straight to the target"),
        Param::dict("matrix").help("A version matrix override in the seed's format (see calico_matrix)"),
        Param::bool("force", false).help(
            "Allow an untested pair or failed blocking pre-checks; never skips the backup or the health checks, and a cluster already at the target is left alone; every override is named in warnings",
        ),
        Param::bool("backup", true).help("Back up every Calico object before the first change"),
        Param::path("backup_dir").default_str("~/.k8s-calico/backups").help("Where backups are written (on the host running the module)"),
        Param::int("backup_keep").default_int(5).help("How many backups of this cluster to keep"),
        Param::path("backup_path").help("The backup folder to restore with state=rolled_back"),
        Param::int("timeout").default_int(300).help("Seconds to wait for each hop to roll out"),
        Param::bool("rollback_on_failure", true).help("Restore the backup when a hop fails"),
        Param::str("manifest_url").help("URL template with {version} and {file}; default: upstream, from the catalog"),
        Param::path("manifest_dir").help("Air-gapped: a local folder with vX.Y.Z/<file> (calico.yaml or calico-typha.yaml, tigera-operator.yaml, ...)"),
        Param::dict("manifest_checksums").help("sha256 per file, keyed by vX.Y.Z/<file> or <file>; verified before anything is applied"),
        Param::str("image_registry").help("A private registry: rewrites manifest images, sets Installation.spec.registry for operator installs"),
        crate::catalog::CATALOG_PARAM,
        cluster::KUBECONFIG,
        cluster::CONTEXT,
        cluster::VALIDATE_CERTS,
    ],
};

/// Validated options.
#[derive(Debug, Clone)]
struct Options {
    rolled_back: bool,
    target: Option<CalicoTarget>,
    kubernetes: Option<KubernetesVersion>,
    method: Option<InstallMethod>,
    strategy: Strategy,
    matrix: Option<MatrixOverride>,
    force: bool,
    backup: bool,
    backup_dir: PathBuf,
    backup_keep: usize,
    backup_path: Option<PathBuf>,
    timeout: Duration,
    rollback_on_failure: bool,
    source: ManifestSource,
    image_registry: Option<String>,
    check_mode: bool,
    diff: bool,
}

fn options(m: &mut Module) -> Result<Options, Failure> {
    let bad = |s: String| Failure::new(s);
    // First: everything below plans with the catalog the run was given.
    if let Some(path) = m.str("catalog") {
        crate::catalog::use_file(std::path::Path::new(path)).map_err(bad)?;
    }
    let timeout = m.int("timeout").unwrap_or(300);
    if timeout <= 0 {
        return Err(bad(format!(
            "timeout must be a positive number of seconds, got {timeout}"
        )));
    }
    let keep = m.int("backup_keep").unwrap_or(5);
    if keep < 1 {
        return Err(bad(format!("backup_keep must be 1 or more, got {keep}")));
    }
    let url = m.str("manifest_url").map(str::to_string);
    if let Some(u) = &url
        && (!u.contains("{version}") || !u.contains("{file}"))
    {
        return Err(bad(format!(
            "manifest_url must contain {{version}} and {{file}}, e.g. https://mirror.local/calico/{{version}}/manifests/{{file}}; got {u}"
        )));
    }
    let mut checksums = BTreeMap::new();
    for (k, v) in m.dict("manifest_checksums").cloned().unwrap_or_default() {
        let s = v.as_str().unwrap_or("").trim().to_ascii_lowercase();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "manifest_checksums.{k} must be a sha256 of 64 hex digits, got {v}"
            )));
        }
        checksums.insert(k, s);
    }
    let target = m
        .str("target_version")
        .map(|s| {
            let t = CalicoTarget::parse(s).map_err(|e| bad(format!("target_version: {e}")))?;
            // Refused before any cluster is contacted.
            t.resolve(catalog())
                .map_err(|e| bad(format!("target_version {e}")))?;
            Ok::<_, Failure>(t)
        })
        .transpose()?;
    let kubernetes = m
        .str("kubernetes_version")
        .map(|s| {
            s.parse::<KubernetesVersion>()
                .map_err(|e| bad(format!("kubernetes_version: {e}")))
        })
        .transpose()?;
    let method = match m.str("method") {
        Some("operator") => Some(InstallMethod::Operator),
        Some("manifest") => Some(InstallMethod::Manifest),
        _ => None,
    };
    let force = m.bool("force");
    let matrix = match m.dict("matrix").cloned() {
        Some(raw) if !raw.is_empty() => {
            let (mx, warnings) = MatrixOverride::parse(catalog(), &raw, force).map_err(bad)?;
            warnings.into_iter().for_each(|w| m.warn(w));
            Some(mx)
        }
        _ => None,
    };
    let rolled_back = m.str("state") == Some("rolled_back");
    let backup_path = m.str("backup_path").map(PathBuf::from);
    if rolled_back && backup_path.is_none() {
        return Err(bad("state=rolled_back needs backup_path: the backup folder to restore (its path is in ansible_facts.calico_upgrade.backup_path of the upgrade run)".into()));
    }
    Ok(Options {
        rolled_back,
        target,
        kubernetes,
        method,
        strategy: Strategy::parse(m.str("strategy").unwrap_or("stepwise")).map_err(bad)?,
        matrix,
        force,
        backup: m.bool("backup"),
        backup_dir: PathBuf::from(m.str("backup_dir").unwrap_or("~/.k8s-calico/backups")),
        backup_keep: keep as usize,
        backup_path,
        timeout: Duration::from_secs(timeout as u64),
        rollback_on_failure: m.bool("rollback_on_failure"),
        source: ManifestSource {
            url_template: url,
            dir: m.str("manifest_dir").map(PathBuf::from),
            checksums,
            cache_dir: ManifestSource::default_cache_dir(),
        },
        image_registry: m
            .str("image_registry")
            .map(|s| s.trim_end_matches('/').to_string()),
        check_mode: m.check_mode(),
        diff: m.diff_mode(),
    })
}

/// The module body.
pub fn run(m: &mut Module) -> Result<Outcome, Failure> {
    let opts = options(m)?;
    let conn = Connection::from_module(m);
    let mut job = Job {
        opts,
        conn,
        warnings: Vec::new(),
        facts: Map::new(),
    };
    let result = module::block_on(async {
        if job.opts.rolled_back {
            job.roll_back_on_demand().await
        } else {
            job.upgrade().await
        }
    })?;
    for w in job.warnings.drain(..) {
        m.warn(w);
    }
    result.map_err(|mut f| {
        f.facts
            .insert("calico_upgrade".into(), Value::Object(job.facts.clone()));
        f
    })
}

/// One run of the module.
struct Job {
    opts: Options,
    conn: Connection,
    warnings: Vec<String>,
    facts: Map<String, Value>,
}

/// Files loaded for one release.
struct Release {
    version: Version,
    objects: Vec<Value>,
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure::new(msg)
}

impl Job {
    fn warn(&mut self, w: impl Into<String>) {
        let w = w.into();
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn fact(&mut self, k: &str, v: Value) {
        self.facts.insert(k.into(), v);
    }

    async fn connect(&mut self) -> Result<(Client, KubernetesVersion), Failure> {
        let client = cluster::client(&self.conn).await.map_err(Failure::from)?;
        let k = match &self.opts.kubernetes {
            Some(k) => k.clone(),
            None => cluster::server_version(&client)
                .await
                .map_err(Failure::from)?,
        };
        let c = catalog();
        if k.minor < c.kubernetes_oldest() {
            return Err(fail(format!(
                "Kubernetes {} is not supported; supported: {} to {}",
                k.minor,
                c.kubernetes_oldest(),
                c.kubernetes_newest()
            )));
        }
        self.fact("kubernetes_version", json!(k.plain()));
        Ok((client, k))
    }

    async fn detect(&mut self, client: &Client) -> Result<Install, Failure> {
        let d = detect::detect(client).await.map_err(Failure::from)?;
        if !d.other_cnis.is_empty() {
            let found: Vec<String> = d
                .other_cnis
                .iter()
                .map(|o| format!("{} ({})", o.name, o.found))
                .collect();
            return Err(fail(format!(
                "refusing to upgrade: this cluster also runs {}; flannel-to-Calico migration and multi-CNI setups are not supported",
                found.join(", ")
            )));
        }
        let Some(install) = d.install else {
            return Err(fail(
                "no Calico install found: neither the tigera-operator Deployment (namespace tigera-operator) with Installation default, nor a calico-node DaemonSet in kube-system",
            ));
        };
        self.fact("install", install.to_json());
        self.fact("method", json!(install.method.as_str()));
        if install.datastore == Datastore::Etcd {
            return Err(fail(
                "refusing to upgrade: calico-node uses the etcd datastore (DATASTORE_TYPE=etcdv3); only the Kubernetes API datastore is supported: migrate with `calicoctl datastore migrate` first",
            ));
        }
        if let Some(want) = self.opts.method
            && want != install.method
        {
            return Err(fail(format!(
                "method is {} but the cluster runs a {} install ({})",
                want.as_str(),
                install.method.as_str(),
                match install.method {
                    InstallMethod::Operator => "Deployment tigera-operator/tigera-operator found",
                    InstallMethod::Manifest =>
                        "DaemonSet kube-system/calico-node found, no operator",
                }
            )));
        }
        if let Some(release) = &install.helm_release {
            self.warn(format!(
                "the Tigera operator is managed by Helm (release {release}): the upgrade applies upstream manifests over it; run helm upgrade afterwards to keep Helm's record in step"
            ));
        }
        if install.mixed() {
            let mixed: Vec<String> = install
                .running
                .iter()
                .map(|(v, n)| format!("{v} on {}", n.join(", ")))
                .collect();
            self.warn(format!(
                "calico-node runs mixed versions ({}): planning from the oldest",
                mixed.join("; ")
            ));
        }
        if !install.unversioned_pods.is_empty() {
            self.warn(format!(
                "calico-node pods with an image without a version tag: {}",
                install.unversioned_pods.join(", ")
            ));
        }
        Ok(install)
    }

    /// Loads and verifies the files of a release the install applies: the catalog's, with
    /// calico.yaml replaced by the flavour a manifest install was made from
    /// ([`Install::manifest_file`], e.g. calico-typha.yaml).
    async fn load(&self, version: &Version, install: &Install) -> Result<Release> {
        let mut objs = Vec::new();
        for file in install_files(install, version) {
            let loaded = self.opts.source.load(version, file).await;
            let m = if file == detect::CALICO_TYPHA_YAML {
                loaded.with_context(|| {
                    format!(
                        "this cluster was installed from {file} (it runs typha), so {file} of Calico {version} is needed, not calico.yaml"
                    )
                })?
            } else {
                loaded?
            };
            objs.extend(
                objects::parse_manifest(&m.text)
                    .map_err(|e| anyhow!("{} ({}): {e}", m.file, m.origin))?,
            );
        }
        Ok(Release {
            version: version.clone(),
            objects: objs,
        })
    }

    async fn upgrade(&mut self) -> Result<Outcome, Failure> {
        let (client, kubernetes) = self.connect().await?;
        let install = self.detect(&client).await?;
        let current = install.current().ok_or_else(|| {
            fail("cannot tell which Calico version runs: no calico-node pod has a versioned image and Installation has no status.calicoVersion")
        })?;
        let c = catalog();
        let input = PlanInput {
            kubernetes: kubernetes.clone(),
            target_kubernetes: None,
            current: Some(current.clone()),
            target: self.opts.target.clone(),
            matrix: self.opts.matrix.clone(),
            strategy: self.opts.strategy,
            allow_untested: self.opts.force,
        };
        let plan = matrix::plan(c, &input).map_err(|e| {
            if e.contains("allow_untested") {
                fail(e.replace("set allow_untested", "set force"))
            } else {
                fail(e)
            }
        })?;
        for w in &plan.warnings {
            let w = w.replace("because allow_untested is set", "because force is set");
            self.warn(w);
        }
        self.fact("from_version", json!(current));
        self.fact("to_version", json!(plan.target));
        self.fact("strategy", json!(plan.strategy));
        self.fact("rolled_back", json!(false));
        self.fact("backup_path", Value::Null);
        self.fact("hops", json!([]));

        let path: Vec<Version> = plan.path.iter().map(|h| h.version.clone()).collect();
        let everywhere = install.running.len() == 1 && install.running.contains_key(&plan.target);
        if path.is_empty() {
            // Nothing to install, force or not: no lock, no backup, not one write.
            let msg = if current > plan.target {
                format!(
                    "Calico {current} runs, newer than the target {}: nothing to do (never downgraded)",
                    plan.target
                )
            } else if everywhere || !install.mixed() {
                format!("Calico {current} already runs: nothing to do")
            } else {
                format!("Calico {current} is the target: nothing to do")
            };
            self.fact("planned_hops", json!([]));
            return Ok(Outcome::ok(msg).fact("calico_upgrade", Value::Object(self.facts.clone())));
        }
        self.fact("planned_hops", json!(plan.path));
        if let Some(ts) = &plan
            .advisories
            .iter()
            .find(|a| a.check.is_none() && a.severity != crate::catalog::Severity::Blocking)
        {
            self.warn(format!("advisory {}: {}", ts.id, ts.message));
        }

        // Everything the run will apply is loaded and verified before the first write.
        let method = install.method;
        let base = match method {
            InstallMethod::Manifest => match self.load(&current, &install).await {
                Ok(r) => Some(r),
                Err(e) if self.opts.force => {
                    self.warn(format!(
                        "force: the manifest of the running {current} cannot be loaded ({e:#}); customisations cannot be told from upstream defaults and are NOT carried over"
                    ));
                    None
                }
                Err(e) => {
                    return Err(fail(format!(
                        "cannot load the manifest of the running Calico {current}, needed to carry your customisations over: {e:#}"
                    )));
                }
            },
            InstallMethod::Operator => None,
        };
        let mut releases = Vec::new();
        for v in &path {
            releases.push(self.load(v, &install).await.map_err(Failure::from)?);
        }

        let checks = precheck::run(
            &client,
            &detect::Detection {
                install: Some(install.clone()),
                other_cnis: vec![],
                nodes: detect::list_nodes(&client).await.map_err(Failure::from)?,
            },
            &install,
            &plan,
        )
        .await
        .map_err(Failure::from)?;
        self.fact("prechecks", json!(checks));
        let failed: Vec<&precheck::Check> = checks.iter().filter(|c| c.blocking && !c.ok).collect();
        if !failed.is_empty() {
            if !self.opts.force {
                let list: Vec<String> = failed
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                return Err(fail(format!(
                    "pre-checks failed, nothing was changed: {}; fix them, or set force to override",
                    list.join("; ")
                )));
            }
            for c in failed {
                let w = format!(
                    "force: overriding the failed pre-check {}: {}",
                    c.name, c.detail
                );
                self.warn(w);
            }
        }
        for c in checks.iter().filter(|c| !c.blocking && !c.ok) {
            let w = format!("{}: {}", c.name, c.detail);
            self.warn(w);
        }

        // What the final state would be, for the customisation report and check mode.
        let last = releases.last().expect("at least one hop");
        let live = self.live_objects(&client, base.as_ref(), last).await?;
        let final_objects = self.desired(method, base.as_ref(), last, &live, true)?;
        if self.opts.check_mode {
            return self.check_mode(&client, final_objects, &plan).await;
        }

        let holder = lock::holder_identity();
        let lock = Lock::acquire(&client, &holder)
            .await
            .map_err(Failure::from)?;
        let result = self
            .upgrade_locked(
                &client,
                &kubernetes,
                &install,
                &current,
                base,
                releases,
                &lock,
            )
            .await;
        if let Err(e) = lock.release().await {
            self.warn(format!(
                "the lock was not released ({e}); it expires by itself"
            ));
        }
        result
    }

    /// The desired objects of a release: upstream, with customisations carried (manifest
    /// installs) and images moved to the private registry.
    fn desired(
        &mut self,
        method: InstallMethod,
        base: Option<&Release>,
        target: &Release,
        live: &[Value],
        report: bool,
    ) -> Result<Vec<Value>, Failure> {
        let mut objs = match (method, base) {
            (InstallMethod::Manifest, Some(base)) => {
                let merged = customize::carry_over(&base.objects, live, &target.objects);
                if report {
                    self.fact("customizations", merged.report.to_json());
                    if let Some(Value::Array(checks)) = self.facts.get_mut("prechecks") {
                        checks.push(json!(precheck::Check::customizations(&merged.report)));
                    }
                    for d in merged.report.dropped_messages() {
                        self.warn(format!(
                            "customisation not carried to {}: {d}",
                            target.version
                        ));
                    }
                    for c in merged.report.conflict_messages() {
                        self.warn(format!(
                            "customisation carried to {} over an upstream change, review it: {c}",
                            target.version
                        ));
                    }
                }
                merged.objects
            }
            _ => target.objects.clone(),
        };
        if method == InstallMethod::Operator
            && let Some(release) = catalog().release(&target.version)
            && let Some(pinned) = operator::pin(&mut objs, &release.operator)
            && report
        {
            self.fact("operator_image", json!(pinned));
        }
        if let Some(registry) = &self.opts.image_registry {
            let rewrites = customize::rewrite_registry(&mut objs, registry);
            if report {
                self.fact("image_rewrites", json!(rewrites));
            }
        }
        Ok(objs)
    }

    /// The live versions of the objects the running release and the target define (those that
    /// exist): the customisation merge compares the running release's objects with them.
    async fn live_objects(
        &self,
        client: &Client,
        base: Option<&Release>,
        target: &Release,
    ) -> Result<Vec<Value>, Failure> {
        let mut resolver = crate::cluster::apply::Resolver::new(client.clone());
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for obj in base
            .map(|b| b.objects.as_slice())
            .unwrap_or(&[])
            .iter()
            .chain(&target.objects)
        {
            if !seen.insert(objects::reference(obj)) {
                continue;
            }
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
            if kind == "CustomResourceDefinition" {
                continue;
            }
            let Ok((api, _)) = resolver.api_for(obj).await else {
                continue;
            };
            if let Some(live) = api
                .get_opt(objects::name(obj))
                .await
                .map_err(|e| fail(format!("reading {}: {e}", objects::reference(obj))))?
            {
                out.push(serde_json::to_value(live).map_err(|e| fail(e.to_string()))?);
            }
        }
        Ok(out)
    }

    async fn check_mode(
        &mut self,
        client: &Client,
        objs: Vec<Value>,
        plan: &Plan,
    ) -> Result<Outcome, Failure> {
        let mut applier = Applier::new(client.clone(), true);
        let applied = applier.apply_all(&objs).await.map_err(Failure::from)?;
        let changed: Vec<&Applied> = applied.iter().filter(|a| a.changed()).collect();
        self.fact(
            "would_change",
            json!(
                changed
                    .iter()
                    .map(|a| format!("{} ({})", a.reference, a.action))
                    .collect::<Vec<_>>()
            ),
        );
        let mut outcome = Outcome::ok(format!(
            "check mode: upgrading Calico to {} would change {} of {} objects (nothing was written)",
            plan.target,
            changed.len(),
            applied.len()
        ))
        .changed(!changed.is_empty());
        if self.opts.diff {
            outcome.diff = changed.iter().map(|a| a.diff()).collect();
        }
        outcome
            .facts
            .insert("calico_upgrade".into(), Value::Object(self.facts.clone()));
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upgrade_locked(
        &mut self,
        client: &Client,
        kubernetes: &KubernetesVersion,
        install: &Install,
        current: &Version,
        base: Option<Release>,
        releases: Vec<Release>,
        lock: &Lock,
    ) -> Result<Outcome, Failure> {
        let backup = if self.opts.backup {
            let dir = PathBuf::from(module::expand_path(&self.opts.backup_dir.to_string_lossy()));
            let meta = backup::BackupMeta {
                cluster: cluster::cluster_name(&self.conn),
                from_version: Some(current.to_string()),
                to_version: releases.last().map(|r| r.version.to_string()),
                method: install.method.as_str().into(),
                kubernetes_version: kubernetes.plain(),
            };
            let (path, index) = backup::take(client, &dir, &meta)
                .await
                .map_err(Failure::from)?;
            self.fact("backup_path", json!(path));
            self.fact("backup_objects", json!(index.total));
            match backup::rotate(&dir, &meta.cluster, self.opts.backup_keep) {
                Ok(removed) if !removed.is_empty() => self.fact("backups_removed", json!(removed)),
                Ok(_) => {}
                Err(e) => self.warn(format!("old backups were not rotated: {e}")),
            }
            Some((path, index))
        } else {
            self.warn(
                "backup is false: no backup was taken, so a failed hop cannot be rolled back",
            );
            None
        };

        let method = install.method;
        let mut hops = Vec::new();
        let mut previous = base;
        for (i, release) in releases.iter().enumerate() {
            progress::step(
                format!(
                    "upgrade to {} (hop {} of {})",
                    release.version,
                    i + 1,
                    releases.len()
                ),
                "applying",
            );
            let started = Instant::now();
            let outcome = self
                .hop(client, method, previous.as_ref(), release, lock)
                .await;
            let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            match outcome {
                Ok(applied) => {
                    hops.push(json!({
                        "version": release.version,
                        "operator_version": catalog().release(&release.version).map(|r| r.operator.to_string()),
                        "objects_applied": applied.len(),
                        "objects_changed": applied.iter().filter(|a| a.changed()).count(),
                        "seconds": seconds,
                    }));
                    self.fact("hops", json!(hops));
                }
                Err(why) => {
                    hops.push(json!({"version": release.version, "failed": why.to_string(), "seconds": seconds}));
                    self.fact("hops", json!(hops));
                    return Err(self
                        .after_failure(
                            client,
                            install,
                            current,
                            &release.version,
                            why,
                            backup.as_ref(),
                            lock,
                        )
                        .await);
                }
            }
            previous = Some(Release {
                version: release.version.clone(),
                objects: release.objects.clone(),
            });
        }
        let target = releases
            .last()
            .map(|r| r.version.clone())
            .unwrap_or_else(|| current.clone());
        let msg = format!(
            "Calico upgraded {current} -> {target} ({} hop{}: {})",
            releases.len(),
            if releases.len() == 1 { "" } else { "s" },
            releases
                .iter()
                .map(|r| r.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Outcome::ok(msg)
            .changed(true)
            .fact("calico_upgrade", Value::Object(self.facts.clone())))
    }

    /// Applies one release and waits for it.
    async fn hop(
        &mut self,
        client: &Client,
        method: InstallMethod,
        previous: Option<&Release>,
        release: &Release,
        lock: &Lock,
    ) -> Result<Vec<Applied>> {
        lock.held()?;
        let live = self
            .live_objects(client, previous, release)
            .await
            .map_err(|f| anyhow!(f.msg))?;
        let objs = self
            .desired(method, previous, release, &live, false)
            .map_err(|f| anyhow!(f.msg))?;
        if method == InstallMethod::Operator
            && let Some(registry) = self.opts.image_registry.clone()
        {
            set_installation_registry(client, &registry).await?;
        }
        let mut applier = Applier::new(client.clone(), false);
        let applied = applier.apply_all(&objs).await?;
        let goal = rollout_goal(method, &release.version, &objs);
        wait::rollout(client, &goal, self.opts.timeout)
            .await
            .map_err(|e| anyhow!(e.message))?;
        Ok(applied)
    }

    /// Restores the backup after a failed hop and builds the failure to return.
    #[allow(clippy::too_many_arguments)]
    async fn after_failure(
        &mut self,
        client: &Client,
        install: &Install,
        current: &Version,
        hop: &Version,
        why: anyhow::Error,
        backup: Option<&(PathBuf, backup::Index)>,
        lock: &Lock,
    ) -> Failure {
        let base = format!("upgrade to {hop} failed: {why}");
        if !self.opts.rollback_on_failure {
            return fail(format!(
                "{base}; rollback_on_failure is false, so the cluster was left as it is"
            ));
        }
        if let Err(lost) = lock.held() {
            // Another run may be working on the cluster now: a restore would undo its work.
            let mut f = fail(format!(
                "{base}; not rolled back because {lost}{}",
                backup
                    .map(|(p, _)| format!("; the backup is {}", p.display()))
                    .unwrap_or_default()
            ));
            f.changed = true;
            f.extra.insert("rolled_back".into(), json!(false));
            return f;
        }
        let Some((path, index)) = backup else {
            return fail(format!(
                "{base}; no backup was taken (backup: false), so nothing could be restored"
            ));
        };
        match self
            .restore_and_verify(client, install.method, current, path, index)
            .await
        {
            Ok(summary) => {
                self.fact("rolled_back", json!(true));
                let mut f = fail(format!(
                    "{base}; rolled back to {current} from {}: {summary}",
                    path.display()
                ));
                f.changed = true;
                f.extra.insert("rolled_back".into(), json!(true));
                f
            }
            Err(e) => {
                let mut f = fail(format!(
                    "{base}; the rollback from {} failed too: {e}",
                    path.display()
                ));
                f.changed = true;
                f.extra.insert("rolled_back".into(), json!(false));
                f
            }
        }
    }

    async fn restore_and_verify(
        &mut self,
        client: &Client,
        method: InstallMethod,
        version: &Version,
        path: &std::path::Path,
        index: &backup::Index,
    ) -> Result<String> {
        progress::step(format!("restore of {version} from the backup"), "restoring");
        let report = restore::restore(client, path, index, false).await?;
        self.fact("restore", json!(report));
        let goal = RolloutGoal {
            namespace: match method {
                InstallMethod::Operator => detect::OPERATOR_CALICO_NAMESPACE.into(),
                InstallMethod::Manifest => detect::MANIFEST_NAMESPACE.into(),
            },
            version: version.clone(),
            deployments: Vec::new(),
            operator: method == InstallMethod::Operator,
            installation_reports_version: operator_reports_version(version),
        };
        wait::rollout(client, &goal, self.opts.timeout)
            .await
            .map_err(|e| anyhow!("after the restore, {}", e.message))?;
        let differences = restore::compare(client, path, index).await?;
        self.fact("differences", json!(differences));
        Ok(if differences.is_empty() {
            format!("every backed-up object matches ({} objects)", index.total)
        } else {
            let shown: Vec<String> = differences
                .iter()
                .take(5)
                .map(|d| format!("{} ({})", d.object, d.detail))
                .collect();
            format!(
                "{} objects differ from the backup: {}",
                differences.len(),
                shown.join("; ")
            )
        })
    }

    async fn roll_back_on_demand(&mut self) -> Result<Outcome, Failure> {
        let (client, _) = self.connect().await?;
        let path = self.opts.backup_path.clone().expect("checked in options");
        let path = PathBuf::from(module::expand_path(&path.to_string_lossy()));
        let index = backup::open(&path).map_err(Failure::from)?;
        self.fact("backup_path", json!(path));
        let version: Version = index
            .from_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                fail(format!(
                    "the backup {} does not say which Calico version it holds",
                    path.display()
                ))
            })?;
        let method = if index.method == "operator" {
            InstallMethod::Operator
        } else {
            InstallMethod::Manifest
        };
        self.fact("to_version", json!(version));
        self.fact("method", json!(method.as_str()));
        if self.opts.check_mode {
            let report = restore::restore(&client, &path, &index, true)
                .await
                .map_err(Failure::from)?;
            let changed = !report.replaced.is_empty() || !report.created.is_empty();
            self.fact("restore", json!(report));
            return Ok(Outcome::ok(format!(
                "check mode: restoring {} would change {} objects",
                path.display(),
                report.replaced.len() + report.created.len()
            ))
            .changed(changed)
            .fact("calico_upgrade", Value::Object(self.facts.clone())));
        }
        let holder = lock::holder_identity();
        let lock = Lock::acquire(&client, &holder)
            .await
            .map_err(Failure::from)?;
        let result = self
            .restore_and_verify(&client, method, &version, &path, &index)
            .await;
        if let Err(e) = lock.release().await {
            self.warn(format!(
                "the lock was not released ({e}); it expires by itself"
            ));
        }
        let summary = result.map_err(Failure::from)?;
        self.fact("rolled_back", json!(true));
        let changed = self.facts.get("restore").is_some_and(|r| {
            r["replaced"].as_array().is_some_and(|a| !a.is_empty())
                || r["created"].as_array().is_some_and(|a| !a.is_empty())
        });
        Ok(Outcome::ok(format!(
            "restored Calico {version} from {}: {summary}",
            path.display()
        ))
        .changed(changed)
        .fact("calico_upgrade", Value::Object(self.facts.clone())))
    }
}

/// The files of a release an install applies: the catalog's for its method, with a manifest
/// install's calico.yaml replaced by the flavour it was made from.
fn install_files<'a>(install: &'a Install, version: &Version) -> Vec<&'a str> {
    catalog()
        .install_files(install.method, version)
        .into_iter()
        .map(|file| match (install.method, install.manifest_file) {
            (InstallMethod::Manifest, Some(flavour)) if file == detect::CALICO_YAML => flavour,
            _ => file,
        })
        .collect()
}

/// Whether the operator of a release writes `Installation.status.calicoVersion` (v1.29 and up).
fn operator_reports_version(v: &Version) -> bool {
    catalog()
        .release(v)
        .is_some_and(|r| r.operator.minor() >= crate::version::Minor::new(1, 29))
}

fn rollout_goal(method: InstallMethod, version: &Version, objs: &[Value]) -> RolloutGoal {
    match method {
        InstallMethod::Operator => RolloutGoal {
            namespace: detect::OPERATOR_CALICO_NAMESPACE.into(),
            version: version.clone(),
            deployments: vec!["calico-kube-controllers".into()],
            operator: true,
            installation_reports_version: operator_reports_version(version),
        },
        InstallMethod::Manifest => RolloutGoal {
            namespace: detect::MANIFEST_NAMESPACE.into(),
            version: version.clone(),
            deployments: objs
                .iter()
                .filter(|o| {
                    o["kind"] == "Deployment"
                        && objects::namespace(o) == Some(detect::MANIFEST_NAMESPACE)
                })
                .map(|o| objects::name(o).to_string())
                .collect(),
            operator: false,
            installation_reports_version: false,
        },
    }
}

/// Points the operator at a private registry (the one field of `Installation` it is asked to
/// change); a no-op when already set.
async fn set_installation_registry(client: &Client, registry: &str) -> Result<()> {
    let Some(inst) = detect::get_installation(client).await? else {
        return Ok(());
    };
    let want = format!("{registry}/");
    let current = inst
        .data
        .pointer("/spec/registry")
        .and_then(Value::as_str)
        .unwrap_or("");
    if current.trim_end_matches('/') == registry {
        return Ok(());
    }
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        client.clone(),
        &detect::operator_resource("Installation", "installations"),
    );
    let params = kube::api::PatchParams::apply(crate::cluster::apply::FIELD_MANAGER);
    let patch = json!({"apiVersion": "operator.tigera.io/v1", "kind": "Installation", "metadata": {"name": "default"}, "spec": {"registry": want}});
    api.patch("default", &params, &kube::api::Patch::Apply(&patch))
        .await
        .map_err(|e| anyhow!("setting Installation default spec.registry: {e}"))?;
    Ok(())
}
