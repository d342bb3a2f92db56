//! The agent's HTTP API over mTLS, black-box against the agent binary and
//! a fresh swtpm: who may connect, API versions, field names and JSON
//! types, parameter errors, the quote's PCR 16 binding, large IMA logs,
//! and a burst of concurrent quotes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{
    ak_public_key, free_port, https_get, make_ca_and_client, serve, write_config, Agent, Client,
    Swtpm,
};
use serde_json::Value;
use std::time::Duration;

const NONCE: &str = "Ai5M5SjYjnkyv4P7itH1";

fn assert_error(status: u16, body: &Value, expected: u16, needle: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], expected, "{body}");
    assert_eq!(body["results"], serde_json::json!({}), "{body}");
    let text = body["status"].as_str().unwrap_or_default();
    assert!(text.contains(needle), "status {text:?} lacks {needle:?}");
}

/// How the agent's TLS turns away a client presenting `client` (or no
/// certificate): the alert the client reads, or `None` when a request
/// was answered. `patience` is how long the alert is waited for before
/// the client counts as accepted: long where a refusal is expected (a
/// loaded machine may send it late), short where it is not.
fn tls_refusal(
    port: u16,
    server_cert: &std::path::Path,
    client: Option<&Client>,
    patience: std::time::Duration,
) -> Option<String> {
    use std::io::Write;
    let b = common::mtls_connector(server_cert, client);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the agent listens");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut config = b.build().configure().expect("configure");
    config.set_verify_hostname(false);
    // TLS 1.3: the server judges the client's certificate after the
    // client's side of the handshake is done; its alert comes on the
    // first read. It is read before anything is written: a write after the
    // server closed would draw a reset that discards the alert.
    let mut conn = match config.connect("127.0.0.1", tcp) {
        Ok(conn) => conn,
        Err(e) => return Some(e.to_string()),
    };
    conn.get_ref()
        .set_read_timeout(Some(patience))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match conn.ssl_read(&mut buf) {
        Ok(_) => return Some("data before any request".into()),
        Err(e)
            if e.io_error()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::WouldBlock) => {}
        Err(e) => return Some(e.to_string()),
    }
    // Nothing came: the client was accepted; a request is answered.
    conn.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    if let Err(e) = conn.write_all(b"GET /version HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    {
        return Some(e.to_string());
    }
    match conn.ssl_read(&mut buf) {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("closed without an answer".into()),
        Err(e) => Some(e.to_string()),
    }
}

#[test]
fn tls_refuses_clients_without_a_trusted_certificate_and_plain_http() {
    let Some(s) = serve(&[], 0) else { return };
    assert_eq!(
        s.get("/version").0,
        200,
        "a client of the trusted CA gets in"
    );
    assert_eq!(
        tls_refusal(s.port, &s.cert(), Some(&s.client), Duration::from_secs(2)),
        None,
        "trusted: answered"
    );
    let refused = Duration::from_secs(15);
    let none =
        tls_refusal(s.port, &s.cert(), None, refused).expect("no client certificate: refused");
    assert!(none.contains("certificate required"), "{none}");
    let (_, stranger) = make_ca_and_client(s.dir.path(), "other");
    let other =
        tls_refusal(s.port, &s.cert(), Some(&stranger), refused).expect("another CA: refused");
    assert!(other.contains("unknown ca"), "{other}");
    let plain = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/version", s.port))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&plain.stdout).to_string();
    assert!(
        !plain.status.success() || code != "200",
        "plain HTTP must not be served: {code}"
    );
}

#[test]
fn version_and_unsupported_versions() {
    let Some(s) = serve(&[], 0) else { return };
    let (status, body) = s.get("/version");
    assert_eq!(status, 200);
    assert_eq!(body["results"]["supported_version"], "2.4");
    assert_eq!(
        body["results"]["supported_versions"],
        serde_json::json!(["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"])
    );
    for path in [
        "/v3.0/quotes/identity?nonce=abc",
        "/v2.0/keys/pubkey",
        "/v1.0/quotes/integrity",
    ] {
        let (status, body) = s.get(path);
        let version = path.split('/').nth(1).expect("version");
        assert_error(
            status,
            &body,
            400,
            &format!("API version not supported: {version}"),
        );
    }
    let (status, body) = s.get("/v2.6/no/such/thing");
    assert_error(status, &body, 404, "Not found");
    let post = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "--cacert"])
        .arg(s.cert())
        .arg("--cert")
        .arg(&s.client.cert)
        .arg("--key")
        .arg(&s.client.key)
        .arg(format!("https://127.0.0.1:{}/v2.6/quotes/identity", s.port))
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&post.stdout).expect("JSON 405");
    assert_eq!(body["code"], 405);
}

