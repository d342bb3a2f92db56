//! The evidence back end of both front ends: combines a TPM quote with the
//! IMA and UEFI logs into what the tenant and verifier ask for, in the pull
//! model (identity and integrity quotes, PCR 16 bound to the NK, an ASCII
//! nonce) and in the push model (a quote over the PCRs the verifier chose,
//! a binary challenge, no PCR 16 binding). No HTTP here; the wire spelling
//! is each front end's business.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

use crate::algorithms::{EncryptionAlg, HashAlg, SigningAlg};
use crate::evidence::{ImaLog, ImaSlice, UefiLog};
use crate::tpm::{QuoteParts, QuoteRequest, Tpm, TpmError, DATA_PCR};

/// A verifier or tenant nonce: 1–64 ASCII letters and digits (the peers
/// send 20); its bytes become TPM2_Quote's qualifyingData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl FromStr for Nonce {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("must be ASCII letters and digits");
        }
        Ok(Self(s.into()))
    }
}

impl Nonce {
    /// The nonce text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PCR selection mask over PCRs 0–23, as the verifier writes it (`0x408000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrMask(u32);

impl FromStr for PcrMask {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be a hexadecimal number such as 0x408000");
        }
        let bits = u32::from_str_radix(digits, 16).map_err(|_| "must be a hexadecimal number")?;
        if bits >> 24 != 0 {
            return Err("selects a PCR above 23");
        }
        Ok(Self(bits))
    }
}

impl PcrMask {
    /// The mask as bits (bit i = PCR i).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether PCR `pcr` is selected.
    pub fn contains(self, pcr: u8) -> bool {
        pcr < 24 && self.0 & (1 << pcr) != 0
    }

    /// The selected PCRs plus PCR 16, ascending.
    pub fn with_data_pcr(self) -> Vec<u8> {
        (0u8..24)
            .filter(|p| self.contains(*p) || *p == DATA_PCR)
            .collect()
    }
}

impl fmt::Display for PcrMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An attestation failure; all are the agent's side, hence 500 to a peer.
#[derive(Debug, Error)]
pub enum AttestationError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The IMA log could not be read.
    #[error("IMA log: {0}")]
    Ima(#[from] std::io::Error),
}

/// A quote and what describes it.
#[derive(Debug, Clone)]
pub struct Quote {
    /// TPMS_ATTEST, TPMT_SIGNATURE and the PCR blob (each front end
    /// encodes them in its own wire format).
    pub parts: QuoteParts,
    /// The quote's hash (the AK's signing hash and the PCR bank).
    pub hash_alg: HashAlg,
    /// The EK type.
    pub enc_alg: EncryptionAlg,
    /// The AK signature scheme.
    pub sign_alg: SigningAlg,
    /// The NK PEM, when asked for.
    pub pubkey: Option<Arc<str>>,
}

/// An integrity quote with its logs.
#[derive(Debug, Clone)]
pub struct IntegrityEvidence {
    /// The quote.
    pub quote: Quote,
    /// IMA entries from the requested one, when the log exists.
    pub ima: Option<ImaSlice>,
    /// The UEFI log as base64, when it covers a selected PCR.
    pub mb_log: Option<Arc<str>>,
}

/// Everything needed to answer quote requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct Attestation {
    tpm: Tpm,
    nk_pem: Arc<str>,
    data_pcr_digest: Vec<u8>,
    hash_alg: HashAlg,
    enc_alg: EncryptionAlg,
    sign_alg: SigningAlg,
    ima: ImaLog,
    uefi: UefiLog,
}

impl Attestation {
    /// Sets up attestation for an NK and the TPM's algorithms.
    pub fn new(
        tpm: Tpm,
        nk_pem: &str,
        algs: (HashAlg, EncryptionAlg, SigningAlg),
        ima: ImaLog,
        uefi: UefiLog,
    ) -> Result<Self, openssl::error::ErrorStack> {
        let data_pcr_digest = nk_digest(algs.0, nk_pem)?;
        Ok(Self {
            tpm,
            nk_pem: Arc::from(nk_pem),
            data_pcr_digest,
            hash_alg: algs.0,
            enc_alg: algs.1,
            sign_alg: algs.2,
            ima,
            uefi,
        })
    }

    /// The EK's type.
    pub fn enc_alg(&self) -> EncryptionAlg {
        self.enc_alg
    }

    /// The AK's signature scheme.
    pub fn sign_alg(&self) -> SigningAlg {
        self.sign_alg
    }

    /// The AK's signing hash and quoted PCR bank.
    pub fn hash_alg(&self) -> HashAlg {
        self.hash_alg
    }

    /// The NK PEM served as `pubkey`.
    pub fn nk_pem(&self) -> &Arc<str> {
        &self.nk_pem
    }

    /// The tenant's identity quote: PCR 16 only, with the NK.
    pub async fn identity_quote(&self, nonce: &Nonce) -> Result<Quote, AttestationError> {
        self.quote(nonce, PcrMask::default(), true).await
    }

    /// The verifier's integrity quote: the mask's PCRs and 16; the NK
    /// unless `partial`; IMA entries from `ima_entry`, read after the quote
    /// so the log is never behind PCR 10; the UEFI log if it has events in
    /// a selected PCR.
    pub async fn integrity_quote(
        &self,
        nonce: &Nonce,
        mask: PcrMask,
        partial: bool,
        ima_entry: u64,
    ) -> Result<IntegrityEvidence, AttestationError> {
        let quote = self.quote(nonce, mask, !partial).await?;
        let ima = self.ima.slice_from(ima_entry).await?;
        let mb_log = self.uefi.for_pcrs(mask.bits()).await;
        Ok(IntegrityEvidence { quote, ima, mb_log })
    }

