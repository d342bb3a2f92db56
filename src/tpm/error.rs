//! What a TPM failure is and what the owner does about it: each TSS or
//! TPM response code is classified (connection lost, reset, object not
//! loaded, retry, fatal) so that the owner knows whether to reopen the TPM.

use std::path::PathBuf;

use thiserror::Error;

/// A TPM failure. All are worth a 500 to a peer: none is the peer's fault.
#[derive(Debug, Error)]
pub enum TpmError {
    /// A TSS or TPM error, with the operation it happened in.
    #[error("TPM {op} failed: {}", describe(source))]
    Tss {
        /// The operation.
        op: &'static str,
        /// The TSS error (carries the TPM response code).
        #[source]
        source: tss_esapi::Error,
    },
    /// Input the TPM operation cannot use: a malformed credential blob, a
    /// nonce or digest too long, a PCR that does not exist.
    #[error("{0}")]
    BadInput(String),
    /// The TPM answered something the agent cannot use: another kind of
    /// data, a missing PCR bank, PCRs that keep changing.
    #[error("{0}")]
    Unexpected(String),
    /// The host failed around the TPM: a thread that does not start, an
    /// OpenSSL conversion.
    #[error("{0}")]
    Host(String),
    /// The AK store could not be read or written.
    #[error("AK store {path}: {reason}")]
    AkStore {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A device identity (IAK/IDevID) certificate that cannot be used: not
    /// readable, not a certificate, or for another key than the TPM's.
    #[error("{file}: {reason}")]
    Identity {
        /// The certificate file (`iak_cert`, `idevid_cert`).
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The owner thread has stopped.
    #[error("the TPM owner thread has stopped")]
    Stopped,
    /// The TPM was lost and is not reachable again yet.
    #[error("the TPM is unreachable (reconnecting): {0}")]
    Unavailable(String),
}

/// What a TPM failure means for the one who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmErrorKind {
    /// The connection to the TPM broke (TCTI errors, an ESAPI context left
    /// in a bad sequence by one), or it is still being re-established.
    ConnectionLost,
    /// The TPM was reset and wants TPM2_Startup.
    TpmReset,
    /// A handle the agent holds names nothing in the TPM any more.
    ObjectNotLoaded,
    /// The TPM asked to retry (busy, testing, NV rate, yielded).
    Retryable,
    /// Anything else: this operation will not succeed by trying again.
    Fatal,
}

impl TpmErrorKind {
    /// Whether the owner must open the TPM again and reload its keys.
    pub fn needs_reopen(self) -> bool {
        matches!(
            self,
            Self::ConnectionLost | Self::TpmReset | Self::ObjectNotLoaded
        )
    }
}

impl TpmError {
    /// Maps a TSS error in operation `op`; the one place TSS errors are named.
    pub(crate) fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> Self {
        move |source| Self::Tss { op, source }
    }

