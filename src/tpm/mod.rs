//! The only code that touches tss-esapi. One thread (the owner) holds the
//! TPM context and the EK and AK handles for the agent's lifetime; the rest
//! of the agent talks to it through [`Tpm`], a cheap `Clone` handle whose
//! async methods are whole TPM transactions. Jobs queue in FIFO order, so
//! concurrent callers are served fairly, and no TPM call ever blocks an
//! async worker. Every transient object and session a transaction creates
//! is flushed before the transaction returns, on success and on error.

mod context;
mod credential;
mod keys;
mod owner;
mod pcr_blob;
mod probe;
mod public;
mod quote;

pub use context::{allocated_banks, bank_names};
pub use credential::{parse_credential_blob, CredentialBlob, ACTIVATE_CREDENTIAL_OP};
pub use keys::StoredAkState;
pub use probe::{probe, probe_within, ProbeError, TpmProbe};
pub use public::{public_key_pem, tpm2b_public};
pub use quote::{read_pcr_data, QuoteParts, QuoteRequest, DATA_PCR};

use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;
use thiserror::Error;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::algorithms::{EncryptionAlg, HashAlg, SigningAlg};
use owner::Owner;

/// What the owner needs to open the TPM and set up the keys.
#[derive(Debug, Clone)]
pub struct TpmConfig {
    /// TCTI string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// AK signing hash.
    pub hash_alg: HashAlg,
    /// EK template.
    pub encryption_alg: EncryptionAlg,
    /// AK scheme.
    pub signing_alg: SigningAlg,
    /// Persistent EK handle, or `None` to create the EK.
    pub ek_handle: Option<u32>,
    /// Endorsement hierarchy authorization.
    pub owner_auth: crate::secret::Secret<Vec<u8>>,
    /// File that persists the AK between starts.
    pub ak_store: PathBuf,
}

/// The public identity of the TPM, fixed for the owner's lifetime.
#[derive(Debug, Clone)]
pub struct TpmKeys {
    /// EK as TPM2B_PUBLIC (`ek_tpm`).
    pub ek_public: Vec<u8>,
    /// EK public key as PEM SubjectPublicKeyInfo (`hash_ek`).
    pub ek_public_pem: String,
    /// EK certificate as PEM, the certificate alone (`ekcert`).
    pub ek_cert_pem: Option<String>,
    /// AK as TPM2B_PUBLIC (`aik_tpm`).
    pub ak_public: Vec<u8>,
    /// Whether the AK was reloaded from `agent_data_path` rather than created.
    pub ak_reused: bool,
    /// The AK's ESYS handle (informational, for `agent/info`).
    pub ak_handle: u32,
}

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
            Self::BadInput(_) | Self::Unexpected(_) | Self::Host(_) | Self::AkStore { .. } => {
                TpmErrorKind::Fatal
            }
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

type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// Queue depth before callers wait; a bound keeps a flood of requests from
/// growing memory while the TPM works through them in order.
const QUEUE_DEPTH: usize = 256;

/// Handle to the TPM owner thread.
#[derive(Clone)]
pub struct Tpm {
    jobs: mpsc::Sender<Job>,
    keys: Arc<TpmKeys>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

impl Tpm {
    /// Starts the owner thread: opens the TPM, creates or loads the EK,
    /// reads its certificate, and loads or creates the AK.
    pub async fn start(config: TpmConfig) -> Result<Self, TpmError> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name("tpm-owner".into())
            .spawn(move || match Owner::open(&config) {
                Ok(owner) => {
                    let keys = owner.keys().clone();
                    if ready.send(Ok(keys)).is_ok() {
                        owner.serve(queue);
                    } else {
                        owner.close();
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| TpmError::Host(format!("cannot start the TPM owner thread: {e}")))?;
        let keys = started.await.map_err(|_| TpmError::Stopped)??;
        Ok(Self {
            jobs,
            keys: Arc::new(keys),
        })
    }

    /// Runs `ping` on the owner thread every `interval` for as long as the
    /// owner runs. The ping is a job in the owner's queue, so an owner
    /// wedged inside a TPM call stops pinging (and systemd's watchdog then
    /// restarts the agent); a TPM that is merely down still lets jobs run.
    pub fn keep_alive_from_owner(&self, interval: Duration, ping: fn()) {
        let jobs = self.jobs.downgrade();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                let Some(jobs) = jobs.upgrade() else { return };
                let job: Job = Box::new(move |_: &mut Owner| ping());
                // A full queue means a busy owner: the next tick tries again.
                if let Err(mpsc::error::TrySendError::Closed(_)) = jobs.try_send(job) {
                    return;
                }
            }
        });
    }

    /// The TPM's public identity.
    pub fn keys(&self) -> &TpmKeys {
        &self.keys
    }

    /// TPM2_ActivateCredential of a registrar challenge blob with the AK and
    /// EK; returns the decrypted challenge.
    pub async fn activate_credential(
        &self,
        blob: CredentialBlob,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        self.run("activate_credential", move |owner| {
            owner.activate_credential(blob)
        })
        .await
    }

    /// Resets PCR 16, extends it with the request's digest, and quotes the
    /// requested PCRs with the AK, with PCR values read consistently.
    pub async fn quote(&self, request: QuoteRequest) -> Result<QuoteParts, TpmError> {
        self.run("quote", move |owner| owner.quote(request)).await
    }

    /// TPM2_Certify of the AK by itself over `qualifying` data (the push
    /// verifier's session challenge): marshalled TPMS_ATTEST and
    /// TPMT_SIGNATURE.
    pub async fn certify_ak(&self, qualifying: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        self.run("certify", move |owner| owner.certify_ak(qualifying))
            .await
    }

    /// Extends `pcr` in the AK's hash bank with `digest` (e.g. a payload
    /// measurement, or IMA-style evidence in tests).
    pub async fn extend_pcr(&self, pcr: u8, digest: Vec<u8>) -> Result<(), TpmError> {
        self.run("extend", move |owner| owner.extend_pcr(pcr, digest))
            .await
    }

    /// The transient object handles the TPM holds right now (a diagnostic:
    /// it should list exactly the EK, if created, and the AK).
    pub async fn transient_handles(&self) -> Result<Vec<u32>, TpmError> {
        self.run("get_capability", Owner::transient_handles).await
    }

    /// Flushes the EK and AK and stops the owner thread once every job
    /// queued before this call has run. Later calls on any clone fail with
    /// [`TpmError::Stopped`].
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel::<()>();
        let job: Job = Box::new(move |owner: &mut Owner| owner.stop(done));
        if self.jobs.send(job).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Runs `transaction` on the owner thread; its duration there is
    /// recorded as a TPM transaction of `kind` (by this task, after the
    /// reply: the owner records nothing).
    async fn run<T: Send + 'static>(
        &self,
        kind: &'static str,
        transaction: impl FnOnce(&mut Owner) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, TpmError> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |owner: &mut Owner| {
            let began = std::time::Instant::now();
            let result = transaction(owner);
            let took = began.elapsed();
            if let Err(e) = &result {
                owner.after_failure(e);
            }
            let _ = reply.send((result, took));
        });
        self.jobs.send(job).await.map_err(|_| TpmError::Stopped)?;
        let (result, took) = result.await.map_err(|_| TpmError::Stopped)?;
        crate::metrics::get().tpm_transaction(kind, took);
        result
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
