//! Why the agent stopped before or instead of serving.

use thiserror::Error;

use crate::identity::IdentityError;
use crate::privileges::PrivilegeError;
use crate::registrar::RegistrarError;
use crate::tpm::TpmError;

/// Why the agent stopped before or instead of serving.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The state directory could not be prepared.
    #[error("keylime_dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TPM could not be set up.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// Id, mTLS or NK set-up failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Registration failed for good.
    #[error(transparent)]
    Registrar(#[from] RegistrarError),
    /// Switching to `run_as` failed.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The audit file or the metrics server could not start.
    #[error(transparent)]
    Observe(#[from] crate::observing::ObserveError),
    /// A set-up task running beside the TPM's did not finish.
    #[error("{what}: the task failed: {reason}")]
    SetUpTask {
        /// What it was doing.
        what: &'static str,
        /// Why it stopped.
        reason: String,
    },
}