    /// The kind of failure, from the TSS response code: its layer (TCTI,
    /// ESAPI, TPM) and number.
    pub fn kind(&self) -> TpmErrorKind {
        match self {
            Self::Tss { source, .. } => classify(source),
            Self::Unavailable(_) | Self::Stopped => TpmErrorKind::ConnectionLost,
            Self::BadInput(_)
            | Self::Unexpected(_)
            | Self::Host(_)
            | Self::AkStore { .. }
            | Self::Identity { .. } => TpmErrorKind::Fatal,
        }
    }
}

/// The raw TSS2_RC of a TSS error (tss-esapi shows it only in `Display`).
fn response_code(error: &tss_esapi::Error) -> Option<u32> {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let text = match error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return None,
    };
    let hex = text.rsplit_once("0x")?.1;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// The TSS error with its raw code and layer, which tss-esapi's own text
/// leaves out for codes it does not know.
fn describe(error: &tss_esapi::Error) -> String {
    let Some(code) = response_code(error) else {
        return error.to_string();
    };
    let layer = match (code >> 16) & 0xff {
        LAYER_TPM => "from the TPM",
        LAYER_ESAPI => "ESAPI layer",
        LAYER_TCTI => "TCTI layer: the TPM connection failed, or its TCTI library is missing",
        _ => "TSS layer",
    };
    format!("{error} (TSS2_RC {code:#010x}, {layer})")
}

/// TSS layers (bits 16–23 of a TSS2_RC).
const LAYER_TPM: u32 = 0x00;
const LAYER_ESAPI: u32 = 0x07;
const LAYER_TCTI: u32 = 0x0a;
/// TSS2_BASE_RC_BAD_SEQUENCE: the ESAPI context is stuck after a failed exchange.
const BASE_RC_BAD_SEQUENCE: u32 = 7;
/// TSS2_BASE_RC_TRY_AGAIN.
const BASE_RC_TRY_AGAIN: u32 = 9;

fn classify(error: &tss_esapi::Error) -> TpmErrorKind {
    use tss_esapi::constants::response_code::Tss2ResponseCodeKind as K;
    let Some(code) = response_code(error) else {
        return TpmErrorKind::Fatal;
    };
    match (code >> 16) & 0xff {
        LAYER_TCTI if code & 0xffff == BASE_RC_TRY_AGAIN => TpmErrorKind::Retryable,
        LAYER_TCTI => TpmErrorKind::ConnectionLost,
        LAYER_ESAPI if code & 0xffff == BASE_RC_BAD_SEQUENCE => TpmErrorKind::ConnectionLost,
        LAYER_TPM => match tss_esapi::constants::response_code::Tss2ResponseCode::from(code).kind()
        {
            Some(K::Initialize) => TpmErrorKind::TpmReset,
            Some(
                K::ReferenceH0
                | K::ReferenceH1
                | K::ReferenceH2
                | K::ReferenceH3
                | K::ReferenceH4
                | K::ReferenceH5
                | K::ReferenceH6,
            ) => TpmErrorKind::ObjectNotLoaded,
            Some(K::Retry | K::Yielded | K::Testing | K::NvRate | K::ContextGap) => {
                TpmErrorKind::Retryable
            }
            _ => TpmErrorKind::Fatal,
        },
        _ => TpmErrorKind::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::constants::response_code::Tss2ResponseCode;

    fn kind_of(code: u32) -> TpmErrorKind {
        TpmError::Tss {
            op: "test",
            source: tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(code)),
        }
        .kind()
    }

    #[test]
    fn tss_codes_are_classified_by_layer_and_number() {
        // TCTI I/O error: swtpm went away.
        assert_eq!(kind_of(0x000a_000a), TpmErrorKind::ConnectionLost);
        // "Esys called in bad sequence", what follows a failed exchange.
        assert_eq!(kind_of(0x0007_0007), TpmErrorKind::ConnectionLost);
        // TPM_RC_INITIALIZE: reset, not started.
        assert_eq!(kind_of(0x0000_0100), TpmErrorKind::TpmReset);
        // TPM_RC_REFERENCE_H0: the object is not loaded (after a restart).
        assert_eq!(kind_of(0x0000_0910), TpmErrorKind::ObjectNotLoaded);
        // TPM_RC_RETRY and TPM_RC_TESTING.
        assert_eq!(kind_of(0x0000_0922), TpmErrorKind::Retryable);
        assert_eq!(kind_of(0x0000_090a), TpmErrorKind::Retryable);
        // TPM_RC_AUTH_FAIL for session 1, and an unknown ESAPI error.
        assert_eq!(kind_of(0x0000_098e), TpmErrorKind::Fatal);
        assert_eq!(kind_of(0x0007_0001), TpmErrorKind::Fatal);
        assert!(TpmErrorKind::ObjectNotLoaded.needs_reopen());
        assert!(!TpmErrorKind::Fatal.needs_reopen());
        for fatal in [
            TpmError::BadInput("x".into()),
            TpmError::Unexpected("x".into()),
            TpmError::Host("x".into()),
        ] {
            assert_eq!(fatal.kind(), TpmErrorKind::Fatal);
        }
    }
}
