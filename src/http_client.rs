//! The agent's outgoing HTTP(S) client, for the registrar and the verifier:
//! plain HTTP, or HTTPS whose server certificate is verified against one
//! configured CA file (never the system store, never skipped), with the
//! host name or IP address checked against the certificate. HTTP/1.1 over
//! hyper; TLS is OpenSSL through a client context built here, so the
//! system's CA bundle is never parsed (a generic client parses it, twice,
//! each time one is built: traced with heaptrack, about 1.5 MB of heap at
//! its peak and 460,000 allocations at every start, left behind as
//! fragments of the heap).
//!
//! Every request has one deadline, connection included; an answer's body
//! is read to at most [`MAX_ANSWER`] bytes. A client made with
//! [`HttpClient::keep_alive`] keeps its last connection open for the next
//! request (the push agent's calls come in bursts); otherwise each request
//! has its own connection, closed with the answer.
//!
//! A failed request is turned into a [`RequestFailure`] here, so that every
//! caller tells an operator the same thing: which config key to look at
//! when the server's certificate was not accepted.

mod connection;
mod failure;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use http_body_util::{BodyExt, Full};
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod, SslMode, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use thiserror::Error;

use connection::{Sender, Target};
pub use failure::RequestFailure;
pub use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
pub use http::Method;

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
    /// OpenSSL refused the TLS settings.
    #[error("TLS client context: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
}