#[test]
fn a_configured_subset_of_versions_is_served_and_advertised() {
    let Some(s) = serve(&["api_versions = \"2.4, 2.5\"".into()], 0) else {
        return;
    };
    let (_, body) = s.get("/version");
    assert_eq!(
        body["results"]["supported_versions"],
        serde_json::json!(["2.4", "2.5"])
    );
    assert_eq!(
        body["results"]["supported_version"], "2.4",
        "the single field names what peers before 7.14 can parse"
    );
    let (status, body) = s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}"));
    assert_error(status, &body, 400, "API version not supported: v2.6");
    assert_eq!(
        s.get(&format!("/v2.4/quotes/identity?nonce={NONCE}")).0,
        200
    );
}

/// PCR 16 as the verifier simulates it: H(zeros ‖ H(pubkey PEM)).
fn expected_pcr16(pubkey: &str) -> Vec<u8> {
    let mut data = vec![0u8; 32];
    data.extend(openssl::sha::sha256(pubkey.as_bytes()));
    openssl::sha::sha256(&data).to_vec()
}

#[test]
fn identity_quote_fields_types_and_pcr16_binding() {
    let Some(s) = serve(&[], 0) else { return };
    let (status, body) = s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}"));
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert_eq!(
        (
            r["hash_alg"].as_str(),
            r["enc_alg"].as_str(),
            r["sign_alg"].as_str()
        ),
        (Some("sha256"), Some("rsa2048"), Some("rsassa"))
    );
    let pubkey = r["pubkey"].as_str().expect("pubkey");
    let nk = std::fs::read(s.dir.path().join("payload-private.pem")).expect("nk");
    let nk = openssl::pkey::PKey::private_key_from_pem(&nk).expect("nk key");
    assert_eq!(
        pubkey.as_bytes(),
        nk.public_key_to_pem().expect("pem").as_slice(),
        "pubkey is the NK"
    );
    let quote = r["quote"].as_str().expect("quote");
    let parts: Vec<&str> = quote
        .strip_prefix('r')
        .expect("starts with r")
        .split(':')
        .collect();
    assert_eq!(parts.len(), 3);
    let attest = B64.decode(parts[0]).expect("attest");
    assert_eq!(
        &attest[..6],
        &[0xff, 0x54, 0x43, 0x47, 0x80, 0x18],
        "TPM_GENERATED, ST_ATTEST_QUOTE"
    );
    let sig = B64.decode(parts[1]).expect("signature");
    assert_eq!(&sig[..4], &[0x00, 0x14, 0x00, 0x0b], "RSASSA with SHA-256");
    let blob = B64.decode(parts[2]).expect("pcr blob");
    assert_eq!(blob.len(), 668, "PCR 16 only");
    assert_eq!(
        &blob[4..12],
        &[0x0b, 0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(
        &blob[142..174],
        expected_pcr16(pubkey).as_slice(),
        "PCR 16 = H(0 ‖ H(pubkey))"
    );
    // The signature verifies with the persisted AK over the attest bytes.
    assert!(
        common::signed_by_ak(s.dir.path(), &attest, &sig),
        "quote signature must verify with the AK"
    );
    assert!(
        attest.windows(NONCE.len()).any(|w| w == NONCE.as_bytes()),
        "nonce in extraData"
    );
    let (_, legacy) = s.get(&format!("/v2.4/quotes/identity?nonce={NONCE}"));
    assert_eq!(
        legacy["results"]["enc_alg"], "rsa",
        "enc_alg spelled per API version"
    );
}

#[test]
fn integrity_quote_partial_ima_offsets_and_uefi_log() {
    let uefi = tempfile::NamedTempFile::new().expect("uefi");
    let keys = tempfile::tempdir().expect("keys");
    common::boot_log(uefi.path(), keys.path(), &[]);
    let Some(s) = serve(
        &[format!(
            "measuredboot_ml_path = {:?}",
            uefi.path().display().to_string()
        )],
        6,
    ) else {
        return;
    };
    let (status, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=0&ima_ml_entry=0"
    ));
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert!(r["pubkey"].is_string());
    assert!(r["ima_measurement_list_entry"].is_u64(), "an integer: {r}");
    assert_eq!(
        r["ima_measurement_list"]
            .as_str()
            .map(|l| l.lines().count()),
        Some(6)
    );
    assert!(
        r.get("mb_measurement_list").is_none(),
        "no boot PCR, no UEFI log"
    );
    assert!(r.get("boottime").is_none());
    let blob = B64
        .decode(
            r["quote"]
                .as_str()
                .expect("quote")
                .split(':')
                .nth(2)
                .expect("blob"),
        )
        .expect("b64");
    assert_eq!(&blob[7..10], &[0x00, 0x04, 0x01], "PCRs 10 and 16 selected");

    let (_, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x1&partial=1&ima_ml_entry=4"
    ));
    let r = &body["results"];
    assert!(
        r.get("pubkey").is_none(),
        "partial=1 leaves out pubkey: {r}"
    );
    assert_eq!(r["ima_measurement_list_entry"], 4);
    assert_eq!(
        r["ima_measurement_list"]
            .as_str()
            .map(|l| l.lines().count()),
        Some(2)
    );
    assert_eq!(
        r["mb_measurement_list"].as_str(),
        Some(
            B64.encode(std::fs::read(uefi.path()).expect("log"))
                .as_str()
        )
    );

    let (_, at_end) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=6"
    ));
    assert_eq!(
        (
            at_end["results"]["ima_measurement_list"].as_str(),
            at_end["results"]["ima_measurement_list_entry"].as_u64()
        ),
        (Some(""), Some(6))
    );
    let (_, past) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=60"
    ));
    assert_eq!(
        past["results"]["ima_measurement_list_entry"], 0,
        "past the end: whole list from 0"
    );
    assert_eq!(
        past["results"]["ima_measurement_list"]
            .as_str()
            .map(|l| l.lines().count()),
        Some(6)
    );
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let Some(s) = serve(&[], 0) else { return };
    let cases = [
        ("/v2.6/quotes/identity", "nonce"),
        ("/v2.6/quotes/identity?nonce=has-dash", "nonce"),
        (
            "/v2.6/quotes/integrity?nonce=abc&mask=0xZZ&partial=0",
            "mask",
        ),
        (
            "/v2.6/quotes/integrity?nonce=abc&mask=0x1000000&partial=0",
            "mask",
        ),
        (
            "/v2.6/quotes/integrity?nonce=abc&mask=0x0&partial=yes",
            "partial",
        ),
        (
            "/v2.6/quotes/integrity?nonce=abc&mask=0x0&partial=1&ima_ml_entry=-3",
            "ima_ml_entry",
        ),
        (
            "/v2.6/quotes/integrity?nonce=abc&mask=0x0&partial=1&ima_ml_entry=x",
            "ima_ml_entry",
        ),
    ];
    for (path, name) in cases {
        let (status, body) = s.get(path);
        assert_error(status, &body, 400, name);
    }
    // The agent is still healthy afterwards.
    assert_eq!(
        s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}")).0,
        200
    );
}

