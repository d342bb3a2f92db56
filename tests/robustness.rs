//! A bounded corpus of hostile requests against the real agent on swtpm:
//! every endpoint under every served version with every method, every
//! query parameter with malformed values, bad bodies, bad headers, raw
//! garbage, random mutations of valid requests (seeded, so a failure
//! repeats), and slow requests. A well-framed request must get a JSON
//! envelope whose code is its HTTP status and below 500; a request whose
//! framing is broken gets the HTTP layer's bare 400, 408 or 431 or a close;
//! a stalled one a 408; a random mutation any of those. Every case within
//! its time bound, and the counts of each are asserted. Afterwards the
//! agent still serves a quote signed by its AK, its memory and descriptors
//! are back near where they started, and its log has no line per bad
//! request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{serve, Served};

/// How long any one case may take: the head and body timeouts are 2 s.
const CASE_BOUND: Duration = Duration::from_secs(8);
const VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
const NONCE: &str = "Ai5M5SjYjnkyv4P7itH1";

/// One case: raw bytes to send, and what they must get.
struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A well-framed request: the JSON envelope with its status, below 500.
    Envelope,
    /// Broken framing: the HTTP layer's bare 400, 408 or 431, or a close.
    Refusal,
    /// A random mutation: either of the above.
    Either,
}

/// What the name of a case says it must get: broken request lines (raw
/// garbage, bare LF line ends, a space, a NUL or a raw non-ASCII byte in the
/// request target), header blocks the HTTP layer cannot take, and lengths
/// or encodings that do not parse are refusals; everything else is well
/// framed.
fn expectation(name: &str) -> Expect {
    const BROKEN_HEADERS: [&str; 7] = [
        "many headers ",
        "bad encoding ",
        "bad length ",
        "negative length ",
        "two lengths ",
        "no colon ",
        "bad char ",
    ];
    const WELL_FORMED_RAW: &str = "raw \"GET /version HTTP/1.0\\r\\n\\r\\n\"";
    // The bad query values that break the request line itself, as the
    // case names spell them.
    const BREAKS_THE_LINE: [&str; 3] = ["=\"a b\"", "=\"\\0\"", "=\"é\""];
    if name.starts_with("mutation ") {
        Expect::Either
    } else if name == WELL_FORMED_RAW {
        Expect::Envelope
    } else if name.starts_with("raw ")
        || BROKEN_HEADERS.iter().any(|p| name.starts_with(p))
        || BREAKS_THE_LINE.iter().any(|p| name.contains(p))
    {
        Expect::Refusal
    } else {
        Expect::Envelope
    }
}

fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|h| h.starts_with("Content-Length") || h.starts_with("Transfer-Encoding"))
    {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, bytes: Vec<u8>| {
        let expect = expectation(&name);
        cases.push(Case {
            name,
            bytes,
            expect,
        });
    };
    let resources = [
        "quotes/identity",
        "quotes/integrity",
        "keys/pubkey",
        "agent/info",
        "keys/verify",
        "keys/ukey",
        "keys/vkey",
        "notifications/revocation",
        "no/such/thing",
    ];
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FROB",
    ];
    // Every resource, version and method.
    for v in VERSIONS {
        for r in resources {
            for m in methods {
                add(
                    format!("{m} /v{v}/{r}"),
                    request(m, &format!("/v{v}/{r}"), &[], b""),
                );
            }
        }
    }
    // Paths.
    for path in [
        "/",
        "//",
        "/version/",
        "/v",
        "/v2",
        "/v2.",
        "/v2.66/quotes/identity",
        "/v9.9/keys/pubkey",
        "/v3.0/agents/x/attestations",
        "/v2.6/../version",
        "/v2.6/quotes/identity/extra",
        "/v2.6/%00",
        "/v2.6/quotes%2Fidentity",
        "/%ff%fe",
        "/v2.6/keys/pubkey?a=%zz",
        "*",
        "http://other/version",
    ] {
        for m in ["GET", "POST"] {
            add(format!("{m} {path}"), request(m, path, &[], b""));
        }
    }
    let long = format!("/v2.6/quotes/identity?nonce={}", "a".repeat(20_000));
    add("long path".into(), request("GET", &long, &[], b""));
    // Every query parameter with bad values, under every version.
    let bad_values = [
        "",
        "%",
        "%zz",
        "a b",
        "é",
        "%C3%A9",
        "0x",
        "zz",
        "-1",
        "1e9",
        "18446744073709551616",
        "0x1000000",
        "0xFFFFFFFFFF",
        "true",
        "2",
        "\u{0}",
        &"9".repeat(40),
        &"A".repeat(65),
        "abc;def",
        "abc&nonce=x",
    ];
    let good = [
        ("nonce", NONCE),
        ("mask", "0x400"),
        ("partial", "0"),
        ("ima_ml_entry", "0"),
    ];
    for v in VERSIONS {
        for (i, (param, _)) in good.iter().enumerate() {
            for bad in bad_values {
                let query: Vec<String> = good
                    .iter()
                    .enumerate()
                    .map(|(j, (k, val))| {
                        if i == j {
                            format!("{k}={bad}")
                        } else {
                            format!("{k}={val}")
                        }
                    })
                    .collect();
                let path = format!("/v{v}/quotes/integrity?{}", query.join("&"));
                add(
                    format!("integrity {param}={bad:?} v{v}"),
                    request("GET", &path, &[], b""),
                );
            }
            // The parameter missing, or given twice.
            let without: Vec<String> = good
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (k, val))| format!("{k}={val}"))
                .collect();
            let path = format!("/v{v}/quotes/integrity?{}", without.join("&"));
            add(
                format!("integrity without {param} v{v}"),
                request("GET", &path, &[], b""),
            );
        }
        for bad in bad_values {
            add(
                format!("identity nonce={bad:?} v{v}"),
                request(
                    "GET",
                    &format!("/v{v}/quotes/identity?nonce={bad}"),
                    &[],
                    b"",
                ),
            );
            add(
                format!("verify challenge={bad:?} v{v}"),
                request(
                    "GET",
                    &format!("/v{v}/keys/verify?challenge={bad}"),
                    &[],
                    b"",
                ),
            );
        }
    }
    // Bodies for every endpoint that takes one.
    let mut junk = [0u8; 256];
    openssl::rand::rand_bytes(&mut junk).expect("rand");
    let junk_b64 = B64.encode(junk);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), b"".to_vec()),
        ("{}".into(), b"{}".to_vec()),
        ("[]".into(), b"[]".to_vec()),
        ("null".into(), b"null".to_vec()),
        ("string".into(), b"\"x\"".to_vec()),
        ("truncated".into(), b"{\"encrypted_key\": \"ab".to_vec()),
        ("not utf-8".into(), vec![0xff, 0xfe, 0x7b, 0x7d]),
        ("number key".into(), b"{\"encrypted_key\": 1}".to_vec()),
        ("bad base64".into(), b"{\"encrypted_key\": \"!!!!\"}".to_vec()),
        ("junk ciphertext".into(), format!("{{\"encrypted_key\": \"{junk_b64}\"}}").into_bytes()),
        (
            "junk U".into(),
            format!("{{\"encrypted_key\": \"{junk_b64}\", \"auth_tag\": \"{}\", \"payload\": \"AAAA\"}}", "0".repeat(96)).into_bytes(),
        ),
        ("short tag".into(), format!("{{\"encrypted_key\": \"{junk_b64}\", \"auth_tag\": \"00\"}}").into_bytes()),
        ("deep nesting".into(), deep.into_bytes()),
        ("msg not string".into(), b"{\"msg\": {}, \"signature\": \"\"}".to_vec()),
        ("msg not json".into(), b"{\"msg\": \"not json\", \"signature\": \"\"}".to_vec()),
        ("msg forged".into(), b"{\"msg\": \"{\\\"type\\\": \\\"revocation\\\"}\", \"signature\": \"AAAA\"}".to_vec()),
        ("huge string".into(), format!("{{\"encrypted_key\": \"{}\"}}", "A".repeat(300_000)).into_bytes()),
        ("duplicate keys".into(), b"{\"encrypted_key\": \"a\", \"encrypted_key\": \"b\"}".to_vec()),
    ];
    for v in VERSIONS {
        for r in ["keys/ukey", "keys/vkey", "notifications/revocation"] {
            for (name, body) in &bodies {
                for ct in ["Content-Type: application/json", "Content-Type: text/plain"] {
                    add(
                        format!("POST /v{v}/{r} {name} {ct}"),
                        request("POST", &format!("/v{v}/{r}"), &[ct], body),
                    );
                }
            }
        }
    }
    // Headers and framing.
    let big_header = format!("X-Big: {}", "h".repeat(70_000));
    let many: Vec<String> = (0..300).map(|i| format!("X-{i}: {i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    for r in resources {
        let path = format!("/v2.6/{r}");
        for (name, headers) in [
            ("big header", vec![big_header.as_str()]),
            ("many headers", many_refs.clone()),
            ("upgrade", vec!["Upgrade: websocket", "Connection: Upgrade"]),
            (
                "h2c upgrade",
                vec!["Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"],
            ),
            ("expect", vec!["Expect: 100-continue", "Content-Length: 10"]),
            ("bad length", vec!["Content-Length: abc"]),
            ("negative length", vec!["Content-Length: -1"]),
            (
                "two lengths",
                vec!["Content-Length: 2", "Content-Length: 3"],
            ),
            ("huge chunk", vec!["Transfer-Encoding: chunked"]),
            (
                "bad encoding",
                vec!["Transfer-Encoding: gzip, chunked, foo"],
            ),
            ("no colon", vec!["ThisIsNotAHeader"]),
            ("bad char", vec!["X-A: \u{7f}\u{1}"]),
        ] {
            let body: &[u8] = if name == "huge chunk" {
                b"ffffffffffffffff\r\nabc"
            } else {
                b""
            };
            add(
                format!("{name} {path}"),
                request("POST", &path, &headers, body),
            );
        }
    }
    // Raw garbage and broken request lines.
    for raw in [
        "\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET /version HTTP/1.0\r\n\r\n",
        "GET /version\r\n\r\n",
        "get /version http/1.1\r\n\r\n",
        "GET /version HTTP/1.1\n\n",
        "\u{0}\u{0}\u{0}\u{0}",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET /version HTTP/1.1\r\nHost: a\r\n",
    ] {
        add(format!("raw {raw:?}"), raw.as_bytes().to_vec());
    }
    // Random mutations of valid requests (fixed seed).
    let seeds = [
        request(
            "GET",
            &format!("/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=0"),
            &[],
            b"",
        ),
        request(
            "POST",
            "/v2.6/keys/vkey",
            &["Content-Type: application/json"],
            format!("{{\"encrypted_key\": \"{junk_b64}\"}}").as_bytes(),
        ),
        request(
            "GET",
            &format!("/v2.6/quotes/identity?nonce={NONCE}"),
            &[],
            b"",
        ),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..400 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = (next() & 0xff) as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, (next() & 0xff) as u8),
            }
        }
        add(format!("mutation {i}"), bytes);
    }
    cases
}

