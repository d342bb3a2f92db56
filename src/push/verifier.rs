//! The push model's HTTPS client for the verifier (API v3.0): sessions
//! (proof of possession → bearer token), capabilities and evidence. Every
//! call is one request; what to do about a failure is the worker's choice,
//! from the [`CallError`] kind.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use thiserror::Error;
use zeroize::Zeroizing;

use super::protocol::{self, ProtocolError, JSON_API};
use crate::http_client::{
    self, ClientError, HeaderValue, HttpClient, Method, Outgoing, RequestFailure, ServerTrust,
    AUTHORIZATION,
};

/// Per-request time limit (the verifier answers evidence before checking it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bearer token. Never logged (its `Debug` is redacted), zeroized on drop.
pub struct Token {
    value: Zeroizing<String>,
    obtained: Instant,
    expires: Option<Instant>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl Token {
    /// Whether the token should be renewed before a cycle that starts now:
    /// within the last quarter of its lifetime, and at most 5 s before its
    /// expiry. A token whose expiry is unknown is used until a 401.
    pub fn needs_renewal(&self, now: Instant) -> bool {
        let Some(expires) = self.expires else {
            return false;
        };
        let lifetime = expires.saturating_duration_since(self.obtained);
        let margin = (lifetime / 4).min(Duration::from_secs(5));
        expires.saturating_duration_since(now) <= margin
    }

    /// When the token expires, as far as the agent knows (a passed
    /// attestation may extend it at the verifier).
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires
            .map(|e| e.saturating_duration_since(Instant::now()))
    }

    fn header(&self) -> Result<HeaderValue, CallError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value.as_str()))
            .map_err(|_| CallError::Protocol(ProtocolError("unusable token".into())))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Why a call did not succeed.
