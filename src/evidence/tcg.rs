//! The TCG2 ("crypto-agile") boot event log that UEFI firmware leaves in
//! `binary_bios_measurements`, as the TCG PC Client Platform Firmware
//! Profile lays it out: a first event in the old SHA-1 format whose data is
//! the Spec ID event (the banks and their digest sizes), then events that
//! each carry one digest per bank.
//!
//! The agent parses the log to know which PCRs it covers (it is sent only
//! when the verifier asks for one of those) and to refuse to send what is
//! not a TCG2 log; the boot-log generator used by the tests replays it.

use std::collections::BTreeMap;

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;

/// The signature of the Spec ID event (TCG2 format, version 2.0).
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// The signature of the `EV_NO_ACTION` event that records the locality
/// the platform started from, which is PCR 0's initial value.
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// TPM_ALG_ID values of the banks the agent knows by name.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const TPM_ALG_SHA512: u16 = 0x000D;

/// The most PCRs a log may name (a PC Client TPM has 24).
const PCR_COUNT: u32 = 24;

/// Why bytes are not a TCG2 event log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The data ended inside a structure.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// The first event is not a Spec ID event of version 2.
    #[error("the first event is not a TCG2 Spec ID event (a SHA-1-only log?)")]
    NotCryptoAgile,
    /// The Spec ID event lists no banks or an impossible digest size.
    #[error("the Spec ID event lists {0}")]
    BadSpecId(String),
    /// An event names a PCR above 23.
    #[error("event {index} extends PCR {pcr}")]
    BadPcr {
        /// The event's position (the Spec ID event is 0).
        index: usize,
        /// The PCR it names.
        pcr: u32,
    },
    /// An event carries a digest of a bank the header does not list, or
    /// not one digest per bank.
    #[error("event {index}: {what}")]
    BadDigests {
        /// The event's position.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

/// One event after the Spec ID event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The PCR it was extended into.
    pub pcr: u32,
    /// Its `EV_*` type.
    pub event_type: u32,
    /// One digest per bank, in the order the log lists them.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest in bank `alg`.
    pub fn digest(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The banks the Spec ID event lists: (TPM_ALG_ID, digest size).
    pub banks: Vec<(u16, u16)>,
    /// Every event after the Spec ID event, in order.
    pub events: Vec<Event>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(LogError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, LogError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LogError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, LogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized(&mut self) -> Result<&'a [u8], LogError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl EventLog {
    /// Parses a whole log.
    pub fn parse(bytes: &[u8]) -> Result<Self, LogError> {
        let mut r = Reader { bytes, at: 0 };
        // The first event, SHA-1 format: PCR, type, 20-byte digest, data.
        let (_pcr, event_type) = (r.u32()?, r.u32()?);
        r.take(20)?;
        let spec = r.sized()?;
        if event_type != EV_NO_ACTION || !spec.starts_with(SPEC_ID_SIGNATURE) {
            return Err(LogError::NotCryptoAgile);
        }
        let banks = parse_spec_id(spec)?;
        let mut events = Vec::new();
        while r.at < bytes.len() {
            let index = events.len() + 1;
            let pcr = r.u32()?;
            if pcr >= PCR_COUNT {
                return Err(LogError::BadPcr { index, pcr });
            }
            let event_type = r.u32()?;
            let count = r.u32()? as usize;
            if count > banks.len() {
                return Err(LogError::BadDigests {
                    index,
                    what: format!("{count} digests for {} banks", banks.len()),
                });
            }
            let mut digests = Vec::with_capacity(count);
            for _ in 0..count {
                let alg = r.u16()?;
                let size = banks
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, s)| *s)
                    .ok_or_else(|| LogError::BadDigests {
                        index,
                        what: format!("a digest of algorithm {alg:#06x}, not in the header"),
                    })?;
                digests.push((alg, r.take(usize::from(size))?.to_vec()));
            }
            let data = r.sized()?.to_vec();
            events.push(Event {
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(Self { banks, events })
    }

    /// The PCRs that events were extended into, as a bit mask (bit i =
    /// PCR i).
    pub fn covered_pcrs(&self) -> u32 {
        self.events
            .iter()
            .filter(|e| e.event_type != EV_NO_ACTION)
            .fold(0, |mask, e| mask | 1 << e.pcr)
    }

    /// The PCR values that replaying the log into a freshly started TPM
    /// leaves in bank `alg` (PCR 0 starts at the startup locality), for
    /// every PCR the log covers; `None` when the log has no such bank.
    pub fn replay(&self, alg: u16) -> Option<BTreeMap<u32, Vec<u8>>> {
        let size = usize::from(self.banks.iter().find(|(a, _)| *a == alg)?.1);
        let md = message_digest(alg)?;
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let locality = self.events.iter().find_map(|e| {
            (e.pcr == 0
                && e.event_type == EV_NO_ACTION
                && e.data.len() == 17
                && e.data.starts_with(STARTUP_LOCALITY_SIGNATURE))
            .then(|| e.data[16])
        });
        for e in self.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
            let digest = e.digest(alg)?;
            let pcr = pcrs.entry(e.pcr).or_insert_with(|| {
                let mut initial = vec![0; size];
                if e.pcr == 0 {
                    initial[size - 1] = locality.unwrap_or(0);
                }
                initial
            });
            let mut h = openssl::hash::Hasher::new(md).ok()?;
            h.update(pcr).ok()?;
            h.update(digest).ok()?;
            *pcr = h.finish().ok()?.to_vec();
        }
        Some(pcrs)
    }
}

/// The name of a bank (`sha256`), or its TPM_ALG_ID in hex.
pub fn bank_name(alg: u16) -> String {
    match alg {
        TPM_ALG_SHA1 => "sha1".into(),
        TPM_ALG_SHA256 => "sha256".into(),
        TPM_ALG_SHA384 => "sha384".into(),
        TPM_ALG_SHA512 => "sha512".into(),
        other => format!("{other:#06x}"),
    }
}

/// The OpenSSL digest of a bank.
pub fn message_digest(alg: u16) -> Option<openssl::hash::MessageDigest> {
    use openssl::hash::MessageDigest;
    match alg {
        TPM_ALG_SHA1 => Some(MessageDigest::sha1()),
        TPM_ALG_SHA256 => Some(MessageDigest::sha256()),
        TPM_ALG_SHA384 => Some(MessageDigest::sha384()),
        TPM_ALG_SHA512 => Some(MessageDigest::sha512()),
        _ => None,
    }
}

fn parse_spec_id(spec: &[u8]) -> Result<Vec<(u16, u16)>, LogError> {
    let mut r = Reader {
        bytes: spec,
        at: SPEC_ID_SIGNATURE.len(),
    };
    let _platform_class = r.u32()?;
    let (_minor, major, _errata, _uintn) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    if major != 2 {
        return Err(LogError::BadSpecId(format!("spec version {major}")));
    }
    let count = r.u32()? as usize;
    if count == 0 || count > 16 {
        return Err(LogError::BadSpecId(format!("{count} banks")));
    }
    let mut banks = Vec::with_capacity(count);
    for _ in 0..count {
        let (alg, size) = (r.u16()?, r.u16()?);
        if size == 0 || size > 64 {
            return Err(LogError::BadSpecId(format!(
                "digest size {size} for algorithm {alg:#06x}"
            )));
        }
        banks.push((alg, size));
    }
    Ok(banks)
}

/// A log written by hand for tests: the Spec ID event (sha256 only),
/// then one separator per `(pcr, fill)` whose digest is 32 `fill` bytes.
#[cfg(test)]
pub(crate) fn sample_log(events: &[(u32, u8)]) -> Vec<u8> {
    let mut spec = SPEC_ID_SIGNATURE.to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
    spec.extend_from_slice(&[0, 2, 0, 2]); // 2.0, errata 0, uintn 64-bit
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0); // vendor info size
    let mut log = Vec::new();
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    log.extend_from_slice(&[0; 20]);
    log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    log.extend_from_slice(&spec);
    for (pcr, fill) in events {
        log.extend_from_slice(&pcr.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes()); // EV_SEPARATOR
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        log.extend_from_slice(&[*fill; 32]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&[0; 4]);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_log() -> Vec<u8> {
        sample_log(&[(0, 0x11), (7, 0x77)])
    }

    #[test]
    fn a_hand_written_log_parses_and_replays() {
        let log = EventLog::parse(&tiny_log()).expect("parse");
        assert_eq!(log.banks, [(TPM_ALG_SHA256, 32)]);
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.covered_pcrs(), 1 | 1 << 7);
        let pcrs = log.replay(TPM_ALG_SHA256).expect("bank");
        let expect = |fill: u8| {
            let mut input = vec![0u8; 32];
            input.extend_from_slice(&[fill; 32]);
            openssl::sha::sha256(&input).to_vec()
        };
        assert_eq!(pcrs[&0], expect(0x11));
        assert_eq!(pcrs[&7], expect(0x77));
        assert_eq!(log.replay(TPM_ALG_SHA1), None, "no sha1 bank");
    }

    #[test]
    fn what_is_not_a_tcg2_log_is_refused_with_the_reason() {
        let good = tiny_log();
        for cut in [0, 10, 40, good.len() - 1] {
            assert!(
                matches!(EventLog::parse(&good[..cut]), Err(LogError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut sha1_only = good.clone();
        sha1_only[32..48].copy_from_slice(b"Spec ID Event00\0");
        assert_eq!(EventLog::parse(&sha1_only), Err(LogError::NotCryptoAgile));
        let mut bad_pcr = good.clone();
        let second = good.len() - 2 * (4 + 4 + 4 + 2 + 32 + 4 + 4);
        bad_pcr[second..second + 4].copy_from_slice(&30u32.to_le_bytes());
        assert_eq!(
            EventLog::parse(&bad_pcr),
            Err(LogError::BadPcr { index: 1, pcr: 30 })
        );
        let mut bad_alg = good;
        bad_alg[second + 12..second + 14].copy_from_slice(&TPM_ALG_SHA1.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&bad_alg),
            Err(LogError::BadDigests { index: 1, .. })
        ));
    }
}
