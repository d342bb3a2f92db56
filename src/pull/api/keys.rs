//! Handlers of the key exchange and revocation notifications. Bodies are
//! read within their limits ([`super::body`]) and parsed here, so every
//! refusal is a JSON envelope; RSA work runs on the blocking pool, off the
//! workers that answer quotes, one job at a time and at a bounded rate
//! ([`KeyWork`]).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::{REVOCATION_LIMIT, VKEY_LIMIT};
use super::error::{success, ApiError};
use super::params::Query;
use super::{ApiState, ServedVersion};

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
    let n: Notification = state
        .limits
        .read(&req, body, REVOCATION_LIMIT)
        .await?
        .json()?;
    let revocation = state.revocation.clone();
    let signature = n.signature.unwrap_or_default();
    let handled = move || {
        revocation
            .handle(&n.msg, &signature)
            .map_err(ApiError::from)
    };
    let verdict = state.key_work.run(handled).await?;
    let status = verdict.status_text();
    Ok(super::error::envelope(StatusCode::OK, status, json!({})))
}

/// Key-half and notification jobs start at most this often: 100 a second,
/// far more than a tenant and a verifier send, and a bounded share of one
/// core (an RSA-2048 private operation takes 1-2 ms) under a flood.
const KEY_JOB_GAP: Duration = Duration::from_millis(10);

/// Runs RSA (and the payload work it may start) on the blocking pool, one
/// job at a time, in arrival order, and each at least 10 ms after
/// the one before: a flood of key halves waits its turn asynchronously
/// instead of taking the cores that answer quotes.
#[derive(Debug, Clone)]
pub struct KeyWork {
    /// Held by the job running; when the next job may start.
    next_start: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
}

impl Default for KeyWork {
    fn default() -> Self {
        Self {
            next_start: Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
        }
    }
}

impl KeyWork {
    /// Runs `work` when its turn comes.
    pub async fn run<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, ApiError> {
        // tokio's mutex queues its waiters first come, first served.
        let mut next_start = self.next_start.lock().await;
        tokio::time::sleep_until(*next_start).await;
        *next_start = tokio::time::Instant::now() + KEY_JOB_GAP;
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(ApiError::Busy),
        }
    }
}
