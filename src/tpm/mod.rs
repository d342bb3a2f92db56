//! The only code that touches tss-esapi. One thread (the owner) holds the
//! TPM context and the EK and AK handles for the agent's lifetime; the rest
//! of the agent talks to it through [`Tpm`], a cheap `Clone` handle whose
//! async methods are whole TPM transactions. Jobs queue in FIFO order, so
//! concurrent callers are served fairly, and no TPM call ever blocks an
//! async worker. Every transient object and session a transaction creates
//! is flushed before the transaction returns, on success and on error.

mod context;
mod credential;
mod device_id;
mod ek_cert;
mod error;
mod keys;
mod owner;
mod pcr_blob;
mod probe;
mod public;
mod quote;
mod settings;

pub use context::{allocated_banks, bank_names};
pub use credential::{parse_credential_blob, CredentialBlob, ACTIVATE_CREDENTIAL_OP};
pub use device_id::{
    template_public, DeviceIdentityConfig, DeviceKeys, IdentityKey, IdentityKeyConfig,
    IdentityTemplate, UnknownTemplate, Which, TEMPLATE_ACCEPTED,
};
pub use ek_cert::{split_certificates, CHAIN_FIRST, CHAIN_LAST};
pub use error::{TpmError, TpmErrorKind};
pub use keys::StoredAkState;
pub use probe::{probe, probe_within, ProbeError, TpmProbe};
pub use public::{public_key_pem, tpm2b_public};
pub use quote::{read_pcr_data, QuoteParts, QuoteRequest, DATA_PCR};
pub use settings::{TpmConfig, TpmKeys};

use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use owner::{Job, Owner};

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

    /// TPM2_Certify of the AK by the IAK over `qualifying` data (what the
    /// registrar checks to bind the AK to the certified TPM): marshalled
    /// TPMS_ATTEST and TPMT_SIGNATURE. Fails when no IAK is configured.
    pub async fn certify_ak_with_iak(
        &self,
        qualifying: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        self.run("certify", move |owner| {
            owner.certify_ak_with_iak(qualifying)
        })
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
