//! Extends a log's events into a TPM's PCRs, in order, every bank of the
//! log at once, as the firmware, shim and GRUB would have.

use std::str::FromStr;

use anyhow::{bail, Context as _};
use keylime_agent::evidence::tcg::{
    EventLog, EV_NO_ACTION, TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512,
};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::StartupType;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectionList, PcrSlot};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

fn hashing(alg: u16) -> anyhow::Result<HashingAlgorithm> {
    Ok(match alg {
        TPM_ALG_SHA1 => HashingAlgorithm::Sha1,
        TPM_ALG_SHA256 => HashingAlgorithm::Sha256,
        TPM_ALG_SHA384 => HashingAlgorithm::Sha384,
        TPM_ALG_SHA512 => HashingAlgorithm::Sha512,
        other => bail!("bank {other:#06x} cannot be extended"),
    })
}

/// The PCR values of `pcrs` in `bank`.
fn read(ctx: &mut Context, bank: HashingAlgorithm, pcrs: &[u32]) -> anyhow::Result<Vec<Vec<u8>>> {
    let slots = pcrs
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p).context("PCR slot"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let selection = PcrSelectionList::builder()
        .with_selection(bank, &slots)
        .build()
        .context("PCR selection")?;
    let data = keylime_agent::tpm::read_pcr_data(ctx, selection)?;
    let values = data
        .pcr_bank(bank)
        .with_context(|| format!("the TPM has no active {bank:?} bank"))?;
    slots
        .iter()
        .map(|s| {
            values
                .get_digest(*s)
                .map(|d| d.value().to_vec())
                .with_context(|| format!("{s:?} missing from PCR_Read"))
        })
        .collect()
}

/// Extends every event of `log` but `withhold` (1-based) into the TPM at
/// `tcti`, after TPM2_Startup if it was not started, in every bank of the
/// log that the TPM has allocated (a log may list more, as a sha1 bank next
/// to sha256: those digests go nowhere, as on a platform with that bank
/// off). The PCRs the log covers must still be in their reset state (all
/// zeros); without a withheld event they must equal the log's replay
/// afterwards. Returns how many events were extended.
pub fn replay(log: &EventLog, tcti: &str, withhold: Option<usize>) -> anyhow::Result<usize> {
    let conf = TctiNameConf::from_str(tcti).with_context(|| format!("TCTI {tcti:?}"))?;
    let mut ctx = Context::new(conf).context("opening the TPM")?;
    match ctx.startup(StartupType::Clear) {
        Ok(()) => {}
        // Already started (TPM_RC_INITIALIZE).
        Err(tss_esapi::Error::Tss2Error(code))
            if code.kind() == Some(Tss2ResponseCodeKind::Initialize) => {}
        Err(e) => return Err(e).context("TPM2_Startup"),
    }
    let allocated = keylime_agent::tpm::allocated_banks(&mut ctx)?;
    let mut banks = Vec::new();
    for (alg, size) in &log.banks {
        let bank = hashing(*alg)?;
        if allocated.contains(&bank) {
            banks.push((*alg, usize::from(*size), bank));
        } else {
            eprintln!("the TPM has no allocated {bank:?} bank: the log's {bank:?} digests are not extended");
        }
    }
    if banks.is_empty() {
        bail!("the TPM has none of the log's banks allocated");
    }
    let covered: Vec<u32> = (0..24)
        .filter(|p| log.covered_pcrs() & 1 << p != 0)
        .collect();
    for (_, size, bank) in &banks {
        for (pcr, value) in covered.iter().zip(read(&mut ctx, *bank, &covered)?) {
            if value != vec![0; *size] {
                bail!("PCR {pcr} ({bank:?}) is not in its reset state: replay needs a TPM fresh from TPM2_Startup");
            }
        }
    }
    let mut extended = 0;
    for (i, event) in log.events.iter().enumerate() {
        if event.event_type == EV_NO_ACTION || withhold == Some(i + 1) {
            continue;
        }
        let mut values = DigestValues::new();
        for (alg, digest) in &event.digests {
            if let Some((_, _, bank)) = banks.iter().find(|(a, _, _)| a == alg) {
                values.set(*bank, Digest::try_from(digest.clone()).context("digest")?);
            }
        }
        let handle = PcrHandle::try_from(event.pcr).context("PCR handle")?;
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.pcr_extend(handle, values)
        })
        .with_context(|| format!("PCR_Extend of event {} (PCR {})", i + 1, event.pcr))?;
        extended += 1;
    }
    if withhold.is_none() {
        for (alg, _, bank) in &banks {
            let expected = log.replay(*alg).context("replay")?;
            for (pcr, value) in covered.iter().zip(read(&mut ctx, *bank, &covered)?) {
                if expected.get(pcr) != Some(&value) {
                    bail!(
                        "after the replay PCR {pcr} ({bank:?}) is {} but the log says {}",
                        hex::encode(&value),
                        expected.get(pcr).map(hex::encode).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(extended)
}