#[test]
fn pubkey_and_agent_info() {
    let Some(s) = serve(&[], 0) else { return };
    let (status, body) = s.get("/v2.6/keys/pubkey");
    assert_eq!(status, 200);
    assert!(body["results"]["pubkey"]
        .as_str()
        .is_some_and(|p| p.starts_with("-----BEGIN PUBLIC KEY-----")));
    let (status, body) = s.get("/v2.2/agent/info");
    assert_eq!(status, 200);
    assert_eq!(
        body["results"]["agent_uuid"],
        "7c3a4e5f-6071-4c8d-8e9f-1a2b3c4d5e6f"
    );
    assert_eq!(body["results"]["tpm_hash_alg"], "sha256");
    assert_eq!(body["results"]["tpm_enc_alg"], "rsa", "2.2 spelling");
    assert!(body["results"]["ak_handle"].is_u64());
    let (_, body) = s.get("/v2.6/agent/info");
    assert_eq!(body["results"]["tpm_enc_alg"], "rsa2048", "2.6 spelling");
    assert_eq!(
        s.get("/v2.1/agent/info").0,
        404,
        "agent/info exists from 2.2 on"
    );
}

#[test]
fn a_large_ima_log_is_streamed_intact_from_any_offset() {
    // ~3000 lines is over the inline limit, so this takes the streaming path.
    let Some(s) = serve(&[], 3000) else { return };
    let log = std::fs::read_to_string(&s.ima).expect("log");
    assert!(log.len() > 300 * 1024);
    let (status, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=0"
    ));
    assert_eq!(status, 200);
    assert!(
        body["results"]["ima_measurement_list"].as_str() == Some(log.as_str()),
        "not byte-identical: {}",
        &body.to_string()[..200.min(body.to_string().len())]
    );
    assert_eq!(body["results"]["ima_measurement_list_entry"], 0);
    let (_, tail) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=2990"
    ));
    let expected: String = log.lines().skip(2990).map(|l| format!("{l}\n")).collect();
    assert!(
        tail["results"]["ima_measurement_list"].as_str() == Some(expected.as_str()),
        "tail differs"
    );
}

