//! EK, EK certificate and AK set-up, run once by the owner at start.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::{ak, ek};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::structures::{CapabilityData, Private, Public, PublicBuffer};
use tss_esapi::traits::UnMarshall;
use tss_esapi::Context;

use super::error::TpmError;
use super::public;
use super::settings::TpmConfig;
use crate::algorithms::EncryptionAlg;
use crate::secure_fs;

/// Where the EK came from, which decides how it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EkOrigin {
    /// Created from the default template: a transient object, flushed at stop.
    Created,
    /// A persistent handle: only the ESYS reference is closed at stop.
    Persistent,
}

/// Creates the EK from the TCG default template, or references the
/// configured persistent handle.
pub(super) fn load_ek(
    ctx: &mut Context,
    config: &TpmConfig,
) -> Result<(KeyHandle, EkOrigin), TpmError> {
    match config.ek_handle {
        None => {
            let handle = ek::create_ek_object_2(ctx, config.encryption_alg.selection(), None)
                .map_err(TpmError::tss("creating the EK"))?;
            Ok((handle, EkOrigin::Created))
        }
        Some(raw) => {
            let persistent = PersistentTpmHandle::new(raw).map_err(TpmError::tss("ek_handle"))?;
            let handle = ctx
                .execute_without_session(|ctx| {
                    ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
                })
                .map_err(TpmError::tss("opening the persistent EK"))?;
            Ok((handle.into(), EkOrigin::Persistent))
        }
    }
}

/// Handles currently present in the TPM from `first` on, within the same range.
pub(super) fn list_handles(ctx: &mut Context, first: u32) -> Result<Vec<u32>, TpmError> {
    let range_end = (first & 0xff00_0000) | 0x00ff_ffff;
    let mut found = Vec::new();
    let mut next = first;
    loop {
        let (data, more) = ctx
            .get_capability(CapabilityType::Handles, next, 64)
            .map_err(TpmError::tss("GetCapability(handles)"))?;
        let CapabilityData::Handles(list) = data else {
            return Err(TpmError::Unexpected(
                "GetCapability(handles) answered with other data".into(),
            ));
        };
        let batch: Vec<u32> = list
            .into_inner()
            .into_iter()
            .map(u32::from)
            .filter(|h| *h <= range_end)
            .collect();
        let last = batch.last().copied();
        found.extend(batch);
        match last {
            Some(last) if more && last < range_end => next = last + 1,
            _ => return Ok(found),
        }
    }
}

/// The AK as persisted in `agent_data_path`: the key blob wrapped by the
/// EK, and what it was made for, so that a changed EK or algorithm is noticed.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAk {
    ek_tpm: String,
    hash_alg: String,
    sign_alg: String,
    public: String,
    private: String,
}

/// The persisted AK, as read from `agent_data_path`.
enum Stored {
    /// None yet (or unreadable).
    Missing,
    /// Made under another EK, or with other algorithms.
    Foreign,
    /// Made for this EK and these algorithms.
    Matching(Public, Private),
}

/// The persisted AK: `remembered` (the store as read at the first open)
/// when set, else the file, whose bytes are then remembered. After the
/// privilege drop the agent may no longer read the root-owned store, so a
/// reopened TPM gets the AK from memory.
fn stored_for(
    ek_tpm: &[u8],
    config: &TpmConfig,
    remembered: &mut Option<Vec<u8>>,
) -> Result<Stored, TpmError> {
    let stored = match remembered.as_deref() {
        Some(bytes) => parse_store(bytes, &config.ak_store),
        None => {
            let bytes = read_store(&config.ak_store)?;
            let parsed = bytes
                .as_deref()
                .and_then(|b| parse_store(b, &config.ak_store));
            if parsed.is_some() {
                *remembered = bytes;
            }
            parsed
        }
    };
    let Some(stored) = stored else {
        return Ok(Stored::Missing);
    };
    let wanted = (
        B64.encode(ek_tpm),
        config.hash_alg.as_str(),
        config.signing_alg.as_str(),
    );
    if (
        stored.ek_tpm.as_str(),
        stored.hash_alg.as_str(),
        stored.sign_alg.as_str(),
    ) != (wanted.0.as_str(), wanted.1, wanted.2)
    {
        return Ok(Stored::Foreign);
    }
    let (public, private) = decode_stored(&stored, &config.ak_store)?;
    Ok(Stored::Matching(public, private))
}

/// What `keylime_agent check` reports about the persisted AK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAkState {
    /// No AK persisted yet: the agent creates one.
    Missing,
    /// It belongs to another EK or algorithm: the agent creates a new one.
    Foreign,
    /// It loads under the EK.
    Loads,
    /// It is there but the TPM refuses to load it.
    DoesNotLoad(String),
}

