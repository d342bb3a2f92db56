//! Handlers of the key exchange and revocation notifications. Bodies are
//! read within their limits ([`super::body`]) and parsed here, so every
//! refusal is a JSON envelope; RSA work runs on the blocking pool, off the
//! workers that answer quotes, one job at a time and at a bounded rate
//! ([`super::KeyWork`]).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::{REVOCATION_LIMIT, VKEY_LIMIT};
use super::error::{envelope, success, ApiError};
use super::params::Query;
use super::state::{ApiState, ServedVersion};

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
    let payload = state.payload.clone();
    let received = state
        .key_work
        .run(move || payload.receive_u(&u.encrypted_key, &u.auth_tag, u.payload.as_deref()))
        .await;
    // The body's share of the budget is held until its payload is dealt
    // with: a queue of parsed payloads waiting their turn is bounded too.
    drop(body);
    received?;
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
    state
        .key_work
        .run(move || payload.receive_v(&v.encrypted_key))
        .await?;
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
    let body = state.limits.read(&req, body, REVOCATION_LIMIT).await?;
    let n: Notification = body.json()?;
    let revocation = state.revocation.clone();
    let handled = move || revocation.handle(&n.msg, n.signature.as_deref().unwrap_or_default());
    let verdict = state.key_work.run(handled).await?;
    Ok(envelope(StatusCode::OK, verdict.status_text(), json!({})))
}
