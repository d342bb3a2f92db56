//! The agent's outgoing HTTP(S) client: plain HTTP, or HTTPS whose server
//! certificate is verified against one configured CA file (never the system
//! store, never skipped), with the host name or IP address checked against
//! the certificate. TLS is OpenSSL (through reqwest's native-tls backend).
//!
//! A failed request is turned into a [`RequestFailure`] here, so that every
//! caller tells an operator the same thing: which config key to look at when
//! the server's certificate was not accepted.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// The CA an HTTPS server's certificate must chain to, and the config key
/// that named it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTrust {
    /// PEM file with one or more CA certificates.
    pub ca_file: PathBuf,
    /// The config key the file came from, e.g. `registrar_tls_ca_cert`.
    pub ca_key: &'static str,
}

/// The client could not be built.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The CA file is unreadable or holds no certificate.
    #[error("{key} = {path:?}: {reason}")]
    CaFile {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// reqwest refused the settings.
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Builds a client with `timeout` per request (connection included); with
/// `trust`, only servers whose certificate chains to its CA are accepted.
pub fn build(
    trust: Option<&ServerTrust>,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    // The system's CA store is never used: a TLS peer is trusted only
    // through its configured CA file, and not loading the store saves its
    // parsing at every start.
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .tls_built_in_root_certs(false);
    if let Some(trust) = trust {
        builder = builder
            .https_only(true)
            .min_tls_version(reqwest::tls::Version::TLS_1_2);
        for cert in ca_certificates(trust)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

fn ca_certificates(trust: &ServerTrust) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let error = |reason: String| ClientError::CaFile {
        key: trust.ca_key,
        path: trust.ca_file.clone(),
        reason,
    };
    let pem = crate::secure_fs::read_trusted(&trust.ca_file).map_err(|e| error(e.to_string()))?;
    let stack = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| error(e.to_string()))?;
    if stack.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    stack
        .iter()
        .map(|cert| {
            let der = cert.to_der().map_err(|e| error(e.to_string()))?;
            reqwest::Certificate::from_der(&der).map_err(|e| error(e.to_string()))
        })
        .collect()
}

/// The largest answer body the agent reads from a registrar or verifier;
/// their answers are a few KiB.
pub const MAX_ANSWER: usize = 1 << 20;

/// Why an answer's body was not read.
#[derive(Debug, Error)]
pub enum BodyError {
    /// Longer than the cap (declared, or as it arrived): not read further.
    #[error("answer larger than {limit} bytes{}", declared.map(|d| format!(" (it declared {d})")).unwrap_or_default())]
    TooLarge {
        /// The cap.
        limit: usize,
        /// The declared `Content-Length`, if any.
        declared: Option<u64>,
    },
    /// The connection failed while the body arrived.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// Reads `response`'s body, at most `limit` bytes: a declared length over
/// the limit is refused before anything is read, and a body that grows
/// past it is dropped as soon as it does, so a peer can never make the
/// agent hold more than `limit` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|d| d > limit as u64) {
        return Err(BodyError::TooLarge { limit, declared });
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |d| d as usize).min(limit));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, declared });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A peer's answer: its status, what it asked of the agent's timing and
/// where it points, and its body (at most [`MAX_ANSWER`] bytes).
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, if sent as a number.
    pub retry_after: Option<u64>,
    /// `Location`, if sent.
    pub location: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a request got no usable answer.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// No HTTP answer (connection, time-out, TLS).
    #[error(transparent)]
    Failed(#[from] RequestFailure),
    /// An answer whose body was larger than [`MAX_ANSWER`].
    #[error("HTTP {status}, {reason}")]
    TooLarge {
        /// The status it came with.
        status: u16,
        /// What was too large.
        reason: String,
    },
}

/// Sends `request` to `url` and reads the answer with the body capped: the
/// one way the registrar and verifier clients talk to their peers.
/// `trust` and `host_key` name the CA file and the config key of the host
/// in the failure, as [`RequestFailure::classify`] does.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    url: &str,
    trust: Option<&ServerTrust>,
    host_key: &'static str,
) -> Result<Answer, ExchangeError> {
    let failure = |e: reqwest::Error| RequestFailure::classify(&e, url, trust, host_key);
    let response = request.send().await.map_err(failure)?;
    let status = response.status().as_u16();
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    let retry_after = header(reqwest::header::RETRY_AFTER).and_then(|v| v.parse().ok());
    let location = header(reqwest::header::LOCATION);
    let body = match read_capped(response, MAX_ANSWER).await {
        Ok(body) => body,
        Err(BodyError::Transport(e)) => return Err(failure(e).into()),
        Err(e) => {
            return Err(ExchangeError::TooLarge {
                status,
                reason: e.to_string(),
            })
        }
    };
    Ok(Answer {
        status,
        retry_after,
        location,
        body,
    })
}