/// Tries the persisted AK under `ek` and flushes it again: nothing is
/// created or written.
pub(super) fn probe_stored_ak(
    ctx: &mut Context,
    ek: KeyHandle,
    ek_tpm: &[u8],
    config: &TpmConfig,
) -> Result<StoredAkState, TpmError> {
    Ok(match stored_for(ek_tpm, config, &mut None)? {
        Stored::Missing => StoredAkState::Missing,
        Stored::Foreign => StoredAkState::Foreign,
        Stored::Matching(public, private) => match ak::load_ak(ctx, ek, None, private, public) {
            Ok(handle) => {
                let _ = ctx.flush_context(handle.into());
                StoredAkState::Loads
            }
            Err(e) => StoredAkState::DoesNotLoad(e.to_string()),
        },
    })
}

/// Loads the persisted AK if it was made under this EK with these
/// algorithms; otherwise creates a new one and persists it.
pub(super) fn load_or_create_ak(
    ctx: &mut Context,
    (ek, ek_alg): (KeyHandle, EncryptionAlg),
    ek_tpm: &[u8],
    config: &TpmConfig,
    remembered: &mut Option<Vec<u8>>,
) -> Result<(KeyHandle, Public, bool), TpmError> {
    let store = &config.ak_store;
    match stored_for(ek_tpm, config, remembered)? {
        Stored::Matching(public, private) => {
            match ak::load_ak(ctx, ek, None, private, public.clone()) {
                Ok(handle) => return Ok((handle, public, true)),
                Err(e) => tracing::warn!("the persisted AK in {} no longer loads ({e}); creating a new AK", store.display()),
            }
        }
        Stored::Foreign => tracing::warn!(
            "the persisted AK in {} belongs to another EK or algorithm; creating a new AK (the registrar will refuse it for an already registered id)",
            store.display()
        ),
        Stored::Missing => tracing::info!("no persisted AK yet; creating one"),
    }
    let wanted = (
        B64.encode(ek_tpm),
        config.hash_alg.as_str(),
        config.signing_alg.as_str(),
    );
    let created = ak::create_ak_2(
        ctx,
        ek,
        config.hash_alg.to_tpm(),
        ek_alg.ak_key(config.signing_alg),
        config.signing_alg.to_tpm(),
        None,
        None,
    )
    .map_err(TpmError::tss("creating the AK"))?;
    let stored = StoredAk {
        ek_tpm: wanted.0,
        hash_alg: wanted.1.into(),
        sign_alg: wanted.2.into(),
        public: B64.encode(public::tpm2b_public(&created.out_public)?),
        private: B64.encode(created.out_private.value()),
    };
    let handle = ak::load_ak(
        ctx,
        ek,
        None,
        created.out_private,
        created.out_public.clone(),
    )
    .map_err(TpmError::tss("loading the new AK"))?;
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| TpmError::AkStore {
        path: store.clone(),
        reason: e.to_string(),
    })?;
    if let Err(e) = secure_fs::write_private(store, &json) {
        let _ = ctx.flush_context(handle.into());
        return Err(TpmError::AkStore {
            path: store.clone(),
            reason: e.to_string(),
        });
    }
    *remembered = Some(json);
    Ok((handle, created.out_public, false))
}

fn read_store(path: &Path) -> Result<Option<Vec<u8>>, TpmError> {
    match secure_fs::read_private(path) {
        Ok((bytes, _)) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TpmError::AkStore {
            path: path.into(),
            reason: e.to_string(),
        }),
    }
}

fn parse_store(bytes: &[u8], path: &Path) -> Option<StoredAk> {
    match serde_json::from_slice(bytes) {
        Ok(stored) => Some(stored),
        Err(e) => {
            tracing::warn!("ignoring unreadable AK store {}: {e}", path.display());
            None
        }
    }
}

fn decode_stored(stored: &StoredAk, path: &Path) -> Result<(Public, Private), TpmError> {
    let bad = |reason: String| TpmError::AkStore {
        path: path.into(),
        reason,
    };
    let public_bytes = B64.decode(&stored.public).map_err(|e| bad(e.to_string()))?;
    let public = PublicBuffer::unmarshall(&public_bytes)
        .and_then(Public::try_from)
        .map_err(|e| bad(format!("public area: {e}")))?;
    let private = B64
        .decode(&stored.private)
        .map_err(|e| bad(e.to_string()))
        .and_then(|p| Private::try_from(p).map_err(|e| bad(format!("private area: {e}"))))?;
    Ok((public, private))
}
