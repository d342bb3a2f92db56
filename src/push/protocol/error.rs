//! A verifier answer that does not say what the agent needs.

use thiserror::Error;

/// An answer that does not say what the agent needs.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("verifier answer: {0}")]
pub struct ProtocolError(pub String);

/// An answer without `what`.
pub(super) fn missing(what: &str) -> ProtocolError {
    ProtocolError(format!("no {what}"))
}
