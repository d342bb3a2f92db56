//! Attestation benchmark: the TPM's own cost next to what the agent adds.
//!
//! Run with `swtpm-ci/bench` (or `cargo bench --bench attestation`). On one
//! swtpm it prints: the TPM transaction behind a quote measured in-process;
//! the agent's integrity-quote latency over a fresh mTLS connection per
//! request (what the verifier does) and over a kept-open connection;
//! the same while `/metrics` is scraped 10 times a second, and a scrape's
//! own cost; throughput with 1, 4 and 8 concurrent clients; the agent's RSS
//! idle and after serving a 100,000-entry IMA log from entry 0, the time of
//! that log next to its floor (page-cache read plus AES-GCM) and the JSON
//! escaping; the latency of a request from a high offset in that log; and,
//! with the real registrar, the first start and a restart to registered
//! and the idle RSS after registration by what holds it. Figures, not
//! assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, ima_entries, make_ca_and_client, write_config, Agent, Swtpm};
use keylime_agent::tpm::QuoteRequest;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use support::{
    anon_breakdown, row, rss_breakdown, rss_kib, stats, thread_names, timed, tpm_cost,
    tpm_first_start_ms, TlsClient,
};

const SAMPLES: usize = 200;
const HIGH_OFFSET_SAMPLES: usize = 50;
const IMA_ENTRIES: usize = 100_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let Some(tpm) = Swtpm::start() else { return };
    let startup = startup_figures();
    let dir = tempfile::tempdir().expect("tempdir");
    let ima = dir.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    ima_entries(&ima, IMA_ENTRIES, 0, None);
    let log_bytes = std::fs::metadata(&ima).expect("meta").len();

    let tpm_quote = tpm_cost(
        &tpm,
        dir.path(),
        QuoteRequest {
            nonce: b"ABCDEFGHIJ0123456789".to_vec(),
            pcrs: vec![10, 16],
            data_pcr_digest: Some(vec![7; 32]),
        },
        SAMPLES,
    );
    let (ca, client) = make_ca_and_client(dir.path(), "bench");
    let port = free_port();
    let metrics_port = free_port();
    let file = write_config(
        dir.path(),
        &[
            "uuid = \"8d4b5f60-7182-4d9e-9fa0-2b3c4d5e6f70\"".into(),
            format!("keylime_dir = {:?}", dir.path().display().to_string()),
            format!("port = {port}"),
            format!("registrar_port = {}", free_port()),
            format!("trusted_client_ca = {:?}", ca.display().to_string()),
            format!("ima_ml_path = {:?}", ima.display().to_string()),
            format!("metrics_address = \"127.0.0.1:{metrics_port}\""),
        ],
    );
    let mut agent = Agent::spawn(
        &file,
        &tpm.tcti(),
        &[("RUST_LOG", "warn,keylime_agent=info")],
    );
    agent.wait_for("serving API over mTLS", 30);
    let pid = agent.pid();
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle = rss_kib(pid);

    let client = TlsClient::new(port, &dir.path().join("server-cert.crt"), &client);
    let steady = format!("/v2.6/quotes/integrity?nonce=ABCDEFGHIJ0123456789&mask=0x400&partial=1&ima_ml_entry={IMA_ENTRIES}");
    for _ in 0..5 {
        client.fresh(&steady);
    }
    let fresh = stats(
        (0..SAMPLES)
            .map(|_| timed(|| client.fresh(&steady)))
            .collect(),
    );
    // The same, while a Prometheus scraper asks for /metrics 10 times a second.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                took.push(timed(|| scrape(metrics_port)));
                std::thread::sleep(Duration::from_millis(100));
            }
            took
        })
    };
    let fresh_scraped = stats(
        (0..SAMPLES)
            .map(|_| timed(|| client.fresh(&steady)))
            .collect(),
    );
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().expect("scraper");
    let scrape_count = scrapes.len();
    let scrape = stats(scrapes);
    let mut conn = client.connect();
    let kept = stats(
        (0..SAMPLES)
            .map(|_| timed(|| client.on(&mut conn, &steady)))
            .collect(),
    );
    drop(conn);
    let throughput: Vec<(usize, f64)> = [1usize, 4, 8]
        .iter()
        .map(|&n| (n, client.throughput(n, &steady, 400)))
        .collect();
    let rss_steady = rss_kib(pid);

    let from_zero =
        "/v2.6/quotes/integrity?nonce=ABCDEFGHIJ0123456789&mask=0x400&partial=1&ima_ml_entry=0";
    let mut full_ms = Vec::new();
    let mut full_bytes = 0;
    // More rounds (KEYLIME_BENCH_FULL_LOG_ROUNDS) give a profiler time to
    // watch this case; the figure is the best round.
    let rounds = std::env::var("KEYLIME_BENCH_FULL_LOG_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for _ in 0..rounds {
        let start = Instant::now();
        full_bytes = client.fresh(from_zero);
        full_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_after_log = rss_kib(pid);
    let breakdown = log_breakdown(&ima);
    let loopback_ms = tls_loopback_ms(dir.path(), &std::fs::read(&ima).expect("read"));
    let high = format!(
        "/v2.6/quotes/integrity?nonce=ABCDEFGHIJ0123456789&mask=0x400&partial=1&ima_ml_entry={}",
        IMA_ENTRIES - 10
    );
    let high_offset = stats(
        (0..HIGH_OFFSET_SAMPLES)
            .map(|_| timed(|| client.fresh(&high)))
            .collect(),
    );
    drop(agent);

    println!();
    println!("keylime-agent attestation benchmark (swtpm; each row says its samples)");
    println!("{:-<78}", "");
    println!("{:<52} {:>11} {:>11}", "", "median", "p95");
    row(
        "TPM: PCR16 reset+extend, PCR read, Quote (in-process)",
        &tpm_quote,
        SAMPLES,
    );
    row(
        "agent: integrity quote, fresh mTLS connection each",
        &fresh,
        SAMPLES,
    );
    row(
        "agent: the same, /metrics scraped 10 times a second",
        &fresh_scraped,
        SAMPLES,
    );
    row(
        "  one /metrics scrape during that row",
        &scrape,
        scrape_count,
    );
    row(
        "agent: integrity quote, kept-open connection",
        &kept,
        SAMPLES,
    );
    row(
        "agent: 10 IMA entries from offset 99,990 (fresh conn)",
        &high_offset,
        HIGH_OFFSET_SAMPLES,
    );
    println!(
        "{:<52} {:>10.1} ms",
        "agent overhead over the TPM, fresh connection",
        fresh.0 - tpm_quote.0
    );
    for (n, qps) in &throughput {
        println!(
            "{:<52} {:>8.1} quotes/s",
            format!("throughput, {n} concurrent client(s), fresh conns"),
            qps
        );
    }
    println!(
        "{:<52} {:>8.0} ms  (best of {rounds}, median {:.0}; {:.1} MB log, {} B response)",
        "serving the 100,000-entry IMA log from entry 0",
        full_ms.iter().copied().fold(f64::MAX, f64::min),
        stats(full_ms.clone()).0,
        log_bytes as f64 / 1e6,
        full_bytes
    );
    println!(
        "{:<52} {:>8.1} ms  (read {:.1} + AES-256-GCM {:.1}; JSON escaping {:.1} ms more)",
        "  floor: page-cache read + AES-GCM of that log",
        breakdown.read_ms + breakdown.aes_ms,
        breakdown.read_ms,
        breakdown.aes_ms,
        breakdown.escape_ms
    );
    println!(
        "{:<52} {:>8.1} ms  (TLS handshake + {:.1} MB, thread to thread)",
        "  the same bytes over a fresh loopback TLS connection",
        loopback_ms,
        log_bytes as f64 / 1e6
    );
    if startup.is_none() {
        println!(
            "{:<52} cannot run: the Keylime peers are not installed (swtpm-ci/install)",
            "start and restart to registered, RSS after it"
        );
    }
    if let Some(s) = &startup {
        println!(
            "{:<52} {:>8.0} ms  (median of {})",
            "first start to registered (fresh TPM and state)", s.first_ms, STARTS
        );
        println!(
            "{:<52} {:>8.0} ms  (median of {STARTS})",
            "restart to registered (same TPM and state)", s.restart_ms
        );
        println!(
            "{:<52} {:>8.0} ms  (median of {STARTS})",
            "  TPM: EK from its template + a new AK (in-process)", s.tpm_ms
        );
        println!(
            "{:<52} {:>8.0} ms  (each start less its own \"TPM ready\" time)",
            "  the agent's own part of a first start", s.own_ms
        );
        println!(
            "{:<52} {:>8.1} MB",
            "RSS idle after registration (metrics off)",
            s.rss_kib as f64 / 1024.0
        );
        for (what, kib) in &s.breakdown {
            println!(
                "{:<52} {:>8.1} MB",
                format!("  {what}"),
                *kib as f64 / 1024.0
            );
        }
        println!(
            "{:<52} {:>8.2} MB  (private, written: each agent's own cost)",
            "anonymous memory idle after registration",
            s.anon.iter().map(|(_, kib)| kib).sum::<u64>() as f64 / 1024.0
        );
        for (what, kib) in &s.anon {
            println!(
                "{:<52} {:>8.2} MB",
                format!("  {what}"),
                *kib as f64 / 1024.0
            );
        }
        println!("{:<52} {}", "  threads", s.threads.join(", "));
    }
    println!(
        "{:<52} {:>8.1} MB",
        "RSS idle (after start)",
        rss_idle as f64 / 1024.0
    );
    println!(
        "{:<52} {:>8.1} MB",
        "RSS after the latency and throughput runs",
        rss_steady as f64 / 1024.0
    );
    println!(
        "{:<52} {:>8.1} MB",
        format!("RSS after serving the 100,000-entry log {rounds} times"),
        rss_after_log as f64 / 1024.0
    );
}

