use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

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

/// A plain HTTP server on 127.0.0.1 that reads each request (headers and
/// a `Content-Length` body) and writes `answer` for it, on as many
/// requests per connection as the client sends (or one with `close`).
/// Counts the connections it accepted.
async fn server(answer: &'static [u8], close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() < end + 4 + length {
                        continue;
                    }
                    seen.drain(..end + 4 + length);
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 7\r\nLocation: /v3.0/x\r\n\r\n{}";

#[tokio::test]
async fn answers_are_read_with_their_headers_and_connections_kept_only_when_asked() {
    let (url, accepted) = server(OK, false).await;
    let client = build(None, Duration::from_secs(5)).expect("client");
    let request = || {
        Outgoing::new(Method::POST, &format!("{url}/v2.3/agents/a"))
            .json(&serde_json::json!({"k": 1}))
    };
    let answer = client
        .exchange(request(), "registrar_ip")
        .await
        .expect("answer");
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, b"{}".as_slice())
    );
    assert_eq!(answer.retry_after, Some(7));
    assert_eq!(answer.location.as_deref(), Some("/v3.0/x"));
    client
        .exchange(request(), "registrar_ip")
        .await
        .expect("answer");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a connection per request"
    );

    let kept = client.clone().keep_alive();
    for _ in 0..3 {
        kept.exchange(request(), "registrar_ip")
            .await
            .expect("answer");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "one kept connection for three requests"
    );
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_replaced() {
    let (url, accepted) = server(OK, true).await;
    let client = build(None, Duration::from_secs(5))
        .expect("client")
        .keep_alive();
    for _ in 0..3 {
        let answer = client
            .exchange(
                Outgoing::new(Method::GET, &format!("{url}/version")),
                "registrar_ip",
            )
            .await
            .expect("answer");
        assert_eq!(answer.status, 200);
        // The server's close reaches the kept connection (bounded wait):
        // the next request must not fail on it.
        let mut closed = false;
        for _ in 0..500 {
            closed = match client.inner.idle.lock().expect("lock").as_ref() {
                Some((_, sender)) => sender.is_closed(),
                None => true,
            };
            if closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the server's close never reached the client");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// The failure of a GET to `url`.
async fn refused(client: &HttpClient, url: &str) -> ExchangeError {
    client
        .exchange(Outgoing::new(Method::GET, url), "registrar_ip")
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn large_answers_are_refused_declared_or_streamed() {
    let client = build(None, Duration::from_secs(5)).expect("client");
    let (declared, _) = server(
        b"HTTP/1.1 500 Oops\r\nContent-Length: 99999999\r\n\r\n",
        true,
    )
    .await;
    let err = refused(&client, &declared).await;
    assert!(
        matches!(
            err,
            ExchangeError::TooLarge {
                status: 500,
                declared: Some(99_999_999)
            }
        ),
        "{err}"
    );
    // A chunked answer that grows past the cap.
    let chunk = "100000\r\n".to_string() + &"x".repeat(0x100000) + "\r\n";
    let streamed: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n")
            .into_bytes()
            .into_boxed_slice(),
    );
    let (url, _) = server(streamed, true).await;
    let err = refused(&client, &url).await;
    assert!(
        matches!(
            err,
            ExchangeError::TooLarge {
                status: 200,
                declared: None
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_ends_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/version", listener.local_addr().expect("addr"));
    // Accepts and holds the connection, reading nothing.
    let holder = tokio::spawn(async move {
        let held = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(held);
    });
    let client = build(None, Duration::from_millis(300)).expect("client");
    let err = client
        .exchange(Outgoing::new(Method::GET, &url), "registrar_ip")
        .await
        .expect_err("stalled");
    assert!(
        matches!(&err, ExchangeError::Failed(RequestFailure::Transport { detail, .. }) if detail.contains("no answer within")),
        "{err}"
    );
    holder.abort();
}

#[tokio::test]
async fn tls_and_plain_urls_must_match_the_client() {
    let client = build(None, Duration::from_secs(1)).expect("client");
    let err = client
        .exchange(
            Outgoing::new(Method::GET, "https://127.0.0.1:1/version"),
            "registrar_ip",
        )
        .await
        .expect_err("no CA for https");
    assert!(err.to_string().contains("no CA file"), "{err}");
}
