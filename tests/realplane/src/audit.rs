//! Counting the writes a client made, from the API server's own audit log: every mutating
//! request is logged at `Metadata` level (who, with which user agent, which verb on which
//! object, the response code), reads are not logged at all.
//!
//! This is what replaces kubesim's write counters on the real plane. A test takes a [`Mark`]
//! before the module runs and asks for the [`Write`]s since, usually only those of the user the
//! module's kubeconfig names ([`crate::pki::ADMIN`]); the controllers, the scheduler and kwok
//! have identities of their own.
//!
//! The API server writes an event after it has sent the response, so a client can see its
//! answer a moment before the event is in the file. Reading therefore first sends a fence (a
//! `SelfSubjectReview`, a create that stores nothing) and waits until the fence's event is
//! logged: every request answered before it is logged by then.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading the audit log {path}: {source}")]
    Read {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The fence request failed.
    #[error("the audit fence request failed: {0}")]
    Fence(String),
    /// The fence never appeared in the log.
    #[error("the audit fence {id} did not appear in {path} within {waited:?}")]
    FenceMissing {
        /// The fence's id.
        id: String,
        /// The log file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
}

/// The audit policy the API server runs with.
pub fn policy() -> Value {
    json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "verbs": ["get", "list", "watch"]},
            {"level": "None", "nonResourceURLs": ["/*"]},
            {"level": "Metadata"}
        ]
    })
}

/// A position in the log: the writes after it are the ones a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark(u64);

/// One mutating request, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The authenticated user.
    pub user: String,
    /// The client's user agent.
    pub user_agent: String,
    /// `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group (empty for core).
    pub group: String,
    /// The resource (`daemonsets`) and subresource (`daemonsets/status`).
    pub resource: String,
    /// The namespace, if any.
    pub namespace: String,
    /// The object's name, if the request named one.
    pub name: String,
    /// The HTTP status of the response.
    pub code: u16,
    /// The request URI (with the query: `dryRun=All`, `fieldManager=...`).
    pub uri: String,
}

impl Write {
    /// Whether the server changed something: the request succeeded and was not a dry run.
    pub fn stored(&self) -> bool {
        (200..300).contains(&self.code) && !self.uri.contains("dryRun=All")
    }
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = if self.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", self.namespace)
        };
        write!(
            f,
            "{} {} {}{} -> {} by {} ({})",
            self.verb, self.resource, ns, self.name, self.code, self.user, self.user_agent
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    user: EventUser,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize, Default)]
struct EventUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize, Default)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// Reviews that are requests with the `create` verb but store nothing.
const NOT_STORED: [&str; 5] = [
    "selfsubjectreviews",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "subjectaccessreviews",
    "tokenreviews",
];

fn parse_line(line: &str) -> Option<Write> {
    let e: Event = serde_json::from_str(line).ok()?;
    if !matches!(
        e.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        return None;
    }
    let o = e.object_ref.unwrap_or_default();
    if NOT_STORED.contains(&o.resource.as_str()) {
        return None;
    }
    let resource = if o.subresource.is_empty() {
        o.resource
    } else {
        format!("{}/{}", o.resource, o.subresource)
    };
    Some(Write {
        user: e.user.username,
        user_agent: e.user_agent,
        verb: e.verb,
        group: o.api_group,
        resource,
        namespace: o.namespace,
        name: o.name,
        code: e.response_status.map(|s| s.code).unwrap_or(0),
        uri: e.request_uri,
    })
}

/// The audit log of one API server.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path` (it may not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_from(&self, offset: u64) -> Result<(String, u64), Error> {
        let err = |source| Error::Read {
            path: self.path.clone(),
            source,
        };
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
            Err(e) => return Err(err(e)),
        };
        f.seek(SeekFrom::Start(offset)).map_err(err)?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(err)?;
        // Only whole lines: the server may be writing the next one.
        let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
        Ok((
            String::from_utf8_lossy(&bytes).into_owned(),
            offset + end as u64,
        ))
    }

    /// Waits until an event whose request URI contains `fence_id` is logged after `from`, and
    /// returns a mark just past it.
    pub fn wait_for_fence(
        &self,
        fence_id: &str,
        from: Mark,
        timeout: Duration,
    ) -> Result<Mark, Error> {
        let start = Instant::now();
        loop {
            let (text, _) = self.read_from(from.0)?;
            let mut offset = from.0;
            for line in text.split_inclusive('\n') {
                offset += line.len() as u64;
                if line.contains(fence_id) {
                    return Ok(Mark(offset));
                }
            }
            if start.elapsed() > timeout {
                return Err(Error::FenceMissing {
                    id: fence_id.to_string(),
                    path: self.path.clone(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The start of the log.
    pub fn start(&self) -> Mark {
        Mark(0)
    }

    /// Every write logged between `from` and `to`.
    pub fn writes_between(&self, from: Mark, to: Mark) -> Result<Vec<Write>, Error> {
        let (text, _) = self.read_from(from.0)?;
        let len = usize::try_from(to.0.saturating_sub(from.0)).unwrap_or(usize::MAX);
        let text = &text[..len.min(text.len())];
        Ok(text.lines().filter_map(parse_line).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/kube-system/daemonsets/calico-node?fieldManager=calico_upgrade","verb":"patch","user":{"username":"kubernetes-admin","groups":["kubeadm:cluster-admins"]},"userAgent":"k8s-calico/0.1.0","objectRef":{"resource":"daemonsets","namespace":"kube-system","name":"calico-node","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"code":200}}"#;

    #[test]
    fn a_patch_is_a_stored_write_and_reviews_are_not_writes() {
        let w = parse_line(PATCH).unwrap();
        assert_eq!(
            (w.verb.as_str(), w.resource.as_str(), w.name.as_str()),
            ("patch", "daemonsets", "calico-node")
        );
        assert!(w.stored());
        assert!(w.to_string().contains("kube-system/calico-node"));
        let review = PATCH
            .replace("daemonsets", "selfsubjectreviews")
            .replace("\"patch\"", "\"create\"");
        assert!(parse_line(&review).is_none());
        let dry = PATCH.replace("fieldManager", "dryRun=All&fieldManager");
        assert!(!parse_line(&dry).unwrap().stored());
    }

    #[test]
    fn marks_bound_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(&path);
        std::fs::write(&path, format!("{PATCH}\nfence-1\n")).unwrap();
        let second_of = Duration::from_secs(1);
        let first = log
            .wait_for_fence("fence-1", log.start(), second_of)
            .unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "{}\nfence-2\n",
            PATCH.replace("calico-node", "other")
        ));
        std::fs::write(&path, text).unwrap();
        let second = log.wait_for_fence("fence-2", first, second_of).unwrap();
        let writes = log.writes_between(first, second).unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].name, "other");
        assert_eq!(
            log.writes_between(Mark(0), first).unwrap()[0].name,
            "calico-node"
        );
    }
}
