//! The push-model keys (`keylime_push_model_agent`): parsed with the rest
//! of the config, and checked for completeness only when that binary starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::raw::RawAgentSection;
use super::values;

/// What the push-model agent needs beyond the shared keys; checked for
/// completeness by `Config::push_settings` when that binary starts.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The verifier's base URL (`verifier_url`), `https://host:port`;
    /// `None` when unset.
    pub verifier_url: Option<String>,
    /// The CA the verifier's certificate must chain to
    /// (`verifier_tls_ca_cert`; `"default"` = `cv_ca/cacert.crt`).
    pub verifier_tls_ca_cert: PathBuf,
    /// The pause between cycles when the verifier names none
    /// (`attestation_interval_seconds`).
    pub attestation_interval: Duration,
    /// `server_identifier` of the AK in the capabilities
    /// (`certification_keys_server_identifier`).
    pub certification_key_id: String,
    /// `evidence_version` of the UEFI log item (`uefi_logs_evidence_version`).
    pub uefi_logs_evidence_version: String,
}

/// The push-model settings once checked: everything the worker needs.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The verifier's base URL, without a trailing slash.
    pub verifier_url: String,
    /// The verifier's CA file (readable, with a certificate in it).
    pub verifier_tls_ca_cert: PathBuf,
    /// See [`PushConfig::attestation_interval`].
    pub attestation_interval: Duration,
    /// See [`PushConfig::certification_key_id`].
    pub certification_key_id: String,
    /// See [`PushConfig::uefi_logs_evidence_version`].
    pub uefi_logs_evidence_version: String,
}

impl PushConfig {
    pub(super) fn from_raw(raw: &RawAgentSection, dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            verifier_url: raw.parse("verifier_url", "", values::https_url)?,
            verifier_tls_ca_cert: values::path_or_default(
                raw.get("verifier_tls_ca_cert").unwrap_or("default"),
                dir,
                "cv_ca/cacert.crt",
            ),
            attestation_interval: raw.parse(
                "attestation_interval_seconds",
                "60",
                values::seconds,
            )?,
            certification_key_id: raw.text("certification_keys_server_identifier", "ak"),
            uefi_logs_evidence_version: raw.text("uefi_logs_evidence_version", "2.1"),
        })
    }
}
