//! The owner thread's state and loop: the context, the EK and the AK, and
//! getting them back when the TPM goes away (a lost connection, a TPM
//! reset, objects no longer loaded) without restarting the agent.

use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::structures::Auth;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::context::{has_resource_manager, release_ek, TRANSIENT_FIRST};
use super::credential::{self, CredentialBlob};
use super::device_id;
use super::ek_cert;
use super::error::{TpmError, TpmErrorKind};
use super::keys::{self, EkOrigin};
use super::public;
use super::quote::{self, QuoteParts, QuoteRequest};
use super::settings::{TpmConfig, TpmKeys};
use crate::algorithms::{EncryptionAlg, HashAlg};
use tss_esapi::constants::StartupType;
use tss_esapi::handles::TpmHandle;

/// One TPM transaction, run on the owner thread.
pub(super) type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// First handle of the loaded (HMAC) session range.
const LOADED_SESSION_FIRST: u32 = 0x0200_0000;
/// First handle of the saved (policy) session range.
const SAVED_SESSION_FIRST: u32 = 0x0300_0000;

/// How long the owner waits between attempts to reach a TPM that went
/// away; requests in between fail at once with [`TpmError::Unavailable`].
const REOPEN_PAUSE: Duration = Duration::from_millis(250);

/// The state the owner thread holds; never leaves that thread.
pub(crate) struct Owner {
    config: TpmConfig,
    /// The open TPM, or `None` after it was lost until it is reached again.
    live: Option<Live>,
    /// The public identity found at the first open; fixed for the process.
    keys: TpmKeys,
    hash: HashAlg,
    /// No reconnection attempt before this.
    next_reopen: Instant,
    /// Why the TPM was lost (for the errors while it is down).
    lost: Option<String>,
    /// The AK store as read or written at the first open, for reopening
    /// after the privilege drop.
    ak_store: Option<Vec<u8>>,
    /// Set by a stop job: acknowledged once EK and AK are flushed.
    stop_ack: Option<oneshot::Sender<()>>,
}

/// An open TPM context with the EK and AK loaded.
struct Live {
    ctx: Context,
    ek: KeyHandle,
    ek_origin: EkOrigin,
    ak: KeyHandle,
}

impl Owner {
    /// Opens the TPM and sets up EK, EK certificate and AK. On failure every
    /// object created so far is flushed.
    pub(super) fn open(config: &TpmConfig) -> Result<Self, TpmError> {
        let began = Instant::now();
        let mut ak_store = None;
        let (mut live, mut keys) = Live::open(config, &mut ak_store)?;
        if let Some(identity) = &config.device_identity {
            match device_id::load(&mut live.ctx, identity) {
                Ok(device) => {
                    tracing::info!(
                        "IAK and IDevID (template {}) match their certificates {} and {}",
                        device.template.name(),
                        identity.iak.cert.display(),
                        identity.idevid.cert.display()
                    );
                    keys.device = Some(device);
                }
                Err(e) => {
                    live.close();
                    return Err(e);
                }
            }
        }
        // On a first start this is mostly the TPM making the EK and AK.
        tracing::info!(
            "TPM ready in {} ms (EK and AK loaded)",
            began.elapsed().as_millis()
        );
        Ok(Self {
            config: config.clone(),
            live: Some(live),
            keys,
            hash: config.hash_alg,
            next_reopen: Instant::now(),
            lost: None,
            ak_store,
            stop_ack: None,
        })
    }

    pub(super) fn keys(&self) -> &TpmKeys {
        &self.keys
    }

    /// Runs jobs in arrival order until every handle is gone or a stop job ran.
    pub(super) fn serve(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(job) = queue.blocking_recv() {
            job(&mut self);
            if self.stop_ack.is_some() {
                break;
            }
        }
        queue.close();
        let ack = self.stop_ack.take();
        self.close();
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }

    /// Stops the owner after the current job; `ack` fires once the EK and
    /// AK are flushed, so a process may exit right after it.
    pub(super) fn stop(&mut self, ack: oneshot::Sender<()>) {
        self.stop_ack = Some(ack);
    }

    /// Flushes the AK and (if created) the EK.
    pub(super) fn close(mut self) {
        if let Some(live) = self.live.take() {
            live.close();
        }
    }

    /// What a failed transaction means for the context: a lost connection,
    /// a TPM that was reset, or objects that are gone drop it, and the next
    /// job opens the TPM again.
    pub(super) fn after_failure(&mut self, error: &TpmError) {
        if !error.kind().needs_reopen() || self.live.is_none() {
            return;
        }
        tracing::warn!("TPM lost ({error}); reconnecting");
        // The old context cannot flush anything now; what it left in a TPM
        // without a resource manager is flushed when it is reopened.
        self.live = None;
        self.lost = Some(error.to_string());
        self.next_reopen = Instant::now();
    }