#[test]
fn a_burst_of_concurrent_quotes_all_succeed() {
    let Some(s) = serve(&[], 10) else { return };
    let (port, cert) = (s.port, s.cert());
    let client = Client {
        cert: s.client.cert.clone(),
        key: s.client.key.clone(),
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (cert, client) = (&cert, &client);
                scope.spawn(move || {
                    let path = format!("/v2.6/quotes/integrity?nonce=burst{i:04}&mask=0x400&partial={}&ima_ml_entry=0", i % 2);
                    https_get(port, &path, cert, Some(client))
                })
            })
            .collect();
        for h in handles {
            let (status, body) = h.join().expect("thread").expect("connected");
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["results"]["ima_measurement_list"]
                    .as_str()
                    .map(|l| l.lines().count()),
                Some(10)
            );
        }
    });
    let log = s.agent.output();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn key_requests_with_bad_input_get_400s_and_change_nothing() {
    let Some(s) = serve(&[], 0) else { return };
    let post = |path: &str, body: &str| {
        common::agent_post(s.port, path, &s.cert(), &s.client, body)
            .unwrap_or_else(|code| panic!("curl {path}: {code}"))
    };
    let (status, body) = s.get("/v2.6/keys/verify?challenge=1234567890ABCDEFHIJK");
    assert_error(status, &body, 400, "Bootstrap key not yet available.");
    let (status, body) = s.get("/v2.6/keys/verify");
    assert_error(status, &body, 400, "challenge");
    let cases = [
        ("/v2.6/keys/ukey", "not json", "Invalid JSON body"),
        ("/v2.6/keys/ukey", r#"{"auth_tag": "00"}"#, "encrypted_key"),
        (
            "/v2.6/keys/ukey",
            r#"{"encrypted_key": "!!!", "auth_tag": "00"}"#,
            "not base64",
        ),
        (
            "/v2.6/keys/vkey",
            r#"{"encrypted_key": "AAAA"}"#,
            "does not decrypt",
        ),
        (
            "/v2.6/notifications/revocation",
            r#"{"msg": "not json", "signature": ""}"#,
            "JSON object",
        ),
    ];
    for (path, body, needle) in cases {
        let (status, reply) = post(path, body);
        assert_error(status, &reply, 400, needle);
    }
    let big = format!(r#"{{"encrypted_key": "{}"}}"#, "A".repeat(17 * 1024 * 1024));
    let (status, reply) = post("/v2.6/keys/vkey", &big);
    assert_error(status, &reply, 413, "larger than");
    let (status, reply) = post(
        "/v2.6/notifications/revocation",
        r#"{"msg": "{\"type\": \"revocation\"}", "signature": ""}"#,
    );
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["status"]
            .as_str()
            .is_some_and(|t| t.contains("not signed")),
        "{reply}"
    );
    // Still no key, still healthy.
    assert_eq!(s.get("/v2.6/keys/verify?challenge=abc").0, 400);
    assert_eq!(
        s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}")).0,
        200
    );
}

