//! Kubeconfigs for the plane's identities, written the way kubeadm writes admin.conf: one
//! cluster with the CA inline, one user with its client certificate and key inline, one
//! context. Owner-only, since they hold keys.

use std::path::Path;

use base64::Engine;

use crate::pki::{Identity, Pki};

/// The cluster name kubeconfigs use (kubeadm's default).
pub const CLUSTER_NAME: &str = "kubernetes";

/// Renders the kubeconfig of `id` for the API server at `server` (`https://127.0.0.1:PORT`).
pub fn render(pki: &Pki, server: &str, id: Identity) -> std::io::Result<String> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let cert = std::fs::read(pki.path(&format!("{}.crt", id.file)))?;
    let key = std::fs::read(pki.path(&format!("{}.key", id.file)))?;
    let user = id.user;
    Ok(format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {CLUSTER_NAME}\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n\
         \x20 user:\n\
         \x20   client-certificate-data: {cert}\n\
         \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: {user}@{CLUSTER_NAME}\n\
         \x20 context:\n\
         \x20   cluster: {CLUSTER_NAME}\n\
         \x20   user: {user}\n\
         current-context: {user}@{CLUSTER_NAME}\n\
         preferences: {{}}\n",
        ca = b64(pki.ca_pem.as_bytes()),
        cert = b64(&cert),
        key = b64(&key),
    ))
}

/// Writes the kubeconfig of `id` to `path`, owner-only.
pub fn write(pki: &Pki, server: &str, id: Identity, path: &Path) -> std::io::Result<()> {
    crate::pki::write_file(path, &render(pki, server, id)?, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_kubeconfig_kube_rs_reads() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let text = render(&pki, "https://127.0.0.1:6443", crate::pki::ADMIN).unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            kc.current_context.as_deref(),
            Some("kubernetes-admin@kubernetes")
        );
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_certificate_data.is_some());
    }
}