/// What a case got.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer: status and body.
    Answer(u16, String),
    /// Refused or closed without an answer.
    Closed,
}

fn run(s: &Served, case: &Case, stall: bool) -> Outcome {
    let Some(mut conn) = common::mtls_connect(s.port, &s.cert(), &s.client, CASE_BOUND) else {
        return Outcome::Closed;
    };
    let bytes = if stall {
        &case.bytes[..case.bytes.len() / 2]
    } else {
        &case.bytes[..]
    };
    if conn.write_all(bytes).is_err() {
        return Outcome::Closed;
    }
    let out = common::read_answer(&mut conn, complete);
    let mut text = String::from_utf8_lossy(&out).to_string();
    // Interim answers (100 Continue) come before the real one.
    while text.starts_with("HTTP/1.1 1") {
        match text.split_once("\r\n\r\n") {
            Some((_, rest)) => text = rest.to_string(),
            None => return Outcome::Closed,
        }
    }
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Closed;
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Outcome::Answer(status, body.to_string())
}

/// Whether `out` holds a whole final answer (head, and a body of its
/// Content-Length): the case is decided then, whether or not the agent
/// has closed the connection yet.
fn complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let mut rest: &str = &text;
    while rest.starts_with("HTTP/1.1 1") {
        match rest.split_once("\r\n\r\n") {
            Some((_, r)) => rest = r,
            None => return false,
        }
    }
    let Some((head, body)) = rest.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .is_some_and(|n| body.len() >= n)
}

