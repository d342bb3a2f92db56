//! Secure payload delivery: the U and V key halves arrive (RSA-OAEP to the
//! NK), K = U xor V is accepted when it matches the tenant's `auth_tag`,
//! `keys/verify` proves K to the tenant, and the payload is decrypted into
//! the secure directory and run.

mod deliver;
mod halves;
mod revocation_cert;
pub mod script;
pub mod secure_dir;
mod zip_extract;

pub use deliver::{action_names, unzipped_dir};
pub use halves::{KeyHalves, UHalf, AUTH_TAG_LEN, MAX_U_HALVES, MAX_V_HALVES};
pub use revocation_cert::{adopt_payload_certificate, PAYLOAD_CERT};

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::pkey::{PKey, Private};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::audit;
use crate::config::PayloadConfig;
use crate::crypto;

/// Why a key request was refused; all are 400s with the message as status.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A field is missing or malformed.
    #[error("{0}")]
    Malformed(String),
    /// `keys/verify` before K is known (the tenant retries).
    #[error("Bootstrap key not yet available.")]
    NotYet,
}

/// The key exchange and payload delivery for one agent; cheap to clone.
#[derive(Clone)]
pub struct PayloadService {
    halves: Arc<Mutex<KeyHalves>>,
    nk: PKey<Private>,
    config: Arc<PayloadConfig>,
    payloads_allowed: bool,
}

impl std::fmt::Debug for PayloadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadService").finish_non_exhaustive()
    }
}

impl PayloadService {
    /// A service for `agent_id` whose halves are encrypted to `nk`.
    /// Payloads are stored and run only when `mtls` is on or the config
    /// allows insecure payloads.
    pub fn new(agent_id: &str, nk: PKey<Private>, config: PayloadConfig, mtls: bool) -> Self {
        // (Whether payloads are allowed is told at start by the pull front end.)
        let payloads_allowed = mtls || config.enable_insecure_payload;
        Self {
            halves: Arc::new(Mutex::new(KeyHalves::new(agent_id))),
            nk,
            config: Arc::new(config),
            payloads_allowed,
        }
    }

    /// `POST keys/ukey`.
    pub fn receive_u(
        &self,
        encrypted_key: &str,
        auth_tag: &str,
        payload: Option<&str>,
    ) -> Result<(), KeyError> {
        let received = self.receive_u_inner(encrypted_key, auth_tag, payload);
        Self::note_half("u", payload.is_some(), received.is_ok());
        received
    }

    fn receive_u_inner(
        &self,
        encrypted_key: &str,
        auth_tag: &str,
        payload: Option<&str>,
    ) -> Result<(), KeyError> {
        let key = self.decrypt_half(encrypted_key)?;
        let tag = hex::decode(auth_tag)
            .ok()
            .and_then(|t| <[u8; AUTH_TAG_LEN]>::try_from(t).ok())
            .ok_or_else(|| {
                KeyError::Malformed("auth_tag must be 96 hex digits (HMAC-SHA-384)".into())
            })?;
        let payload = payload
            .map(|p| {
                B64.decode(p)
                    .map_err(|_| KeyError::Malformed("payload is not base64".into()))
            })
            .transpose()?;
        if payload.is_some() && !self.payloads_allowed {
            return Err(KeyError::Malformed(
                "payloads are refused: mTLS is off and enable_insecure_payload is false".into(),
            ));
        }
        let (derived, rejected) = {
            let mut halves = self.lock();
            let derived = halves.add_u(UHalf {
                key,
                auth_tag: tag,
                payload,
            });
            let rejected = Self::rejected(&halves, derived.is_some());
            (derived, rejected)
        };
        self.on_derived(derived, rejected);
        Ok(())
    }

    /// `POST keys/vkey`.
    pub fn receive_v(&self, encrypted_key: &str) -> Result<(), KeyError> {
        let received = self.decrypt_half(encrypted_key).map(|key| {
            let mut halves = self.lock();
            let derived = halves.add_v(key);
            let rejected = Self::rejected(&halves, derived.is_some());
            (derived, rejected)
        });
        Self::note_half("v", false, received.is_ok());
        let (derived, rejected) = received?;
        self.on_derived(derived, rejected);
        Ok(())
    }

    /// Both halves are there, no K was derived before, and none came now:
    /// no pair matches the tenant's auth_tag.
    fn rejected(halves: &KeyHalves, derived: bool) -> bool {
        let (us, vs) = halves.pending();
        !derived && halves.key().is_none() && us > 0 && vs > 0
    }

    /// Metrics and audit for one key half of `kind` (`u` or `v`).
    fn note_half(kind: &str, with_payload: bool, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "refused" };
        crate::metrics::Metrics::count_outcome(&crate::metrics::get().key_halves, kind, outcome);
        // A half that does not decrypt is a refused request: counted (here
        // and in the per-minute 4xx summary), not an audit record, so a
        // flood of garbage cannot flood the trail.
        if !accepted {
            return;
        }
        let event = if kind == "u" {
            audit::Event::UReceived
        } else {
            audit::Event::VReceived
        };
        audit::record(event, serde_json::json!({ "with_payload": with_payload }));
    }

    /// `GET keys/verify`: lower-case hex HMAC-SHA-384(K, challenge).
    pub fn verify(&self, challenge: &str) -> Result<String, KeyError> {
        let halves = self.lock();
        let key = halves.key().ok_or(KeyError::NotYet)?;
        crypto::hmac_sha384_hex(key, challenge.as_bytes())
            .map_err(|e| KeyError::Malformed(e.to_string()))
    }

    fn decrypt_half(&self, encrypted_key: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let ciphertext = B64
            .decode(encrypted_key)
            .map_err(|_| KeyError::Malformed("encrypted_key is not base64".into()))?;
        let half = crypto::rsa_oaep_sha1_decrypt(&self.nk, &ciphertext).map_err(|_| {
            KeyError::Malformed(
                "encrypted_key does not decrypt with the agent's NK (RSA-OAEP)".into(),
            )
        })?;
        if half.len() != 16 && half.len() != 32 {
            return Err(KeyError::Malformed(format!(
                "a key half must be 16 or 32 bytes, not {}",
                half.len()
            )));
        }
        Ok(half)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyHalves> {
        // A panic while holding the lock cannot leave the halves half-updated
        // in a way that matters: every update is a push or a whole replace.
        self.halves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn on_derived(&self, derived: Option<halves::DerivedKey>, rejected: bool) {
        let metrics = crate::metrics::get();
        if rejected {
            crate::metrics::Metrics::count(&metrics.k_checks, "rejected");
            audit::record(
                audit::Event::KRejected,
                serde_json::json!({ "reason": "no U and V pair matches the tenant's auth_tag" }),
            );
        }
        let Some(derived) = derived else { return };
        tracing::info!("bootstrap key K derived and verified against the tenant's auth_tag");
        crate::metrics::Metrics::count(&metrics.k_checks, "verified");
        audit::record(
            audit::Event::KVerified,
            serde_json::json!({ "with_payload": derived.payload.is_some() }),
        );
        if !self.payloads_allowed {
            return;
        }
        let config = self.config.clone();
        tokio::spawn(async move {
            if let Err(e) =
                deliver::deliver(&config, &derived.key, derived.payload.as_deref()).await
            {
                tracing::error!("payload delivery failed: {e}");
            }
        });
    }
}
