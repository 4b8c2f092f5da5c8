//! The certificates and keys a kubeadm control plane has, generated fresh for each plane: a CA,
//! the API server's serving certificate, one client certificate per component and user, and
//! the ServiceAccount token signing key.
//!
//! Identities follow kubeadm: `kubernetes-admin` in `kubeadm:cluster-admins` (bound to
//! cluster-admin by RBAC, so it is authorised like a kubeadm admin.conf, not as a superuser),
//! `kubernetes-super-admin` in `system:masters` for bootstrapping, and the components'
//! `system:kube-controller-manager` and `system:kube-scheduler`, which the API server's
//! bootstrap RBAC policy authorises.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or could not sign.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A client identity: the certificate's common name (the user) and organisations (groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// File stem of the certificate and key (`admin` gives `admin.crt`, `admin.key`).
    pub file: &'static str,
    /// The user name.
    pub user: &'static str,
    /// The groups.
    pub groups: &'static [&'static str],
}

/// kubeadm's admin.conf user: authorised by the `kubeadm:cluster-admins` binding.
pub const ADMIN: Identity = Identity {
    file: "admin",
    user: "kubernetes-admin",
    groups: &["kubeadm:cluster-admins"],
};
/// kubeadm's super-admin.conf user, for bootstrapping before the admin binding exists.
pub const SUPER_ADMIN: Identity = Identity {
    file: "super-admin",
    user: "kubernetes-super-admin",
    groups: &["system:masters"],
};
/// The controller-manager.
pub const CONTROLLER_MANAGER: Identity = Identity {
    file: "controller-manager",
    user: "system:kube-controller-manager",
    groups: &[],
};
/// The scheduler.
pub const SCHEDULER: Identity = Identity {
    file: "scheduler",
    user: "system:kube-scheduler",
    groups: &[],
};
/// kwok, which plays every kubelet (it patches node and pod status, renews leases, deletes
/// pods); a superuser, as kwokctl runs it.
pub const KWOK: Identity = Identity {
    file: "kwok",
    user: "kwok-controller",
    groups: &["system:masters"],
};
/// The launcher's probe runner, which completes `calico_nettest` probe pods as their kubelet.
pub const PROBE_RUNNER: Identity = Identity {
    file: "probe-runner",
    user: "realplane-probe-runner",
    groups: &["system:masters"],
};

/// Every client identity the plane issues.
pub const IDENTITIES: [Identity; 6] = [
    ADMIN,
    SUPER_ADMIN,
    CONTROLLER_MANAGER,
    SCHEDULER,
    KWOK,
    PROBE_RUNNER,
];

/// The first address of the default Service range (10.96.0.0/12): the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// The files written into a plane's `pki/` directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM), for kubeconfigs.
    pub ca_pem: String,
}

impl Pki {
    /// Generates everything into `dir` (created), keys readable by the owner only.
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_pem: String::new(),
        };
        let (ca_pem, issuer) = pki.ca()?;
        let pki = Pki { ca_pem, ..pki };
        pki.serving(&issuer)?;
        for id in IDENTITIES {
            pki.client(&issuer, id)?;
        }
        let sa = key("the ServiceAccount signing key")?;
        pki.write("sa.key", &sa.serialize_pem(), true)?;
        pki.write("sa.pub", &sa.public_key_pem(), false)?;
        Ok(pki)
    }

    /// A file of the directory: `ca.crt`, `apiserver.crt`, `admin.key`, `sa.pub`...
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn ca(&self) -> Result<(String, Issuer<'static, KeyPair>), Error> {
        let what = "the CA";
        let key = key(what)?;
        let mut params = params(what, Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(gen_err(what))?;
        self.write("ca.crt", &cert.pem(), false)?;
        self.write("ca.key", &key.serialize_pem(), true)?;
        Ok((cert.pem(), Issuer::new(params, key)))
    }

    fn serving(&self, issuer: &Issuer<'_, KeyPair>) -> Result<(), Error> {
        let what = "the API server's serving certificate";
        let names = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let mut params = params(what, names.iter().map(|s| s.to_string()).collect())?;
        for ip in [Ipv4Addr::LOCALHOST, KUBERNETES_SERVICE_IP] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(ip)));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.signed("apiserver", params, issuer, what)
    }

    fn client(&self, issuer: &Issuer<'_, KeyPair>, id: Identity) -> Result<(), Error> {
        let what = format!("the client certificate of {}", id.user);
        let mut params = params(&what, Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, id.user);
        for group in id.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.signed(id.file, params, issuer, &what)
    }

    fn signed(
        &self,
        stem: &str,
        params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        what: &str,
    ) -> Result<(), Error> {
        let key = key(what)?;
        let cert = params.signed_by(&key, issuer).map_err(gen_err(what))?;
        self.write(&format!("{stem}.crt"), &cert.pem(), false)?;
        self.write(&format!("{stem}.key"), &key.serialize_pem(), true)
    }

    fn write(&self, file: &str, text: &str, secret: bool) -> Result<(), Error> {
        let path = self.path(file);
        write_file(&path, text, secret).map_err(|source| Error::Write { path, source })
    }
}

/// Writes a file, owner-only when it holds a secret.
pub fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Generate {
        what: what.to_string(),
        source,
    }
}

fn key(what: &str) -> Result<KeyPair, Error> {
    KeyPair::generate().map_err(gen_err(what))
}

fn params(what: &str, names: Vec<String>) -> Result<CertificateParams, Error> {
    CertificateParams::new(names).map_err(gen_err(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_with_secret_keys_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for id in IDENTITIES {
            let key = pki.path(&format!("{}.key", id.file));
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            assert!(pki.path(&format!("{}.crt", id.file)).is_file());
        }
        for f in [
            "ca.crt",
            "apiserver.crt",
            "apiserver.key",
            "sa.key",
            "sa.pub",
        ] {
            assert!(pki.path(f).is_file(), "{f}");
        }
    }
}
