//! Parsers for single config values. Each returns the typed value or an
//! [`InvalidValue`] saying what is accepted; the caller adds key and value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The "what is accepted" half of a config error.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidValue(pub String);

impl InvalidValue {
    /// An error saying what is accepted.
    pub fn new(accepted: impl Into<String>) -> Self {
        Self(accepted.into())
    }
}

pub(super) type Parsed<T> = Result<T, InvalidValue>;

/// One of a fixed set of names (`accepted` lists them).
pub fn one_of<T: std::str::FromStr<Err = ()>>(
    accepted: &'static str,
) -> impl Fn(&str) -> Parsed<T> {
    move |raw| raw.parse().map_err(|()| InvalidValue::new(accepted))
}

/// `true`/`false`, also as the strings environment variables give.
pub fn boolean(raw: &str) -> Parsed<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(InvalidValue::new("true or false")),
    }
}

/// A TCP port, 1–65535.
pub fn port(raw: &str) -> Parsed<u16> {
    raw.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| InvalidValue::new("an integer port from 1 to 65535"))
}

/// An IP address or a DNS host name (letters, digits, `-`, `.`).
pub fn host(raw: &str) -> Parsed<String> {
    let accepted = || InvalidValue::new("an IPv4 or IPv6 address or a DNS host name");
    let raw = raw.trim();
    let bare = raw.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name.to_string())
    } else {
        Err(accepted())
    }
}

/// An `https://host[:port]` base URL, or empty for none; a trailing slash
/// is dropped.
pub fn https_url(raw: &str) -> Parsed<Option<String>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let accepted = || InvalidValue::new("an https:// URL such as https://verifier.example:8881");
    let rest = raw.strip_prefix("https://").ok_or_else(accepted)?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(accepted());
    }
    let (host_part, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    host(host_part).map_err(|_| accepted())?;
    if let Some(p) = port {
        self::port(p).map_err(|_| accepted())?;
    }
    Ok(Some(format!("https://{authority}")))
}

/// A plain file name (no directory part), as for files in the payload directory.
pub fn file_name(raw: &str) -> Parsed<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "." || raw == ".." || raw.contains('/') || raw.contains('\0') {
        Err(InvalidValue::new("a file name without '/'"))
    } else {
        Ok(raw.to_string())
    }
}

/// A tmpfs size as `mount` takes it: digits with an optional k, m, g or % suffix.
pub fn tmpfs_size(raw: &str) -> Parsed<String> {
    let raw = raw.trim();
    let digits = raw.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    let suffix_len = raw.len() - digits.len();
    if !digits.is_empty()
        && suffix_len <= 1
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
    {
        Ok(raw.to_string())
    } else {
        Err(InvalidValue::new("a size such as 1m, 512k, 2g or 10%"))
    }
}

/// A size in bytes: digits with an optional `k`, `m` or `g` (powers of 1024).
pub fn byte_size(raw: &str) -> Parsed<usize> {
    let accepted = || InvalidValue::new("a size such as 8m, 512k or 1048576 (bytes), at most 1g");
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((i, 'k' | 'K')) => (&raw[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&raw[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&raw[..i], 1 << 30),
        _ => (raw, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| (1..=1 << 30).contains(n))
        .ok_or_else(accepted)
}

/// A number of connections, 1 to 65536.
pub fn connection_count(raw: &str) -> Parsed<usize> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=65_536).contains(n))
        .ok_or_else(|| InvalidValue::new("a number of connections from 1 to 65536"))
}

/// A client address range (`allowed_client_cidrs`): `ADDRESS/PREFIX`, or
/// one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCidr {
    net: std::net::IpAddr,
    prefix: u8,
}

impl ClientCidr {
    /// Whether `ip` is in the range (an IPv4 address mapped into IPv6, as
    /// a dual-stack socket reports it, counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

impl std::fmt::Display for ClientCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `allowed_client_cidrs`: a list of address ranges; empty = any client.
pub fn client_cidrs(raw: &str) -> Parsed<Vec<ClientCidr>> {
    let bad = || {
        InvalidValue::new(
            "empty (any client) or a list of address ranges, e.g. \"127.0.0.1/32, 10.0.0.0/8, ::1\"",
        )
    };
    list(raw)
        .iter()
        .map(|item| {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item.as_str(), None),
            };
            let net: std::net::IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(bad)?,
                None => max,
            };
            Ok(ClientCidr { net, prefix })
        })
        .collect()
}

