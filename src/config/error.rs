//! A config problem that stops the agent at start, as the one line the
//! operator sees; secret values never appear in it.

use std::path::PathBuf;

use thiserror::Error;

/// A config problem that stops the agent at start; its `Display` is the one
/// line the operator sees.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A value that does not parse.
    #[error("config: invalid {key} = {value:?}: expected {accepted}")]
    Invalid {
        /// The `[agent]` key.
        key: String,
        /// The value as given (redacted for secrets).
        value: String,
        /// What the key accepts.
        accepted: String,
    },
    /// A file that could not be read or parsed.
    #[error("config: cannot use {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Keys whose values never appear in messages.
const SECRET_KEYS: &[&str] = &[
    "tpm_ownerpassword",
    "server_key_password",
    "payload_key_password",
    "idevid_password",
    "iak_password",
];

/// An invalid value of `key` (redacted when the key is a secret).
pub(super) fn invalid(key: &str, value: &str, accepted: &str) -> ConfigError {
    let value = if SECRET_KEYS.contains(&key) {
        "<redacted>"
    } else {
        value
    };
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}
