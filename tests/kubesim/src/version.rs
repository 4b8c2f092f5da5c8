//! The simulated Kubernetes version and what it decides: which APIs are served and which
//! discovery formats exist. One small table keeps every version gate in one place.

use std::fmt;

/// A Kubernetes release such as `v1.27.16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Always 1 for the releases kubesim simulates.
    pub major: u32,
    /// Minor release, 22 to 36.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
}

impl KubeVersion {
    /// The oldest minor kubesim simulates: 1.22, one below what the product supports, so that
    /// its refusal is tested against a server and not only against an argument.
    pub const OLDEST_MINOR: u32 = 22;
    /// The newest minor kubesim simulates.
    pub const NEWEST_MINOR: u32 = 36;

    /// The default when no version is asked for.
    pub const DEFAULT: KubeVersion = KubeVersion {
        major: 1,
        minor: 30,
        patch: 6,
    };

    /// Parses `v1.27.16`, `1.27.16` or `v1.27` (patch 0); refuses versions outside 1.23–1.36.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let num = |p: Option<&str>| -> Result<u32, String> {
            p.ok_or_else(|| format!("version {s:?} is not of the form v1.MINOR.PATCH"))?
                .parse::<u32>()
                .map_err(|_| format!("version {s:?} is not of the form v1.MINOR.PATCH"))
        };
        let major = num(parts.next())?;
        let minor = num(parts.next())?;
        let patch = match parts.next() {
            Some(p) => num(Some(p))?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(format!("version {s:?} is not of the form v1.MINOR.PATCH"));
        }
        if major != 1 || !(Self::OLDEST_MINOR..=Self::NEWEST_MINOR).contains(&minor) {
            return Err(format!(
                "version {s:?} is outside the simulated range v1.{}–v1.{}",
                Self::OLDEST_MINOR,
                Self::NEWEST_MINOR
            ));
        }
        Ok(Self {
            major,
            minor,
            patch,
        })
    }

    /// `GET /version` as the real server answers it.
    pub fn version_info(&self) -> serde_json::Value {
        // Go release per Kubernetes minor, so clients that log it see something plausible.
        let go = match self.minor {
            ..=22 => "go1.16.15",
            23 => "go1.17.13",
            24 => "go1.19.4",
            25 => "go1.20.5",
            26 => "go1.20.13",
            27 => "go1.21.13",
            28 => "go1.22.6",
            29 => "go1.22.8",
            30 => "go1.22.8",
            31 => "go1.22.10",
            32 => "go1.23.6",
            33 => "go1.24.2",
            34 => "go1.24.6",
            35 => "go1.25.3",
            _ => "go1.25.5",
        };
        serde_json::json!({
            "major": self.major.to_string(),
            "minor": self.minor.to_string(),
            "emulationMajor": if self.minor >= 33 { Some(self.major.to_string()) } else { None },
            "emulationMinor": if self.minor >= 33 { Some(self.minor.to_string()) } else { None },
            "gitVersion": self.to_string(),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": go,
            "compiler": "gc",
            "platform": "linux/amd64",
        })
        .as_object()
        .map(|m| {
            serde_json::Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        })
        .unwrap_or_default()
    }

    /// Aggregated discovery `apidiscovery.k8s.io/v2beta1` (beta, on by default from 1.26).
    pub fn has_aggregated_discovery_v2beta1(&self) -> bool {
        self.minor >= 26
    }

    /// Aggregated discovery `apidiscovery.k8s.io/v2` (GA in 1.30).
    pub fn has_aggregated_discovery_v2(&self) -> bool {
        self.minor >= 30
    }

    /// `policy/v1beta1` (PodSecurityPolicy, old PDBs) was removed in 1.25.
    pub fn serves_policy_v1beta1(&self) -> bool {
        self.minor < 25
    }

    /// Watch lists with `sendInitialEvents` (alpha 1.27 behind a gate; kubesim offers it
    /// from 1.27 on so clients that ask get an answer).
    pub fn serves_send_initial_events(&self) -> bool {
        self.minor >= 27
    }

    /// OpenAPI v3 is served from 1.24 on (beta 1.24, GA 1.27).
    pub fn serves_openapi_v3(&self) -> bool {
        self.minor >= 24
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gates() {
        let v = KubeVersion::parse("v1.27.16").unwrap();
        assert_eq!(v.to_string(), "v1.27.16");
        assert!(v.has_aggregated_discovery_v2beta1());
        assert!(!v.has_aggregated_discovery_v2());
        assert!(KubeVersion::parse("v1.21.0").is_err());
        assert!(KubeVersion::parse("v1.37.0").is_err());
        assert!(KubeVersion::parse("1.24").unwrap().serves_policy_v1beta1());
        assert_eq!(v.version_info()["minor"], "27");
    }
}
