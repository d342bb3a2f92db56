//! The owner thread's state and loop: the context, the EK and the AK.

use std::str::FromStr;

use tokio::sync::{mpsc, oneshot};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::structures::Auth;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::keys::{self, EkOrigin};
use super::quote::{self, QuoteParts, QuoteRequest};
use super::{credential, public, CredentialBlob, Job, TpmConfig, TpmError, TpmKeys};
use crate::algorithms::HashAlg;

/// First handle of the transient object range.
const TRANSIENT_FIRST: u32 = 0x8000_0000;

/// The state the owner thread holds; never leaves that thread.
pub(crate) struct Owner {
    ctx: Context,
    ek: KeyHandle,
    ek_origin: EkOrigin,
    ak: KeyHandle,
    keys: TpmKeys,
    hash: HashAlg,
    /// Set by a stop job: acknowledged once EK and AK are flushed.
    stop_ack: Option<oneshot::Sender<()>>,
}

impl Owner {
    /// Opens the TPM and sets up EK, EK certificate and AK. On failure every
    /// object created so far is flushed.
    pub(super) fn open(config: &TpmConfig) -> Result<Self, TpmError> {
        let tcti =
            TctiNameConf::from_str(&config.tcti).map_err(TpmError::tss("parsing the TCTI"))?;
        let mut ctx = Context::new(tcti).map_err(TpmError::tss("opening the TPM"))?;
        if !config.owner_auth.is_empty() {
            let auth = Auth::try_from(config.owner_auth.to_vec())
                .map_err(TpmError::tss("tpm_ownerpassword"))?;
            ctx.tr_set_auth(ObjectHandle::Endorsement, auth)
                .map_err(TpmError::tss("setting the endorsement authorization"))?;
        }
        let (ek, ek_origin) = keys::load_ek(&mut ctx, config)?;
        match Self::finish_open(&mut ctx, ek, config) {
            Ok((ak, keys)) => Ok(Self {
                ctx,
                ek,
                ek_origin,
                ak,
                keys,
                hash: config.hash_alg,
                stop_ack: None,
            }),
            Err(e) => {
                release_ek(&mut ctx, ek, ek_origin);
                Err(e)
            }
        }
    }

    fn finish_open(
        ctx: &mut Context,
        ek: KeyHandle,
        config: &TpmConfig,
    ) -> Result<(KeyHandle, TpmKeys), TpmError> {
        let (ek_public, _, _) = ctx
            .read_public(ek)
            .map_err(TpmError::tss("reading the EK"))?;
        let ek_tpm = public::tpm2b_public(&ek_public)?;
        let ek_public_pem = public::public_key_pem(&ek_public)?;
        let index = config.encryption_alg.ek_certificate_nv_index();
        let ek_cert_pem = keys::read_ek_certificate(ctx, index)?;
        if ek_cert_pem.is_none() {
            tracing::warn!(
                "no EK certificate in TPM NV index {index:#010x}; registering without one (tenants with require_ek_cert = True will refuse this agent)"
            );
        }
        let (ak, ak_public, ak_reused) = keys::load_or_create_ak(ctx, ek, &ek_tpm, config)?;
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
                ek_cert_pem,
                ak_public,
                ak_reused,
                ak_handle: u32::from(ObjectHandle::from(ak)),
            },
        ))
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
        if let Err(e) = self.ctx.flush_context(self.ak.into()) {
            tracing::warn!("flushing the AK at stop: {e}");
        }
        release_ek(&mut self.ctx, self.ek, self.ek_origin);
    }

    pub(super) fn activate_credential(
        &mut self,
        blob: CredentialBlob,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        credential::activate(&mut self.ctx, self.ak, self.ek, blob)
    }

    pub(super) fn quote(&mut self, request: QuoteRequest) -> Result<QuoteParts, TpmError> {
        quote::quote(&mut self.ctx, self.ak, self.hash, request)
    }

    pub(super) fn certify_ak(
        &mut self,
        qualifying: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        quote::certify_ak(&mut self.ctx, self.ak, qualifying)
    }

    pub(super) fn extend_pcr(&mut self, pcr: u8, digest: Vec<u8>) -> Result<(), TpmError> {
        quote::extend(&mut self.ctx, pcr, self.hash, digest, false)
    }

    pub(super) fn transient_handles(&mut self) -> Result<Vec<u32>, TpmError> {
        keys::list_handles(&mut self.ctx, TRANSIENT_FIRST)
    }
}

fn release_ek(ctx: &mut Context, ek: KeyHandle, origin: EkOrigin) {
    let result = match origin {
        EkOrigin::Created => ctx.flush_context(ek.into()),
        EkOrigin::Persistent => ctx.tr_close(&mut ek.into()),
    };
    if let Err(e) = result {
        tracing::warn!("releasing the EK at stop: {e}");
    }
}
