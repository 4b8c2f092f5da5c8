//! Version numbers as users write them and as the catalog stores them.
//!
//! Two families: Kubernetes versions (`1.27`, `1.27.16`, `v1.27.16+rke2r1`), which are often given
//! without a patch, and release versions of Calico and the Tigera operator (`3.28.5`, `v3.28.5`),
//! which always have one and are always shown with the leading `v` Calico's tags use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `major.minor` pair: a Kubernetes minor (`1.27`) or a Calico minor (`3.28`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    /// The major number.
    pub major: u64,
    /// The minor number.
    pub minor: u64,
}

impl Minor {
    /// Builds a minor from its two numbers.
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// The minor after this one (`1.27` → `1.28`).
    pub const fn next(self) -> Self {
        Self::new(self.major, self.minor + 1)
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Minor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('v');
        let mut it = t.split('.');
        let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("'{s}' is not a major.minor version such as 1.27"));
        };
        Ok(Self::new(number(a, s)?, number(b, s)?))
    }
}

impl Serialize for Minor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Minor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn number(part: &str, whole: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 9 {
        return Err(format!("'{whole}' has '{part}' where a number belongs"));
    }
    part.parse()
        .map_err(|_| format!("'{whole}' has '{part}' where a number belongs"))
}

/// A Kubernetes version as users and clusters report it.
///
/// Accepts `1.27`, `1.27.16`, `v1.27.16` and distribution builds such as `v1.27.16+rke2r1` or
/// `v1.27.16-eks-2d98532`; the suffix is kept for display but never affects comparisons.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesVersion {
    /// The `major.minor` part, which is what compatibility depends on.
    pub minor: Minor,
    /// The patch number, when given.
    pub patch: Option<u64>,
    /// A pre-release or build suffix (`-rc.1`, `+rke2r1`), kept verbatim.
    pub suffix: String,
}

impl KubernetesVersion {
    /// The version without the `v` and without any suffix: `1.27.16`, or `1.27` without a patch.
    pub fn plain(&self) -> String {
        match self.patch {
            Some(p) => format!("{}.{}", self.minor, p),
            None => self.minor.to_string(),
        }
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.plain(), self.suffix)
    }
}

impl FromStr for KubernetesVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let cut = t.find(['-', '+']).unwrap_or(t.len());
        let (core, suffix) = t.split_at(cut);
        let parts: Vec<&str> = core.split('.').collect();
        let bad = || format!("'{s}' is not a Kubernetes version such as 1.27, 1.27.16 or v1.27.16");
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let major = number(parts[0], s).map_err(|_| bad())?;
        let minor = number(parts[1], s).map_err(|_| bad())?;
        let patch = parts
            .get(2)
            .map(|p| number(p, s))
            .transpose()
            .map_err(|_| bad())?;
        if major != 1 {
            return Err(format!("'{s}' is not a Kubernetes 1.x version"));
        }
        Ok(Self {
            minor: Minor::new(major, minor),
            patch,
            suffix: suffix.to_string(),
        })
    }
}

/// A Calico or Tigera operator release version, always `vX.Y.Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub semver::Version);

impl Version {
    /// Builds `vmajor.minor.patch`.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }

    /// The `major.minor` this release belongs to.
    pub fn minor(&self) -> Minor {
        Minor::new(self.0.major, self.0.minor)
    }

    /// The patch number.
    pub fn patch(&self) -> u64 {
        self.0.patch
    }

    /// Reads the version from a container image reference such as
    /// `docker.io/calico/node:v3.26.4` or `quay.io/calico/node:v3.26.4@sha256:…`.
    pub fn from_image(image: &str) -> Option<Self> {
        let without_digest = image.split('@').next()?;
        let last = without_digest.rsplit('/').next()?;
        let (_, tag) = last.split_once(':')?;
        tag.parse().ok()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let v = semver::Version::parse(t)
            .map_err(|_| format!("'{s}' is not a release version such as 3.28.5 or v3.28.5"))?;
        Ok(Self(v))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_versions_in_every_spelling() {
        for (input, plain, shown) in [
            ("1.27", "1.27", "1.27"),
            ("1.27.16", "1.27.16", "1.27.16"),
            ("v1.27.16", "1.27.16", "1.27.16"),
            ("v1.27.16+rke2r1", "1.27.16", "1.27.16+rke2r1"),
            ("v1.30.2-eks-1552ad0", "1.30.2", "1.30.2-eks-1552ad0"),
            (" 1.36.0 ", "1.36.0", "1.36.0"),
        ] {
            let v: KubernetesVersion = input.parse().unwrap();
            assert_eq!(v.plain(), plain, "{input}");
            assert_eq!(v.to_string(), shown, "{input}");
        }
        let v: KubernetesVersion = "v1.27.16".parse().unwrap();
        assert_eq!(v.minor, Minor::new(1, 27));
    }

    #[test]
    fn malformed_kubernetes_versions_are_refused() {
        for bad in [
            "",
            "1",
            "1.x",
            "one.two",
            "2.0",
            "1.27.16.1",
            "1..2",
            "v",
            "1.27.a",
        ] {
            assert!(bad.parse::<KubernetesVersion>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn release_versions() {
        let a: Version = "3.28.5".parse().unwrap();
        let b: Version = "v3.28.5".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "v3.28.5");
        assert_eq!(a.minor().to_string(), "3.28");
        assert!("3.28".parse::<Version>().is_err());
        assert!("latest".parse::<Version>().is_err());
        assert!("v3.29.0".parse::<Version>().unwrap() > a);
    }

    #[test]
    fn versions_from_images() {
        assert_eq!(
            Version::from_image("docker.io/calico/node:v3.26.4")
                .unwrap()
                .to_string(),
            "v3.26.4"
        );
        assert_eq!(
            Version::from_image("registry.local:5000/calico/node:v3.26.4@sha256:abc").unwrap(),
            Version::new(3, 26, 4)
        );
        assert!(Version::from_image("registry.local:5000/calico/node").is_none());
        assert!(Version::from_image("calico/node:latest").is_none());
    }
}
