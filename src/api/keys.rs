//! Handlers of the key exchange and revocation notifications. Bodies are
//! read within their limits ([`super::body`]) and parsed here, so every
//! refusal is a JSON envelope; RSA work runs on the blocking pool, off the
//! workers that answer quotes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::{REVOCATION_LIMIT, VKEY_LIMIT};
use super::error::{success, ApiError};
use super::params::Query;
use super::{ApiState, ServedVersion};
use crate::revocation::Verdict;

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
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = state.limits.read(&req, body, state.limits.ukey).await?;
    let u: UKey = body.json()?;
    drop(body);
    let payload = state.payload.clone();
    blocking(&state, move || {
        payload.receive_u(&u.encrypted_key, &u.auth_tag, u.payload.as_deref())
    })
    .await?;
    Ok(success(json!({})))
}

/// `POST /v{v}/keys/vkey`.
pub async fn vkey(
    state: web::Data<ApiState>,
    _v: ServedVersion,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let v: VKey = state.limits.read(&req, body, VKEY_LIMIT).await?.json()?;
    let payload = state.payload.clone();
    blocking(&state, move || payload.receive_v(&v.encrypted_key)).await?;
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
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let n: Notification = state
        .limits
        .read(&req, body, REVOCATION_LIMIT)
        .await?
        .json()?;
    let revocation = state.revocation.clone();
    let verdict = blocking(&state, move || {
        revocation
            .handle(&n.msg, n.signature.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadBody(e.0))
    })
    .await?;
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

/// Runs RSA (and the payload work it may start) on the blocking pool, one
/// request at a time: a flood of key halves keeps one core at most, and the
/// other answers quotes.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    state: &ApiState,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    let _turn = state.key_work.acquire().await.map_err(|_| ApiError::Busy)?;
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(ApiError::Busy),
    }
}
