//! End to end with the real Keylime 7.14.3 registrar: registration and
//! activation, what the registrar then serves, re-registration after a
//! restart, retries while the registrar is down or its database locked
//! (its own 500s), the 403 for a changed AK, and no transient handle left
//! after 100 register/activate cycles.
//! A record the registrar lost: `tests/reregistration.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{agent_lines, registered_agent, write_config, Agent, Peers, Swtpm};
use keylime_agent::agent::AgentCore;

const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

#[test]
fn registers_and_activates_then_reregisters_with_the_same_identity() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (agent, config, _) = registered_agent(&peers, &tpm, &dir, ID, &[]);
    let (status, body) = peers.registrar_get(&format!("/v2.6/agents/{ID}"));
    assert_eq!(status, 200, "{body}");
    let results = &body["results"];
    for field in ["aik_tpm", "ek_tpm", "ekcert", "mtls_cert"] {
        assert!(
            results[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} missing: {body}"
        );
    }
    let served_cert = std::fs::read_to_string(dir.path().join("server-cert.crt")).expect("cert");
    assert_eq!(
        results["mtls_cert"].as_str().map(str::trim),
        Some(served_cert.trim())
    );
    let first_ak = results["aik_tpm"].clone();

    // The EK certificate the registrar returns chains to the swtpm local CA.
    let der = B64
        .decode(results["ekcert"].as_str().expect("ekcert"))
        .expect("base64 DER");
    let pem = openssl::x509::X509::from_der(&der)
        .expect("DER")
        .to_pem()
        .expect("pem");
    let ek_pem = dir.path().join("ek.pem");
    std::fs::write(&ek_pem, pem).expect("write");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(common::ek_ca_chain())
        .arg(&ek_pem)
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    agent.stop();
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "a stopped agent leaves no object"
    );

    let mut again = Agent::spawn(&config, &tpm.tcti(), &[]);
    again.wait_for("registered and activated", 30);
    let (status, body) = peers.registrar_get(&format!("/v2.6/agents/{ID}"));
    assert_eq!(status, 200);
    assert_eq!(
        body["results"]["aik_tpm"], first_ak,
        "same AK after restart"
    );
    assert_eq!(body["results"]["regcount"], 2, "{body}");
    let log = again.stop();
    assert!(log.contains("AK reloaded"), "{log}");
}

#[test]
fn a_new_ak_for_a_registered_id_gets_one_clear_line() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (agent, config, _) = registered_agent(&peers, &tpm, &dir, ID, &[]);
    agent.stop();
    std::fs::remove_file(dir.path().join("agent_data.json")).expect("forget the AK");
    let mut changed = Agent::spawn(&config, &tpm.tcti(), &[]);
    assert_eq!(changed.wait_exit(30), Some(1), "{}", changed.output());
    let log = changed.output();
    let line = log
        .lines()
        .find(|l| l.contains("refused agent"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(ID) && line.contains("different TPM identity") && line.contains("regdelete"),
        "{line}"
    );
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "the failure path flushed everything"
    );
}

#[test]
fn registrar_down_at_start_is_retried_until_it_comes_up() {
    let Some(peers) = Peers::start("verifier") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    // Registration follows the registrar's return at the next retry: no
    // more than one retry is logged after it is up.
    let config = write_config(dir.path(), &agent_lines(dir.path(), ID, Some(&peers)));
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("retry 3 in", 30);
    peers.service("start", "registrar");
    let last_retry = |log: &str| {
        log.lines()
            .filter_map(|l| {
                l.split_once("; retry ")?
                    .1
                    .split(' ')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let before_up = last_retry(&agent.output());
    agent.wait_for("registered and activated", 30);
    let log = agent.output();
    let registered_at = log.find("registered and activated").expect("registered");
    assert!(
        last_retry(&log[..registered_at]) <= before_up + 1,
        "retries {before_up} before the registrar was up, {} by registration:\n{log}",
        last_retry(&log[..registered_at])
    );
    assert_eq!(peers.registrar_get(&format!("/v2.6/agents/{ID}")).0, 200);
}

#[test]
fn a_registrar_whose_database_is_locked_answers_500_and_the_agent_retries_until_it_frees() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    // Another writer (a backup, a second registrar on the same file) holds
    // the registrar's SQLite database: the real registrar waits out its
    // busy timeout and answers 500, as it does under write contention.
    let mut lock = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1],isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked',flush=True); sys.stdin.read(); \
             c.execute('COMMIT')",
        ])
        .arg(peers.registrar_database())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::io::Read::take(lock.stdout.take().expect("stdout"), 64)),
        &mut said,
    )
    .expect("lock holder");
    assert_eq!(said.trim(), "locked");
    let config = write_config(dir.path(), &agent_lines(dir.path(), ID, Some(&peers)));
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("answered HTTP 500", 60);
    agent.wait_for("; retry 2 in", 60);
    drop(lock.stdin.take());
    assert!(lock.wait().expect("lock holder").success());
    agent.wait_for("registered and activated", 60);
    let log = agent.output();
    let tries = log
        .lines()
        .find(|l| l.contains("registered and activated"))
        .and_then(|l| {
            l.rsplit_once(" after ")?
                .1
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .expect("attempts in the registration line");
    assert!(tries >= 3, "{tries} attempts:\n{log}");
    assert!(
        peers.registrar_log().matches("Sent 500").count() >= 2,
        "the registrar answered 500:\n{}",
        peers.registrar_log()
    );
    assert_eq!(peers.registrar_get(&format!("/v2.6/agents/{ID}")).0, 200);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_register_activate_cycles_leave_no_transient_handles() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let file = write_config(dir.path(), &agent_lines(dir.path(), ID, Some(&peers)));
    let config = common::load_config(file, tpm.tcti());
    let core = AgentCore::prepare(&config).await.expect("prepare");
    let baseline = core.tpm.transient_handles().await.expect("handles");
    assert_eq!(baseline.len(), 2, "EK and AK only");
    let started = Instant::now();
    for cycle in 0..100 {
        core.register()
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
    }
    eprintln!("100 register/activate cycles in {:?}", started.elapsed());
    assert_eq!(
        core.tpm.transient_handles().await.expect("handles"),
        baseline,
        "no growth after 100 cycles"
    );
    let (_, body) = peers.registrar_get(&format!("/v2.6/agents/{ID}"));
    assert_eq!(body["results"]["regcount"], 100);
    core.tpm.shutdown().await;
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "zero transient handles once stopped"
    );
}