/// The envelope's code, if `body` is one (chunked bodies are de-framed
/// well enough by looking for the JSON object).
fn envelope_code(body: &str) -> Option<u16> {
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    let v: serde_json::Value = serde_json::from_str(&body[start..=end]).ok()?;
    v["results"].is_object().then_some(())?;
    v["status"].as_str()?;
    u16::try_from(v["code"].as_u64()?).ok()
}

#[test]
fn a_hostile_corpus_gets_envelopes_where_well_framed_refusals_where_not_and_breaks_nothing() {
    let Some(s) = serve(
        &[
            "request_body_timeout = 2".into(),
            "request_head_timeout = 2".into(),
        ],
        5,
    ) else {
        return;
    };
    let pid = s.agent.pid();
    let vm = |field: &str| common::proc_kib(pid, field);
    let fds = || common::open_fds(pid);
    let (rss_before, fds_before) = (vm("VmRSS"), fds());
    let log_before = s.agent.output().lines().count();
    let cases = corpus();
    assert!(cases.len() >= 2000, "{} cases", cases.len());

    let started = Instant::now();
    let failures = std::sync::Mutex::new(Vec::new());
    let counts = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (s, cases, failures, counts) = (&s, &cases, &failures, &counts);
            scope.spawn(move || {
                for (i, case) in cases.iter().enumerate().filter(|(i, _)| i % 4 == worker) {
                    // Every 100th case stalls halfway: the agent must cut it off.
                    let stall = i % 100 == 0;
                    let began = Instant::now();
                    let outcome = run(s, case, stall);
                    let took = began.elapsed();
                    let head_request = case.bytes.starts_with(b"HEAD ");
                    let expect = if stall { None } else { Some(case.expect) };
                    let bare = |body: &str| body.is_empty();
                    let problem = match (&outcome, expect) {
                        _ if took > CASE_BOUND => Some(format!("took {took:?}")),
                        (Outcome::Answer(status, _), _) if *status >= 500 => {
                            Some(format!("HTTP {status}"))
                        }
                        // A stalled case: cut off with a 408, bare (head
                        // incomplete) or as the envelope (body incomplete).
                        (Outcome::Answer(408, _), None) => None,
                        (other, None) => Some(format!("stalled, got {other:?}, not a 408")),
                        // HEAD answers carry no body.
                        (Outcome::Answer(_, body), Some(Expect::Envelope | Expect::Either))
                            if head_request && bare(body) =>
                        {
                            None
                        }
                        (
                            Outcome::Answer(status, body),
                            Some(Expect::Envelope | Expect::Either),
                        ) if envelope_code(body) == Some(*status) => None,
                        (
                            Outcome::Answer(400 | 408 | 431, body),
                            Some(Expect::Refusal | Expect::Either),
                        ) if bare(body) => None,
                        (Outcome::Closed, Some(Expect::Refusal | Expect::Either)) => None,
                        (other, Some(expect)) => {
                            Some(format!("expected {expect:?}, got {other:?}"))
                        }
                    };
                    let kind = match (&outcome, stall) {
                        (_, true) => "stalled, 408".to_string(),
                        (Outcome::Answer(..), _) if head_request => "HEAD".to_string(),
                        (Outcome::Answer(status, body), _) if envelope_code(body).is_some() => {
                            format!("{:?}: envelope {status}", case.expect)
                        }
                        (Outcome::Answer(status, _), _) => {
                            format!("{:?}: bare {status}", case.expect)
                        }
                        (Outcome::Closed, _) => format!("{:?}: closed", case.expect),
                    };
                    *counts.lock().expect("lock").entry(kind).or_default() += 1;
                    if let Some(p) = problem {
                        failures.lock().expect("lock").push(format!(
                            "{}{}: {p}",
                            case.name,
                            if stall { " (stalled)" } else { "" }
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    let counts = counts.into_inner().expect("lock");
    eprintln!(
        "{} cases in {:?}: {counts:#?}; RSS {} → {} KiB, fds {fds_before} → {}",
        cases.len(),
        started.elapsed(),
        rss_before,
        vm("VmRSS"),
        fds()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let total = |prefix: &str| -> usize {
        counts
            .iter()
            .filter(|(kind, _)| kind.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    // Dropping what it cannot parse would pass the refusals but not this:
    // every well-framed case got its envelope (HEAD: the head alone).
    let planned = |expect: Expect| {
        cases
            .iter()
            .enumerate()
            .filter(|(i, c)| i % 100 != 0 && c.expect == expect)
            .count()
    };
    assert_eq!(
        total("Envelope: envelope") + total("HEAD"),
        planned(Expect::Envelope),
        "{counts:#?}"
    );
    assert_eq!(total("Refusal:"), planned(Expect::Refusal), "{counts:#?}");
    assert_eq!(total("stalled"), cases.len().div_ceil(100), "{counts:#?}");
    assert!(planned(Expect::Refusal) >= 100, "{counts:#?}");

    // The agent still quotes, with its AK.
    let (status, body) = s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}"));
    assert_eq!(status, 200, "{body}");
    let quote = body["results"]["quote"].as_str().expect("quote");
    let parts: Vec<&str> = quote[1..].split(':').collect();
    let (attest, sig) = (
        B64.decode(parts[0]).expect("b64"),
        B64.decode(parts[1]).expect("b64"),
    );
    assert!(
        common::signed_by_ak(s.dir.path(), &attest, &sig),
        "signed by the AK"
    );

    // Connections the clients dropped are closed by the agent once it sees
    // them go (the disconnect timeout is 1 s); on a loaded machine that can
    // take a few seconds, so wait for it, within a bound.
    let settle = Instant::now() + Duration::from_secs(15);
    while fds() > fds_before + 5 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(250));
    }
    let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        fds() <= fds_before + 5,
        "descriptors {fds_before} → {}: {open:?}",
        fds()
    );
    assert!(
        vm("VmRSS") <= rss_before + 16 * 1024,
        "RSS {rss_before} → {} KiB",
        vm("VmRSS")
    );
    let log = s.agent.output();
    // (No registrar runs here: its retries are not about the corpus. The
    // corpus also holds well-formed identity-quote requests, each of which
    // is served and, by design, an audit record.)
    let audited = log
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("event=\"identity_quote_served\""))
        .count();
    assert!(audited > 0, "served identity quotes are audited");
    let new_lines: Vec<&str> = log
        .lines()
        .skip(log_before)
        .filter(|l| !l.contains("registrar:") && !l.contains("event=\"identity_quote_served\""))
        .collect();
    assert!(
        !new_lines.iter().any(|l| l.contains(" ERROR ")),
        "no ERROR for bad input:\n{}",
        new_lines.join("\n")
    );
    assert!(
        new_lines.len() <= 20,
        "the log stays quiet under {} bad requests: {} lines\n{}",
        cases.len(),
        new_lines.len(),
        new_lines.join("\n")
    );
}