#[derive(Debug, Error)]
pub enum CallError {
    /// No HTTP answer (connection, time-out, TLS).
    #[error(transparent)]
    Transport(#[from] RequestFailure),
    /// An HTTP status other than the one expected.
    #[error("{op}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Status {
        /// What was asked.
        op: &'static str,
        /// The status.
        status: u16,
        /// The error's code and detail, if the body had them.
        detail: String,
        /// `Retry-After` seconds as sent (the retry policy caps them).
        retry_after: Option<u64>,
    },
    /// The verifier did not accept the proof of possession.
    #[error("the verifier did not accept the TPM proof of possession (is the agent enrolled with keylime_tenant -c add --push-model?)")]
    ProofRejected,
    /// A 2xx answer without what the agent needs.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Client for one verifier.
#[derive(Debug, Clone)]
pub struct VerifierClient {
    http: HttpClient,
    base: String,
    agent_id: String,
}

impl VerifierClient {
    /// A client for `base` (`https://host:port`) trusting `trust`.
    pub fn new(base: &str, trust: ServerTrust, agent_id: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client::build(Some(&trust), REQUEST_TIMEOUT)?.keep_alive(),
            base: base.trim_end_matches('/').to_string(),
            agent_id: agent_id.to_string(),
        })
    }

    /// The verifier's base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v3.0/sessions`: the session id and its challenge.
    pub async fn open_session(&self) -> Result<(String, Vec<u8>), CallError> {
        let url = format!("{}/v3.0/sessions", self.base);
        let body = protocol::session_request(&self.agent_id);
        let (_, answer, _) = self
            .send(
                "session",
                Outgoing::new(Method::POST, &url),
                &body,
                None,
                &[200, 201],
            )
            .await?;
        Ok(protocol::session_challenge(&answer)?)
    }

    /// `PATCH /v3.0/sessions/{id}` with the TPM2_Certify proof: the token.
    pub async fn prove(
        &self,
        session_id: &str,
        attest: &[u8],
        signature: &[u8],
    ) -> Result<Token, CallError> {
        let url = format!("{}/v3.0/sessions/{session_id}", self.base);
        let body = protocol::session_proof(&self.agent_id, session_id, attest, signature);
        let result = self
            .send(
                "proof of possession",
                Outgoing::new(Method::PATCH, &url),
                &body,
                None,
                &[200],
            )
            .await;
        let answer = match result {
            Ok((_, answer, _)) => answer,
            Err(CallError::Status { status: 401, .. }) => return Err(CallError::ProofRejected),
            Err(e) => return Err(e),
        };
        let (value, expires_at) =
            protocol::session_token(&answer).ok_or(CallError::ProofRejected)?;
        let obtained = Instant::now();
        let expires = expires_at
            .as_deref()
            .and_then(protocol::unix_seconds)
            .map(|at| {
                // To the millisecond: whole seconds of now would make the
                // token look up to a second younger than it is.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
                obtained + at.saturating_sub(now)
            });
        Ok(Token {
            value: Zeroizing::new(value),
            obtained,
            expires,
        })
    }

    /// `POST /v3.0/agents/{id}/attestations` with the capabilities: where to
    /// send the evidence, and the verifier's choice.
    pub async fn send_capabilities(
        &self,
        token: &Token,
        body: &Value,
    ) -> Result<(String, Value), CallError> {
        let url = format!("{}/v3.0/agents/{}/attestations", self.base, self.agent_id);
        let (status, answer, location) = self
            .send(
                "capabilities",
                Outgoing::new(Method::POST, &url),
                body,
                Some(token),
                &[201],
            )
            .await?;
        debug_assert_eq!(status, 201);
        // Only the 201's Location is right (the 202's and `links.self` lack
        // the `v` of the version); without one, `latest` names the same.
        let evidence_url = match location {
            Some(path) if path.starts_with("/v3") => format!("{}{path}", self.base),
            _ => format!("{url}/latest"),
        };
        Ok((evidence_url, answer))
    }

    /// `PATCH` the evidence to `url`: the verifier's pause before the next
    /// cycle, if it named one.
    pub async fn send_evidence(
        &self,
        token: &Token,
        url: &str,
        body: &Value,
    ) -> Result<Option<Duration>, CallError> {
        let (_, answer, _) = self
            .send(
                "evidence",
                Outgoing::new(Method::PATCH, url),
                body,
                Some(token),
                &[202],
            )
            .await?;
        Ok(protocol::seconds_to_next(&answer).map(Duration::from_secs))
    }

    async fn send(
        &self,
        op: &'static str,
        request: Outgoing,
        body: &Value,
        token: Option<&Token>,
        expected: &[u16],
    ) -> Result<(u16, Value, Option<String>), CallError> {
        let mut request = request.body(
            HeaderValue::from_static(JSON_API),
            body.to_string().into_bytes(),
        );
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token.header()?);
        }
        let http_client::Answer {
            status,
            retry_after,
            location,
            body,
        } = self
            .http
            .exchange(request, "verifier_url")
            .await
            .map_err(|e| match e {
                http_client::ExchangeError::Failed(failure) => CallError::Transport(failure),
                too_large => CallError::Protocol(ProtocolError(format!("{op}: {too_large}"))),
            })?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !expected.contains(&status) {
            return Err(CallError::Status {
                op,
                status,
                detail: protocol::error_detail(&answer),
                retry_after,
            });
        }
        Ok((status, answer, location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(lifetime: Option<Duration>) -> Token {
        let obtained = Instant::now();
        Token {
            value: Zeroizing::new("session.secret".into()),
            obtained,
            expires: lifetime.map(|l| obtained + l),
        }
    }

    #[test]
    fn renewal_comes_late_in_the_lifetime_and_never_for_unknown_expiry() {
        let now = Instant::now();
        let long = token(Some(Duration::from_secs(180)));
        assert!(!long.needs_renewal(now));
        assert!(!long.needs_renewal(now + Duration::from_secs(170)));
        assert!(long.needs_renewal(now + Duration::from_secs(176)));
        let short = token(Some(Duration::from_secs(8)));
        assert!(!short.needs_renewal(now + Duration::from_secs(5)));
        assert!(short.needs_renewal(now + Duration::from_secs(7)));
        assert!(!token(None).needs_renewal(now + Duration::from_secs(3600)));
    }

    /// Compiles only while the token's value is held in a type that wipes
    /// its memory when dropped.
    #[test]
    fn the_token_value_is_wiped_when_dropped() {
        fn wiped_on_drop(_: &impl zeroize::ZeroizeOnDrop) {}
        let t = token(None);
        wiped_on_drop(&t.value);
        assert_eq!(t.value.as_str(), "session.secret");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let text = format!("{:?}", token(None));
        assert!(!text.contains("secret"), "{text}");
        let header = token(None).header().expect("header");
        assert!(header.is_sensitive());
    }
}
