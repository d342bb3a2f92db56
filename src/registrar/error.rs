//! What can go wrong registering, and which failures are worth another
//! attempt.

use thiserror::Error;

use crate::http_client::{self, RequestFailure};
use crate::tpm::{self, TpmError};

/// A registration failure.
#[derive(Debug, Error)]
pub enum RegistrarError {
    /// No HTTP answer: connection error, time-out, or a TLS certificate
    /// that was not accepted.
    #[error("registrar: {0}")]
    Unreachable(#[from] RequestFailure),
    /// The client could not be set up (the CA file).
    #[error("registrar: {0}")]
    Client(#[from] http_client::ClientError),
    /// The registrar answered with an unexpected status.
    #[error("registrar {op} answered HTTP {status}: {body}")]
    Status {
        /// What was asked.
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
        /// `Retry-After` seconds, if given.
        retry_after: Option<u64>,
    },
    /// 403: another TPM identity is registered under this id.
    #[error(
        "the registrar refused agent {agent_id}: it already holds a different TPM identity (EK/AK) for this id. \
         If this machine's TPM or AK changed on purpose, delete the old record (keylime_tenant -c regdelete -u {agent_id}) \
         or give this agent another uuid; otherwise another machine is using this id"
    )]
    IdentityConflict {
        /// The agent id.
        agent_id: String,
    },
    /// 403 while another registration of the same id is being committed
    /// (the registrar's database refused the second insert): retried once
    /// the record settles.
    #[error("the registrar is committing a concurrent registration of agent {agent_id} (HTTP 403); trying again")]
    ConcurrentRegistration {
        /// The agent id.
        agent_id: String,
    },
    /// The answer could not be read: too large, or not JSON. A registrar
    /// under load (or a proxy before it) answers so now and then: retried.
    #[error("registrar {op}: {reason}")]
    BadAnswer {
        /// What was asked.
        op: &'static str,
        /// What was wrong (no text of the answer).
        reason: String,
    },
    /// The registrar answered 200 with something unusable.
    #[error("registrar {op}: {reason}")]
    Protocol {
        /// What was asked.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The TPM could not answer the challenge.
    #[error("activation: {0}")]
    Tpm(#[from] TpmError),
}

impl RegistrarError {
    /// Whether another attempt may succeed: connection errors and
    /// time-outs, 5xx and 429, unreadable answers, and the 403 of a
    /// concurrent registration.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::BadAnswer { .. } | Self::ConcurrentRegistration { .. } => {
                true
            }
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether the TPM refused the registrar's challenge. Registrars before
    /// Keylime 7.14 encode an ECC EK challenge's coordinates without leading
    /// zero bytes, so now and then (a coordinate starting with a zero byte,
    /// roughly one challenge in 256) the TPM's integrity check fails; the
    /// next registration brings a new random challenge.
    pub(super) fn is_rejected_challenge(&self) -> bool {
        matches!(
            self,
            Self::Tpm(TpmError::Tss {
                op: tpm::ACTIVATE_CREDENTIAL_OP,
                ..
            })
        )
    }

    pub(super) fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
