//! Registrar faults the real Keylime registrar cannot be made to produce on
//! demand (429 with Retry-After, 503 bursts), served by a FAKE registrar
//! that answers each connection from a script. Everything else about
//! registration is tested against the real registrar in `registration.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{write_config, Swtpm};
use keylime_agent::agent::{AgentCore, AgentError};
use keylime_agent::config::Config;
use keylime_agent::registrar::RegistrarError;

type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

/// FAKE registrar: answers the n-th connection with `script[n]` (status,
/// extra header, body), then closes. Records each request line and when.
fn fake_registrar(script: Vec<(u16, &'static str, &'static str)>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, header, body) in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            log.lock()
                .expect("lock")
                .push((Instant::now(), line.trim().to_string()));
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).expect("header");
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut discard = vec![0; length];
            reader.read_exact(&mut discard).expect("body");
            let mut stream = reader.into_inner();
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{header}\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).expect("reply");
        }
    });
    (port, seen)
}

fn config(tpm: &Swtpm, dir: &std::path::Path, registrar_port: u16, retries: &str) -> Config {
    let lines = vec![
        "uuid = \"9e8d7c6b-5a49-4382-9716-0f1e2d3c4b5a\"".to_string(),
        format!("keylime_dir = {:?}", dir.display().to_string()),
        "enable_agent_mtls = false".into(),
        format!("registrar_port = {registrar_port}"),
        "exponential_backoff_initial_delay = 100".into(),
        "exponential_backoff_max_delay = 3000".into(),
        "exponential_backoff_jitter = 0.0".into(),
        format!("exponential_backoff_max_retries = {retries}"),
    ];
    let file = write_config(dir, &lines);
    common::load_config(file, tpm.tcti())
}

#[tokio::test]
async fn retry_after_is_honoured_5xx_is_retried_and_403_stops() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let version = r#"{"current_version": "2.6", "supported_versions": ["2.5", "2.6", "3.0"]}"#;
    let (port, seen) = fake_registrar(vec![
        (429, "Retry-After: 1\r\n", "{}"),
        (503, "", "{}"),
        (200, "", version),
        (403, "", "{}"),
    ]);
    let core = AgentCore::prepare(&config(&tpm, dir.path(), port, "\"forever\""))
        .await
        .expect("prepare");
    let outcome = core.register().await;
    core.tpm.shutdown().await;
    match outcome {
        Err(AgentError::Registrar(RegistrarError::IdentityConflict { agent_id })) => {
            assert_eq!(agent_id, "9e8d7c6b-5a49-4382-9716-0f1e2d3c4b5a");
        }
        other => panic!("expected the 403 identity conflict, got {other:?}"),
    }
    let seen = seen.lock().expect("lock").clone();
    let lines: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        vec![
            "GET /version HTTP/1.1",
            "GET /version HTTP/1.1",
            "GET /version HTTP/1.1",
            "POST /v2.6/agents/9e8d7c6b-5a49-4382-9716-0f1e2d3c4b5a HTTP/1.1",
        ],
        "3.0 is never chosen; the path form of registration is used"
    );
    // Retry-After: 1 is waited out (a lower bound: a slow machine only
    // waits longer). Which pause follows a 503 is the policy's backoff,
    // checked without a clock in the registrar's unit tests.
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {gap:?}"
    );
}

#[tokio::test]
async fn bounded_retries_give_up_with_the_last_error() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (port, seen) = fake_registrar(vec![
        (503, "", "{}"),
        (503, "", "{}"),
        (503, "", "{}"),
        (503, "", "{}"),
    ]);
    let core = AgentCore::prepare(&config(&tpm, dir.path(), port, "2"))
        .await
        .expect("prepare");
    let outcome = core.register().await;
    core.tpm.shutdown().await;
    assert!(
        matches!(
            outcome,
            Err(AgentError::Registrar(RegistrarError::Status {
                status: 503,
                ..
            }))
        ),
        "{outcome:?}"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        3,
        "one attempt and two retries"
    );
}
