//! Getting the upstream manifests of a Calico release: from a local folder (air-gapped), from a
//! cache, or over HTTPS with timeouts and retries (the HTTP itself is [`super::download`]);
//! verified against sha256 sums before anything is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::download::Downloader;
use crate::catalog::catalog;
use crate::fsutil;
use crate::version::Version;

/// Where manifests come from.
#[derive(Debug, Clone, Default)]
pub struct ManifestSource {
    /// A URL template with `{version}` and `{file}`; `None` uses the catalog's upstream location.
    pub url_template: Option<String>,
    /// A local folder holding `vX.Y.Z/<file>`; when set, nothing is downloaded.
    pub dir: Option<PathBuf>,
    /// sha256 sums, keyed by `vX.Y.Z/<file>` or by `<file>`.
    pub checksums: BTreeMap<String, String>,
    /// Where downloads are kept between runs.
    pub cache_dir: Option<PathBuf>,
}

/// A manifest file, read and verified.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file name, e.g. `calico.yaml`.
    pub file: String,
    /// Its text.
    pub text: String,
    /// Where it came from (a path or a URL, and `(cached)`).
    pub origin: String,
    /// Its sha256, hex.
    pub sha256: String,
}

/// The hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl ManifestSource {
    /// The cache folder the modules use unless told otherwise.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("k8s-calico/manifests"))
    }

    fn expected_sum(&self, version: &Version, file: &str) -> Option<String> {
        self.checksums
            .get(&format!("{version}/{file}"))
            .or_else(|| self.checksums.get(file))
            .map(|s| s.trim().to_ascii_lowercase())
    }

    fn verify(&self, version: &Version, file: &str, bytes: &[u8], origin: &str) -> Result<String> {
        let got = sha256_hex(bytes);
        if let Some(want) = self.expected_sum(version, file)
            && want != got
        {
            bail!(
                "checksum mismatch for {file} of Calico {version} from {origin}: expected sha256 {want}, got {got}; nothing was applied"
            );
        }
        Ok(got)
    }

    /// The URL a file is downloaded from.
    pub fn url(&self, version: &Version, file: &str) -> Result<String> {
        match &self.url_template {
            Some(t) => Ok(t
                .replace("{version}", &version.to_string())
                .replace("{file}", file)),
            None => catalog()
                .manifest_url(version, file)
                .map_err(|e| anyhow!(e)),
        }
    }

    /// Loads and verifies one file of a release.
    pub async fn load(&self, version: &Version, file: &str) -> Result<Manifest> {
        if let Some(dir) = &self.dir {
            let path = dir.join(version.to_string()).join(file);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "manifest_dir has no {file} for Calico {version}: cannot read {}",
                    path.display()
                )
            })?;
            let origin = path.display().to_string();
            let sha256 = self.verify(version, file, &bytes, &origin)?;
            return Ok(Manifest {
                file: file.into(),
                text: utf8(bytes, &origin)?,
                origin,
                sha256,
            });
        }
        let url = self.url(version, file)?;
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(version.to_string()).join(file));
        if let Some(path) = &cached
            && let Ok(bytes) = std::fs::read(path)
        {
            // A cached copy is used only if it still verifies; otherwise it is fetched again.
            let origin = format!("{url} (cached at {})", path.display());
            if let Ok(sha256) = self.verify(version, file, &bytes, &origin) {
                return Ok(Manifest {
                    file: file.into(),
                    text: utf8(bytes, &origin)?,
                    origin,
                    sha256,
                });
            }
        }
        let bytes = fetch(&url).await?;
        let sha256 = self.verify(version, file, &bytes, &url)?;
        if let Some(path) = &cached {
            // The cache is an optimisation: failing to write it is not an error.
            let _ = fsutil::write_atomic(path, &bytes, 0o644);
        }
        Ok(Manifest {
            file: file.into(),
            text: utf8(bytes, &url)?,
            origin: url,
            sha256,
        })
    }
}

fn utf8(bytes: Vec<u8>, origin: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow!("{origin} is not UTF-8 text"))
}

