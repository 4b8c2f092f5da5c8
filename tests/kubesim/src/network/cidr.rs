//! IPv4 CIDR arithmetic on plain `u32`s: the model only needs containment and the n-th address,
//! and a crate for that would be more code to review than this.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network in CIDR form, normalised so that host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    base: u32,
    prefix: u8,
}

/// Why a CIDR string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// A valid IPv6 CIDR: the model is IPv4-only, so callers skip it with this reason.
    Ipv6(String),
    /// Not a CIDR at all.
    Invalid(String),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Ipv6(s) => write!(f, "{s} is IPv6; the network model covers IPv4 only"),
            CidrError::Invalid(s) => write!(f, "{s:?} is not a CIDR"),
        }
    }
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`; a bare address is taken as `/32`, as Kubernetes ipBlock validation
    /// would not accept it but Calico's own resources do for single hosts.
    pub fn parse(s: &str) -> Result<Ipv4Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p),
            None => (s, "32"),
        };
        if addr.contains(':') {
            // Validate loosely: anything with a colon and a sane prefix is reported as IPv6 so
            // that the caller can say "skipped: IPv6" rather than "garbage".
            return match (addr.parse::<std::net::Ipv6Addr>(), prefix.parse::<u8>()) {
                (Ok(_), Ok(p)) if p <= 128 => Err(CidrError::Ipv6(s.to_string())),
                _ => Err(CidrError::Invalid(s.to_string())),
            };
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::Invalid(s.to_string()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::Invalid(s.to_string()))?;
        if prefix > 32 {
            return Err(CidrError::Invalid(s.to_string()));
        }
        Ok(Ipv4Cidr::new(addr, prefix))
    }

    /// The network of `addr` at `prefix` (clamped to 32); host bits are dropped.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            base: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the network spans (u64: a /0 has 2^32).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// Whether `other` lies entirely inside.
    pub fn contains_net(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// The `n`-th address (0 is the network address), if inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        // n < size <= 2^32 and base has zero host bits, so this cannot overflow.
        u32::try_from(n).ok().map(|n| Ipv4Addr::from(self.base | n))
    }

    /// The offset of `ip` from the network address, if inside.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - self.base))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c = Ipv4Cidr::parse("10.244.1.7/16").unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!(c.contains("10.244.255.255".parse().unwrap()));
        assert!(!c.contains("10.245.0.0".parse().unwrap()));
        assert_eq!(c.size(), 65536);
        assert_eq!(c.nth(65535), Some("10.244.255.255".parse().unwrap()));
        assert_eq!(c.nth(65536), None);
        assert_eq!(Ipv4Cidr::parse("0.0.0.0/0").unwrap().size(), 1 << 32);
        assert!(
            Ipv4Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("255.1.2.3".parse().unwrap())
        );
        assert_eq!(
            Ipv4Cidr::parse("1.2.3.4").unwrap().to_string(),
            "1.2.3.4/32"
        );
    }

    #[test]
    fn rejects_garbage_and_names_ipv6() {
        assert!(matches!(
            Ipv4Cidr::parse("fd00::/48"),
            Err(CidrError::Ipv6(_))
        ));
        assert!(matches!(
            Ipv4Cidr::parse("10.0.0.0/33"),
            Err(CidrError::Invalid(_))
        ));
        assert!(matches!(
            Ipv4Cidr::parse("ten/8"),
            Err(CidrError::Invalid(_))
        ));
        assert!(matches!(Ipv4Cidr::parse(""), Err(CidrError::Invalid(_))));
        assert!(matches!(
            Ipv4Cidr::parse("::1/200"),
            Err(CidrError::Invalid(_))
        ));
    }
}
