//! What every handler shares (the back end's attestation, the pull parts,
//! limits, buffers) and the API version a request names.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use super::body::BodyLimits;
use super::error::ApiError;
use super::integrity_body;
use super::key_work::KeyWork;
use super::refusals;
use crate::algorithms::{EncryptionAlg, HashAlg, SigningAlg};
use crate::api_version::ApiVersion;
use crate::attestation::Attestation;

/// What `agent/info` reports.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// The agent id.
    pub agent_id: String,
    /// AK hash.
    pub hash_alg: HashAlg,
    /// EK type.
    pub enc_alg: EncryptionAlg,
    /// AK scheme.
    pub sign_alg: SigningAlg,
    /// The AK's handle as the agent knows it.
    pub ak_handle: u32,
}

/// State shared by all handlers.
#[derive(Debug)]
pub struct ApiState {
    /// Quote production.
    pub attestation: Attestation,
    /// Versions served, ascending.
    pub versions: Vec<ApiVersion>,
    /// `agent/info` content.
    pub info: AgentInfo,
    /// The key exchange and payloads.
    pub payload: crate::pull::payload::PayloadService,
    /// Revocation notifications.
    pub revocation: crate::pull::revocation::Revocation,
    /// Request body limits.
    pub limits: BodyLimits,
    /// Key-half and notification crypto: one at a time, at a bounded rate.
    pub key_work: KeyWork,
    /// Client errors, counted and reported once a minute.
    pub refusals: refusals::RefusalLog,
    /// Buffers for streaming large IMA lists, reused across requests.
    pub buffers: integrity_body::BufferPool,
}

/// The `/v{version}` of a request, checked against the versions served.
#[derive(Debug, Clone, Copy)]
pub struct ServedVersion(pub ApiVersion);

impl FromRequest for ServedVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("version").unwrap_or_default();
        let served = req
            .app_data::<web::Data<ApiState>>()
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        ready(match raw.parse::<ApiVersion>() {
            Ok(v) if served.contains(&v) => Ok(Self(v)),
            _ => Err(ApiError::VersionNotSupported(
                raw.chars().take(16).collect(),
            )),
        })
    }
}
