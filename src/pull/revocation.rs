//! Revocation notifications from the verifier: the message is verified
//! (RSA-PSS/SHA-256 with the revocation certificate) before anything runs;
//! unsigned, unverifiable or badly signed messages are logged and run
//! nothing. Verified ones run the configured actions and, if allowed, the
//! payload's `action_list`, each with the message as a JSON file argument.
//!
//! A verified notification is acted on once: the SHA-256 of every message
//! acted on (the last [`REMEMBERED`]) and the newest `event_time` are kept
//! in `<keylime_dir>/revocation/acted.json`, so the same message, or one
//! more than [`STALE_AFTER_SECS`] older than the newest acted on, is
//! refused even after a restart. The
//! certificate from a payload is copied into that directory at delivery
//! and read from there, never from the payload directory that the next
//! delivery replaces.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;
use thiserror::Error;

use crate::config::RevocationConfig;
use crate::pull::payload::{action_names, script};
use crate::{crypto, secure_fs};

/// The certificate name the tenant's `--cert` package carries.
pub const PAYLOAD_CERT: &str = "RevocationNotifier-cert.crt";
/// The record of what was acted on, in the revocation directory.
const ACTED_FILE: &str = "acted.json";
/// How many acted-on messages are remembered.
pub const REMEMBERED: usize = 256;
/// How much older than the newest acted on a notification may be and still
/// count (the verifier's clock is local time with one-second resolution:
/// a daylight-saving change or verifiers in other time zones must not
/// turn fresh notifications away). Recent replays are caught by digest.
pub const STALE_AFTER_SECS: i64 = 2 * 3600;

/// A notification that cannot even be read.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct MalformedNotification(pub String);

/// What was decided about a well-formed notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No signature: nothing runs.
    Unsigned,
    /// No certificate to verify with yet: nothing runs.
    NoCertificate,
    /// The signature does not verify: nothing runs.
    BadSignature,
    /// Verified: these actions are being run.
    Verified(Vec<String>),
    /// Verified, but this message was acted on already: nothing runs.
    Replayed,
    /// Verified, but older than the newest message acted on: nothing runs.
    Stale,
}

impl Verdict {
    /// The answer's status text: whether anything ran, and why not.
    pub fn status_text(&self) -> &'static str {
        match self {
            Self::Verified(_) => "Success",
            Self::Unsigned => "Notification not signed; no action taken",
            Self::NoCertificate => "No revocation certificate; no action taken",
            Self::BadSignature => "Invalid signature; no action taken",
            Self::Replayed => "Already acted on (a replay); no action taken",
            Self::Stale => "Older than the newest notification acted on; no action taken",
        }
    }
}

/// What was acted on, as kept in `acted.json`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Acted {
    /// Hex SHA-256 of the messages acted on, oldest first.
    digests: VecDeque<String>,
    /// The newest `event_time` acted on, in seconds from 1970 as the
    /// verifier's local clock read it.
    newest: Option<i64>,
}

impl Acted {
    /// The record in `state_dir`, read when the first notification comes
    /// (after the switch to `run_as`, whose directory it is).
    fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(ACTED_FILE);
        match secure_fs::read_private(&file) {
            Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: unreadable ({e}); starting a new record of acted-on revocations",
                    file.display()
                );
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::warn!("the record of acted-on revocations: {e}");
                Self::default()
            }
        }
    }
}

/// Revocation handling for one agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Revocation {
    config: Arc<RevocationConfig>,
    unzipped: PathBuf,
    secure_dir: PathBuf,
    /// `None` until the first notification.
    acted: Arc<Mutex<Option<Acted>>>,
}

impl Revocation {
    /// Handling with `config`; payload files are looked up in `unzipped`,
    /// message files are written to `secure_dir`; what was acted on is
    /// kept in `config.state_dir`.
    pub fn new(config: RevocationConfig, unzipped: PathBuf, secure_dir: PathBuf) -> Self {
        if config.zeromq_requested {
            tracing::warn!(
                "enable_revocation_notifications: ZeroMQ notifications are not supported; \
                 revocations arrive over the agent's REST API (the verifier's default 'agent' notifier)"
            );
        }
        Self {
            config: Arc::new(config),
            unzipped,
            secure_dir,
            acted: Arc::new(Mutex::new(None)),
        }
    }