/// Downloads a URL with timeouts and up to three attempts, through the proxies the environment
/// names (see [`super::download`]).
pub async fn fetch(url: &str) -> Result<Vec<u8>> {
    fetch_with(&Downloader::from_env()?, url).await
}

async fn fetch_with(downloader: &Downloader, url: &str) -> Result<Vec<u8>> {
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match downloader.get(url).await {
            Ok(got) if got.status.is_success() => return Ok(got.body),
            Ok(got) if got.status.is_client_error() => {
                // 404 and friends will not change on retry.
                bail!("cannot download {url}: HTTP {}", got.status);
            }
            Ok(got) => last = format!("HTTP {}", got.status),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!(
        "cannot download {url} after 3 attempts: {last}; on an air-gapped controller give manifest_dir (a folder with vX.Y.Z/<file>)"
    )
}

/// The folder a manifest file would be read from in `manifest_dir`, for messages and docs.
pub fn dir_layout(dir: &Path, version: &Version, file: &str) -> PathBuf {
    dir.join(version.to_string()).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    /// Serves one HTTP response per connection, `count` times.
    fn serve(status: &'static str, body: &'static str, count: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..count {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        format!("http://{addr}/{{version}}/{{file}}")
    }

    #[tokio::test]
    async fn downloads_verify_and_cache() {
        let cache = tempfile::tempdir().unwrap();
        let body = "kind: List\n";
        let mut src = ManifestSource {
            url_template: Some(serve("200 OK", "kind: List\n", 1)),
            cache_dir: Some(cache.path().to_path_buf()),
            ..Default::default()
        };
        src.checksums
            .insert("calico.yaml".into(), sha256_hex(body.as_bytes()));
        let m = src.load(&v("v3.28.5"), "calico.yaml").await.unwrap();
        assert_eq!(m.text, body);
        // The server answered once; the second load comes from the cache.
        let m = src.load(&v("v3.28.5"), "calico.yaml").await.unwrap();
        assert!(m.origin.contains("(cached at"), "{}", m.origin);
    }

    #[tokio::test]
    async fn a_checksum_mismatch_is_refused() {
        let mut src = ManifestSource {
            url_template: Some(serve("200 OK", "tampered\n", 1)),
            ..Default::default()
        };
        src.checksums
            .insert("v3.28.5/calico.yaml".into(), "00".repeat(32));
        let e = src
            .load(&v("v3.28.5"), "calico.yaml")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("checksum mismatch for calico.yaml of Calico v3.28.5"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn missing_files_and_unreachable_servers_are_explained() {
        let src = ManifestSource {
            url_template: Some(serve("404 Not Found", "", 1)),
            ..Default::default()
        };
        let e = src
            .load(&v("v3.28.5"), "calico.yaml")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 404"), "{e}");
        let src = ManifestSource {
            url_template: Some("http://127.0.0.1:9/{version}/{file}".into()),
            ..Default::default()
        };
        let e = src
            .load(&v("v3.28.5"), "calico.yaml")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("after 3 attempts") && e.contains("manifest_dir"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let src = ManifestSource {
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let e = src
            .load(&v("v3.28.5"), "calico.yaml")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("manifest_dir has no calico.yaml for Calico v3.28.5"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            // Up to three answers, so that a retry would be answered (and counted) too.
            for _ in 0..3 {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let downloader = Downloader::from_env()
            .unwrap()
            .with_proxies(hyper_util::client::proxy::matcher::Matcher::builder().build());
        let url = format!("http://{addr}/v3.28.5/calico.yaml");
        let started = std::time::Instant::now();
        let e = fetch_with(&downloader, &url).await.unwrap_err().to_string();
        assert_eq!(e, format!("cannot download {url}: HTTP 403 Forbidden"));
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // No back-off sleep (the first is 1 s) was taken either.
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn catalog_urls_by_default() {
        let src = ManifestSource::default();
        assert_eq!(
            src.url(&v("v3.30.7"), "operator-crds.yaml").unwrap(),
            "https://raw.githubusercontent.com/projectcalico/calico/v3.30.7/manifests/operator-crds.yaml"
        );
    }
}
