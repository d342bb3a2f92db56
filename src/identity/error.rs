//! What can go wrong establishing the agent's identity.

use std::path::PathBuf;

use thiserror::Error;

/// A failure to establish the agent's identity.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be parsed or built.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The agent id could not be determined.
    #[error("agent id: {0}")]
    AgentId(String),
    /// The certificate on disk does not belong to the key on disk.
    #[error("mTLS certificate {cert} does not match the key {key}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl IdentityError {
    pub(super) fn crypto(
        what: impl Into<String>,
    ) -> impl FnOnce(openssl::error::ErrorStack) -> Self {
        let what = what.into();
        move |source| Self::Crypto { what, source }
    }
}