    /// The record of what was acted on, read at the first notification;
    /// then too a certificate an earlier release left only in the payload
    /// directory is kept in the revocation directory.
    fn acted(&self) -> std::sync::MutexGuard<'_, Option<Acted>> {
        let mut acted = self
            .acted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if acted.is_none() {
            *acted = Some(Acted::load(&self.config.state_dir));
            let kept = self.config.state_dir.join(PAYLOAD_CERT);
            if self.config.cert.is_none()
                && std::fs::symlink_metadata(&kept).is_err()
                && std::fs::symlink_metadata(self.unzipped.join(PAYLOAD_CERT)).is_ok()
            {
                if let Err(e) = adopt_payload_certificate(&self.unzipped, &self.config.state_dir) {
                    tracing::warn!("keeping the payload's revocation certificate: {e}");
                }
            }
        }
        acted
    }

    /// Checks a notification and, when verified, starts its actions in
    /// the background.
    pub fn handle(&self, msg: &str, signature: &str) -> Result<Verdict, MalformedNotification> {
        let event: Value = serde_json::from_str(msg)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                MalformedNotification("msg is not a JSON object encoded as a string".into())
            })?;
        // Unsigned fields: escaped before they reach a log line.
        let field =
            |name: &str| crate::untrusted::escape_to(event[name].as_str().unwrap_or("?"), 100);
        let summary = format!(
            "revocation notification (type {}, agent {}, event {})",
            field("type"),
            field("agent_id"),
            field("event_id"),
        );
        drop(self.acted());
        let verdict = match self.verify(msg, signature) {
            Verdict::Verified(actions) => self
                .first_time(msg, &event)
                .unwrap_or(Verdict::Verified(actions)),
            other => other,
        };
        let (name, actions) = match &verdict {
            Verdict::Unsigned => ("unsigned", Vec::new()),
            Verdict::NoCertificate => ("no_certificate", Vec::new()),
            Verdict::BadSignature => ("bad_signature", Vec::new()),
            Verdict::Replayed => ("replayed", Vec::new()),
            Verdict::Stale => ("stale", Vec::new()),
            Verdict::Verified(actions) => ("verified", actions.clone()),
        };
        crate::metrics::Metrics::count(&crate::metrics::get().revocations, name);
        let fields = serde_json::json!({
            "verdict": name,
            "type": event["type"],
            "revoked_agent": event["agent_id"],
            "event_id": event["event_id"],
            "actions": actions,
        });
        let refused = |why: String| {
            crate::audit::record_warning(
                crate::audit::Event::RevocationReceived,
                fields.clone(),
                &why,
            );
        };
        match &verdict {
            Verdict::Unsigned => refused(format!("{summary} is not signed; no action taken")),
            Verdict::NoCertificate => refused(format!(
                "{summary}: no revocation certificate at {}; no action taken",
                self.cert_path().display()
            )),
            Verdict::BadSignature => {
                refused(format!(
                    "{summary} has an invalid signature; no action taken"
                ));
            }
            Verdict::Replayed => refused(format!(
                "{summary} is a replay of one already acted on; no action taken"
            )),
            Verdict::Stale => refused(format!(
                "{summary} is older than the newest one acted on (a replay); no action taken"
            )),
            Verdict::Verified(actions) => {
                crate::audit::record(crate::audit::Event::RevocationReceived, fields.clone());
                tracing::info!("{summary} verified; running {} action(s)", actions.len());
                let this = self.clone();
                let (actions, msg) = (actions.clone(), msg.to_string());
                tokio::spawn(async move { this.run_actions(&actions, &msg).await });
            }
        }
        Ok(verdict)
    }

    /// `None` when `msg` may be acted on (and is now recorded as acted
    /// on); otherwise why not.
    fn first_time(&self, msg: &str, event: &Value) -> Option<Verdict> {
        let digest = hex::encode(openssl::sha::sha256(msg.as_bytes()));
        let when = event["event_time"].as_str().and_then(parse_event_time);
        let mut guard = self.acted();
        let acted = guard.get_or_insert_with(Acted::default);
        if acted.digests.contains(&digest) {
            return Some(Verdict::Replayed);
        }
        if let (Some(when), Some(newest)) = (when, acted.newest) {
            if when + STALE_AFTER_SECS < newest {
                return Some(Verdict::Stale);
            }
        }
        acted.digests.push_back(digest);
        while acted.digests.len() > REMEMBERED {
            acted.digests.pop_front();
        }
        if when.is_some() && when > acted.newest {
            acted.newest = when;
        }
        let record = serde_json::to_vec(&*acted).unwrap_or_default();
        drop(guard);
        if let Err(e) = secure_fs::write_private(&self.config.state_dir.join(ACTED_FILE), &record) {
            tracing::error!(
                "cannot record the acted-on revocation ({e}); it would be acted on again after a restart"
            );
        }
        None
    }

    fn cert_path(&self) -> PathBuf {
        self.config
            .cert
            .clone()
            .unwrap_or_else(|| self.config.state_dir.join(PAYLOAD_CERT))
    }

    fn verify(&self, msg: &str, signature: &str) -> Verdict {
        if signature.trim().is_empty() || signature == "none" {
            return Verdict::Unsigned;
        }
        let Ok(pem) = std::fs::read(self.cert_path()) else {
            return Verdict::NoCertificate;
        };
        let key = openssl::x509::X509::from_pem(&pem).and_then(|c| c.public_key());
        let (Ok(key), Ok(signature)) = (key, B64.decode(signature.trim())) else {
            return Verdict::BadSignature;
        };
        if crypto::verify_rsa_pss_sha256(&key, msg.as_bytes(), &signature) {
            Verdict::Verified(
                self.action_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
        } else {
            Verdict::BadSignature
        }
    }

    /// Configured actions from `revocation_actions_dir`, then the payload's.
    fn action_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .config
            .actions
            .iter()
            .map(|n| self.config.actions_dir.join(n))
            .collect();
        if self.config.allow_payload_actions {
            paths.extend(
                action_names(&self.unzipped)
                    .into_iter()
                    .map(|n| self.unzipped.join(n)),
            );
        }
        paths
    }

    async fn run_actions(&self, actions: &[String], msg: &str) {
        let file = self
            .secure_dir
            .join(format!("revocation-{}.json", uuid::Uuid::new_v4()));
        if let Err(e) = secure_fs::write_private(&file, msg.as_bytes()) {
            tracing::error!("cannot write the revocation message for the actions: {e}");
            return;
        }
        for action in actions {
            let path = Path::new(action);
            let cwd = path.parent().unwrap_or(Path::new("/"));
            let label = format!("revocation action {}", path.display());
            script::run(
                &label,
                path,
                &[file.as_os_str()],
                cwd,
                self.config.action_timeout,
            )
            .await;
        }
        let _ = std::fs::remove_file(&file);
    }
}

