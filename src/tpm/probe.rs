//! A read-only look at the TPM for `keylime_agent check` and `info`: what
//! it is, which PCR banks it has, its EK certificate, and whether the
//! persisted AK still loads. Nothing is written: no TPM2_Startup, no
//! persistent change, and every transient object made is flushed again.

use std::str::FromStr;

use tss_esapi::constants::PropertyTag;
use tss_esapi::handles::ObjectHandle;
use tss_esapi::structures::Auth;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

use super::context::{
    allocated_banks, bank_names, has_resource_manager, release_ek, TRANSIENT_FIRST,
};
use super::device_id::{self, DeviceKeys};
use super::ek_cert;
use super::error::{TpmError, TpmErrorKind};
use super::keys::{self, StoredAkState};
use super::public;
use super::settings::TpmConfig;
use crate::algorithms::EncryptionAlg;

/// What the probe found.
#[derive(Debug, Clone)]
pub struct TpmProbe {
    /// The manufacturer's four-letter code (e.g. `IBM `).
    pub manufacturer: String,
    /// The vendor string the TPM reports.
    pub vendor: String,
    /// Firmware version as `major.minor` words, in hex.
    pub firmware: String,
    /// The PCR banks with at least one PCR allocated, e.g. `sha256`.
    pub pcr_banks: Vec<String>,
    /// Whether the TCTI goes through a resource manager.
    pub resource_manager: bool,
    /// The EK's type, from its public area.
    pub ek_alg: Option<crate::algorithms::EncryptionAlg>,
    /// The EK certificate from NV, as PEM, when there is one.
    pub ek_cert_pem: Option<String>,
    /// The NV index looked at.
    pub ek_cert_index: u32,
    /// The EK certificate's issuers from NV 0x01c00100–0x01c001ff, PEM.
    pub ek_chain_pem: Vec<String>,
    /// The IAK and IDevID checked against their certificates, when
    /// configured: what was found, or why they cannot be used.
    pub device: Option<Result<DeviceKeys, String>>,
    /// The EK's public key as PEM (what `uuid = "hash_ek"` hashes).
    pub ek_public_pem: String,
    /// The persisted AK.
    pub ak: StoredAkState,
}

/// Why the probe stopped early.
#[derive(Debug)]
pub enum ProbeError {
    /// The TPM could not be opened or answered with an error.
    Tpm(TpmError),
    /// The TPM answers but was reset and not started (the agent would send
    /// TPM2_Startup; the probe does not).
    NotStarted,
    /// No answer within the time given to [`probe_within`].
    NoAnswer(std::time::Duration),
}

/// [`probe`] on a thread of its own, given up after `within`: a TPM that
/// never answers (or a swtpm whose one connection another process holds)
/// must not hang `check` or `info`. The abandoned thread ends with the
/// process.
pub fn probe_within(
    config: TpmConfig,
    within: std::time::Duration,
) -> Result<TpmProbe, ProbeError> {
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tpm-probe".into())
        .spawn(move || {
            let _ = sender.send(probe(&config));
        })
        .map_err(|e| ProbeError::Tpm(TpmError::Host(format!("cannot start the probe: {e}"))))?;
    answer
        .recv_timeout(within)
        .map_err(|_| ProbeError::NoAnswer(within))?
}

impl From<TpmError> for ProbeError {
    fn from(e: TpmError) -> Self {
        if e.kind() == TpmErrorKind::TpmReset {
            Self::NotStarted
        } else {
            Self::Tpm(e)
        }
    }
}

/// Opens the TPM through `config.tcti` and looks without changing anything.
pub fn probe(config: &TpmConfig) -> Result<TpmProbe, ProbeError> {
    let tcti = TctiNameConf::from_str(&config.tcti).map_err(TpmError::tss("parsing the TCTI"))?;
    let mut ctx = Context::new(tcti).map_err(TpmError::tss("opening the TPM"))?;
    // The first command tells a TPM that needs TPM2_Startup apart.
    keys::list_handles(&mut ctx, TRANSIENT_FIRST)?;
    let property = |ctx: &mut Context, tag| {
        ctx.get_tpm_property(tag)
            .map_err(TpmError::tss("GetCapability(properties)"))
            .map(Option::unwrap_or_default)
    };
    let ascii = |word: u32| {
        String::from_utf8_lossy(&word.to_be_bytes())
            .trim_end_matches('\0')
            .to_string()
    };
    let manufacturer = ascii(property(&mut ctx, PropertyTag::Manufacturer)?);
    let mut vendor = String::new();
    for tag in [
        PropertyTag::VendorString1,
        PropertyTag::VendorString2,
        PropertyTag::VendorString3,
        PropertyTag::VendorString4,
    ] {
        vendor.push_str(&ascii(property(&mut ctx, tag)?));
    }
    let firmware = format!(
        "{:08x}.{:08x}",
        property(&mut ctx, PropertyTag::FirmwareVersion1)?,
        property(&mut ctx, PropertyTag::FirmwareVersion2)?
    );
    let pcr_banks = bank_names(&allocated_banks(&mut ctx)?);
    if !config.owner_auth.is_empty() {
        let auth = Auth::try_from(config.owner_auth.to_vec())
            .map_err(TpmError::tss("tpm_ownerpassword"))?;
        ctx.tr_set_auth(ObjectHandle::Endorsement, auth)
            .map_err(TpmError::tss("setting the endorsement authorization"))?;
    }
    let (ek, origin) = keys::load_ek(&mut ctx, config)?;
    let looked = ctx
        .read_public(ek)
        .map_err(TpmError::tss("reading the EK"))
        .and_then(|(ek_public, _, _)| {
            let pem = public::public_key_pem(&ek_public)?;
            let ek_tpm = public::tpm2b_public(&ek_public)?;
            let ak = keys::probe_stored_ak(&mut ctx, ek, &ek_tpm, config)?;
            Ok((pem, ak, EncryptionAlg::of_public(&ek_public)))
        });
    release_ek(&mut ctx, ek, origin);
    let (ek_public_pem, ak, ek_alg) = looked?;
    let ek_cert_index = ek_alg
        .unwrap_or(config.encryption_alg)
        .ek_certificate_nv_index();
    let ek_cert_pem = ek_cert::read_ek_certificate(&mut ctx, ek_cert_index)?;
    let ek_chain_pem = ek_cert::read_ek_chain(&mut ctx)?;
    let device = config
        .device_identity
        .as_ref()
        .map(|identity| device_id::load(&mut ctx, identity).map_err(|e| e.to_string()));
    Ok(TpmProbe {
        manufacturer,
        vendor,
        firmware,
        pcr_banks,
        resource_manager: has_resource_manager(&config.tcti),
        ek_alg,
        ek_cert_pem,
        ek_cert_index,
        ek_chain_pem,
        device,
        ek_public_pem,
        ak,
    })
}
