//! The quote transaction: bind the NK to PCR 16 (pull model), read the
//! selected PCRs, TPM2_Quote them with the AK, and check that the values
//! read are the values quoted (retrying while another PCR, typically IMA's
//! PCR 10, moved in between). Also TPM2_Certify of the AK by itself, the
//! push model's proof of possession.

use openssl::hash::Hasher;
use tss_esapi::abstraction::pcr::PcrData;
use tss_esapi::handles::{KeyHandle, PcrHandle};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    AttestInfo, Data, Digest, DigestValues, PcrSelectionList, PcrSlot, SignatureScheme,
};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::error::TpmError;
use super::pcr_blob;
use crate::algorithms::HashAlg;

/// Reads-and-quotes tried before giving up on PCRs that keep moving.
const MAX_ATTEMPTS: usize = 5;
/// The PCR that binds the NK to every quote (Keylime's TPM_DATA_PCR).
pub const DATA_PCR: u8 = 16;

/// What to quote.
#[derive(Debug, Clone)]
pub struct QuoteRequest {
    /// TPM2_Quote qualifyingData: the pull verifier's nonce as ASCII
    /// bytes, or the push verifier's binary challenge.
    pub nonce: Vec<u8>,
    /// PCRs to quote, ascending ([`DATA_PCR`] included when bound).
    pub pcrs: Vec<u8>,
    /// What PCR 16 is extended with after its reset (H(NK PEM), pull
    /// model), or `None` to leave PCR 16 alone (push quotes bind nothing).
    pub data_pcr_digest: Option<Vec<u8>>,
}

/// The three parts of a Keylime quote string, as raw bytes.
#[derive(Debug, Clone)]
pub struct QuoteParts {
    /// TPMS_ATTEST (no size prefix).
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The PCR values, tpm2-tools `pcrs` layout.
    pub pcr_blob: Vec<u8>,
}

pub(super) fn quote(
    ctx: &mut Context,
    ak: KeyHandle,
    hash: HashAlg,
    request: QuoteRequest,
) -> Result<QuoteParts, TpmError> {
    let nonce = Data::try_from(request.nonce)
        .map_err(|_| TpmError::BadInput("nonce longer than 64 bytes".into()))?;
    if let Some(digest) = request.data_pcr_digest {
        extend(ctx, DATA_PCR, hash, digest, true)?;
    }
    let slots = request
        .pcrs
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p).map_err(TpmError::tss("PCR number")))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = PcrSelectionList::builder()
        .with_selection(hash.to_tpm(), &slots)
        .build()
        .map_err(TpmError::tss("building the PCR selection"))?;
    for _ in 0..MAX_ATTEMPTS {
        let values = read_pcrs(ctx, &selection, hash, &slots)?;
        let (attest, signature) = ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(ak, nonce.clone(), SignatureScheme::Null, selection.clone())
            })
            .map_err(TpmError::tss("Quote"))?;
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(TpmError::Unexpected(
                "TPM2_Quote returned a non-quote attestation".into(),
            ));
        };
        if info.pcr_digest().value() == digest_of(hash, &values)?.as_slice() {
            return Ok(QuoteParts {
                attest: attest
                    .marshall()
                    .map_err(TpmError::tss("marshalling TPMS_ATTEST"))?,
                signature: signature
                    .marshall()
                    .map_err(TpmError::tss("marshalling TPMT_SIGNATURE"))?,
                pcr_blob: pcr_blob::encode(hash.tpm_alg_id(), &request.pcrs, &values),
            });
        }
        tracing::debug!("PCRs changed between read and quote; quoting again");
    }
    Err(TpmError::Unexpected(format!(
        "PCR values kept changing across {MAX_ATTEMPTS} quotes"
    )))
}

/// TPM2_Certify of the AK by the AK with `qualifying` data (no scheme: the
/// AK's own): the TPMS_ATTEST and TPMT_SIGNATURE, marshalled.
pub(super) fn certify_ak(
    ctx: &mut Context,
    ak: KeyHandle,
    qualifying: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    certify(ctx, ak, ak, qualifying)
}

/// TPM2_Certify of `object` by `signer` (both authorized by password
/// sessions with the values set on their handles; the signer's own scheme)
/// with `qualifying` data: the TPMS_ATTEST and TPMT_SIGNATURE, marshalled.
pub(super) fn certify(
    ctx: &mut Context,
    object: KeyHandle,
    signer: KeyHandle,
    qualifying: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let data = Data::try_from(qualifying)
        .map_err(|_| TpmError::BadInput("challenge longer than 64 bytes".into()))?;
    let (attest, signature) = ctx
        .execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |ctx| ctx.certify(object.into(), signer, data, SignatureScheme::Null),
        )
        .map_err(TpmError::tss("Certify"))?;
    Ok((
        attest
            .marshall()
            .map_err(TpmError::tss("marshalling TPMS_ATTEST"))?,
        signature
            .marshall()
            .map_err(TpmError::tss("marshalling TPMT_SIGNATURE"))?,
    ))
}

