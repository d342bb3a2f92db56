//! HTTP only: the routes of API versions 2.1–2.6, typed parameters, the
//! JSON envelope and the one error mapping. No TPM, file or crypto code.

mod body;
mod error;
mod handlers;
pub mod integrity_body;
mod keys;
mod params;
mod refusals;
mod server;

pub use body::BodyLimits;
pub use error::ApiError;
pub use keys::KeyWork;
pub use server::{bind, ServerLimits};

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

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

/// Registers every route on an actix app.
pub fn configure(state: web::Data<ApiState>) -> impl FnOnce(&mut web::ServiceConfig) {
    use web::{get, post};
    move |cfg| {
        cfg.app_data(state)
            .service(resource("/version", get().to(handlers::version)))
            .service(resource(
                "/v{version}/quotes/identity",
                get().to(handlers::identity),
            ))
            .service(resource(
                "/v{version}/quotes/integrity",
                get().to(handlers::integrity),
            ))
            .service(resource(
                "/v{version}/keys/pubkey",
                get().to(handlers::pubkey),
            ))
            .service(resource("/v{version}/agent/info", get().to(handlers::info)))
            .service(resource("/v{version}/keys/verify", get().to(keys::verify)))
            .service(resource("/v{version}/keys/ukey", post().to(keys::ukey)))
            .service(resource("/v{version}/keys/vkey", post().to(keys::vkey)))
            .service(resource(
                "/v{version}/notifications/revocation",
                post().to(keys::revocation),
            ))
            .default_service(web::to(handlers::fallback));
    }
}

/// Refuses, before any route, requests whose body the agent will not
/// frame: protocol switches (`Upgrade`, which turn the body into an endless
/// stream) and chunked bodies (the peers always send `Content-Length`; a
/// chunk size nobody will ever send would hold the connection). The answer
/// is the JSON envelope, and the connection is closed after it.
pub async fn refuse_unframed(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::http::header::{TRANSFER_ENCODING, UPGRADE};
    let refusal = if req.headers().contains_key(UPGRADE) {
        Some(ApiError::Upgrade)
    } else if req.headers().contains_key(TRANSFER_ENCODING) {
        Some(ApiError::LengthRequired)
    } else {
        None
    };
    match refusal {
        Some(e) => {
            // Dropping the unread body tells the connection it is not
            // wanted, so it closes after the answer instead of draining.
            let mut req = req;
            drop(actix_web::HttpMessage::take_payload(&mut req));
            let response = actix_web::ResponseError::error_response(&e);
            Ok(req.into_response(response).map_into_right_body())
        }
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// Records every answer: the request metrics (by route pattern and
/// status), quotes served and failed, the time of the verifier's last
/// integrity quote, the audit record of an identity quote, and one DEBUG
/// line with the structured fields. Counts every 4xx answer and writes the
/// per-minute summary (the `refusals` module); the refused request itself
/// is not logged above DEBUG.
pub async fn count_refusals(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let began = std::time::Instant::now();
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let response = next.call(req).await?;
    let status = response.status();
    let endpoint = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    observe(
        &endpoint,
        &peer,
        response.request().path(),
        status.as_u16(),
        began.elapsed(),
    );
    if status.is_client_error() {
        if let Some(line) =
            state.and_then(|s| s.refusals.count(status.as_u16(), std::time::Instant::now()))
        {
            tracing::warn!("{line}");
        }
    }
    Ok(response)
}

/// Metrics, audit and the DEBUG line for one answered request.
fn observe(endpoint: &str, peer: &str, path: &str, status: u16, took: std::time::Duration) {
    use crate::metrics::{self, Metrics, RequestLabels};
    let metrics = metrics::get();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.to_string(),
            status,
        })
        .inc();
    let quote = if endpoint.ends_with("/quotes/integrity") {
        Some("integrity")
    } else if endpoint.ends_with("/quotes/identity") {
        Some("identity")
    } else {
        None
    };
    if let Some(kind) = quote {
        let outcome = match status {
            200 => "served",
            500..=599 => "failed",
            _ => "refused",
        };
        Metrics::count_outcome(&metrics.quotes, kind, outcome);
        if status == 200 && kind == "integrity" {
            metrics.attested_now();
        }
        if status == 200 && kind == "identity" {
            crate::audit::record(
                crate::audit::Event::IdentityQuoteServed,
                serde_json::json!({ "peer": peer }),
            );
        }
    }
    let version = path
        .strip_prefix("/v")
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    tracing::debug!(
        endpoint,
        peer,
        api_version = version,
        status,
        duration_ms = took.as_secs_f64() * 1000.0,
        "request"
    );
}

/// A resource with one method; any other method gets the JSON 405.
fn resource(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(handlers::method_not_allowed))
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
