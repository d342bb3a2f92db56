//! What a misbehaving client can cost the agent, against the real agent on
//! swtpm: bodies that stall, bodies that are too large (declared or
//! chunked), `Upgrade` requests, and a flood of key halves while the
//! verifier polls. Each must be refused or cut off, with the agent's
//! memory bounded and quotes still served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{proc_kib, serve, Served};
use openssl::ssl::SslStream;

const QUOTE: &str =
    "/v2.6/quotes/integrity?nonce=Ai5M5SjYjnkyv4P7itH1&mask=0x400&partial=1&ima_ml_entry=0";

/// What each of the agent's descriptors points at (for failure messages).
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's open sockets.
fn sockets(pid: u32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| t.starts_with("socket:"))
        .count()
}

/// An mTLS connection to the agent, as the verifier makes one.
fn connect(s: &Served) -> SslStream<TcpStream> {
    common::mtls_connect(s.port, &s.cert(), &s.client, Duration::from_secs(30))
        .expect("mTLS connection")
}

/// Everything the agent sends until it closes (or the read times out).
fn read_all(conn: &mut SslStream<TcpStream>) -> String {
    String::from_utf8_lossy(&common::read_answer(conn, |_| false)).to_string()
}

/// One GET on a fresh connection; the status (0 without an answer).
fn get(s: &Served, path: &str) -> u16 {
    let mut conn = connect(s);
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let answer = read_all(&mut conn);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// 16 concurrent `keys/ukey` posts of a 15 MiB body each, chunked where
/// `chunked(i)`, else with a declared length; the status line of each
/// answer (empty when the agent closed without one).
fn post_big_bodies_at_once(s: &Served, chunked: impl Fn(usize) -> bool + Sync) -> Vec<String> {
    let big = vec![b'a'; 15 * 1024 * 1024];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (big, chunked) = (&big, chunked(i));
                scope.spawn(move || {
                    let mut conn = connect(s);
                    let framing = if chunked {
                        "Transfer-Encoding: chunked".to_string()
                    } else {
                        format!("Content-Length: {}", big.len())
                    };
                    write!(
                        conn,
                        "POST /v2.6/keys/ukey HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
                    )
                    .expect("head");
                    for piece in big.chunks(256 * 1024) {
                        let sent = if chunked {
                            write!(conn, "{:x}\r\n", piece.len())
                                .and_then(|()| conn.write_all(piece))
                                .and_then(|()| conn.write_all(b"\r\n"))
                        } else {
                            conn.write_all(piece)
                        };
                        if sent.is_err() {
                            break; // refused and closed early
                        }
                    }
                    let answer = read_all(&mut conn);
                    answer.split("\r\n").next().unwrap_or_default().to_string()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn stalled_bodies_are_cut_off_at_the_body_timeout_while_quotes_go_on() {
    // 200 stalled clients from one address: the per-address cap is not
    // what this test is about.
    let Some(s) = serve(
        &[
            "request_body_timeout = 3".into(),
            "max_connections_per_client = 1000".into(),
        ],
        3,
    ) else {
        return;
    };
    let pid = s.agent.pid();
    // The connections are what must not leak: sockets are counted (the
    // server's workers open their own event descriptors as they start).
    let sockets_before = sockets(pid);
    let mut stalled: Vec<SslStream<TcpStream>> = (0..200)
        .map(|_| {
            let mut conn = connect(&s);
            write!(
                conn,
                "POST /v2.6/keys/vkey HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"encrypted"
            )
            .expect("write");
            conn
        })
        .collect();
    // Quotes are served while 200 bodies hang.
    for _ in 0..5 {
        assert_eq!(get(&s, QUOTE), 200);
    }
    // Each stalled body gets the 408 envelope when its 3 s run out (a read
    // that waited past the connection's 30 s read timeout would see none).
    let mut answers = Vec::new();
    for conn in &mut stalled {
        answers.push(read_all(conn));
    }
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 408")),
        "every stalled body gets the 408 envelope: {:?}",
        answers.iter().find(|a| !a.starts_with("HTTP/1.1 408"))
    );
    assert!(
        answers.iter().all(|a| a.contains("\"code\":408")),
        "as JSON"
    );
    drop(stalled);
    assert!(
        common::wait_until(10, || sockets(pid) <= sockets_before + 2),
        "sockets back: {sockets_before} before, {} after: {:?}",
        sockets(pid),
        fd_targets(pid)
    );
    assert_eq!(get(&s, QUOTE), 200);
}

#[test]
fn large_bodies_and_upgrades_are_refused_and_memory_stays_bounded() {
    let Some(s) = serve(&[], 3) else { return };
    let pid = s.agent.pid();
    // An Upgrade request with a complete body: refused with the envelope.
    let mut conn = connect(&s);
    write!(
        conn,
        "POST /v2.6/keys/vkey HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .expect("write");
    let answer = read_all(&mut conn);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Upgrade is not supported"), "{answer}");

    // 16 concurrent 15 MiB bodies, declared and chunked.
    let statuses = post_big_bodies_at_once(&s, |i| i % 2 == 1);
    for status in &statuses {
        assert!(
            status.starts_with("HTTP/1.1 413")
                || status.starts_with("HTTP/1.1 411")
                || status.starts_with("HTTP/1.1 503")
                || status.is_empty(),
            "a 413 (declared length), 411 (chunked) or 503 envelope, or a closed connection: {status:?}"
        );
    }
    assert!(
        statuses.iter().any(|s| s.starts_with("HTTP/1.1 413")),
        "{statuses:?}"
    );
    let peak = proc_kib(pid, "VmHWM");
    eprintln!(
        "peak RSS {:.1} MB; answers {statuses:?}",
        peak as f64 / 1024.0
    );
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB over 64 MiB");
    assert_eq!(get(&s, QUOTE), 200, "a quote afterwards");
}

/// With `max_payload_size` above 15 MiB each body is allowed on its own,
/// so the one budget for all bodies in flight is what bounds memory: what
/// does not fit gets the 503 envelope, what fits is read and judged (a 400:
/// it is not JSON), and RSS stays under 64 MiB.
#[test]
fn bodies_each_within_their_limit_share_one_budget_and_memory_stays_bounded() {
    let Some(s) = serve(&["max_payload_size = \"32m\"".into()], 3) else {
        return;
    };
    let pid = s.agent.pid();
    let statuses = post_big_bodies_at_once(&s, |_| false);
    let count = |code: &str| statuses.iter().filter(|s| s.starts_with(code)).count();
    let (read, refused) = (count("HTTP/1.1 400"), count("HTTP/1.1 503"));
    let peak = proc_kib(pid, "VmHWM");
    eprintln!(
        "peak RSS {:.1} MB; {read} bodies read and refused as not JSON, {refused} over the budget",
        peak as f64 / 1024.0
    );
    assert!(
        statuses.iter().all(|s| s.starts_with("HTTP/1.1 400")
            || s.starts_with("HTTP/1.1 503")
            || s.is_empty()),
        "{statuses:?}"
    );
    assert!(read >= 1, "a body within the budget is read: {statuses:?}");
    assert!(
        refused >= 1,
        "the budget refuses what does not fit: {statuses:?}"
    );
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB over 64 MiB");
    assert_eq!(get(&s, QUOTE), 200, "a quote afterwards");
}

/// The key halves the agent answered on the flooding connections, by
/// status. Only answers read count: a failed write or read is not a key
/// half taken.
struct Flood {
    answered: std::sync::atomic::AtomicU32,
    statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u32>>,
}

impl Flood {
    fn answered(&self) -> u32 {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn key_halves_are_taken_at_most_100_a_second_and_quotes_are_answered_during_a_flood() {
    let Some(s) = serve(&[], 3) else { return };
    assert_eq!(get(&s, QUOTE), 200, "a quote before the flood");
    // A 256-byte "ciphertext": the agent does the RSA private operation
    // before it can tell it is not OAEP, and answers 400.
    let mut junk = [0u8; 256];
    openssl::rand::rand_bytes(&mut junk).expect("rand");
    junk[0] = 0x01;
    let body = serde_json::json!({"encrypted_key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, junk)}).to_string();
    let request = format!(
        "POST /v2.6/keys/vkey HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let flood = Flood {
        answered: std::sync::atomic::AtomicU32::new(0),
        statuses: std::sync::Mutex::default(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let began = Instant::now();
    let (quotes, during, lasted) = std::thread::scope(|scope| {
        let flooders: Vec<_> = (0..3)
            .map(|_| {
                let (s, request, stop, flood) = (&s, &request, &stop, &flood);
                scope.spawn(move || {
                    let mut conn = connect(s);
                    let mut last_answer = began;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        if conn.write_all(request.as_bytes()).is_err() {
                            conn = connect(s);
                            continue;
                        }
                        let mut buf = [0u8; 2048];
                        let n = conn.read(&mut buf).unwrap_or(0);
                        let head = String::from_utf8_lossy(&buf[..n]);
                        let Some(status) = head
                            .strip_prefix("HTTP/1.1 ")
                            .and_then(|t| t.get(..3))
                            .and_then(|c| c.parse::<u16>().ok())
                        else {
                            conn = connect(s);
                            continue;
                        };
                        last_answer = Instant::now();
                        *flood.statuses.lock().unwrap().entry(status).or_default() += 1;
                        flood
                            .answered
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    last_answer
                })
            })
            .collect();
        // Quotes while the flood is under way: it must have answered some
        // halves before the first quote and more after the last.
        let deadline = Instant::now() + Duration::from_secs(30);
        while flood.answered() < 10 {
            assert!(Instant::now() < deadline, "the flood got no answers");
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = flood.answered();
        let quotes: Vec<u16> = (0..31).map(|_| get(&s, QUOTE)).collect();
        let during = flood.answered() - before;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let last = flooders
            .into_iter()
            .map(|f| f.join().expect("flooder"))
            .max()
            .unwrap_or(began);
        (quotes, during, last.duration_since(began))
    });
    let answered = flood.answered();
    let statuses = flood.statuses.lock().unwrap().clone();
    eprintln!("{answered} key halves answered in {lasted:?}, {during} while 31 quotes were served; statuses {statuses:?}");
    assert!(
        quotes.iter().all(|s| *s == 200),
        "quotes during the flood: {quotes:?}"
    );
    assert!(during > 0, "the flood went on while the quotes were served");
    // Every half reached the RSA step (400: not OAEP), none was dropped
    // for lack of room.
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![400],
        "{statuses:?}"
    );
    // The jobs start at least 10 ms apart: in the time from the first
    // request to the last answer at most one job per 10 ms plus the first.
    // A slow machine only answers fewer.
    let allowed = lasted.as_millis() / 10 + 1;
    assert!(
        u128::from(answered) <= allowed,
        "{answered} key halves answered in {lasted:?}: more than 100 a second"
    );
}

#[test]
fn connections_past_max_connections_are_refused_at_once_under_a_low_descriptor_limit() {
    let Some(s) = serve(
        &[
            "max_connections = 40".into(),
            // All clients come from 127.0.0.1: the global limit is tested.
            "max_connections_per_client = 1000".into(),
            "request_head_timeout = 120".into(),
        ],
        3,
    ) else {
        return;
    };
    let pid = s.agent.pid();
    // As under `ulimit -n 96`: far fewer descriptors than the kernel would
    // queue connections.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=96:96"])
        .status()
        .expect("prlimit");
    assert!(limited.success(), "prlimit failed");
    let sockets_before = sockets(pid);
    // 40 clients finish the handshake and then say nothing: every place is
    // taken until the head timeout.
    let held: Vec<SslStream<TcpStream>> = (0..40).map(|_| connect(&s)).collect();
    // Each one past the limit is closed by the agent, not left to time
    // out (the 10 s read timeout only keeps a broken agent from hanging
    // the test).
    let failures: Vec<common::ConnectFailure> = (0..200)
        .map(|_| {
            common::mtls_try(s.port, &s.cert(), &s.client, Duration::from_secs(10))
                .expect_err("a connection past the limit is refused")
        })
        .collect();
    assert!(
        failures
            .iter()
            .all(|f| *f == common::ConnectFailure::Closed),
        "every refusal is a close: {:?}",
        failures
            .iter()
            .find(|f| **f != common::ConnectFailure::Closed)
    );
    let during = sockets(pid);
    assert!(
        during <= sockets_before + 40 + 2,
        "sockets bounded by max_connections: {sockets_before} before, {during} with 240 clients"
    );
    let log = s.agent.output();
    assert!(
        log.contains("connection(s) since the last report (over max_connections = 40: "),
        "one summary line names the limit: {log}"
    );
    assert!(
        !log.contains("Too many open files"),
        "the descriptor limit is never reached: {log}"
    );
    // A place frees up once a held client leaves.
    drop(held);
    assert!(
        common::wait_until(10, || get(&s, QUOTE) == 200),
        "a quote once the held clients left"
    );
}
