//! The agent API versions (`/v2.1` … `/v2.6`): what exists, what is served.

use std::fmt;
use std::str::FromStr;

/// An agent API version `major.minor`; ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version (always 2 for the pull agent).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl ApiVersion {
    /// Every version this agent can serve, ascending. 1.0 and 2.0 are
    /// obsolete and 3.0 is the push model, which a pull agent must never
    /// advertise (the 7.14.0 tenant would switch to it).
    pub const SUPPORTED: [ApiVersion; 6] = [
        ApiVersion::new(2, 1),
        ApiVersion::new(2, 2),
        ApiVersion::new(2, 3),
        ApiVersion::new(2, 4),
        ApiVersion::new(2, 5),
        ApiVersion::new(2, 6),
    ];

    /// A version from its parts.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }

    /// Whether this agent can serve the version.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// Whether `GET /v{self}/agent/info` exists (added in 2.2).
    pub fn has_agent_info(self) -> bool {
        self >= Self::new(2, 2)
    }

    /// Whether `enc_alg` carries the key size (`rsa2048`, `ecc256`; 2.5 on)
    /// rather than the family alone (`rsa`, `ecc`), which is all that
    /// peers before 7.14 accept.
    pub fn sizes_enc_alg(self) -> bool {
        self >= Self::FIRST_NEGOTIATED
    }

    /// The first version whose peers (Keylime 7.14 on) negotiate over the
    /// agent's `supported_versions` list. Older peers read only
    /// `supported_version` and use it as it is, whatever it is.
    pub const FIRST_NEGOTIATED: ApiVersion = ApiVersion::new(2, 5);

    /// What `/version` puts in its single `supported_version` field, given
    /// the versions served (ascending): the highest one that a peer which
    /// does not negotiate can use, i.e. the highest below
    /// [`Self::FIRST_NEGOTIATED`]; only when none is served, the highest.
    /// Peers that negotiate read the list instead, so they still get the
    /// highest common version; a 7.12 or 7.13 tenant and verifier get a
    /// version whose answers they can parse instead of `/v2.6`.
    pub fn for_non_negotiating_peers(served: &[ApiVersion]) -> Option<ApiVersion> {
        served
            .iter()
            .copied()
            .filter(|v| *v < Self::FIRST_NEGOTIATED)
            .max()
            .or_else(|| served.iter().copied().max())
    }
}

impl FromStr for ApiVersion {
    type Err = ();
    /// Parses `2.6` (single-digit parts, as the peers' `\d.\d` check demands).
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim().trim_start_matches('v');
        let (major, minor) = s.split_once('.').ok_or(())?;
        let digit = |p: &str| match p.as_bytes() {
            [d] if d.is_ascii_digit() => Ok(d - b'0'),
            _ => Err(()),
        };
        Ok(Self::new(digit(major)?, digit(minor)?))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!("2.6".parse(), Ok(ApiVersion::new(2, 6)));
        assert_eq!("v2.1".parse(), Ok(ApiVersion::new(2, 1)));
        assert!("2.10".parse::<ApiVersion>().is_err());
        assert!("2".parse::<ApiVersion>().is_err());
        assert!(ApiVersion::new(2, 6) > ApiVersion::new(2, 5));
        assert!(!ApiVersion::new(3, 0).is_supported());
        assert_eq!(ApiVersion::new(2, 6).to_string(), "2.6");
    }

    #[test]
    fn version_dependent_contract() {
        let v = |m| ApiVersion::new(2, m);
        assert!(!v(1).has_agent_info() && v(2).has_agent_info());
        assert!(!v(4).sizes_enc_alg() && v(5).sizes_enc_alg() && v(6).sizes_enc_alg());
        // Every version served: old peers are pointed at 2.4.
        assert_eq!(
            ApiVersion::for_non_negotiating_peers(&ApiVersion::SUPPORTED),
            Some(v(4))
        );
        assert_eq!(
            ApiVersion::for_non_negotiating_peers(&[v(1), v(2), v(3)]),
            Some(v(3))
        );
        // Only negotiating versions served: nothing better than the highest.
        assert_eq!(
            ApiVersion::for_non_negotiating_peers(&[v(5), v(6)]),
            Some(v(6))
        );
        assert_eq!(ApiVersion::for_non_negotiating_peers(&[]), None);
    }
}