#[test]
fn run_as_drops_root_and_the_agent_keeps_answering() {
    if !nix::unistd::geteuid().is_root() {
        common::skip::<()>("the privilege drop test needs root");
        return;
    }
    let Some(uid) = nix::unistd::User::from_name("keylime")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
    else {
        common::skip::<()>("no keylime user (swtpm-ci/install creates it)");
        return;
    };
    let keys = tempfile::tempdir().expect("keys");
    let boot_log = keys.path().join("binary_bios_measurements");
    common::boot_log(&boot_log, &keys.path().join("keys"), &[]);
    let Some(s) = serve(
        &[
            "run_as = \"keylime:tss\"".into(),
            format!(
                "measuredboot_ml_path = {:?}",
                boot_log.display().to_string()
            ),
        ],
        3,
    ) else {
        return;
    };
    let log = s.agent.output();
    assert!(log.contains("now running as keylime"), "{log}");
    let uids: Vec<u32> = common::proc_status(s.agent.pid(), "Uid")
        .expect("Uid line")
        .split_whitespace()
        .map(|v| v.parse().expect("uid"))
        .collect();
    assert_eq!(uids, vec![uid; 4], "real, effective, saved and fs uid");
    let (status, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=0&ima_ml_entry=0"
    ));
    assert_eq!(status, 200, "{body}");
    // The kernel's logs are root-only: the agent still serves them, from
    // what it opened before dropping root.
    use std::os::unix::fs::PermissionsExt;
    for log in [&s.ima, &boot_log] {
        std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    }
    let (status, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x1&partial=1&ima_ml_entry=1"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"]["ima_measurement_list"]
            .as_str()
            .map(|l| l.lines().count()),
        Some(2),
        "{body}"
    );
    assert!(body["results"]["mb_measurement_list"].is_string(), "{body}");
    // Only what the agent writes after the switch is the user's; the AK
    // store and the keys stay root's.
    let owner = |name: &str| {
        std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(s.dir.path().join(name)).expect("meta"),
        )
    };
    assert_eq!(owner("agent_data.json"), 0, "the AK store stays root's");
    assert_eq!(owner("payload-private.pem"), 0, "the NK stays root's");
    assert_eq!(owner("secure"), uid, "the secure directory is the user's");
    assert_eq!(owner("revocation"), uid, "so is revocation/");
}

#[test]
fn an_ecc_ak_signs_quotes_with_ecdsa() {
    let extra = [
        "tpm_encryption_alg = \"ecc\"".to_string(),
        "tpm_signing_alg = \"ecdsa\"".to_string(),
    ];
    let Some(s) = serve(&extra, 0) else { return };
    let (status, body) = s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}"));
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert_eq!(
        (r["enc_alg"].as_str(), r["sign_alg"].as_str()),
        (Some("ecc256"), Some("ecdsa"))
    );
    let parts: Vec<Vec<u8>> = r["quote"].as_str().expect("quote")[1..]
        .split(':')
        .map(|p| B64.decode(p).expect("b64"))
        .collect();
    let (attest, sig) = (&parts[0], &parts[1]);
    assert_eq!(
        &sig[..4],
        &[0x00, 0x18, 0x00, 0x0b],
        "TPMT_SIGNATURE: ECDSA with SHA-256"
    );
    // r and s are TPM2Bs: u16 size then the bytes.
    let r_len = usize::from(u16::from_be_bytes([sig[4], sig[5]]));
    let r_bytes = &sig[6..6 + r_len];
    let s_len = usize::from(u16::from_be_bytes([sig[6 + r_len], sig[7 + r_len]]));
    let s_bytes = &sig[8 + r_len..8 + r_len + s_len];
    let der = openssl::ecdsa::EcdsaSig::from_private_components(
        openssl::bn::BigNum::from_slice(r_bytes).expect("r"),
        openssl::bn::BigNum::from_slice(s_bytes).expect("s"),
    )
    .and_then(|sig| sig.to_der())
    .expect("DER signature");
    let ak = ak_public_key(s.dir.path());
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &ak)
        .expect("verifier");
    verifier.update(attest).expect("update");
    assert!(
        verifier.verify(&der).expect("verify"),
        "ECDSA quote signature must verify with the ECC AK"
    );
}

#[test]
fn with_mtls_off_the_api_is_plain_http_and_the_agent_says_so() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let port = free_port();
    let file = write_config(
        dir.path(),
        &[
            format!("keylime_dir = {:?}", dir.path().display().to_string()),
            format!("port = {port}"),
            format!("registrar_port = {}", free_port()),
            "enable_agent_mtls = false".into(),
        ],
    );
    let mut agent = Agent::spawn(&file, &tpm.tcti(), &[]);
    agent.wait_for("serving API over plain HTTP", 30);
    assert!(
        agent.output().contains("WARN enable_agent_mtls = false"),
        "{}",
        agent.output()
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/version"))
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON over plain HTTP");
    assert_eq!(body["results"]["supported_version"], "2.4");
    assert!(
        !dir.path().join("server-cert.crt").exists(),
        "no mTLS certificate is made"
    );
}