/// The usual test config plus registration over the registrar's HTTPS
/// port, with `ca` as `registrar_tls_ca_cert`.
fn tls_lines(peers: &Peers, ca: &std::path::Path) -> Vec<String> {
    vec![
        "registrar_tls_enabled = true".into(),
        format!("registrar_tls_port = {}", peers.registrar_tls_port),
        format!("registrar_tls_ca_cert = {:?}", ca.display().to_string()),
    ]
}

#[test]
fn registers_over_https_with_the_registrars_certificate_verified() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let ca = peers.cv_ca().join("cacert.crt");
    let (agent, _, _) = registered_agent(&peers, &tpm, &dir, ID, &tls_lines(&peers, &ca));
    let expected = format!(
        "registered and activated (registrar API 2.6) at https://127.0.0.1:{}",
        peers.registrar_tls_port
    );
    assert!(agent.output().contains(&expected), "{}", agent.output());
    assert_eq!(peers.registrar_agent(ID).0, 200);
}

#[test]
fn a_registrar_certificate_from_another_ca_is_one_line_then_retries_and_nothing_registers() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (other_ca, _) = common::make_ca_and_client(dir.path(), "other");
    let mut lines = agent_lines(dir.path(), ID, Some(&peers));
    lines.extend(tls_lines(&peers, &other_ca));
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("retry 3 in", 30);
    let log = agent.output();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not signed by the CA in registrar_tls_ca_cert"))
        .collect();
    assert!(refusals.len() >= 3, "{log}");
    for line in &refusals {
        assert!(
            line.contains("WARN") && line.contains(&other_ca.display().to_string()),
            "{line}"
        );
        assert!(line.contains("; retry "), "one line per attempt: {line}");
    }
    assert!(!log.contains("registered and activated"), "{log}");
    assert_eq!(peers.registrar_agent(ID).0, 404, "nothing registered");
}

#[test]
fn a_registrar_certificate_for_another_name_is_one_line_naming_registrar_ip() {
    // A named fake: a TLS server whose certificate, from a CA the agent
    // trusts, names another host (a fault the real registrar, which names
    // its own address, cannot be made to show).
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (ca, server) = common::make_ca_and_server(dir.path(), "elsewhere.invalid");
    let port = common::free_port();
    let mut fake = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&server.cert)
        .arg("-key")
        .arg(&server.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    assert!(common::wait_until(10, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let mut lines = agent_lines(dir.path(), ID, None);
    lines.extend([
        "registrar_tls_enabled = true".to_string(),
        format!("registrar_tls_port = {port}"),
        format!("registrar_tls_ca_cert = {:?}", ca.display().to_string()),
    ]);
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("retry 2 in", 30);
    let _ = fake.kill();
    let _ = fake.wait();
    let log = agent.output();
    let line = log
        .lines()
        .find(|l| l.contains("does not name 127.0.0.1"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("registrar_ip") && line.contains("WARN") && line.contains("; retry "),
        "{line}"
    );
}

#[test]
fn an_agent_killed_with_sigkill_three_times_registers_and_quotes_after_each_restart() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (agent, config, port) = registered_agent(&peers, &tpm, &dir, ID, &[]);
    let mut log = agent.kill9();
    for round in 1..=3 {
        let mut again = Agent::spawn(&config, &tpm.tcti(), &[]);
        again.wait_for("registered and activated", 30);
        let quote = common::https_get(
            port,
            "/v2.6/quotes/identity?nonce=Ai5M5SjYjnkyv4P7itH1",
            &dir.path().join("server-cert.crt"),
            Some(&peers.client()),
        )
        .expect("curl");
        assert_eq!(quote.0, 200, "round {round}: {}", quote.1);
        log = again.output();
        assert!(
            log.contains("flushed 2 transient objects"),
            "round {round}: the killed run's EK and AK are flushed:\n{log}"
        );
        assert!(log.contains("AK reloaded"), "round {round}:\n{log}");
        if round < 3 {
            again.kill9();
        } else {
            again.stop();
        }
    }
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "a clean stop leaves nothing"
    );
    let (_, body) = peers.registrar_get(&format!("/v2.6/agents/{ID}"));
    assert_eq!(body["results"]["regcount"], 4, "{body}");
}
