//! The keys for what the tenant delivers and what a revocation does: where
//! K and the payload land, how a zip and its script are handled, and how
//! notifications are verified and acted on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::raw::RawAgentSection;
use super::values;

/// How delivered payloads are stored and run.
#[derive(Debug, Clone)]
pub struct PayloadConfig {
    /// The secure directory, `<keylime_dir>/secure`.
    pub secure_dir: PathBuf,
    /// tmpfs size of the secure directory (`secure_size`).
    pub secure_size: String,
    /// File name K is written to (`enc_keyname`).
    pub enc_keyname: String,
    /// File name of the decrypted payload (`dec_payload_file`).
    pub dec_payload_file: String,
    /// Unzip a zip payload (`extract_payload_zip`).
    pub extract_payload_zip: bool,
    /// Script run after extraction, if present (`payload_script`); `None` for none.
    pub payload_script: Option<String>,
    /// Time limit for the payload script (`payload_script_timeout`).
    pub payload_script_timeout: Duration,
    /// Accept payloads without mTLS (`enable_insecure_payload`).
    pub enable_insecure_payload: bool,
    /// Allow `enable_insecure_payload` with mTLS off: anyone who reaches
    /// the port may then make the agent run code
    /// (`dangerous_allow_unauthenticated_payloads`).
    pub dangerous_allow_unauthenticated: bool,
    /// Where the payload's revocation certificate is kept once delivered
    /// (`<keylime_dir>/revocation`).
    pub revocation_dir: PathBuf,
}

/// How revocation notifications are verified and acted on.
#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// Certificate that verifies notifications (`revocation_cert`);
    /// `None` = `RevocationNotifier-cert.crt` from the payload.
    pub cert: Option<PathBuf>,
    /// Pre-installed actions to run (`revocation_actions`).
    pub actions: Vec<String>,
    /// Where pre-installed actions live (`revocation_actions_dir`).
    pub actions_dir: PathBuf,
    /// Also run the payload's `action_list` (`allow_payload_revocation_actions`).
    pub allow_payload_actions: bool,
    /// Time limit per action (`revocation_action_timeout`).
    pub action_timeout: Duration,
    /// ZeroMQ notifications asked for (`enable_revocation_notifications`).
    pub zeromq_requested: bool,
    /// `<keylime_dir>/revocation`: the payload's certificate as delivered
    /// and the record of notifications acted on.
    pub state_dir: PathBuf,
}

impl PayloadConfig {
    /// The payload keys; the secure directory is `<dir>/secure`.
    pub(super) fn from_raw(raw: &RawAgentSection, dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            secure_dir: dir.join("secure"),
            secure_size: raw.parse("secure_size", "1m", values::tmpfs_size)?,
            enc_keyname: raw.parse("enc_keyname", "derived_tci_key", values::file_name)?,
            dec_payload_file: raw.parse(
                "dec_payload_file",
                "decrypted_payload",
                values::file_name,
            )?,
            extract_payload_zip: raw.parse("extract_payload_zip", "true", values::boolean)?,
            payload_script: match raw.get("payload_script").map(str::trim) {
                Some("") => None,
                _ => Some(raw.parse("payload_script", "autorun.sh", values::file_name)?),
            },
            payload_script_timeout: raw.parse("payload_script_timeout", "300", values::seconds)?,
            enable_insecure_payload: raw.parse(
                "enable_insecure_payload",
                "false",
                values::boolean,
            )?,
            dangerous_allow_unauthenticated: raw.parse(
                "dangerous_allow_unauthenticated_payloads",
                "false",
                values::boolean,
            )?,
            revocation_dir: dir.join("revocation"),
        })
    }

    /// Without mTLS anyone who reaches the port could deliver a payload whose
    /// `autorun.sh` the agent runs: refused unless the operator said
    /// `dangerous_allow_unauthenticated_payloads`.
    pub(super) fn refuse_without_mtls(&self, enable_agent_mtls: bool) -> Result<(), ConfigError> {
        if enable_agent_mtls
            || !self.enable_insecure_payload
            || self.dangerous_allow_unauthenticated
        {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "enable_insecure_payload".into(),
            value: "true".into(),
            accepted: "false while enable_agent_mtls = false: without mTLS anyone who reaches the port \
                       could deliver a payload whose autorun.sh the agent runs (to allow it anyway, set \
                       dangerous_allow_unauthenticated_payloads = true)"
                .into(),
        })
    }
}

impl RevocationConfig {
    /// The revocation keys; `revocation_cert` is relative to `dir`.
    pub(super) fn from_raw(raw: &RawAgentSection, dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            cert: match raw.get("revocation_cert").map(str::trim) {
                None | Some("") | Some("default") => None,
                Some(p) => Some(dir.join(p)),
            },
            actions: raw.parse("revocation_actions", "", |v| {
                values::list(v)
                    .into_iter()
                    .map(|a| values::file_name(&a))
                    .collect::<Result<Vec<_>, _>>()
            })?,
            actions_dir: PathBuf::from(
                raw.get("revocation_actions_dir")
                    .unwrap_or("/usr/libexec/keylime"),
            ),
            allow_payload_actions: raw.parse(
                "allow_payload_revocation_actions",
                "true",
                values::boolean,
            )?,
            action_timeout: raw.parse("revocation_action_timeout", "60", values::seconds)?,
            zeromq_requested: raw.parse(
                "enable_revocation_notifications",
                "false",
                values::boolean,
            )?,
            state_dir: dir.join("revocation"),
        })
    }
}
