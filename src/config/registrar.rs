//! The registrar keys beyond its address: HTTPS (`registrar_tls_*`) and the
//! retry policy (`exponential_backoff_*`).

use std::path::{Path, PathBuf};

use super::error::{invalid, ConfigError};
use super::raw::{check_ca_file, RawAgentSection};
use super::values::{self, InvalidValue};
use crate::retry::RetryPolicy;

/// Registration over HTTPS (`registrar_tls_enabled = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarTls {
    /// The registrar's HTTPS port (`registrar_tls_port`).
    pub port: u16,
    /// The CA the registrar's server certificate must chain to
    /// (`registrar_tls_ca_cert`; `"default"` = `cv_ca/cacert.crt`).
    pub ca_cert: PathBuf,
}

/// `registrar_tls_enabled`, `registrar_tls_port` and
/// `registrar_tls_ca_cert`; the CA file must be usable when TLS is on.
pub(super) fn registrar_tls(
    raw: &RawAgentSection,
    dir: &Path,
) -> Result<Option<RegistrarTls>, ConfigError> {
    if !raw.parse("registrar_tls_enabled", "false", values::boolean)? {
        return Ok(None);
    }
    let port = raw.parse("registrar_tls_port", "8891", values::port)?;
    let value = raw.get("registrar_tls_ca_cert").unwrap_or("default");
    let ca_cert = values::path_or_default(value, dir, "cv_ca/cacert.crt");
    check_ca_file(&ca_cert).map_err(|why| {
        invalid(
            "registrar_tls_ca_cert",
            value,
            &format!(
                "a readable PEM file with the CA of the registrar's server certificate ({}: {why})",
                ca_cert.display()
            ),
        )
    })?;
    Ok(Some(RegistrarTls { port, ca_cert }))
}

/// The registrar retry policy (`exponential_backoff_*`).
pub(super) fn retry_policy(raw: &RawAgentSection) -> Result<RetryPolicy, ConfigError> {
    Ok(RetryPolicy {
        max_retries: raw.parse(
            "exponential_backoff_max_retries",
            "forever",
            values::retry_count,
        )?,
        initial_delay: raw.parse("exponential_backoff_initial_delay", "1000", values::millis)?,
        max_delay: raw.parse("exponential_backoff_max_delay", "60000", values::millis)?,
        // Full jitter: a fleet booting together spreads its retries over the
        // whole window rather than retrying in waves.
        jitter: raw.parse("exponential_backoff_jitter", "1.0", values::fraction)?,
    })
}

/// `registrar_refresh_interval`: `off` (or empty, or 0) for never, else a
/// whole number of seconds, at least 60 (a fleet re-registering more often
/// would only load the registrar).
pub(super) fn refresh_interval(raw: &str) -> Result<Option<std::time::Duration>, InvalidValue> {
    match raw.trim() {
        "" | "off" | "0" => Ok(None),
        value => value
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 60)
            .map(|s| Some(std::time::Duration::from_secs(s)))
            .ok_or_else(|| InvalidValue::new("off, or a whole number of seconds from 60 on")),
    }
}