#[test]
fn a_tpm_failure_is_a_500_envelope_and_the_agent_survives() {
    let Some(mut s) = serve(&[], 0) else { return };
    assert_eq!(
        s.get(&format!("/v2.6/quotes/identity?nonce={NONCE}")).0,
        200
    );
    s.tpm.kill();
    let (status, body) = s.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=0&ima_ml_entry=0"
    ));
    assert_error(status, &body, 500, "Attestation failed");
    let (status, _) = s.get("/version");
    assert_eq!(status, 200, "the agent keeps serving");
    let log = s.agent.output();
    assert!(
        log.contains("request failed: TPM"),
        "the cause goes to the log: {log}"
    );
}

#[test]
fn a_tpm_that_restarts_under_continuous_polling_is_reconnected_by_the_same_process() {
    let Some(mut s) = serve(&[], 3) else { return };
    let integrity =
        format!("/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=0&ima_ml_entry=0");
    assert_eq!(s.get(&integrity).0, 200);
    let pid = s.agent.pid();
    s.tpm.kill();
    // While it is down: 500 envelopes, which the verifier retries.
    for _ in 0..20 {
        let (status, body) = s.get(&integrity);
        assert_error(status, &body, 500, "Attestation failed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s.tpm.restart();
    // Polled as the verifier does until a quote comes back (30 s only
    // keeps a broken agent from hanging the test).
    let back = std::time::Instant::now();
    let mut answer = None;
    while back.elapsed() < std::time::Duration::from_secs(30) {
        let (status, body) = s.get(&integrity);
        if status == 200 {
            answer = Some(body);
            break;
        }
        assert_error(status, &body, 500, "Attestation failed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body =
        answer.unwrap_or_else(|| panic!("no quote after the TPM's return:\n{}", s.agent.output()));
    eprintln!(
        "valid quotes again {:?} after swtpm returned",
        back.elapsed()
    );
    assert_eq!(s.agent.pid(), pid, "the same agent process");
    // The quote verifies with the AK registered before the restart.
    let quote = body["results"]["quote"].as_str().expect("quote");
    let parts: Vec<&str> = quote[1..].split(':').collect();
    let attest = B64.decode(parts[0]).expect("attest");
    let sig = B64.decode(parts[1]).expect("signature");
    assert!(
        common::signed_by_ak(s.dir.path(), &attest, &sig),
        "signed by the same AK"
    );
    let log = s.agent.output();
    assert!(log.contains("TPM reconnected"), "{log}");
    assert_eq!(
        log.matches("TPM lost").count(),
        1,
        "one line when it went away: {log}"
    );
}

/// A hash bank the TPM has not allocated (this swtpm has sha256 only)
/// stops the agent at start with one line naming the key and the banks it
/// has, instead of a TPM owner looping on PCR_Read at the first quote.
#[test]
fn a_bank_the_tpm_lacks_stops_the_agent_at_start_naming_tpm_hash_alg() {
    let Some(tpm) = common::Swtpm::start() else {
        return;
    };
    let dir = common::state_dir();
    let mut lines = common::agent_lines(dir.path(), "0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b", None);
    lines.push("tpm_hash_alg = \"sha1\"".into());
    let file = common::write_config(dir.path(), &lines);
    let mut agent = common::Agent::spawn(&file, &tpm.tcti(), &[]);
    let code = agent.wait_exit(30);
    let output = agent.output();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {output}");
    assert!(
        output.contains(
            "tpm_hash_alg = sha1: the TPM has no allocated sha1 PCR bank (it has sha256)"
        ),
        "{output}"
    );
}

/// A client of the trusted CA that speaks only `version`, with a hook to
/// count the sessions (TLS 1.3 tickets, TLS 1.2 session ids) the server
/// lets it keep; `resume` offers a saved session.
fn tls_client(
    s: &common::Served,
    version: openssl::ssl::SslVersion,
    sessions: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    resume: Option<&openssl::ssl::SslSession>,
) -> Result<openssl::ssl::SslStream<std::net::TcpStream>, String> {
    use openssl::ssl::SslSessionCacheMode;
    let mut b = common::mtls_connector(&s.cert(), Some(&s.client));
    // Old protocols need the lowest security level on the client's side;
    // the agent's side is what is tested.
    b.set_security_level(0);
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").expect("ciphers");
    b.set_min_proto_version(Some(version)).expect("min");
    b.set_max_proto_version(Some(version)).expect("max");
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
    let counter = sessions.clone();
    b.set_new_session_callback(move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut config = b.build().configure().expect("configure");
    config.set_verify_hostname(false);
    if let Some(session) = resume {
        #[allow(unsafe_code)]
        // SAFETY: `session` was made by a context with the same settings.
        unsafe {
            config.set_session(session).expect("offer the session");
        }
    }
    config.connect("127.0.0.1", tcp).map_err(|e| e.to_string())
}

/// One request and the whole answer on `conn`; its status.
fn exchange(conn: &mut openssl::ssl::SslStream<std::net::TcpStream>) -> u16 {
    use std::io::Write;
    conn.write_all(b"GET /version HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    let answer = common::read_answer(conn, |_| false);
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn tls_is_1_2_or_1_3_only_without_tickets_or_resumption() {
    use openssl::ssl::SslVersion;
    let Some(s) = serve(&[], 0) else { return };
    let sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for old in [SslVersion::TLS1, SslVersion::TLS1_1] {
        let refused = tls_client(&s, old, &sessions, None).expect_err("an old protocol");
        assert!(
            refused.contains("protocol version") || refused.contains("unsupported protocol"),
            "{old:?}: {refused}"
        );
    }
    for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let before = sessions.load(std::sync::atomic::Ordering::SeqCst);
        let mut conn = tls_client(&s, version, &sessions, None).expect("a current protocol");
        assert_eq!(exchange(&mut conn), 200, "{version:?}");
        assert_eq!(
            conn.ssl().version_str(),
            if version == SslVersion::TLS1_3 {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            }
        );
        // No ticket arrived (TLS 1.3 NewSessionTicket, TLS 1.2 ticket).
        assert_eq!(
            sessions.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "{version:?}: a session ticket was sent"
        );
        // Whatever session the client holds, offering it again makes a
        // full handshake.
        if let Some(session) = conn.ssl().session().map(|s| s.to_owned()) {
            let mut again =
                tls_client(&s, version, &sessions, Some(&session)).expect("second connection");
            assert!(!again.ssl().session_reused(), "{version:?} session resumed");
            assert_eq!(exchange(&mut again), 200);
        }
    }
}

/// The agent's end of `conn`, read from its own descriptor table (through
/// pidfd_getfd, as root): whether TCP_NODELAY is set on it.
fn nodelay_on_agent_side(agent_pid: u32, agent_port: u16, conn: &std::net::TcpStream) -> bool {
    let client_port = conn.local_addr().expect("addr").port();
    // The socket's inode: local port = the agent's, remote = ours (hex).
    let table =
        std::fs::read_to_string(format!("/proc/{agent_pid}/net/tcp")).expect("/proc/net/tcp");
    let inode = table
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
            (port(f[1]) == Some(agent_port) && port(f[2]) == Some(client_port))
                .then(|| f[9].to_string())
        })
        .expect("the agent's socket for this connection");
    let fd = std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
        .expect("fds")
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy() == format!("socket:[{inode}]"))
        })
        .and_then(|e| e.file_name().to_str().map(str::to_string))
        .expect("the descriptor");
    let script = "import os, ctypes, socket, sys\n\
        pid, fd = int(sys.argv[1]), int(sys.argv[2])\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        got = libc.syscall(438, os.pidfd_open(pid), fd, 0)\n\
        assert got >= 0, os.strerror(ctypes.get_errno())\n\
        s = socket.socket(fileno=got)\n\
        print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &agent_pid.to_string(), &fd])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text != "0"
}

#[test]
fn the_agent_sets_tcp_nodelay_on_its_connections() {
    let Some(s) = serve(&[], 0) else { return };
    let mut conn = common::mtls_connect(
        s.port,
        &s.cert(),
        &s.client,
        std::time::Duration::from_secs(10),
    )
    .expect("connection");
    assert_eq!(exchange_keep(&mut conn), 200);
    assert!(
        nodelay_on_agent_side(s.agent.pid(), s.port, conn.get_ref()),
        "TCP_NODELAY is off on the agent's socket"
    );
}

/// One request on a kept-open connection; its status.
fn exchange_keep(conn: &mut openssl::ssl::SslStream<std::net::TcpStream>) -> u16 {
    use std::io::Write;
    conn.write_all(b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let answer = common::read_answer(conn, |b| {
        let t = String::from_utf8_lossy(b);
        t.split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body.ends_with('}'))
    });
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
