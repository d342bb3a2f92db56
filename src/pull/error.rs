//! Why the pull agent stopped before or instead of serving.

use thiserror::Error;

use super::tls::TlsError;
use crate::agent::AgentError;
use crate::identity::IdentityError;

/// Why the pull agent stopped before or instead of serving.
#[derive(Debug, Error)]
pub enum PullError {
    /// The core failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The mTLS identity could not be set up.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The secure directory or `revocation/` could not be prepared.
    #[error("{path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API server could not bind or run.
    #[error("API server on {addr}: {source}")]
    Server {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