    /// The open TPM, reopening it (at most every [`REOPEN_PAUSE`]) when it
    /// was lost.
    fn live(&mut self) -> Result<&mut Live, TpmError> {
        if self.live.is_none() {
            let now = Instant::now();
            let why = self.lost.clone().unwrap_or_default();
            if now < self.next_reopen {
                return Err(TpmError::Unavailable(why));
            }
            self.next_reopen = now + REOPEN_PAUSE;
            match Live::open(&self.config, &mut self.ak_store) {
                Ok((live, keys)) => {
                    if keys.ak_public != self.keys.ak_public {
                        tracing::error!(
                            "the TPM came back with a different AK (the persisted one no longer loads); \
                             the registrar and verifier know the old one: restart the agent to register again"
                        );
                    }
                    tracing::info!("TPM reconnected: EK and AK loaded again");
                    // An atomic increment and a channel send: nothing the
                    // owner could wait on.
                    crate::metrics::get().tpm_reconnects.inc();
                    crate::audit::record(
                        crate::audit::Event::TpmReconnected,
                        serde_json::json!({ "after": why }),
                    );
                    self.live = Some(live);
                    self.lost = None;
                }
                Err(e) => {
                    tracing::debug!("TPM still unreachable: {e}");
                    return Err(TpmError::Unavailable(why));
                }
            }
        }
        self.live
            .as_mut()
            .ok_or_else(|| TpmError::Unavailable(String::new()))
    }

    pub(super) fn activate_credential(
        &mut self,
        blob: CredentialBlob,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let live = self.live()?;
        credential::activate(&mut live.ctx, live.ak, live.ek, blob)
    }

    pub(super) fn quote(&mut self, request: QuoteRequest) -> Result<QuoteParts, TpmError> {
        let hash = self.hash;
        let live = self.live()?;
        quote::quote(&mut live.ctx, live.ak, hash, request)
    }

    pub(super) fn certify_ak(
        &mut self,
        qualifying: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let live = self.live()?;
        quote::certify_ak(&mut live.ctx, live.ak, qualifying)
    }

    pub(super) fn certify_ak_with_iak(
        &mut self,
        qualifying: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let (Some(identity), Some(device)) = (&self.config.device_identity, &self.keys.device)
        else {
            return Err(TpmError::BadInput("no IAK is configured".into()));
        };
        let (identity, template) = (identity.clone(), device.template);
        let live = self.live()?;
        device_id::certify_ak(&mut live.ctx, &identity, template, live.ak, qualifying)
    }

    pub(super) fn extend_pcr(&mut self, pcr: u8, digest: Vec<u8>) -> Result<(), TpmError> {
        let hash = self.hash;
        let live = self.live()?;
        quote::extend(&mut live.ctx, pcr, hash, digest, false)
    }

    pub(super) fn transient_handles(&mut self) -> Result<Vec<u32>, TpmError> {
        let live = self.live()?;
        keys::list_handles(&mut live.ctx, TRANSIENT_FIRST)
    }
}

impl Live {
    /// Opens the TCTI, starts the TPM if it was reset, flushes what a
    /// previous run left (no resource manager only), and loads EK and AK.
    fn open(
        config: &TpmConfig,
        ak_store: &mut Option<Vec<u8>>,
    ) -> Result<(Self, TpmKeys), TpmError> {
        let tcti =
            TctiNameConf::from_str(&config.tcti).map_err(TpmError::tss("parsing the TCTI"))?;
        let mut ctx = Context::new(tcti).map_err(TpmError::tss("opening the TPM"))?;
        start_up_if_needed(&mut ctx)?;
        let banks = super::context::allocated_banks(&mut ctx)?;
        if !banks.contains(&config.hash_alg.to_tpm()) {
            return Err(TpmError::Unexpected(format!(
                "tpm_hash_alg = {}: the TPM has no allocated {0} PCR bank (it has {}); set tpm_hash_alg to one of those",
                config.hash_alg,
                super::context::bank_names(&banks).join(", ")
            )));
        }
        if !has_resource_manager(&config.tcti) {
            flush_leftovers(&mut ctx)?;
        }
        if !config.owner_auth.is_empty() {
            let auth = Auth::try_from(config.owner_auth.to_vec())
                .map_err(TpmError::tss("tpm_ownerpassword"))?;
            ctx.tr_set_auth(ObjectHandle::Endorsement, auth)
                .map_err(TpmError::tss("setting the endorsement authorization"))?;
        }
        let (ek, ek_origin) = keys::load_ek(&mut ctx, config)?;
        match finish_open(&mut ctx, ek, config, ak_store) {
            Ok((ak, keys)) => Ok((
                Self {
                    ctx,
                    ek,
                    ek_origin,
                    ak,
                },
                keys,
            )),
            Err(e) => {
                release_ek(&mut ctx, ek, ek_origin);
                Err(e)
            }
        }
    }

