//! What the owner thread and the read-only probe both do with an open
//! TPM context: the handle ranges, whether a resource manager cleans up
//! after the client, the allocated PCR banks, and releasing the EK.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;

use super::error::TpmError;
use super::keys::EkOrigin;

/// First handle of the transient object range.
pub(super) const TRANSIENT_FIRST: u32 = 0x8000_0000;

/// Whether the TCTI goes through a resource manager, which flushes a
/// client's objects when it disconnects (the kernel's `/dev/tpmrm0`, tabrmd).
pub(super) fn has_resource_manager(tcti: &str) -> bool {
    tcti.contains("tpmrm") || tcti.starts_with("tabrmd")
}

pub(super) fn release_ek(ctx: &mut Context, ek: KeyHandle, origin: EkOrigin) {
    let result = match origin {
        EkOrigin::Created => ctx.flush_context(ek.into()),
        EkOrigin::Persistent => ctx.tr_close(&mut ek.into()),
    };
    if let Err(e) = result {
        tracing::warn!("releasing the EK at stop: {e}");
    }
}

/// The banks' names as configs spell them (`sha256`).
pub fn bank_names(banks: &[HashingAlgorithm]) -> Vec<String> {
    banks
        .iter()
        .map(|bank| format!("{bank:?}").to_lowercase())
        .collect()
}

/// The PCR banks with at least one PCR allocated.
pub fn allocated_banks(ctx: &mut Context) -> Result<Vec<HashingAlgorithm>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::AssignedPcr, 0, 8)
        .map_err(TpmError::tss("GetCapability(PCRs)"))?;
    Ok(match data {
        CapabilityData::AssignedPcr(list) => list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.hashing_algorithm())
            .collect(),
        _ => Vec::new(),
    })
}