    /// Before the process drops to `run_as`: keeps the IMA log's
    /// descriptor and reads the boot log, both readable by root only.
    pub async fn hold_logs(&self) {
        if let Err(e) = self.ima.hold_open() {
            tracing::warn!("cannot open the IMA log before dropping privileges: {e}");
        }
        let _ = self.uefi.whole().await;
    }

    /// What push-model capabilities can offer now: the AK (its bank,
    /// scheme and public area), the IMA log's entry count (`None` without
    /// a log) and whether a UEFI log is readable.
    pub async fn offer(&self) -> Result<EvidenceOffer, AttestationError> {
        Ok(EvidenceOffer {
            hash: self.hash_alg,
            signing: self.sign_alg,
            ak_public: self.tpm.keys().ak_public.clone(),
            inventory: EvidenceInventory {
                ima_entries: self.ima.entry_count().await?,
                uefi_log: self.uefi.whole().await.is_some(),
            },
        })
    }

    /// Push-model evidence for what the verifier selected: a quote over
    /// `request.pcrs` with the challenge as qualifying data and PCR 16 left
    /// alone, then (never before the quote, so the log is not behind PCR
    /// 10) the IMA entries from the verifier's offset and the UEFI log.
    pub async fn push_evidence(
        &self,
        request: &EvidenceRequest,
    ) -> Result<PushEvidence, AttestationError> {
        let quote = self
            .quote_parts(
                request.challenge.clone(),
                request.pcrs.clone(),
                DataPcr::Unbound,
            )
            .await?;
        let ima = match request.ima_offset {
            Some(offset) => match self.ima.slice_from(offset).await? {
                Some(slice) => Some(slice.read_text().await?),
                None => Some(String::new()),
            },
            None => None,
        };
        let uefi = if request.uefi_log {
            self.uefi.whole().await
        } else {
            None
        };
        Ok(PushEvidence { quote, ima, uefi })
    }

    async fn quote(
        &self,
        nonce: &Nonce,
        mask: PcrMask,
        with_pubkey: bool,
    ) -> Result<Quote, AttestationError> {
        let parts = self
            .quote_parts(
                nonce.as_str().as_bytes().to_vec(),
                mask.with_data_pcr(),
                DataPcr::BoundToNk,
            )
            .await?;
        Ok(Quote {
            parts,
            hash_alg: self.hash_alg,
            enc_alg: self.enc_alg,
            sign_alg: self.sign_alg,
            pubkey: with_pubkey.then(|| self.nk_pem.clone()),
        })
    }
}

impl Attestation {
    /// The one quote transaction both front ends use.
    async fn quote_parts(
        &self,
        qualifying: Vec<u8>,
        pcrs: Vec<u8>,
        data_pcr: DataPcr,
    ) -> Result<QuoteParts, AttestationError> {
        let data_pcr_digest = match data_pcr {
            DataPcr::BoundToNk => Some(self.data_pcr_digest.clone()),
            DataPcr::Unbound => None,
        };
        Ok(self
            .tpm
            .quote(QuoteRequest {
                nonce: qualifying,
                pcrs,
                data_pcr_digest,
            })
            .await?)
    }
}

/// What PCR 16 is extended with in the pull model: H(the exact PEM bytes
/// sent as `pubkey`), in the AK's hash.
fn nk_digest(hash: HashAlg, nk_pem: &str) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    Ok(openssl::hash::hash(hash.to_openssl(), nk_pem.as_bytes())?.to_vec())
}

/// Whether a quote binds the NK to PCR 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPcr {
    /// Pull model: PCR 16 reset and extended with H(NK), always quoted.
    BoundToNk,
    /// Push model: PCR 16 untouched, quoted only when selected.
    Unbound,
}

/// What the agent can offer as push-model evidence right now: only what
/// the AK can sign (one bank, one scheme) and the logs present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceOffer {
    /// The AK's hash bank and signing hash.
    pub hash: HashAlg,
    /// The AK's signature scheme.
    pub signing: SigningAlg,
    /// The AK's TPM2B_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The logs.
    pub inventory: EvidenceInventory,
}

/// The logs present for an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceInventory {
    /// Complete entries in the IMA log, `None` without one.
    pub ima_entries: Option<u64>,
    /// Whether a UEFI event log is readable.
    pub uefi_log: bool,
}

/// What a push verifier asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRequest {
    /// The quote's qualifying data (the decoded challenge).
    pub challenge: Vec<u8>,
    /// PCRs to quote in the AK's bank, ascending.
    pub pcrs: Vec<u8>,
    /// IMA entries wanted from this one on, or `None` for no IMA log.
    pub ima_offset: Option<u64>,
    /// Whether the UEFI log is wanted.
    pub uefi_log: bool,
}

/// Push-model evidence, transport-free.
#[derive(Debug, Clone)]
pub struct PushEvidence {
    /// TPMS_ATTEST, TPMT_SIGNATURE and the PCR blob.
    pub quote: QuoteParts,
    /// IMA entries from the requested offset, each ending in `\n`
    /// (empty when there is no log), when asked for.
    pub ima: Option<String>,
    /// The UEFI log as base64, when asked for and readable.
    pub uefi: Option<Arc<str>>,
}

#[cfg(test)]
mod tests;