/// An HTTP(S) client for one peer. Cheap to clone (the clones share the
/// TLS context and the kept connection).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// With a CA file: the TLS context, and the file for messages.
    tls: Option<(SslContext, ServerTrust)>,
    timeout: Duration,
    keep_alive: bool,
    /// The last connection, with the origin it serves, while kept.
    idle: Mutex<Option<(String, Sender)>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("trust", &self.inner.tls.as_ref().map(|(_, t)| t))
            .field("timeout", &self.inner.timeout)
            .field("keep_alive", &self.inner.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Builds a client with `timeout` per request (connection included); with
/// `trust`, only `https` servers whose certificate chains to its CA and
/// names the host connected to are accepted, over TLS 1.2 or later.
pub fn build(trust: Option<&ServerTrust>, timeout: Duration) -> Result<HttpClient, ClientError> {
    let tls = match trust {
        Some(trust) => Some((tls_context(trust)?, trust.clone())),
        None => None,
    };
    Ok(HttpClient {
        inner: Arc::new(Inner {
            tls,
            timeout,
            keep_alive: false,
            idle: Mutex::new(None),
        }),
    })
}

/// A client context that trusts exactly the certificates in `trust`'s
/// file.
fn tls_context(trust: &ServerTrust) -> Result<SslContext, ClientError> {
    let error = |reason: String| ClientError::CaFile {
        key: trust.ca_key,
        path: trust.ca_file.clone(),
        reason,
    };
    let pem = crate::secure_fs::read_trusted(&trust.ca_file).map_err(|e| error(e.to_string()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    let mut store = X509StoreBuilder::new()?;
    for cert in certs {
        store.add_cert(cert).map_err(|e| error(e.to_string()))?;
    }
    let mut context = SslContextBuilder::new(SslMethod::tls_client())?;
    context.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    context.set_verify(SslVerifyMode::PEER);
    context.set_cert_store(store.build());
    // A kept connection gives its record buffers back between requests.
    context.set_mode(SslMode::RELEASE_BUFFERS);
    Ok(context.build())
}

/// A request to send: method, URL, headers and body.
#[derive(Debug)]
pub struct Outgoing {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Outgoing {
    /// A request with no body.
    pub fn new(method: Method, url: &str) -> Self {
        Self {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// With `value` as a JSON body.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.body(
            HeaderValue::from_static("application/json"),
            value.to_string().into_bytes(),
        )
    }

    /// With `body`, of type `content_type`.
    pub fn body(mut self, content_type: HeaderValue, body: Vec<u8>) -> Self {
        self.headers.push((CONTENT_TYPE, content_type));
        self.body = Bytes::from(body);
        self
    }

    /// With one more header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_http(self, target: &Target) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut request = http::Request::builder()
            .method(self.method)
            .uri(target.path.as_str())
            .header(HOST, target.authority.as_str());
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        request.body(Full::new(self.body))
    }
}

/// The largest answer body the agent reads from a registrar or verifier;
/// their answers are a few KiB.
pub const MAX_ANSWER: usize = 1 << 20;

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
    #[error("HTTP {status}, answer larger than {MAX_ANSWER} bytes{}", declared.map(|d| format!(" (it declared {d})")).unwrap_or_default())]
    TooLarge {
        /// The status it came with.
        status: u16,
        /// The declared `Content-Length`, if any.
        declared: Option<u64>,
    },
}

impl HttpClient {
    /// The same client, keeping its last connection open for the next
    /// request to the same server.
    pub fn keep_alive(self) -> Self {
        let inner = Inner {
            tls: self.inner.tls.clone(),
            timeout: self.inner.timeout,
            keep_alive: true,
            idle: Mutex::new(None),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Sends `request` and reads the answer, all within the client's
    /// time-out. `host_key` names the config key of the URL's host in a
    /// failure that is about the server's certificate.
    pub async fn exchange(
        &self,
        request: Outgoing,
        host_key: &'static str,
    ) -> Result<Answer, ExchangeError> {
        let url = request.url.clone();
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, self.exchange_now(request, &url, host_key)).await {
            Ok(answer) => answer,
            Err(_) => Err(RequestFailure::transport(
                &url,
                format!("no answer within {} s", timeout.as_secs_f64()),
            )
            .into()),
        }
    }

    async fn exchange_now(
        &self,
        request: Outgoing,
        url: &str,
        host_key: &'static str,
    ) -> Result<Answer, ExchangeError> {
        let target = Target::parse(url).map_err(|e| RequestFailure::transport(url, e))?;
        let origin = target.origin();
        let mut request = request
            .into_http(&target)
            .map_err(|e| RequestFailure::transport(url, e))?;
        if let Some(mut sender) = self.take_idle(&origin) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return self.answer(response, sender, origin, url).await,
                    // Closed by the server before the request went out:
                    // sent again on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(RequestFailure::transport(url, e.error()).into()),
                    },
                }
            } else {
                tracing::debug!("the kept connection to {origin} was closed");
            }
        }
        let tls = self.inner.tls.as_ref();
        let mut sender = connection::open(&target, tls.map(|(context, _)| context))
            .await
            .map_err(|e| {
                let ca = tls.map(|(_, t)| (t.ca_key, t.ca_file.as_path()));
                RequestFailure::from_connect(&e, url, &target, ca, host_key)
            })?;
        sender
            .ready()
            .await
            .map_err(|e| RequestFailure::transport(url, e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| RequestFailure::transport(url, e))?;
        self.answer(response, sender, origin, url).await
    }

    /// Reads `response` (the body capped), then keeps the connection when
    /// the client does.
    async fn answer(
        &self,
        response: http::Response<hyper::body::Incoming>,
        sender: Sender,
        origin: String,
        url: &str,
    ) -> Result<Answer, ExchangeError> {
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let retry_after = header(RETRY_AFTER).and_then(|v| v.parse().ok());
        let location = header(LOCATION);
        let declared = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        let too_large = || ExchangeError::TooLarge { status, declared };
        if declared.is_some_and(|d| d > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        let capacity = declared.map_or(0, |d| usize::try_from(d).unwrap_or(MAX_ANSWER));
        let mut body = Vec::with_capacity(capacity.min(MAX_ANSWER));
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| RequestFailure::transport(url, e))?;
            if let Ok(data) = frame.into_data() {
                if body.len() + data.len() > MAX_ANSWER {
                    return Err(too_large());
                }
                body.extend_from_slice(&data);
            }
        }
        if self.inner.keep_alive && !sender.is_closed() {
            if let Ok(mut idle) = self.inner.idle.lock() {
                *idle = Some((origin, sender));
            }
        }
        Ok(Answer {
            status,
            retry_after,
            location,
            body,
        })
    }

    /// The kept connection, when it serves `origin`.
    fn take_idle(&self, origin: &str) -> Option<Sender> {
        let mut idle = self.inner.idle.lock().ok()?;
        match idle.take() {
            Some((kept, sender)) if kept == origin => Some(sender),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