    fn close(mut self) {
        if let Err(e) = self.ctx.flush_context(self.ak.into()) {
            tracing::warn!("flushing the AK at stop: {e}");
        }
        release_ek(&mut self.ctx, self.ek, self.ek_origin);
    }
}

fn finish_open(
    ctx: &mut Context,
    ek: KeyHandle,
    config: &TpmConfig,
    ak_store: &mut Option<Vec<u8>>,
) -> Result<(KeyHandle, TpmKeys), TpmError> {
    let (ek_public, _, _) = ctx
        .read_public(ek)
        .map_err(TpmError::tss("reading the EK"))?;
    let ek_tpm = public::tpm2b_public(&ek_public)?;
    let ek_public_pem = public::public_key_pem(&ek_public)?;
    let ek_alg = EncryptionAlg::of_public(&ek_public).ok_or_else(|| {
        TpmError::Unexpected(
            "the EK is neither RSA 2048/3072 nor ECC P-256/P-384 (check ek_handle)".into(),
        )
    })?;
    if ek_alg != config.encryption_alg {
        tracing::warn!(
            "the persistent EK is {}, not {} as tpm_encryption_alg says; using the EK as it is",
            ek_alg.sized_name(),
            config.encryption_alg.sized_name()
        );
    }
    let index = ek_alg.ek_certificate_nv_index();
    let ek_cert_pem = ek_cert::read_ek_certificate(ctx, index)?;
    let ek_chain_pem = ek_cert::read_ek_chain(ctx)?;
    if ek_cert_pem.is_none() {
        tracing::warn!(
            "no EK certificate in TPM NV index {index:#010x}; registering without one (tenants with require_ek_cert = True will refuse this agent)"
        );
    }
    let (ak, ak_public, ak_reused) =
        keys::load_or_create_ak(ctx, (ek, ek_alg), &ek_tpm, config, ak_store)?;
    let ak_public = match public::tpm2b_public(&ak_public) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = ctx.flush_context(ak.into());
            return Err(e);
        }
    };
    Ok((
        ak,
        TpmKeys {
            ek_public: ek_tpm,
            ek_public_pem,
            ek_alg,
            ek_cert_pem,
            ek_chain_pem,
            device: None,
            ak_public,
            ak_reused,
            ak_handle: u32::from(ObjectHandle::from(ak)),
        },
    ))
}

/// Sends TPM2_Startup(CLEAR) to a TPM that was reset and not started.
fn start_up_if_needed(ctx: &mut Context) -> Result<(), TpmError> {
    match keys::list_handles(ctx, TRANSIENT_FIRST) {
        Err(e) if e.kind() == TpmErrorKind::TpmReset => {
            tracing::info!("the TPM was reset and not started; sending TPM2_Startup(CLEAR)");
            ctx.startup(StartupType::Clear)
                .map_err(TpmError::tss("Startup"))
        }
        _ => Ok(()),
    }
}

/// Flushes transient objects and sessions that no live client owns: left by
/// a previous run that was killed, or by this one before its connection
/// dropped. Never touches persistent handles. Only for TPMs without a
/// resource manager, where this process is the only client.
fn flush_leftovers(ctx: &mut Context) -> Result<(), TpmError> {
    let mut flushed = (0usize, 0usize);
    for first in [TRANSIENT_FIRST, LOADED_SESSION_FIRST, SAVED_SESSION_FIRST] {
        for handle in keys::list_handles(ctx, first)? {
            let gone = TpmHandle::try_from(handle)
                .and_then(|tpm| ctx.tr_from_tpm_public(tpm))
                .and_then(|object| ctx.flush_context(object));
            match gone {
                Ok(()) if first == TRANSIENT_FIRST => flushed.0 += 1,
                Ok(()) => flushed.1 += 1,
                Err(e) => tracing::warn!("cannot flush handle {handle:#010x} left in the TPM: {e}"),
            }
        }
    }
    if flushed != (0, 0) {
        tracing::info!(
            "flushed {} transient objects and {} sessions left in the TPM by an earlier run",
            flushed.0,
            flushed.1
        );
    }
    Ok(())
}
