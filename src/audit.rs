//! The audit trail: security-relevant events as records with a stable
//! `event` name and structured fields. Every record is an INFO log line;
//! with `audit_log = <path>` it is also appended to that file (mode 0600)
//! as one JSON object per line, fsynced before the next record is written.
//! Records carry no key material: halves and K are named, never shown.
//!
//! Writing happens on one thread of its own, in the order records were
//! made, so a slow disk never holds up a request.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The stable event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The configuration was loaded (secrets redacted).
    ConfigLoaded,
    /// The agent dropped root to `run_as`.
    PrivilegesDropped,
    /// The registrar accepted the EK and AK.
    Registered,
    /// TPM2_ActivateCredential proved the AK and EK share a TPM.
    Activated,
    /// Registration is being redone (`SIGHUP`, `registrar_refresh_interval`).
    Reregistering,
    /// An identity quote was served.
    IdentityQuoteServed,
    /// A U key half arrived.
    UReceived,
    /// A V key half arrived.
    VReceived,
    /// K = U xor V matched the tenant's auth_tag.
    KVerified,
    /// U and V were both there but no pair matched the auth_tag.
    KRejected,
    /// The payload was decrypted with K.
    PayloadDecrypted,
    /// The payload zip was extracted.
    PayloadExtracted,
    /// The payload script ran.
    PayloadRun,
    /// A revocation notification arrived, with its verdict.
    RevocationReceived,
    /// The TPM connection was reopened.
    TpmReconnected,
}

impl Event {
    /// The name in the record's `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConfigLoaded => "config_loaded",
            Self::PrivilegesDropped => "privileges_dropped",
            Self::Registered => "registered",
            Self::Activated => "activated",
            Self::Reregistering => "reregistering",
            Self::IdentityQuoteServed => "identity_quote_served",
            Self::UReceived => "u_received",
            Self::VReceived => "v_received",
            Self::KVerified => "k_verified",
            Self::KRejected => "k_rejected",
            Self::PayloadDecrypted => "payload_decrypted",
            Self::PayloadExtracted => "payload_extracted",
            Self::PayloadRun => "payload_run",
            Self::RevocationReceived => "revocation_received",
            Self::TpmReconnected => "tpm_reconnected",
        }
    }
}

/// Where records go besides the log.
static FILE_SINK: OnceLock<Sender<String>> = OnceLock::new();

/// Opens `path` for appending (created 0600) and starts the writer thread.
/// Called once at start, as root when the agent starts as root: the file
/// stays root's, written through the descriptor opened here after the
/// switch to `run_as`. A link at `path` is refused, not followed.
/// Later calls keep the first file.
pub fn open(path: &Path) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "audit_log has no file name",
        )
    })?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = match crate::secure_fs::Dir::open(parent) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::secure_fs::ensure_private_dir(parent)?
        }
        Err(e) => return Err(e),
    };
    let file = dir.open_append(name)?;
    let (sender, records) = mpsc::channel::<String>();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || write_all(file, &path, &records))?;
    let _ = FILE_SINK.set(sender);
    Ok(())
}

fn write_all(mut file: File, path: &Path, records: &Receiver<String>) {
    for line in records {
        let written = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            tracing::error!("audit_log {}: cannot append a record: {e}", path.display());
        }
    }
}

/// Records `event` with `fields` (a JSON object): one INFO line, and one
/// line in the audit file when `audit_log` is set.
pub fn record(event: Event, fields: Value) {
    let line = write(event, fields);
    tracing::info!(event = event.name(), "audit {line}");
}

/// As [`record`], for an event an operator must look at: one WARN line
/// that says `warning` and carries the record.
pub fn record_warning(event: Event, fields: Value, warning: &str) {
    let line = write(event, fields);
    tracing::warn!(event = event.name(), "{warning} (audit {line})");
}

/// The record as one JSON line, appended to the audit file if there is one.
fn write(event: Event, fields: Value) -> String {
    let mut record = Map::new();
    record.insert(
        "timestamp".into(),
        json!(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()),
    );
    record.insert("event".into(), json!(event.name()));
    if let Value::Object(fields) = fields {
        record.extend(fields);
    }
    let line = Value::Object(record).to_string();
    if let Some(sink) = FILE_SINK.get() {
        let _ = sink.send(format!("{line}\n"));
    }
    line
}
