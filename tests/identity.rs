//! The identities real machines ship, against the real Keylime peers, on a
//! swtpm provisioned by `swtpm-ci/provision-identity`:
//! - IAK/IDevID (TCG templates H-1 recreated from the template, H-2 from
//!   persistent handles with passwords) accepted by the 7.14.3 registrar
//!   with `tpm_identity = iak_idevid` and by 7.13.1, attested afterwards in
//!   pull and push mode; refused with a foreign CA in the store, with a
//!   certificate for another key (by the agent, at start) and with a
//!   corrupted certification (a tampering proxy in front of the registrar);
//! - RSA 3072 and P-384 EKs registered and attested by 7.14.3 with the
//!   tenant's accept lists widened, refused with the defaults; an RSA 3072
//!   EK attested by 7.13.1 as `rsa`, which the agent says at start;
//! - the EK chain from NV: the tenant's EK check passes with the
//!   intermediate in its store and fails with the root alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{
    agent_lines, identity_template, ima_entries, wait_until, write_config, Agent, Peers, Release,
    StateDir, Swtpm, KEYLIME_7_13, KEYLIME_7_14,
};

const GET_QUOTE: i64 = 3;

fn certs() -> PathBuf {
    identity_template()
        .expect("identity template")
        .join("certs")
}

/// The agent's IAK/IDevID lines: `h1` recreated from template H-1 (found by
/// `detect`), `h2` from the persistent handles with their passwords.
fn identity_lines(which: &str) -> Vec<String> {
    let cert = |name: &str| {
        format!(
            "{:?}",
            certs().join(format!("{name}.pem")).display().to_string()
        )
    };
    let mut lines = vec![
        "enable_iak_idevid = true".to_string(),
        format!("iak_cert = {}", cert(&format!("iak-{which}"))),
        format!("idevid_cert = {}", cert(&format!("idevid-{which}"))),
    ];
    if which == "h2" {
        lines.extend([
            "iak_idevid_template = \"H-2\"".to_string(),
            "iak_handle = \"0x81020000\"".into(),
            "iak_password = \"iak-password\"".into(),
            "idevid_handle = \"0x81020001\"".into(),
            "idevid_password = \"idevid-password\"".into(),
        ]);
    }
    lines
}

/// Peers of `release` whose registrar requires IAK/IDevID and trusts
/// `ca` (a file of the identity template's `certs`); the tenant does not
/// require an EK certificate (the identity TPM has none for RSA 2048).
fn iak_peers(release: Release, mode: &str, ca: &str) -> Option<Peers> {
    let env = [
        ("KEYLIME_REGISTRAR_TPM_IDENTITY", "iak_idevid"),
        ("KEYLIME_TENANT_REQUIRE_EK_CERT", "False"),
    ];
    let peers = if mode == "push" {
        Peers::start_push("all", &env)?
    } else {
        Peers::start_release_with_env("all", release, &env)?
    };
    std::fs::copy(
        certs().join(ca),
        peers.dir.path().join("tpm_cert_store").join(ca),
    )
    .expect("trust the CA");
    Some(peers)
}

fn registrar_log(peers: &Peers) -> String {
    std::fs::read_to_string(peers.dir.path().join("registrar.log")).unwrap_or_default()
}

fn check(config: &Path, tcti: &str) -> Output {
    common::run_check(config, tcti, &[])
}

/// IMA entries in PCR 10 and a runtime policy allowing them.
fn ima(tpm: &Swtpm, dir: &StateDir) -> (PathBuf, PathBuf) {
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    tpm.extend_pcr10(&ima_entries(&ima, 3, 0, Some(&policy)));
    (ima, policy)
}

/// `tenant -c add` succeeds and the verifier keeps getting good quotes.
fn added_and_attested(peers: &Peers, id: &str, port: u16, policy: &Path, agent: &Agent) {
    peers.tenant_add(
        id,
        port,
        &["--runtime-policy", policy.to_str().expect("utf8")],
    );
    assert!(
        wait_until(60, || peers.verifier_state(id).1 >= 4),
        "attestation stalled: {}\n{}",
        peers.verifier_agent(id),
        agent.output()
    );
    assert_eq!(
        peers.verifier_state(id).0,
        GET_QUOTE,
        "{}",
        peers.verifier_agent(id)
    );
}

fn spawn(peers: &Peers, tpm: &Swtpm, dir: &StateDir, id: &str, extra: &[String]) -> (Agent, u16) {
    let (agent, _, port) = common::spawned_agent(peers, tpm, dir, id, extra, &[]);
    (agent, port)
}

