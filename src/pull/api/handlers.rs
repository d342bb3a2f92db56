//! Thin handlers: extract, parse, one domain call, wire type.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::{success, ApiError};
use super::params::Query;
use super::state::{ApiState, ServedVersion};
use crate::api_version::ApiVersion;
use crate::attestation::Quote;

/// `GET /version`: every version served in `supported_versions`, which
/// 7.14 peers negotiate over; `supported_version`, which older peers use as
/// it is, names the highest version they understand (see
/// [`ApiVersion::for_non_negotiating_peers`]).
pub async fn version(state: web::Data<ApiState>) -> HttpResponse {
    let versions: Vec<String> = state.versions.iter().map(ToString::to_string).collect();
    let single = ApiVersion::for_non_negotiating_peers(&state.versions).map(|v| v.to_string());
    success(json!({
        "supported_version": single,
        "supported_versions": versions,
    }))
}

/// `GET /v{v}/quotes/identity?nonce=`.
pub async fn identity(
    state: web::Data<ApiState>,
    version: ServedVersion,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let nonce = Query::parse(req.query_string())?.nonce()?;
    let quote = state.attestation.identity_quote(&nonce).await?;
    Ok(success(quote_fields(&quote, version.0)))
}

/// `GET /v{v}/quotes/integrity?nonce=&mask=&partial=&ima_ml_entry=`.
pub async fn integrity(
    state: web::Data<ApiState>,
    version: ServedVersion,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(req.query_string())?;
    let (nonce, mask, partial, entry) = (q.nonce()?, q.mask()?, q.partial()?, q.ima_ml_entry()?);
    let evidence = state
        .attestation
        .integrity_quote(&nonce, mask, partial, entry)
        .await?;
    let mut results = quote_fields(&evidence.quote, version.0);
    if let Some(mb) = evidence.mb_log {
        results.insert("mb_measurement_list".into(), Value::String(mb.to_string()));
    }
    super::integrity_body::respond(results, evidence.ima, &state.buffers)
        .await
        .map_err(|e| ApiError::Attestation(e.into()))
}

/// `GET /v{v}/keys/pubkey`.
pub async fn pubkey(state: web::Data<ApiState>, _version: ServedVersion) -> HttpResponse {
    success(json!({ "pubkey": state.attestation.nk_pem().as_ref() }))
}

/// `GET /v{v}/agent/info` (2.2 and later).
pub async fn info(
    state: web::Data<ApiState>,
    version: ServedVersion,
) -> Result<HttpResponse, ApiError> {
    if !version.0.has_agent_info() {
        return Err(ApiError::NotFound);
    }
    let info = &state.info;
    Ok(success(json!({
        "agent_uuid": info.agent_id,
        "tpm_hash_alg": info.hash_alg.as_str(),
        "tpm_enc_alg": info.enc_alg.wire_name(version.0),
        "tpm_sign_alg": info.sign_alg.as_str(),
        "ak_handle": info.ak_handle,
    })))
}

/// Any path no route matched: a version this agent does not serve is the
/// renegotiation 400, anything else 404.
pub async fn fallback(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    if let Some(rest) = path.strip_prefix("/v") {
        let version = rest.split('/').next().unwrap_or_default();
        let served = version
            .parse::<ApiVersion>()
            .is_ok_and(|v| state.versions.contains(&v));
        if !served && !version.is_empty() {
            return Err(ApiError::VersionNotSupported(
                version.chars().take(16).collect(),
            ));
        }
    }
    Err(ApiError::NotFound)
}

/// A known resource asked with the wrong method.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// The pull API's wire form of a quote: `r` + TPMS_ATTEST, TPMT_SIGNATURE
/// and the PCR blob, each base64, joined by `:`.
fn quote_string(parts: &crate::tpm::QuoteParts) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "r{}:{}:{}",
        b64(&parts.attest),
        b64(&parts.signature),
        b64(&parts.pcr_blob)
    )
}

/// The fields common to both quotes; `enc_alg` is spelled per API version
/// (`rsa` before 2.5, `rsa2048` from 2.5 on).
fn quote_fields(quote: &Quote, version: ApiVersion) -> Map<String, Value> {
    let enc_alg = quote.enc_alg.wire_name(version);
    let mut fields = Map::new();
    fields.insert("quote".into(), Value::String(quote_string(&quote.parts)));
    fields.insert("hash_alg".into(), json!(quote.hash_alg.as_str()));
    fields.insert("enc_alg".into(), json!(enc_alg));
    fields.insert("sign_alg".into(), json!(quote.sign_alg.as_str()));
    if let Some(pubkey) = &quote.pubkey {
        fields.insert("pubkey".into(), json!(pubkey.as_ref()));
    }
    fields
}