/// `host:port` to listen on (an IP address, `[…]` for IPv6), or empty for
/// none.
pub fn listen_address(raw: &str) -> Parsed<Option<std::net::SocketAddr>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<std::net::SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
        .map(Some)
        .ok_or_else(|| {
            InvalidValue::new(
                "empty (off) or IP:PORT to listen on, e.g. \"127.0.0.1:9102\" or \"[::1]:9102\"",
            )
        })
}

/// `text` or `json`.
pub fn log_format(raw: &str) -> Parsed<LogFormat> {
    match raw.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(InvalidValue::new("\"text\" or \"json\"")),
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A whole number of seconds, at least 1.
pub fn seconds(raw: &str) -> Parsed<Duration> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| InvalidValue::new("a positive whole number of seconds"))
}

/// A non-negative integer number of milliseconds.
pub fn millis(raw: &str) -> Parsed<Duration> {
    raw.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| InvalidValue::new("a non-negative integer number of milliseconds"))
}

/// A retry count, or `forever`.
pub fn retry_count(raw: &str) -> Parsed<Option<u32>> {
    if raw.trim() == "forever" {
        return Ok(None);
    }
    raw.trim()
        .parse::<u32>()
        .map(Some)
        .map_err(|_| InvalidValue::new("a non-negative integer or \"forever\""))
}

/// A fraction from 0.0 to 1.0.
pub fn fraction(raw: &str) -> Parsed<f64> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| InvalidValue::new("a number from 0.0 to 1.0"))
}

/// A path; `default` or empty gives `default`, a relative path is taken
/// relative to `base` (the Keylime directory), as upstream does.
pub fn path_or_default(raw: &str, base: &Path, default: &str) -> PathBuf {
    let raw = raw.trim();
    let chosen = if raw.is_empty() || raw == "default" {
        default
    } else {
        raw
    };
    base.join(chosen)
}

/// A persistent handle in the TPM's persistent range, or `generate`/empty.
pub fn ek_handle(raw: &str) -> Parsed<Option<u32>> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "generate" {
        return Ok(None);
    }
    let accepted =
        || InvalidValue::new("\"generate\" or a persistent handle from 0x81000000 to 0x81ffffff");
    let hex = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw);
    let handle = u32::from_str_radix(hex, 16).map_err(|_| accepted())?;
    if (0x8100_0000..=0x81ff_ffff).contains(&handle) {
        Ok(Some(handle))
    } else {
        Err(accepted())
    }
}

/// A TPM authorization value: plain text, or `hex:` followed by hex digits.
pub fn tpm_auth(raw: &str) -> Parsed<Vec<u8>> {
    match raw.strip_prefix("hex:") {
        Some(hex_digits) => hex::decode(hex_digits).map_err(|_| {
            InvalidValue::new("plain text, or \"hex:\" followed by an even number of hex digits")
        }),
        None => Ok(raw.as_bytes().to_vec()),
    }
    .and_then(|v| {
        if v.len() > 64 {
            Err(InvalidValue::new("at most 64 bytes"))
        } else {
            Ok(v)
        }
    })
}

/// A list given as a TOML array, a comma-separated string, or a Python-style
/// `"[a, b]"` string (as upstream templates write `revocation_actions`).
pub fn list(raw: &str) -> Vec<String> {
    let inner = raw
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    inner
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `user:group`, `user`, or empty for "do not change user".
pub fn run_as(raw: &str) -> Parsed<Option<RunAs>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 32
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let (user, group) = match raw.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (raw, None),
    };
    if name_ok(user) && group.is_none_or(name_ok) {
        Ok(Some(RunAs {
            user: user.to_string(),
            group: group.map(str::to_string),
        }))
    } else {
        Err(InvalidValue::new("\"user:group\", \"user\", or empty"))
    }
}

/// The unprivileged identity the agent switches to after start (`run_as`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name.
    pub user: String,
    /// Group name; the user's primary group when absent.
    pub group: Option<String>,
}

#[cfg(test)]
mod tests;
