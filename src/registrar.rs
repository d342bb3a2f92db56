//! Registration with the Keylime registrar, over plain HTTP or HTTPS with
//! the registrar's certificate verified: pick the API version,
//! `POST /v{v}/agents/{id}` with the TPM identity, answer the challenge
//! with TPM2_ActivateCredential, and `PUT /v{v}/agents/{id}` with the
//! `auth_tag`. The whole sequence is retried on connection and TLS errors,
//! 5xx and 429 as the [`RetryPolicy`] says; each attempt gets a fresh
//! challenge.

mod error;
mod version;

pub use error::RegistrarError;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::api_version::ApiVersion;
use crate::audit::{self, Event};
use crate::crypto;
use crate::http_client::{self, HttpClient, Method, Outgoing, ServerTrust};
use crate::retry::{self, RetryPolicy};
use crate::tpm::{self, Tpm};
use version::{choose_version, no_common_version};

/// Per-request time limit; a registrar slower than this counts as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh challenges a TPM that rejected one gets, whatever the
/// retry policy (see [`RegistrarError::is_rejected_challenge`]).
const CHALLENGE_ATTEMPTS: u32 = 3;
/// Registrar versions older registrars without `/version` all serve.
const FALLBACK_VERSION: ApiVersion = ApiVersion::new(2, 1);
/// The registrar API versions whose agent routes this client speaks: the
/// registration and activation bodies are the same in all of them.
pub const KNOWN_VERSIONS: &[ApiVersion] = &ApiVersion::SUPPORTED;

/// Where and how to reach the registrar.
#[derive(Debug, Clone)]
pub struct RegistrarEndpoint {
    /// Host name or IP address (`registrar_ip`).
    pub host: String,
    /// Port: the plain-HTTP one, or the HTTPS one with `tls`.
    pub port: u16,
    /// HTTPS with this CA, or `None` for plain HTTP.
    pub tls: Option<ServerTrust>,
    /// Versions the agent may use, ascending (`registrar_api_versions`).
    pub versions: Vec<ApiVersion>,
}

/// What the agent registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The agent id.
    pub agent_id: String,
    /// The mTLS certificate PEM, or `None` when mTLS is off (`"disabled"`).
    pub mtls_cert_pem: Option<String>,
    /// Contact address for the verifier and tenant.
    pub contact_ip: String,
    /// Contact port.
    pub contact_port: u16,
}

/// The pause before retry number `retry` after `e`: what the registrar
/// asked for with `Retry-After` (capped by the policy), else the policy's
/// backoff with `unit` as the jitter's random number.
fn pause_before(policy: &RetryPolicy, e: &RegistrarError, retry: u32, unit: f64) -> Duration {
    match e.retry_after() {
        Some(secs) => policy.server_requested(secs),
        None => policy.delay(retry, unit),
    }
}

/// The qualifying data of the IAK's certification of the AK: SHA-256 of
/// the agent id for registrar API 2.6 on (Keylime 7.14.3, which also takes
/// the raw id), the raw id before (7.12 to 7.14.2 compare the raw id only).
fn iak_qualifying_data(version: ApiVersion, agent_id: &str) -> Vec<u8> {
    if version >= ApiVersion::new(2, 6) {
        openssl::sha::sha256(agent_id.as_bytes()).to_vec()
    } else {
        agent_id.as_bytes().to_vec()
    }
}

/// Whether a 403's text is the registrar's answer to a registration that
/// lost a race with another one of the same id (its database refused the
/// second insert), as Keylime 7.14.3 words it, rather than a refused
/// identity change.
fn is_concurrent_registration(text: &str) -> bool {
    text.contains("concurrent registration is in progress")
}

/// Client for one registrar.
#[derive(Debug, Clone)]
pub struct RegistrarClient {
    http: HttpClient,
    base: String,
    versions: Vec<ApiVersion>,
    retry: RetryPolicy,
}