/// The registrar verified the IAK/IDevID and the AK's certification.
fn assert_iak_accepted(peers: &Peers, id: &str, agent: &Agent) {
    let log = registrar_log(peers);
    assert!(
        log.contains(&format!("IDevID and IAK received for agent '{id}'")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Agent {id} AIK verified with IAK")),
        "{log}\n{}",
        agent.output()
    );
}

fn iak_pull(release: Release, which: &str, id: &str) {
    let Some(peers) = iak_peers(release, "pull", "device-ca.pem") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let (ima, policy) = ima(&tpm, &dir);
    let mut extra = identity_lines(which);
    extra.push(format!("ima_ml_path = {:?}", ima.display().to_string()));

    // check: both certificates match the TPM's keys.
    let mut lines = agent_lines(dir.path(), id, Some(&peers));
    lines.extend(extra.iter().cloned());
    let out = check(&write_config(dir.path(), &lines), &tpm.tcti());
    let text = String::from_utf8_lossy(&out.stdout);
    let template = if which == "h1" { "H-1" } else { "H-2" };
    for (item, cn) in [("iak", "iak"), ("idevid", "idevid")] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(item))
            .unwrap_or_else(|| panic!("no {item} line:\n{text}"));
        assert!(
            line.contains(&format!("matches the TPM key (template {template})"))
                && line.contains(&format!("CN={cn}-{which} of swtpm")),
            "{line}"
        );
    }

    // info --json: both certificates, matching the TPM.
    let out = std::process::Command::new(common::AGENT_BIN)
        .args(["info", "--json"])
        .env("KEYLIME_AGENT_CONFIG", dir.path().join("agent.conf"))
        .env("TCTI", tpm.tcti())
        .output()
        .expect("info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let identity = &info["tpm"]["device_identity"];
    assert_eq!(identity["template"], template, "{info}");
    for key in ["iak", "idevid"] {
        assert_eq!(identity[key]["matches_tpm"], true, "{info}");
        assert_eq!(
            identity[key]["issuer"], "O=keylime-agent-ci, CN=device identity CA",
            "{info}"
        );
    }

    let (mut agent, port) = spawn(&peers, &tpm, &dir, id, &extra);
    agent.wait_for("registered and activated", 60);
    assert_iak_accepted(&peers, id, &agent);
    added_and_attested(&peers, id, port, &policy, &agent);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn iak_idevid_from_template_h1_accepted_by_7_14_3_in_iak_idevid_mode_and_attested() {
    iak_pull(KEYLIME_7_14, "h1", "1dea0000-aaaa-4bbb-8ccc-000000000001");
}

#[test]
fn iak_idevid_persistent_h2_with_passwords_accepted_by_7_13_1_and_attested() {
    iak_pull(KEYLIME_7_13, "h2", "1dea0000-aaaa-4bbb-8ccc-000000000002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iak_idevid_push_agent_accepted_by_7_14_3_and_attested() {
    let Some(peers) = iak_peers(KEYLIME_7_14, "push", "device-ca.pem") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let (ima, policy) = ima(&tpm, &dir);
    let id = "1dea0000-aaaa-4bbb-8ccc-000000000003";
    let mut lines = peers.push_agent_lines(dir.path(), id, &ima);
    lines.extend(identity_lines("h1"));
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
    agent.wait_for("registered and activated", 60);
    assert_iak_accepted(&peers, id, &agent);
    peers.tenant_add_push(id, &policy);
    peers.wait_push_status(id, 90, |status, count| status == "PASS" && count >= 3);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn iak_idevid_refused_by_the_registrar_with_a_foreign_ca_in_its_store() {
    let Some(peers) = iak_peers(KEYLIME_7_14, "pull", "foreign-ca.pem") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let id = "1dea0000-aaaa-4bbb-8ccc-000000000004";
    let (mut agent, _) = spawn(&peers, &tpm, &dir, id, &identity_lines("h1"));
    assert_ne!(agent.wait_exit(60), Some(0), "{}", agent.output());
    let log = registrar_log(&peers);
    for field in ["iak_cert", "idevid_cert"] {
        assert!(
            log.contains(field)
                && log.contains(
                    "must contain a certificate issued by a CA present in the trust store"
                ),
            "{field}: {log}"
        );
    }
    assert!(agent.output().contains("HTTP 400"), "{}", agent.output());
    assert_eq!(peers.registrar_agent(id).0, 404, "no record");
}

#[test]
fn a_certificate_for_another_key_stops_the_agent_at_start_naming_the_file() {
    let Some(peers) = iak_peers(KEYLIME_7_14, "pull", "device-ca.pem") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let id = "1dea0000-aaaa-4bbb-8ccc-000000000005";
    let wrong = certs().join("idevid-h1.pem");
    let mut extra = identity_lines("h1");
    extra[1] = format!("iak_cert = {:?}", wrong.display().to_string());

    let mut lines = agent_lines(dir.path(), id, Some(&peers));
    lines.extend(extra.iter().cloned());
    let out = check(&write_config(dir.path(), &lines), &tpm.tcti());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("iak_idevid") && l.contains("FAIL") && l.contains("idevid-h1.pem")),
        "{text}"
    );

    let (mut agent, _) = spawn(&peers, &tpm, &dir, id, &extra);
    assert_ne!(agent.wait_exit(60), Some(0), "{}", agent.output());
    let output = agent.output();
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains(&wrong.display().to_string())
                && l.contains(
                    "the IAK certificate is for another key than the key of template H-1"
                )),
        "{output}"
    );
    assert!(!output.contains("registered"), "{output}");
    assert_eq!(peers.registrar_agent(id).0, 404, "no record");
}