/// Extends `pcr` in the `hash` bank with `digest`, after resetting it if `reset`.
pub(super) fn extend(
    ctx: &mut Context,
    pcr: u8,
    hash: HashAlg,
    digest: Vec<u8>,
    reset: bool,
) -> Result<(), TpmError> {
    let handle = pcr_handle(pcr)?;
    let digest = Digest::try_from(digest)
        .map_err(|_| TpmError::BadInput("digest longer than 64 bytes".into()))?;
    let mut values = DigestValues::new();
    values.set(hash.to_tpm(), digest);
    ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        if reset {
            ctx.pcr_reset(handle)?;
        }
        ctx.pcr_extend(handle, values)
    })
    .map_err(TpmError::tss("PCR_Reset/PCR_Extend"))
}

fn read_pcrs(
    ctx: &mut Context,
    selection: &PcrSelectionList,
    hash: HashAlg,
    slots: &[PcrSlot],
) -> Result<Vec<Vec<u8>>, TpmError> {
    let data = read_pcr_data(ctx, selection.clone())?;
    let bank = data
        .pcr_bank(hash.to_tpm())
        .ok_or_else(|| TpmError::Unexpected(format!("the TPM has no active {hash} PCR bank")))?;
    slots
        .iter()
        .map(|slot| {
            bank.get_digest(*slot)
                .map(|d| d.value().to_vec())
                .ok_or_else(|| TpmError::Unexpected(format!("PCR {slot:?} missing from PCR_Read")))
        })
        .collect()
}

/// Reads every PCR of `selection`, one PCR_Read after another (a TPM
/// returns at most 8 values per call). A bank the TPM has not allocated
/// makes PCR_Read return nothing: that is an error here, where
/// `tss_esapi::abstraction::pcr::read_all` would loop for ever.
pub fn read_pcr_data(
    ctx: &mut Context,
    mut selection: PcrSelectionList,
) -> Result<PcrData, TpmError> {
    let mut data = PcrData::default();
    while !selection.is_empty() {
        let (_, read, digests) = ctx
            .pcr_read(selection.clone())
            .map_err(TpmError::tss("PCR_Read"))?;
        if digests.value().is_empty() {
            let banks: Vec<String> = selection
                .get_selections()
                .iter()
                .map(|s| format!("{:?}", s.hashing_algorithm()))
                .collect();
            return Err(TpmError::Unexpected(format!(
                "PCR_Read returned no values: the TPM has no allocated {} PCR bank",
                banks.join("/")
            )));
        }
        data.add(&read, &digests)
            .map_err(TpmError::tss("PCR_Read"))?;
        selection
            .subtract(&read)
            .map_err(TpmError::tss("PCR_Read"))?;
    }
    Ok(data)
}

fn digest_of(hash: HashAlg, values: &[Vec<u8>]) -> Result<Vec<u8>, TpmError> {
    let ssl = |e: openssl::error::ErrorStack| TpmError::Host(format!("hashing PCR values: {e}"));
    let mut hasher = Hasher::new(hash.to_openssl()).map_err(ssl)?;
    for v in values {
        hasher.update(v).map_err(ssl)?;
    }
    Ok(hasher.finish().map_err(ssl)?.to_vec())
}

fn pcr_handle(pcr: u8) -> Result<PcrHandle, TpmError> {
    let handles = [
        PcrHandle::Pcr0,
        PcrHandle::Pcr1,
        PcrHandle::Pcr2,
        PcrHandle::Pcr3,
        PcrHandle::Pcr4,
        PcrHandle::Pcr5,
        PcrHandle::Pcr6,
        PcrHandle::Pcr7,
        PcrHandle::Pcr8,
        PcrHandle::Pcr9,
        PcrHandle::Pcr10,
        PcrHandle::Pcr11,
        PcrHandle::Pcr12,
        PcrHandle::Pcr13,
        PcrHandle::Pcr14,
        PcrHandle::Pcr15,
        PcrHandle::Pcr16,
        PcrHandle::Pcr17,
        PcrHandle::Pcr18,
        PcrHandle::Pcr19,
        PcrHandle::Pcr20,
        PcrHandle::Pcr21,
        PcrHandle::Pcr22,
        PcrHandle::Pcr23,
    ];
    handles
        .get(usize::from(pcr))
        .copied()
        .ok_or_else(|| TpmError::BadInput(format!("PCR {pcr} does not exist")))
}
