//! The keys that decide what operators see: metrics, log format and the
//! audit file.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::raw::RawAgentSection;
use super::values::{self, LogFormat};

/// What the agent tells its operators.
#[derive(Debug, Clone, Default)]
pub struct ObserveConfig {
    /// Where `GET /metrics` is served (`metrics_address`); off when `None`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// How log lines are written (`log_format`).
    pub log_format: LogFormat,
    /// The audit file (`audit_log`); the log only when `None`.
    pub audit_log: Option<PathBuf>,
}

impl ObserveConfig {
    /// `metrics_address`, `log_format` and `audit_log` (relative to
    /// `dir`, the keylime_dir).
    pub(super) fn from_raw(raw: &RawAgentSection, dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            metrics_address: raw.parse("metrics_address", "", values::listen_address)?,
            log_format: raw.parse("log_format", "text", values::log_format)?,
            audit_log: match raw.get("audit_log").map(str::trim) {
                None | Some("") => None,
                Some(p) => Some(dir.join(p)),
            },
        })
    }
}