/// First starts measured with the real registrar.
const STARTS: usize = 3;

struct Startup {
    first_ms: f64,
    own_ms: f64,
    tpm_ms: f64,
    restart_ms: f64,
    rss_kib: u64,
    breakdown: Vec<(String, u64)>,
    anon: Vec<(String, u64)>,
    threads: Vec<String>,
}

/// Time from spawning the agent to its "registered and activated" line
/// (log polled every 2 ms), on a fresh swtpm and state directory each
/// time (EK, AK, NK and mTLS key all made), and as often on the same
/// state (restarts); then the idle RSS after registration, with metrics
/// off, by what holds it. `None` without the Keylime peers.
fn startup_figures() -> Option<Startup> {
    let peers = common::Peers::start("all")?;
    let registered_after = |agent: &Agent| -> f64 {
        let began = Instant::now();
        while !agent.output().contains("registered and activated") {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{}",
                agent.output()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        began.elapsed().as_secs_f64() * 1000.0
    };
    let mut firsts = Vec::new();
    let mut own = Vec::new();
    let mut last = None;
    for i in 0..STARTS {
        let tpm = Swtpm::start()?;
        let dir = common::state_dir();
        let id = format!("a1b2c3d4-0000-4000-8000-00000000000{i}");
        let config = write_config(
            dir.path(),
            &common::agent_lines(dir.path(), &id, Some(&peers)),
        );
        let began = Instant::now();
        let agent = Agent::spawn(&config, &tpm.tcti(), &[("RUST_LOG", "info")]);
        registered_after(&agent);
        let first = began.elapsed().as_secs_f64() * 1000.0;
        firsts.push(first);
        // The TPM's share of this start, from the agent's own line.
        let tpm_ready = agent
            .output()
            .lines()
            .find_map(|l| {
                l.split("TPM ready in ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(f64::NAN);
        own.push(first - tpm_ready);
        last = Some((tpm, dir, config, agent));
    }
    let (tpm, _dir, config, mut agent) = last?;
    let mut restarts = Vec::new();
    for _ in 0..STARTS {
        drop(agent.stop());
        let began = Instant::now();
        agent = Agent::spawn(&config, &tpm.tcti(), &[("RUST_LOG", "info")]);
        registered_after(&agent);
        restarts.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    let restart_ms = stats(restarts).0;
    // Idle: past the agent's first trim of free heap pages (15 s after
    // registration), as every agent of a fleet is most of its life.
    std::thread::sleep(Duration::from_secs(20));
    let pid = agent.pid();
    let tpm_ms = stats((0..STARTS).filter_map(|_| tpm_first_start_ms()).collect()).0;
    let startup = Startup {
        first_ms: stats(firsts).0,
        own_ms: stats(own).0,
        tpm_ms,
        restart_ms,
        rss_kib: rss_kib(pid),
        breakdown: rss_breakdown(pid),
        anon: anon_breakdown(pid),
        threads: thread_names(pid),
    };
    drop(agent.stop());
    Some(startup)
}

/// What serving a whole log costs at least on this machine, measured
/// in-process: reading it from the page cache, escaping it as the agent
/// does, and encrypting it with AES-256-GCM in 16 KiB TLS-sized records.
struct LogBreakdown {
    read_ms: f64,
    escape_ms: f64,
    aes_ms: f64,
}

fn log_breakdown(path: &std::path::Path) -> LogBreakdown {
    use openssl::symm::{Cipher, Crypter, Mode};
    let best =
        |f: &mut dyn FnMut() -> usize| (0..5).map(|_| timed(&mut *f)).fold(f64::MAX, f64::min);
    let read_ms = best(&mut || std::fs::read(path).expect("read").len());
    let log = std::fs::read(path).expect("read");
    let escape_ms = best(&mut || {
        let mut out = Vec::new();
        for chunk in log.chunks(1024 * 1024) {
            out.clear();
            keylime_agent::evidence::escape_json_into(&mut out, chunk);
        }
        out.len()
    });
    let aes_ms = best(&mut || {
        let cipher = Cipher::aes_256_gcm();
        let mut out = vec![0u8; 16 * 1024 + 32];
        let mut total = 0;
        for (i, record) in log.chunks(16 * 1024).enumerate() {
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let mut c = Crypter::new(cipher, Mode::Encrypt, &[7u8; 32], Some(&iv)).expect("gcm");
            total += c.update(record, &mut out).expect("update");
            total += c.finalize(&mut out).expect("final");
            let mut tag = [0u8; 16];
            c.get_tag(&mut tag).expect("tag");
        }
        total
    });
    LogBreakdown {
        read_ms,
        escape_ms,
        aes_ms,
    }
}

/// The best any server can do with the log on this machine: a fresh TLS
/// connection over loopback (handshake included) that carries its bytes
/// from one thread of this process to another, best of 10 (ms).
fn tls_loopback_ms(dir: &Path, log: &[u8]) -> f64 {
    use openssl::ssl::SslAcceptor;
    use std::net::TcpListener;
    let (ca, server) = common::make_ca_and_server(dir, "loopback");
    let mut acceptor =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    acceptor
        .set_certificate_file(&server.cert, SslFiletype::PEM)
        .expect("cert");
    acceptor
        .set_private_key_file(&server.key, SslFiletype::PEM)
        .expect("key");
    let acceptor = acceptor.build();
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    connector.set_ca_file(&ca).expect("ca");
    let connector = connector.build();
    let best = (0..10)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let (tcp, _) = listener.accept().expect("accept");
                    let mut tls = acceptor.accept(tcp).expect("handshake");
                    tls.write_all(log).expect("write");
                    let _ = tls.shutdown();
                });
                let start = Instant::now();
                let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let mut tls = connector.connect("loopback", tcp).expect("handshake");
                let mut received = 0;
                let mut buf = vec![0u8; 64 * 1024];
                while received < log.len() {
                    match tls.read(&mut buf).expect("read") {
                        0 => break,
                        n => received += n,
                    }
                }
                assert_eq!(received, log.len());
                start.elapsed().as_secs_f64() * 1000.0
            })
        })
        .fold(f64::MAX, f64::min);
    best
}

/// One plain-HTTP `GET /metrics`; the bytes received.
fn scrape(port: u16) -> usize {
    use std::io::{Read, Write};
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut body = Vec::new();
    conn.read_to_end(&mut body).expect("read");
    assert!(body.starts_with(b"HTTP/1.1 200"), "metrics answered");
    body.len()
}