/// A FAKE in front of the real registrar (it cannot be made to see a bad
/// certification otherwise): forwards each request unchanged, except that
/// a registration's `iak_sign` gets its last byte flipped. One request per
/// connection.
fn tampering_proxy(registrar_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().take(64).flatten() {
            let _ = relay(client, registrar_port);
        }
    });
    port
}

fn relay(mut client: TcpStream, registrar_port: u16) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_end, length) = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while request.len() < head_end + length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let mut body = request[head_end..].to_vec();
    if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(sign) = json["iak_sign"].as_str() {
            let mut bytes = B64.decode(sign).expect("iak_sign base64");
            *bytes.last_mut().expect("signature") ^= 0x01;
            json["iak_sign"] = serde_json::Value::String(B64.encode(bytes));
            body = serde_json::to_vec(&json).expect("json");
        }
    }
    let head: String = head
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("connection:") && !l.is_empty()
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut upstream = TcpStream::connect(("127.0.0.1", registrar_port))?;
    upstream.write_all(
        format!(
            "{head}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    Ok(())
}

#[test]
fn iak_idevid_refused_by_the_registrar_when_the_certification_is_corrupted() {
    let Some(peers) = iak_peers(KEYLIME_7_14, "pull", "device-ca.pem") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let id = "1dea0000-aaaa-4bbb-8ccc-000000000006";
    let proxy = tampering_proxy(peers.registrar_port);
    let mut extra = identity_lines("h1");
    extra.push(format!("registrar_port = {proxy}"));
    let (mut agent, _) = spawn(&peers, &tpm, &dir, id, &extra);
    assert_ne!(agent.wait_exit(60), Some(0), "{}", agent.output());
    let log = registrar_log(&peers);
    assert!(
        log.contains("cannot be confirmed as having been created by the same TPM as the IAK"),
        "{log}\n{}",
        agent.output()
    );
    assert!(
        !log.contains(&format!("Agent {id} AIK verified with IAK")),
        "{log}"
    );
    assert!(agent.output().contains("HTTP 400"), "{}", agent.output());
}

/// A high-range EK (`rsa3072` or `ecc384` with an ECDSA P-384 AK):
/// registered with its certificate and chain; the tenant's EK check fails
/// with the root alone in its store and passes with the intermediate; the
/// verifier refuses the EK type with the default accept list and attests
/// it once the list names it.
fn high_range_ek(alg: &str, id: &str) {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let (ima, policy) = ima(&tpm, &dir);
    let mut extra = vec![
        format!("tpm_encryption_alg = {alg:?}"),
        format!("ima_ml_path = {:?}", ima.display().to_string()),
    ];
    if alg == "ecc384" {
        extra.push("tpm_signing_alg = \"ecdsa\"".into());
        peers.tenant_accepts_ecdsa();
    }
    // check: the EK certificate of this type and its issuer from NV.
    let mut lines = agent_lines(dir.path(), id, Some(&peers));
    lines.extend(extra.iter().cloned());
    let out = check(&write_config(dir.path(), &lines), &tpm.tcti());
    let text = String::from_utf8_lossy(&out.stdout);
    let nv = if alg == "rsa3072" {
        "0x01c0001c"
    } else {
        "0x01c00016"
    };
    assert!(
        text.lines()
            .any(|l| l.contains("ek_certificate") && l.contains(&format!("NV {nv}"))),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("ek_chain")
            && l.contains("1 issuer certificate(s) in NV 0x01c00100")
            && l.contains("swtpm-localca")),
        "{text}"
    );
    let (mut agent, port) = spawn(&peers, &tpm, &dir, id, &extra);
    agent.wait_for("registered and activated", 60);
    let notes = agent.output();
    assert_eq!(
        notes
            .lines()
            .filter(|l| l.contains(&format!("accept_tpm_encryption_algs lists {alg}")))
            .count(),
        1,
        "{notes}"
    );
    let (_, record) = peers.registrar_agent(id);
    let ekcert = B64
        .decode(record["results"]["ekcert"].as_str().expect("ekcert"))
        .expect("base64");
    let leaf = openssl::x509::X509::from_der(&ekcert).expect("the leaf");
    let bits = leaf.public_key().expect("key").bits();
    assert_eq!(bits, if alg == "rsa3072" { 3072 } else { 384 }, "EK size");

    // The default accept list: the tenant refuses the EK type.
    let runtime = ["--runtime-policy", policy.to_str().expect("utf8")];
    let (ok, text) = peers.try_tenant_add(id, port, &runtime);
    assert!(!ok, "added with the default list:\n{text}");
    assert!(
        text.contains(&format!("unaccepted encryption algorithm: {alg}")),
        "{text}"
    );
    peers.export(
        "KEYLIME_TENANT_ACCEPT_TPM_ENCRYPTION_ALGS",
        &format!("\"['ecc', 'rsa', '{alg}']\""),
    );

    // The root alone: the tenant cannot chain the EK certificate.
    let store = peers.dir.path().join("tpm_cert_store");
    let intermediate = std::fs::read(store.join("issuercert.pem")).expect("issuer");
    std::fs::remove_file(store.join("issuercert.pem")).expect("remove");
    let (ok, text) = peers.try_tenant_add(id, port, &runtime);
    assert!(!ok, "added with the root alone:\n{text}");
    assert!(text.contains("Invalid EK certificate for"), "{text}");

    // The intermediate in the store and the list naming the type: attested.
    std::fs::write(store.join("issuercert.pem"), intermediate).expect("restore");
    added_and_attested(&peers, id, port, &policy, &agent);
    assert_eq!(peers.verifier_db(id, "enc_alg"), alg);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn rsa_3072_ek_registered_and_attested_by_7_14_3_with_the_list_widened_refused_by_default() {
    high_range_ek("rsa3072", "1dea0000-aaaa-4bbb-8ccc-000000000007");
}

#[test]
fn p384_ek_and_ak_registered_and_attested_by_7_14_3_with_the_list_widened_refused_by_default() {
    high_range_ek("ecc384", "1dea0000-aaaa-4bbb-8ccc-000000000008");
}

#[test]
fn rsa_3072_ek_with_7_13_1_is_named_rsa_and_the_agent_says_so_at_start() {
    let Some(peers) = Peers::start_release("all", KEYLIME_7_13) else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let (ima, policy) = ima(&tpm, &dir);
    let id = "1dea0000-aaaa-4bbb-8ccc-000000000009";
    let extra = [
        "tpm_encryption_alg = \"rsa3072\"".to_string(),
        format!("ima_ml_path = {:?}", ima.display().to_string()),
    ];
    let (mut agent, port) = spawn(&peers, &tpm, &dir, id, &extra);
    agent.wait_for("registered and activated", 60);
    // Said once registration returns, a moment after its line.
    agent.wait_for("know only \"rsa\" and \"ecc\" EKs", 10);
    let output = agent.output();
    let said: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("know only \"rsa\" and \"ecc\" EKs"))
        .collect();
    assert_eq!(said.len(), 1, "{output}");
    assert!(
        said[0].contains("WARN") && said[0].contains("API 2.4"),
        "{}",
        said[0]
    );
    added_and_attested(&peers, id, port, &policy, &agent);
    assert_eq!(peers.verifier_db(id, "enc_alg"), "rsa");
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_persistent_p384_ek_is_taken_for_what_its_public_area_says() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start_identity() else {
        return;
    };
    let dir = common::state_dir();
    let id = "1dea0000-aaaa-4bbb-8ccc-00000000000a";
    // tpm_encryption_alg says rsa; the handle holds swtpm's P-384 EK.
    let extra = ["ek_handle = \"0x81010016\"".to_string()];
    let (mut agent, _) = spawn(&peers, &tpm, &dir, id, &extra);
    agent.wait_for("registered and activated", 60);
    let output = agent.output();
    assert_eq!(
        output
            .lines()
            .filter(|l| l.contains("the persistent EK is ecc384, not rsa2048"))
            .count(),
        1,
        "{output}"
    );
    let (_, record) = peers.registrar_agent(id);
    let ekcert = B64
        .decode(record["results"]["ekcert"].as_str().expect("ekcert"))
        .expect("base64");
    let leaf = openssl::x509::X509::from_der(&ekcert).expect("the leaf");
    let key = leaf.public_key().expect("key");
    assert_eq!(
        key.ec_key().expect("EC").group().curve_name(),
        Some(openssl::nid::Nid::SECP384R1)
    );
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}
