//! Handlers of the key exchange and revocation notifications. Bodies are
//! read up to a limit and parsed here, so every refusal is a JSON envelope.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::error::{success, ApiError};
use super::params::Query;
use super::{ApiState, ServedVersion};
use crate::revocation::Verdict;

/// Largest body accepted: a U half can carry the payload.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct UKey {
    encrypted_key: String,
    auth_tag: String,
    payload: Option<String>,
}

#[derive(Deserialize)]
struct VKey {
    encrypted_key: String,
}

#[derive(Deserialize)]
struct Notification {
    msg: String,
    #[serde(default)]
    signature: Option<String>,
}

/// `POST /v{v}/keys/ukey`.
pub async fn ukey(
    state: web::Data<ApiState>,
    _v: ServedVersion,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let u: UKey = read_json(body).await?;
    state
        .payload
        .receive_u(&u.encrypted_key, &u.auth_tag, u.payload.as_deref())?;
    Ok(success(json!({})))
}

/// `POST /v{v}/keys/vkey`.
pub async fn vkey(
    state: web::Data<ApiState>,
    _v: ServedVersion,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let v: VKey = read_json(body).await?;
    state.payload.receive_v(&v.encrypted_key)?;
    Ok(success(json!({})))
}

/// `GET /v{v}/keys/verify?challenge=`.
pub async fn verify(
    state: web::Data<ApiState>,
    _v: ServedVersion,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let challenge = Query::parse(req.query_string())?.challenge()?;
    let hmac = state.payload.verify(challenge.as_str())?;
    Ok(success(json!({ "hmac": hmac })))
}

/// `POST /v{v}/notifications/revocation`. A well-formed notification gets
/// 200 whatever the verdict (the verifier ignores the answer); the status
/// text says whether anything ran.
pub async fn revocation(
    state: web::Data<ApiState>,
    _v: ServedVersion,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let n: Notification = read_json(body).await?;
    let verdict = state
        .revocation
        .handle(&n.msg, n.signature.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadBody(e.0))?;
    let status = match verdict {
        Verdict::Verified(_) => "Success",
        Verdict::Unsigned => "Notification not signed; no action taken",
        Verdict::NoCertificate => "No revocation certificate; no action taken",
        Verdict::BadSignature => "Invalid signature; no action taken",
    };
    Ok(super::error::envelope(
        actix_web::http::StatusCode::OK,
        status,
        json!({}),
    ))
}

async fn read_json<T: serde::de::DeserializeOwned>(mut body: web::Payload) -> Result<T, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadBody(format!("Cannot read the request body: {e}")))?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::TooLarge(MAX_BODY));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadBody(format!("Invalid JSON body: {e}")))
}
