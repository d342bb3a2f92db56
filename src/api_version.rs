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
}
