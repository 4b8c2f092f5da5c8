//! Options of the in-process API verbs, mirroring the query parameters and bodies of the HTTP
//! API so both front ends pass the same thing to the same code.

use std::sync::Arc;

use crate::store::StoredObject;

/// Options of create, update and patch.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`; when absent the manager is derived from `user_agent` as the real server
    /// does.
    pub field_manager: Option<String>,
    /// The client's User-Agent, for the default field manager.
    pub user_agent: Option<String>,
    /// `force` for server-side apply.
    pub force: bool,
    /// `fieldValidation`: `Strict` refuses fields a custom resource's schema does not
    /// declare; otherwise they are pruned silently.
    pub field_validation: Option<String>,
}

impl WriteOptions {
    /// Options for a controller writing under its own field manager.
    pub fn manager(name: &str) -> Self {
        Self {
            field_manager: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// The field manager this write is recorded under: the explicit one, else the User-Agent
    /// up to its first `/` (the real server's rule), else `unknown`.
    pub fn effective_manager(&self) -> String {
        if let Some(m) = self.field_manager.as_deref().filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        match self.user_agent.as_deref() {
            Some(ua) if !ua.is_empty() => {
                let prefix = ua.split('/').next().unwrap_or(ua);
                prefix.chars().take(128).collect()
            }
            _ => "unknown".to_string(),
        }
    }
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Owner first, dependents by the garbage collector afterwards.
    Background,
    /// Dependents first; the owner keeps a `foregroundDeletion` finalizer until the blocking
    /// ones are gone.
    Foreground,
    /// Dependents stay, with the owner reference removed.
    Orphan,
}

impl Propagation {
    /// Parses `propagationPolicy`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            "Orphan" => Some(Self::Orphan),
            _ => None,
        }
    }
}

/// Options of delete and deletecollection.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy`; `None` means the type's default (Background).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`; `None` means the object's own (pods: terminationGracePeriodSeconds).
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Options of list (and of the initial state of watches).
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector` in query-string form.
    pub label_selector: Option<String>,
    /// `fieldSelector` in query-string form.
    pub field_selector: Option<String>,
    /// `limit`: page size; `None` or 0 for everything.
    pub limit: Option<usize>,
    /// `continue` token from the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` (`Exact` or `NotOlderThan`).
    pub resource_version_match: Option<String>,
}

/// A page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The objects, in key order, already filtered.
    pub items: Vec<Arc<StoredObject>>,
    /// `metadata.resourceVersion` of the list: the snapshot it was read at.
    pub resource_version: u64,
    /// `metadata.continue`, when more remains.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount`, when known (no selectors).
    pub remaining_item_count: Option<u64>,
}

/// The content type of a PATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`, built-in kinds only.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

impl PatchType {
    /// Maps a Content-Type (parameters ignored) to a patch type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// The result of a write, telling whether stored state changed (for the write counters).
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    /// The object as the client sees it after the write (or as it would be, for dry runs).
    pub object: serde_json::Value,
    /// Whether the store changed (false for dry runs and no-op updates).
    pub changed: bool,
    /// Whether the write created the object (201 instead of 200).
    pub created: bool,
    /// For deletes: whether the object is gone (200) or still finalizing (202).
    pub gone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_manager_defaults_from_user_agent() {
        let o = WriteOptions {
            user_agent: Some("kubectl/v1.30.0 (linux/amd64) kubernetes/abc".into()),
            ..Default::default()
        };
        assert_eq!(o.effective_manager(), "kubectl");
        assert_eq!(WriteOptions::manager("ctl").effective_manager(), "ctl");
        assert_eq!(WriteOptions::default().effective_manager(), "unknown");
    }
}
