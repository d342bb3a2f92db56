//! What runs around every route: the refusal of bodies the agent will not
//! frame, and the record of every answer (metrics, audit, refusal counts).

use actix_web::web;

use super::error::ApiError;
use super::state::ApiState;

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
