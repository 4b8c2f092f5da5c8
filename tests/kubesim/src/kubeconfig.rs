//! The kubeconfig kubesim writes for itself: one cluster (with the CA inline), one user with
//! the bearer token, one current context, so kubectl and kube-rs connect unchanged.

use std::path::Path;

use base64::Engine;

/// Renders a kubeconfig for `server` (`https://127.0.0.1:PORT`), with the CA when serving TLS.
pub fn render(server: &str, token: &str, ca_pem: Option<&str>, namespace: &str) -> String {
    let ca_line = match ca_pem {
        Some(pem) => format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubesim\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         {ca_line}\
         users:\n\
         - name: kubesim-admin\n\
         \x20 user:\n\
         \x20   token: {token}\n\
         contexts:\n\
         - name: kubesim\n\
         \x20 context:\n\
         \x20   cluster: kubesim\n\
         \x20   user: kubesim-admin\n\
         \x20   namespace: {namespace}\n\
         current-context: kubesim\n\
         preferences: {{}}\n"
    )
}

/// Writes the kubeconfig with owner-only permissions (it holds a credential).
pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_yaml() {
        let text = render("https://127.0.0.1:1", "tok", Some("PEM"), "default");
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:1");
        assert!(v["clusters"][0]["cluster"]["certificate-authority-data"].is_string());
        assert_eq!(v["current-context"], "kubesim");
    }
}
