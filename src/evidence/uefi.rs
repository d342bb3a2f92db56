//! The UEFI (TCG2) boot event log. Firmware writes it once per boot, so
//! it is read, parsed and base64-encoded once and served from memory; a
//! cheap `stat` per request notices when the file is another one (a new
//! inode, size or modification time, as after a kexec into a new boot) and
//! reads it again.
//!
//! It is sent only when the verifier asks for a PCR the log has events
//! for. A missing, unreadable or malformed log, or one without the quoted
//! bank, is one WARN line (again only when the file changes) and the quote
//! goes out without it: the verifier fails a log it cannot parse, even
//! when it has no measured-boot policy.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::tcg::EventLog;

/// The PCRs a measured-boot policy covers (Keylime's `MEASUREDBOOT_PCRS`:
/// 0-9 and 11-15). A quote selecting none of them never needs the log.
const MEASURED_BOOT_PCRS: u32 = 0xfbff;

/// The boot log at one path.
#[derive(Debug, Clone)]
pub struct UefiLog {
    path: Arc<PathBuf>,
    /// TPM_ALG_ID of the quoted bank.
    bank: u16,
    cached: Arc<Mutex<Option<Cached>>>,
}

/// What identifies one version of the file: device, inode, size, mtime.
type Stamp = (u64, u64, u64, i64, i64);

#[derive(Debug, Clone)]
struct Cached {
    /// `None` while the file cannot be found or opened.
    stamp: Option<Stamp>,
    /// The log, or why it cannot be sent.
    log: Result<Usable, String>,
    /// Whether the problem in `log` was logged.
    warned: bool,
}

#[derive(Debug, Clone)]
struct Usable {
    base64: Arc<str>,
    /// Bit i set: PCR i has events.
    covered: u32,
}

impl UefiLog {
    /// A log at `path`, to go with quotes of the bank whose TPM_ALG_ID is
    /// `bank`; nothing is read until the first request that needs it.
    pub fn new(path: impl Into<PathBuf>, bank: u16) -> Self {
        Self {
            path: Arc::new(path.into()),
            bank,
            cached: Arc::default(),
        }
    }

    /// The log as base64 for a pull-mode quote of the PCRs in `mask` (bit
    /// i = PCR i), when the log covers one of them.
    pub async fn for_pcrs(&self, mask: u32) -> Option<Arc<str>> {
        if mask & MEASURED_BOOT_PCRS == 0 {
            return None;
        }
        let usable = self.load(true).await?;
        (usable.covered & mask != 0).then_some(usable.base64)
    }

    /// The whole log as base64 (push-model evidence and capabilities), or
    /// `None`. A log that is simply absent is not warned about here: the
    /// agent then offers no boot log.
    pub async fn whole(&self) -> Option<Arc<str>> {
        self.load(false).await.map(|u| u.base64)
    }

    async fn load(&self, warn_if_absent: bool) -> Option<Usable> {
        let stamp = tokio::fs::metadata(&*self.path)
            .await
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
        let (mut entry, fresh) = match self.cached_for(stamp) {
            Some(entry) => (entry, false),
            None => {
                let (path, bank) = (self.path.clone(), self.bank);
                let log = tokio::task::spawn_blocking(move || read(&path, bank))
                    .await
                    .unwrap_or_else(|e| Err(format!("reading it failed: {e}")));
                let entry = Cached {
                    stamp,
                    log,
                    warned: false,
                };
                (entry, true)
            }
        };
        let mut changed = fresh;
        if let Err(problem) = &entry.log {
            let absent = entry.stamp.is_none();
            if !entry.warned && (warn_if_absent || !absent) {
                tracing::warn!(
                    "UEFI boot event log {}: {problem}; quotes go out without it",
                    self.path.display()
                );
                entry.warned = true;
                changed = true;
            }
        }
        let usable = entry.log.clone().ok();
        // The usual case (the same file, nothing new to say) writes nothing.
        if changed {
            if let Ok(mut slot) = self.cached.lock() {
                *slot = Some(entry);
            }
        }
        usable
    }

    /// The cached entry if it is of the file as it is now.
    fn cached_for(&self, stamp: Option<Stamp>) -> Option<Cached> {
        let slot = self.cached.lock().ok()?;
        slot.as_ref().filter(|c| c.stamp == stamp).cloned()
    }
}

/// Reads and checks the log at `path`.
fn read(path: &std::path::Path, bank: u16) -> Result<Usable, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no such file (no UEFI firmware log on this machine?)".into())
        }
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    if bytes.is_empty() {
        return Err("is empty".into());
    }
    let log = EventLog::parse(&bytes).map_err(|e| format!("is not a TCG2 event log: {e}"))?;
    if !log.banks.iter().any(|(alg, _)| *alg == bank) {
        return Err(format!(
            "has no digests in the quoted bank (algorithm {bank:#06x}), so the verifier could not replay it"
        ));
    }
    Ok(Usable {
        base64: Arc::from(B64.encode(&bytes)),
        covered: log.covered_pcrs(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tcg::{sample_log, TPM_ALG_SHA1, TPM_ALG_SHA256};
    use super::*;

    /// A TCG2 log (sha256 only) with separators in PCRs 0 and 7.
    fn log_bytes(fill: u8) -> Vec<u8> {
        sample_log(&[(0, fill), (7, fill)])
    }

    #[tokio::test]
    async fn sent_for_the_pcrs_it_covers_and_read_again_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let first = log_bytes(1);
        std::fs::write(&path, &first).expect("write");
        let log = UefiLog::new(&path, TPM_ALG_SHA256);
        let b64 = log.for_pcrs(1).await.expect("PCR 0 is covered");
        assert_eq!(B64.decode(b64.as_bytes()).expect("base64"), first);
        assert!(log.for_pcrs(1 << 7).await.is_some(), "PCR 7 is covered");
        assert!(log.for_pcrs(1 << 4).await.is_none(), "PCR 4 has no events");
        assert!(
            log.for_pcrs(1 << 10 | 1 << 16).await.is_none(),
            "runtime PCRs only"
        );
        assert_eq!(log.whole().await.as_deref(), Some(&*b64));

        // Another file at the path (a new inode): read again.
        let second = log_bytes(2);
        let next = dir.path().join("next");
        std::fs::write(&next, &second).expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let b64 = log.for_pcrs(0xfbff).await.expect("log");
        assert_eq!(B64.decode(b64.as_bytes()).expect("base64"), second);
    }

    #[tokio::test]
    async fn missing_malformed_or_wrong_bank_logs_are_not_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = UefiLog::new(&path, TPM_ALG_SHA256);
        assert!(log.for_pcrs(1).await.is_none(), "absent");
        assert!(log.whole().await.is_none(), "absent");
        std::fs::write(&path, b"not an event log at all, just text").expect("write");
        assert!(log.for_pcrs(1).await.is_none(), "malformed");
        std::fs::write(&path, log_bytes(1)).expect("write");
        assert!(log.for_pcrs(1).await.is_some(), "now a log");
        let sha1_quotes = UefiLog::new(&path, TPM_ALG_SHA1);
        assert!(sha1_quotes.for_pcrs(1).await.is_none(), "no sha1 bank");
    }
}
