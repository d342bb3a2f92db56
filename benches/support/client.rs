//! A minimal HTTP/1.1-over-mTLS client, so the figures measure the agent,
//! not a client library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use openssl::ssl::{SslConnector, SslStream};

use crate::common::Client;

/// The client: the agent's port, its certificate and our client identity.
pub struct TlsClient {
    port: u16,
    connector: SslConnector,
}

impl TlsClient {
    pub fn new(port: u16, server_cert: &Path, client: &Client) -> Self {
        Self {
            port,
            connector: crate::common::mtls_connector(server_cert, Some(client)).build(),
        }
    }

    /// A new connection, handshake done.
    pub fn connect(&self) -> SslStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut config = self.connector.configure().expect("configure");
        config.set_verify_hostname(false);
        config.connect("agent", tcp).expect("handshake")
    }

    /// Whether a request on a new connection is answered 200; never
    /// panics (for waiting until an agent serves).
    pub fn try_get(&self, path: &str) -> Option<()> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .ok()?;
        let mut config = self.connector.configure().ok()?;
        config.set_verify_hostname(false);
        let mut conn = config.connect("agent", tcp).ok()?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).ok()?;
        line.starts_with("HTTP/1.1 200").then_some(())
    }

    /// One request on a new connection; returns the body size.
    pub fn fresh(&self, path: &str) -> usize {
        let mut conn = self.connect();
        self.on(&mut conn, path)
    }

    /// One request on an open connection; returns the body size.
    pub fn on(&self, conn: &mut SslStream<TcpStream>, path: &str) -> usize {
        write!(conn, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").expect("write");
        read_response(conn)
    }

    /// Quotes a second with `clients` threads making `total` requests.
    pub fn throughput(&self, clients: usize, path: &str, total: usize) -> f64 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..clients {
                s.spawn(|| {
                    for _ in 0..total / clients {
                        self.fresh(path);
                    }
                });
            }
        });
        (total / clients * clients) as f64 / start.elapsed().as_secs_f64()
    }
}

/// Reads one response (Content-Length or chunked); panics on a non-200.
fn read_response(conn: &mut SslStream<TcpStream>) -> usize {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        }
    }
    if !chunked {
        let mut body = vec![0u8; length.expect("content-length")];
        reader.read_exact(&mut body).expect("body");
        return body.len();
    }
    let mut total = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16).expect("hex size");
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).expect("chunk");
        total += size;
        if size == 0 {
            return total;
        }
    }
}
