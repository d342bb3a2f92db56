//! One HTTP/1.1 connection to a peer: TCP, then TLS when the URL is
//! `https` (the server's certificate checked against the client's CA store
//! and its name or address), then hyper's client handshake.

use std::net::IpAddr;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslContext};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::X509VerifyResult;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Where a URL points: what to connect to, and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `https`?
    pub https: bool,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    /// The port (80/443 when the URL has none).
    pub port: u16,
    /// `host:port` as the URL gives it, for the `Host` header.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// Parses an absolute `http` or `https` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?} is neither http nor https")),
        };
        let authority = uri.authority().ok_or("the URL names no host")?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        Ok(Self {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            host,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// `scheme://host:port`: what a connection serves.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Why no connection was made.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// TCP: refused, reset, unreachable, name not resolved.
    Io(std::io::Error),
    /// The TLS handshake failed; `verify` holds OpenSSL's reason when it
    /// was the server's certificate that was refused.
    Tls {
        verify: Option<String>,
        detail: String,
    },
    /// An `https` URL for a client without a CA, or the reverse.
    Scheme(&'static str),
    /// hyper refused the connection.
    Http(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Tls { detail, .. } => write!(f, "TLS handshake: {detail}"),
            Self::Scheme(what) => f.write_str(what),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

/// A connection's sending half; its driver runs as a task of its own and
/// ends with the connection.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// Opens a connection to `target`, over TLS with `tls` for `https`.
pub(super) async fn open(
    target: &Target,
    tls: Option<&SslContext>,
) -> Result<Sender, ConnectError> {
    match (target.https, tls) {
        (true, None) => {
            return Err(ConnectError::Scheme(
                "an https URL, but no CA file to check the server with",
            ))
        }
        (false, Some(_)) => {
            return Err(ConnectError::Scheme(
                "a plain http URL where TLS is configured: refused",
            ))
        }
        _ => {}
    }
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(ConnectError::Io)?;
    // Requests are small and answered at once: no Nagle delay.
    tcp.set_nodelay(true).map_err(ConnectError::Io)?;
    match tls {
        Some(context) => {
            let stream = handshake(context, &target.host, tcp).await?;
            start(TokioIo::new(stream)).await
        }
        None => start(TokioIo::new(tcp)).await,
    }
}

async fn handshake(
    context: &SslContext,
    host: &str,
    tcp: TcpStream,
) -> Result<SslStream<TcpStream>, ConnectError> {
    let tls_error = |detail: String| ConnectError::Tls {
        verify: None,
        detail,
    };
    let mut ssl = Ssl::new(context).map_err(|e| tls_error(e.to_string()))?;
    let param = ssl.param_mut();
    param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
    // An address is checked against the certificate's IP entries; a name
    // against its DNS names, and sent as SNI.
    let named = match host.parse::<IpAddr>() {
        Ok(ip) => param.set_ip(ip).map(|()| false),
        Err(_) => param.set_host(host).map(|()| true),
    }
    .map_err(|e| tls_error(e.to_string()))?;
    if named {
        ssl.set_hostname(host)
            .map_err(|e| tls_error(e.to_string()))?;
    }
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| tls_error(e.to_string()))?;
    match Pin::new(&mut stream).connect().await {
        Ok(()) => Ok(stream),
        Err(e) => {
            let result = stream.ssl().verify_result();
            let verify =
                (result != X509VerifyResult::OK).then(|| result.error_string().to_string());
            Err(ConnectError::Tls {
                verify,
                detail: e.to_string().replace('\n', " "),
            })
        }
    }
}

async fn start<T>(io: TokioIo<T>) -> Result<Sender, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await.map_err(ConnectError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("HTTP connection ended: {e}");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_what_a_connection_needs() {
        let t = Target::parse("https://127.0.0.1:8891/v2.3/agents/x?y=1").expect("url");
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8891));
        assert_eq!(t.path, "/v2.3/agents/x?y=1");
        assert_eq!(t.origin(), "https://127.0.0.1:8891");
        let v6 = Target::parse("http://[::1]:8890/version").expect("url");
        assert_eq!((v6.host.as_str(), v6.port, v6.https), ("::1", 8890, false));
        assert_eq!(v6.authority, "[::1]:8890");
        let bare = Target::parse("https://verifier.example").expect("url");
        assert_eq!((bare.port, bare.path.as_str()), (443, "/"));
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("/relative").is_err());
    }
}
