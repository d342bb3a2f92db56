//! The JSON envelope every response uses, and the one place where errors
//! become HTTP responses. Status codes follow what the verifier does with
//! them: 400 with "API version not supported" renegotiates, 500 is
//! retried, anything else stops attestation for good.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::attestation::AttestationError;

/// `{"code": N, "status": "...", "results": {...}}`, the one shape of
/// every answer.
#[derive(Serialize)]
struct Envelope<'a, T> {
    code: u16,
    status: &'a str,
    results: T,
}

/// An envelope answer.
pub fn envelope<T: Serialize>(code: StatusCode, status: &str, results: T) -> HttpResponse {
    HttpResponse::build(code).json(Envelope {
        code: code.as_u16(),
        status,
        results,
    })
}

/// A success envelope.
pub fn success<T: Serialize>(results: T) -> HttpResponse {
    envelope(StatusCode::OK, "Success", results)
}

/// A success envelope whose last result, the string `field`, is streamed:
/// the text up to that string's opening quote. The caller sends the
/// string's escaped bytes, then [`STREAMED_TAIL`].
pub fn streamed_success_head(
    results: &Map<String, Value>,
    field: &str,
) -> serde_json::Result<String> {
    let whole = serde_json::to_string(&Envelope {
        code: StatusCode::OK.as_u16(),
        status: "Success",
        results,
    })?;
    // `results` is the last member, an object: the text ends in `}}`.
    let open = &whole[..whole.len() - 2];
    let separator = if results.is_empty() { "" } else { "," };
    Ok(format!(
        "{open}{separator}{}:\"",
        serde_json::to_string(field)?
    ))
}

/// What closes a [`streamed_success_head`]: the string, `results`, the envelope.
pub const STREAMED_TAIL: &[u8] = b"\"}}";

/// Every way a request can fail.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A path under a version this agent does not serve. The exact
    /// wording is what the verifier looks for to renegotiate.
    #[error("API version not supported: v{0}")]
    VersionNotSupported(String),
    /// A missing query parameter.
    #[error("Missing {0} parameter")]
    MissingParam(&'static str),
    /// A malformed query parameter.
    #[error("Invalid {name} parameter: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such resource.
    #[error("Not found")]
    NotFound,
    /// The resource exists, the method does not.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// A request body that is not the JSON object expected.
    #[error("{0}")]
    BadBody(String),
    /// A request body over the size limit.
    #[error("Request body larger than {0} bytes")]
    TooLarge(usize),
    /// A request body that did not arrive in time.
    #[error("Request body not received within {0} s")]
    BodyTimeout(u64),
    /// Too many request bodies being read at once.
    #[error("Too many requests in progress; try again")]
    Busy,
    /// A protocol switch (`Upgrade`), which no endpoint offers.
    #[error("Upgrade is not supported")]
    Upgrade,
    /// A body without `Content-Length` (chunked).
    #[error("A Content-Length is required (chunked bodies are not accepted)")]
    LengthRequired,
    /// A key half or `keys/verify` request refused.
    #[error(transparent)]
    Key(#[from] crate::pull::payload::KeyError),
    /// Attestation failed on the agent's side.
    #[error("Attestation failed on the agent")]
    Attestation(#[from] AttestationError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::VersionNotSupported(_)
            | Self::MissingParam(_)
            | Self::InvalidParam { .. }
            | Self::BadBody(_)
            | Self::Key(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upgrade => StatusCode::BAD_REQUEST,
            Self::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            // A TPM or log failure is temporary from the verifier's view:
            // 500 makes it retry instead of failing the agent.
            Self::Attestation(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Attestation(cause) = self {
            // The peer gets a short message; the log gets the cause.
            tracing::error!("request failed: {cause}");
        }
        let mut response = envelope(self.status_code(), &self.to_string(), json!({}));
        if matches!(
            self,
            Self::TooLarge(_)
                | Self::BodyTimeout(_)
                | Self::Busy
                | Self::Upgrade
                | Self::LengthRequired
        ) {
            // The rest of that body is not wanted: close instead of reading
            // (and buffering) it to find the next request.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }
}

impl From<crate::pull::revocation::MalformedNotification> for ApiError {
    fn from(e: crate::pull::revocation::MalformedNotification) -> Self {
        Self::BadBody(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(results: &Map<String, Value>, text: &str) -> Value {
        let mut body = streamed_success_head(results, "list").unwrap().into_bytes();
        crate::evidence::escape_json_into(&mut body, text.as_bytes());
        body.extend_from_slice(STREAMED_TAIL);
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn a_streamed_field_ends_as_the_same_envelope() {
        let text = "10 \"quoted\" \\ tab\t line\n";
        let mut results = Map::new();
        results.insert("quote".into(), json!("r1"));
        let parsed = streamed(&results, text);
        assert_eq!(parsed["code"], 200);
        assert_eq!(parsed["status"], "Success");
        assert_eq!(parsed["results"]["quote"], "r1");
        assert_eq!(parsed["results"]["list"], text);
        let alone = streamed(&Map::new(), text);
        assert_eq!(alone["results"], json!({ "list": text }));
    }
}