/// Keeps the payload's revocation certificate: copied from `unzipped`
/// into `state_dir` at delivery, or removed there when the new payload has
/// none. Called by the delivery, right after the payload was stored.
pub fn adopt_payload_certificate(unzipped: &Path, state_dir: &Path) -> std::io::Result<()> {
    let copy = state_dir.join(PAYLOAD_CERT);
    match secure_fs::read_private(&unzipped.join(PAYLOAD_CERT)) {
        Ok((pem, _)) => {
            secure_fs::write_private(&copy, &pem)?;
            tracing::info!(
                "revocation certificate from the payload kept as {}",
                copy.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match secure_fs::Dir::open(state_dir)
        {
            Ok(dir) => dir.remove(std::ffi::OsStr::new(PAYLOAD_CERT)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The verifier's `event_time` (`time.asctime()`: `Sun Nov 22 04:24:56
/// 2026`, the day padded with a space) in seconds from 1970 (its time zone
/// unknown: only differences between two of them mean anything).
fn parse_event_time(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = text.split_whitespace();
    let _weekday = parts.next()?;
    let month_name = parts.next()?;
    let month = u32::try_from(MONTHS.iter().position(|m| *m == month_name)?).ok()? + 1;
    let day: u32 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    let year: i64 = parts.next()?.parse().ok()?;
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, mo) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * mo + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

#[cfg(test)]
mod tests;
