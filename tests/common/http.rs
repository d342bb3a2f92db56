//! Talking to the agent and the peers over HTTP(S): curl with or without a
//! client certificate, and raw mTLS connections as the verifier opens them.

use super::*;

/// `(status, JSON body)` from curl run with `-w "\n%{http_code}"`, or
/// curl's exit code when the connection failed.
pub fn curl_json(out: std::process::Output) -> Result<(u16, serde_json::Value), i32> {
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    Ok((
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// `curl` GET over HTTPS with an optional client certificate; `server_cert`
/// is the CA or (for an agent) the self-signed certificate to trust. Returns `(status, body)` or curl's
/// exit code when the connection failed.
pub fn https_get(
    port: u16,
    path: &str,
    server_cert: &Path,
    client: Option<&Client>,
) -> Result<(u16, serde_json::Value), i32> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "30", "--cacert"])
        .arg(server_cert);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    curl_json(out)
}

/// `curl -X POST` of a JSON body to an agent; `(status, body)` or curl's exit code.
pub fn agent_post(
    port: u16,
    path: &str,
    server_cert: &Path,
    client: &Client,
    body: &str,
) -> Result<(u16, serde_json::Value), i32> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "30",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            "--cacert",
        ])
        .arg(server_cert)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("curl");
    curl_json(out)
}

/// An mTLS connection to an agent on `port`, as the verifier makes one
/// (trusting `server_cert`, presenting `client`, no Nagle delay); `None`
/// when the connection or handshake fails.
pub fn mtls_connect(
    port: u16,
    server_cert: &Path,
    client: &Client,
    read_timeout: Duration,
) -> Option<openssl::ssl::SslStream<TcpStream>> {
    mtls_try(port, server_cert, client, read_timeout).ok()
}

/// A TLS client as the verifier is one: it trusts `server_cert` and
/// presents `client` (none when `None`).
pub fn mtls_connector(
    server_cert: &Path,
    client: Option<&Client>,
) -> openssl::ssl::SslConnectorBuilder {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(server_cert).expect("ca");
    if let Some(c) = client {
        b.set_certificate_file(&c.cert, SslFiletype::PEM)
            .expect("cert");
        b.set_private_key_file(&c.key, SslFiletype::PEM)
            .expect("key");
    }
    b.set_verify(SslVerifyMode::PEER);
    b
}

/// Why an mTLS connection did not come up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Nothing listens: the TCP connection was refused.
    Refused,
    /// The agent closed (or reset) the connection during the handshake.
    Closed,
    /// No answer within the read timeout.
    TimedOut,
    /// The handshake failed for another reason (certificates, protocol).
    Tls(String),
}

/// An mTLS connection as the verifier makes one, or why there is none.
pub fn mtls_try(
    port: u16,
    server_cert: &Path,
    client: &Client,
    read_timeout: Duration,
) -> Result<openssl::ssl::SslStream<TcpStream>, ConnectFailure> {
    use openssl::ssl::{ErrorCode, HandshakeError};
    use std::io::ErrorKind;
    let b = mtls_connector(server_cert, Some(client));
    let tcp = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(tcp) => tcp,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(ConnectFailure::Refused),
        Err(e) => return Err(ConnectFailure::Tls(e.to_string())),
    };
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(read_timeout)).expect("timeout");
    let mut config = b.build().configure().expect("configure");
    config.set_verify_hostname(false);
    match config.connect("127.0.0.1", tcp) {
        Ok(stream) => Ok(stream),
        Err(HandshakeError::WouldBlock(_)) => Err(ConnectFailure::TimedOut),
        Err(HandshakeError::SetupFailure(e)) => Err(ConnectFailure::Tls(e.to_string())),
        Err(HandshakeError::Failure(mid)) => {
            let e = mid.error();
            let io = e.io_error().map(std::io::Error::kind);
            Err(match (e.code(), io) {
                (_, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)) => ConnectFailure::TimedOut,
                (
                    _,
                    Some(
                        ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::BrokenPipe,
                    ),
                ) => ConnectFailure::Closed,
                (ErrorCode::ZERO_RETURN, _) => ConnectFailure::Closed,
                // EOF in violation of the protocol: the peer closed.
                (ErrorCode::SYSCALL, None) => ConnectFailure::Closed,
                (ErrorCode::SSL, _) if e.to_string().contains("unexpected eof") => {
                    ConnectFailure::Closed
                }
                _ => ConnectFailure::Tls(e.to_string()),
            })
        }
    }
}

/// What a peer sends on `conn` until it closes, the read times out, or
/// `done` says the bytes so far are enough.
pub fn read_answer(conn: &mut impl std::io::Read, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !done(&out) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}