impl RegistrarClient {
    /// A client for `endpoint`; fails when its CA file cannot be used.
    pub fn new(endpoint: &RegistrarEndpoint, retry: RetryPolicy) -> Result<Self, RegistrarError> {
        let host = if endpoint.host.contains(':') {
            format!("[{}]", endpoint.host)
        } else {
            endpoint.host.clone()
        };
        let http = http_client::build(endpoint.tls.as_ref(), REQUEST_TIMEOUT)?;
        let scheme = if endpoint.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Self {
            http,
            base: format!("{scheme}://{host}:{}", endpoint.port),
            versions: endpoint.versions.clone(),
            retry,
        })
    }

    /// Registers and activates, retrying per policy. Returns the registrar
    /// API version used.
    pub async fn register(
        &self,
        reg: &Registration,
        tpm: &Tpm,
    ) -> Result<ApiVersion, RegistrarError> {
        let mut retry_number = 0u32;
        let mut rejected_challenges = 0u32;
        crate::service::status(&format!("registering with the registrar at {}", self.base));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.attempt(reg, tpm, attempts).await {
                Ok(version) => return Ok(version),
                Err(e) if e.is_rejected_challenge() && rejected_challenges < CHALLENGE_ATTEMPTS => {
                    rejected_challenges += 1;
                    tracing::warn!(
                        "{e}; registering again for a fresh challenge ({rejected_challenges} of {CHALLENGE_ATTEMPTS})"
                    );
                }
                Err(e) if e.is_retryable() && self.retry.allows(retry_number + 1) => {
                    retry_number += 1;
                    crate::metrics::get().registration_retries.inc();
                    let pause = pause_before(&self.retry, &e, retry_number, retry::unit_random());
                    tracing::warn!("{e}; retry {retry_number} in {:.1} s", pause.as_secs_f64());
                    crate::service::status(&format!(
                        "waiting for the registrar at {} (retry {retry_number}): {e}",
                        self.base
                    ));
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        reg: &Registration,
        tpm: &Tpm,
        attempts: u32,
    ) -> Result<ApiVersion, RegistrarError> {
        let version = self.version().await?;
        let blob = self.post_identity(version, reg, tpm).await?;
        audit::record(
            Event::Registered,
            json!({
                "agent_id": reg.agent_id,
                "registrar": self.base,
                "api_version": version.to_string(),
                "contact": format!("{}:{}", reg.contact_ip, reg.contact_port),
            }),
        );
        let challenge = tpm.activate_credential(blob).await?;
        let key = zeroize::Zeroizing::new(B64.encode(challenge.as_slice()));
        let auth_tag =
            crypto::hmac_sha384_hex(key.as_bytes(), reg.agent_id.as_bytes()).map_err(|e| {
                RegistrarError::Protocol {
                    op: "activation",
                    reason: e.to_string(),
                }
            })?;
        let url = format!("{}/v{version}/agents/{}", self.base, reg.agent_id);
        let request = Outgoing::new(Method::PUT, &url).json(&json!({ "auth_tag": auth_tag }));
        self.send("activation", &reg.agent_id, request).await?;
        tracing::info!(
            agent_id = %reg.agent_id,
            api_version = %version,
            registrar = %self.base,
            attempts,
            "agent {} registered and activated (registrar API {version}) at {} after {attempts} {}",
            reg.agent_id,
            self.base,
            if attempts == 1 { "attempt" } else { "attempts" }
        );
        crate::metrics::get().registered.set(1);
        audit::record(
            Event::Activated,
            json!({ "agent_id": reg.agent_id, "registrar": self.base }),
        );
        Ok(version)
    }

    /// The registrar's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /version`, once: the highest version the registrar offers and
    /// `registrar_api_versions` allows.
    pub async fn version(&self) -> Result<ApiVersion, RegistrarError> {
        let url = format!("{}/version", self.base);
        match self
            .send("version", "", Outgoing::new(Method::GET, &url))
            .await
        {
            Ok(body) => choose_version(&body, &self.versions),
            // Registrars before 7.12 have no /version; they all serve 2.1.
            Err(RegistrarError::Status { status: 404, .. }) => self
                .versions
                .iter()
                .copied()
                .filter(|v| *v <= FALLBACK_VERSION)
                .max()
                .or_else(|| self.versions.first().copied())
                .ok_or_else(|| no_common_version("(no /version)", &self.versions)),
            Err(e) => Err(e),
        }
    }

    async fn post_identity(
        &self,
        version: ApiVersion,
        reg: &Registration,
        tpm: &Tpm,
    ) -> Result<tpm::CredentialBlob, RegistrarError> {
        let keys = tpm.keys();
        let mut body = json!({
            "ek_tpm": B64.encode(&keys.ek_public),
            "aik_tpm": B64.encode(&keys.ak_public),
            "mtls_cert": reg.mtls_cert_pem.as_deref().unwrap_or("disabled"),
            "ip": reg.contact_ip,
            "port": reg.contact_port,
        });
        if let Some(cert) = &keys.ek_cert_pem {
            // Leaf first, then its issuers from NV: the registrar keeps the
            // leaf (the first certificate) and ignores the rest.
            body["ekcert"] = Value::String(
                std::iter::once(cert.as_str())
                    .chain(keys.ek_chain_pem.iter().map(String::as_str))
                    .collect::<String>(),
            );
        }
        if let Some(device) = &keys.device {
            let qualifying = iak_qualifying_data(version, &reg.agent_id);
            let (attest, signature) = tpm.certify_ak_with_iak(qualifying).await?;
            for (field, value) in [
                ("iak_tpm", B64.encode(&device.iak.public)),
                ("iak_cert", device.iak.cert_pem.clone()),
                ("idevid_tpm", B64.encode(&device.idevid.public)),
                ("idevid_cert", device.idevid.cert_pem.clone()),
                ("iak_attest", B64.encode(attest)),
                ("iak_sign", B64.encode(signature)),
            ] {
                body[field] = Value::String(value);
            }
        }
        let url = format!("{}/v{version}/agents/{}", self.base, reg.agent_id);
        let response = self
            .send(
                "registration",
                &reg.agent_id,
                Outgoing::new(Method::POST, &url).json(&body),
            )
            .await?;
        let blob = response
            .pointer("/results/blob")
            .and_then(Value::as_str)
            .ok_or_else(|| RegistrarError::Protocol {
                op: "registration",
                reason: "no results.blob in the answer".into(),
            })?;
        let bytes = B64.decode(blob).map_err(|e| RegistrarError::Protocol {
            op: "registration",
            reason: format!("blob is not base64: {e}"),
        })?;
        Ok(tpm::parse_credential_blob(&bytes)?)
    }

    async fn send(
        &self,
        op: &'static str,
        agent_id: &str,
        request: Outgoing,
    ) -> Result<Value, RegistrarError> {
        let http_client::Answer {
            status,
            retry_after,
            body,
            ..
        } = self
            .http
            .exchange(request, "registrar_ip")
            .await
            .map_err(|e| match e {
                http_client::ExchangeError::Failed(failure) => RegistrarError::Unreachable(failure),
                too_large => RegistrarError::BadAnswer {
                    op,
                    reason: too_large.to_string(),
                },
            })?;
        let text = String::from_utf8_lossy(&body);
        match status {
            200 if text.trim().is_empty() => Ok(Value::Null),
            200 => serde_json::from_slice(&body).map_err(|_| RegistrarError::BadAnswer {
                op,
                reason: format!("HTTP 200 but the answer is not JSON ({} bytes)", body.len()),
            }),
            403 if !agent_id.is_empty() && is_concurrent_registration(&text) => {
                Err(RegistrarError::ConcurrentRegistration {
                    agent_id: agent_id.into(),
                })
            }
            403 if !agent_id.is_empty() => Err(RegistrarError::IdentityConflict {
                agent_id: agent_id.into(),
            }),
            _ => Err(RegistrarError::Status {
                op,
                status,
                body: crate::untrusted::escape_to(&text, 200),
                retry_after,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