/// Why a request got no HTTP answer.
#[derive(Debug, Error)]
pub enum RequestFailure {
    /// The server's certificate does not chain to the configured CA.
    #[error(
        "the server certificate of {url} is not signed by the CA in {ca_key} ({ca_file}): {detail}"
    )]
    UntrustedCertificate {
        /// The request URL.
        url: String,
        /// The CA config key.
        ca_key: &'static str,
        /// The CA file.
        ca_file: String,
        /// OpenSSL's reason.
        detail: String,
    },
    /// The certificate is trusted but names another host or address.
    #[error(
        "the server certificate of {url} does not name {host} (check {host_key}, or give a name \
         the certificate holds): {detail}"
    )]
    NameMismatch {
        /// The request URL.
        url: String,
        /// The host or IP connected to.
        host: String,
        /// The config key that gave the host.
        host_key: &'static str,
        /// OpenSSL's reason.
        detail: String,
    },
    /// Connection refused, reset, timed out, or any other transport error.
    #[error("{url} unreachable: {detail}")]
    Transport {
        /// The request URL.
        url: String,
        /// The error chain, one line.
        detail: String,
    },
}

impl RequestFailure {
    /// Classifies `error` from a request to `url`; `host_key` names the
    /// config key the URL's host came from.
    pub fn classify(
        error: &reqwest::Error,
        url: &str,
        trust: Option<&ServerTrust>,
        host_key: &'static str,
    ) -> Self {
        let detail = error_chain(error);
        match (trust, verify_reason(&detail)) {
            (Some(_), Some(reason)) if is_name_mismatch(reason) => Self::NameMismatch {
                url: origin_of(url),
                host: host_of(url),
                host_key,
                detail: reason.into(),
            },
            (Some(trust), Some(reason)) => Self::UntrustedCertificate {
                url: origin_of(url),
                ca_key: trust.ca_key,
                ca_file: trust.ca_file.display().to_string(),
                detail: reason.into(),
            },
            _ => Self::Transport {
                url: url.into(),
                detail: root_cause(error),
            },
        }
    }
}

/// OpenSSL's reason for refusing the server's certificate, from an error
/// chain such as `…certificate verify failed:…: (hostname mismatch)`.
fn verify_reason(detail: &str) -> Option<&str> {
    let (_, after) = detail.split_once("certificate verify failed")?;
    let reason = after
        .rsplit_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map_or("certificate verify failed", |(r, _)| r);
    Some(reason)
}

/// OpenSSL's verify results for a certificate that names another peer.
fn is_name_mismatch(detail: &str) -> bool {
    [
        "hostname mismatch",
        "IP address mismatch",
        "email address mismatch",
    ]
    .iter()
    .any(|m| detail.contains(m))
}

/// The innermost source of `error` (e.g. "Connection refused (os error
/// 111)"), on one line: what an operator acts on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().replace('\n', " ")
}

/// `error` and its sources, de-duplicated, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_string())
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_mismatches_are_told_apart_from_unknown_cas() {
        let chain = |reason: &str| {
            format!(
                "error sending request for url (https://127.0.0.1:8891/version): client error (Connect): \
                 error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:\
                 ../ssl/statem/statem_clnt.c:1889: ({reason})"
            )
        };
        let mismatch = chain("IP address mismatch");
        assert_eq!(verify_reason(&mismatch), Some("IP address mismatch"));
        assert!(is_name_mismatch("IP address mismatch"));
        let unknown = chain("self-signed certificate in certificate chain");
        assert_eq!(
            verify_reason(&unknown),
            Some("self-signed certificate in certificate chain")
        );
        assert!(!is_name_mismatch("unable to get local issuer certificate"));
        assert_eq!(verify_reason("connection refused"), None);
    }

    #[test]
    fn a_missing_ca_file_names_its_key() {
        let trust = ServerTrust {
            ca_file: "/nonexistent/ca.crt".into(),
            ca_key: "registrar_tls_ca_cert",
        };
        let err = build(Some(&trust), Duration::from_secs(1)).expect_err("no CA");
        assert!(
            err.to_string().starts_with("registrar_tls_ca_cert = "),
            "{err}"
        );
    }

    #[test]
    fn host_of_a_url() {
        assert_eq!(host_of("https://127.0.0.1:8891/version"), "127.0.0.1");
        assert_eq!(
            origin_of("https://127.0.0.1:8891/version"),
            "https://127.0.0.1:8891"
        );
        assert_eq!(
            host_of("https://registrar.example:8891/"),
            "registrar.example"
        );
    }
}
