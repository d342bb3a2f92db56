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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;
use thiserror::Error;

mod acted;

use acted::{Acted, Seen};
pub use acted::{REMEMBERED, STALE_AFTER_SECS};

use crate::config::RevocationConfig;
use crate::pull::payload::{action_names, adopt_payload_certificate, script, PAYLOAD_CERT};
use crate::{crypto, secure_fs};

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
    /// The verdict's name in metrics and the audit file.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::NoCertificate => "no_certificate",
            Self::BadSignature => "bad_signature",
            Self::Replayed => "replayed",
            Self::Stale => "stale",
            Self::Verified(_) => "verified",
        }
    }

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
        drop(self.acted());
        let verdict = match self.verify(msg, signature) {
            Verdict::Verified(actions) => self
                .first_time(msg, &event)
                .unwrap_or(Verdict::Verified(actions)),
            other => other,
        };
        crate::metrics::Metrics::count(&crate::metrics::get().revocations, verdict.name());
        self.record(&verdict, &event);
        if let Verdict::Verified(actions) = &verdict {
            let this = self.clone();
            let (actions, msg) = (actions.clone(), msg.to_string());
            tokio::spawn(async move { this.run_actions(&actions, &msg).await });
        }
        Ok(verdict)
    }

    /// The audit record and the log line of a verdict.
    fn record(&self, verdict: &Verdict, event: &Value) {
        // Unsigned fields: escaped before they reach a log line.
        let field =
            |name: &str| crate::untrusted::escape_to(event[name].as_str().unwrap_or("?"), 100);
        let summary = format!(
            "revocation notification (type {}, agent {}, event {})",
            field("type"),
            field("agent_id"),
            field("event_id"),
        );
        let actions = match verdict {
            Verdict::Verified(actions) => actions.clone(),
            _ => Vec::new(),
        };
        let fields = serde_json::json!({
            "verdict": verdict.name(),
            "type": event["type"],
            "revoked_agent": event["agent_id"],
            "event_id": event["event_id"],
            "actions": actions,
        });
        let why = match verdict {
            Verdict::Verified(actions) => {
                crate::audit::record(crate::audit::Event::RevocationReceived, fields);
                tracing::info!("{summary} verified; running {} action(s)", actions.len());
                return;
            }
            Verdict::Unsigned => " is not signed".to_string(),
            Verdict::NoCertificate => format!(
                ": no revocation certificate at {}",
                self.cert_path().display()
            ),
            Verdict::BadSignature => " has an invalid signature".to_string(),
            Verdict::Replayed => " is a replay of one already acted on".to_string(),
            Verdict::Stale => " is older than the newest one acted on (a replay)".to_string(),
        };
        crate::audit::record_warning(
            crate::audit::Event::RevocationReceived,
            fields,
            &format!("{summary}{why}; no action taken"),
        );
    }

    /// `None` when `msg` may be acted on (and is now recorded as acted
    /// on); otherwise why not.
    fn first_time(&self, msg: &str, event: &Value) -> Option<Verdict> {
        let digest = hex::encode(openssl::sha::sha256(msg.as_bytes()));
        let when = event["event_time"]
            .as_str()
            .and_then(acted::parse_event_time);
        let mut guard = self.acted();
        let acted = guard.get_or_insert_with(Acted::default);
        match acted.admit(digest, when) {
            Seen::Again => return Some(Verdict::Replayed),
            Seen::Stale => return Some(Verdict::Stale),
            Seen::First => {}
        }
        let record = acted.clone();
        drop(guard);
        if let Err(e) = record.save(&self.config.state_dir) {
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

#[cfg(test)]
mod tests;
