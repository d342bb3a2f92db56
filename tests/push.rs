//! The push model end to end with the real Keylime 7.14.3 registrar,
//! verifier (`mode = push`) and tenant (`keylime_tenant -c add
//! --push-model`): PASS over many cycles, IMA entries sent incrementally,
//! PCR 17 and IMA policy violations → FAIL; and the faults an agent must
//! ride out: a verifier restarted mid-run, the agent deleted and added
//! again, a verifier down when the agent starts, and tokens that expire
//! without being extended.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ima_entries, wait_until, Agent, Peers, StateDir, Swtpm};
use keylime_agent::agent::AgentCore;

/// A TPM with 5 IMA entries in PCR 10 and a policy allowing entries 0-7.
fn tpm_with_ima(dir: &StateDir) -> Option<(Swtpm, PathBuf, PathBuf)> {
    let tpm = Swtpm::start()?;
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    ima_entries(&dir.path().join("allowed"), 8, 0, Some(&policy));
    tpm.extend_pcr10(&ima_entries(&ima, 5, 0, None));
    Some((tpm, ima, policy))
}

fn status(peers: &Peers, id: &str) -> (String, i64) {
    peers.push_status(id)
}

fn wait_status(peers: &Peers, id: &str, secs: u64, cond: impl Fn(&str, i64) -> bool) {
    peers.wait_push_status(id, secs, cond);
}

/// The IMA `starting_offset` the verifier chose in its latest attestation.
fn latest_ima_offset(peers: &Peers, id: &str) -> Option<u64> {
    let (_, body) = peers.admin_get(&format!("/v3.0/agents/{id}/attestations/latest"));
    body.pointer("/data/attributes/evidence")
        .or_else(|| body.pointer("/data/attributes/evidence_requested"))
        .and_then(|e| e.as_array())?
        .iter()
        .find(|i| i["evidence_type"] == "ima_log")?
        .pointer("/chosen_parameters/starting_offset")?
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_attestation_passes_sends_ima_incrementally_and_fails_on_a_policy_violation() {
    let Some(peers) = Peers::start_push("all", &[]) else {
        return;
    };
    let dir = common::state_dir();
    let Some((tpm, ima, policy)) = tpm_with_ima(&dir) else {
        return;
    };
    let id = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let file = common::write_config(dir.path(), &peers.push_agent_lines(dir.path(), id, &ima));
    let config = common::load_config(file, tpm.tcti());
    let settings = config.push_settings().expect("push settings");
    let core = AgentCore::prepare(&config).await.expect("prepare");
    core.register().await.expect("register");
    peers.tenant_add_push(id, &policy);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let (config, settings) = (config.clone(), settings.clone());
        let core_ref = std::sync::Arc::new(core);
        let task_core = core_ref.clone();
        let task = tokio::spawn(async move {
            keylime_agent::push::attest(&task_core, &config, &settings, 1_700_000_000, async {
                let _ = stopped.await;
            })
            .await
        });
        (core_ref, task)
    };
    let (core, task) = worker;

    // PASS, and the count keeps rising over at least ten cycles.
    let peers_ref = &peers;
    tokio::task::block_in_place(|| {
        wait_status(peers_ref, id, 60, |s, c| s == "PASS" && c >= 1);
        let first = status(peers_ref, id).1;
        wait_status(peers_ref, id, 60, |s, c| s == "PASS" && c >= first + 10);
        assert_eq!(
            latest_ima_offset(peers_ref, id),
            Some(5),
            "the 5 entries consumed"
        );
    });

    // Three more allowed entries: sent from offset 5 on, still PASS.
    for hash in ima_entries(&ima, 3, 5, None) {
        core.tpm.extend_pcr(10, hash).await.expect("extend PCR 10");
    }
    tokio::task::block_in_place(|| {
        assert!(
            wait_until(30, || latest_ima_offset(peers_ref, id) == Some(8)),
            "the verifier did not move on to entry 8: {}",
            peers_ref.verifier_agent(id)
        );
        let count = status(peers_ref, id).1;
        wait_status(peers_ref, id, 30, |s, c| s == "PASS" && c >= count + 2);
    });

    // An entry outside the policy: FAIL.
    for hash in ima_entries(&ima, 1, 100, None) {
        core.tpm.extend_pcr(10, hash).await.expect("extend PCR 10");
    }
    tokio::task::block_in_place(|| wait_status(peers_ref, id, 30, |s, _| s == "FAIL"));

    let _ = stop.send(());
    task.await.expect("join").expect("attest");
    core.tpm.shutdown().await;
}

/// The push binary registered, enrolled and attested (PASS, count ≥ 2).
fn attested_push_agent(
    peers: &Peers,
    dir: &StateDir,
    tpm: &Swtpm,
    id: &str,
    policy: &Path,
    ima: &Path,
    env: &[(&str, &str)],
) -> (Agent, PathBuf) {
    let config = common::write_config(dir.path(), &peers.push_agent_lines(dir.path(), id, ima));
    let mut agent = Agent::spawn_push(&config, &tpm.tcti(), env);
    agent.wait_for("registered and activated", 30);
    peers.tenant_add_push(id, policy);
    wait_status(peers, id, 60, |s, c| s == "PASS" && c >= 2);
    (agent, config)
}

#[test]
fn pcr17_changed_behind_the_push_agent_fails_attestation() {
    let Some(peers) = Peers::start_push("all", &[]) else {
        return;
    };
    let dir = common::state_dir();
    let Some((tpm, ima, policy)) = tpm_with_ima(&dir) else {
        return;
    };
    let id = "9b1c2d3e-4f5a-4b6c-8d7e-8f9a0b1c2d3e";
    let (agent, _) = attested_push_agent(&peers, &dir, &tpm, id, &policy, &ima, &[]);
    tpm.change_pcr17();
    wait_status(&peers, id, 30, |s, _| s == "FAIL");
    let log = agent.stop();
    assert!(log.contains("attesting to the verifier"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn the_push_agent_survives_a_verifier_restart_a_deletion_and_a_verifier_down_at_its_start() {
    let Some(peers) = Peers::start_push("all", &[]) else {
        return;
    };
    let dir = common::state_dir();
    let Some((tpm, ima, policy)) = tpm_with_ima(&dir) else {
        return;
    };
    let id = "9c2d3e4f-5a6b-4c7d-8e8f-9a0b1c2d3e4f";
    let (agent, config) = attested_push_agent(&peers, &dir, &tpm, id, &policy, &ima, &[]);

    // Restarted mid-run: attestation goes on, same agent process.
    let pid = agent.pid();
    peers.service("stop", "verifier");
    std::thread::sleep(Duration::from_secs(3));
    peers.service("start", "verifier");
    let count = status(&peers, id).1;
    wait_status(&peers, id, 60, |s, c| s == "PASS" && c >= count + 3);
    assert_eq!(agent.pid(), pid);

    // Deleted at the verifier, then added again: attestation resumes.
    let out = peers.tenant(&["-c", "delete", "-u", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = "the verifier has no record of this agent";
    assert!(
        wait_until(20, || agent.output().contains(gone)),
        "{}",
        agent.output()
    );
    // Asked again on the attestation interval while it is gone.
    std::thread::sleep(Duration::from_secs(6));
    peers.tenant_add_push(id, &policy);
    wait_status(&peers, id, 60, |s, c| s == "PASS" && c >= 2);
    assert_eq!(agent.pid(), pid);
    let log = agent.stop();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains(gone)).collect();
    assert_eq!(warned.len(), 1, "one WARN line while deleted:\n{log}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("HTTP 404"),
        "{}",
        warned[0]
    );
    assert!(log.contains("recovered: attesting"), "{log}");

    // Down for the first 30 s of the agent's run: it attests once it is up.
    peers.service("stop", "verifier");
    let mut again = Agent::spawn_push(&config, &tpm.tcti(), &[]);
    again.wait_for("registered and activated", 30);
    let started = Instant::now();
    again.wait_for("next attempt in", 30);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    peers.service("start", "verifier");
    let up = Instant::now();
    let count = status(&peers, id).1;
    wait_status(&peers, id, 60, |s, c| s == "PASS" && c > count);
    eprintln!("attested {:?} after the verifier came up", up.elapsed());
    let log = again.stop();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warnings <= 2,
        "one line when the verifier went away, not one per retry:\n{log}"
    );
    assert!(log.contains("recovered: attesting"), "{log}");
}

#[test]
fn expiring_tokens_are_renewed_without_losing_cycles() {
    let Some(peers) = Peers::start_push(
        "all",
        &[
            ("KEYLIME_VERIFIER_SESSION_LIFETIME", "16"),
            ("KEYLIME_VERIFIER_EXTEND_TOKEN_ON_ATTESTATION", "False"),
        ],
    ) else {
        return;
    };
    let dir = common::state_dir();
    let Some((tpm, ima, policy)) = tpm_with_ima(&dir) else {
        return;
    };
    let id = "9d3e4f5a-6b7c-4d8e-8f9a-0b1c2d3e4f5a";
    let debug = [("RUST_LOG", "info,keylime_agent=debug")];
    let (agent, _) = attested_push_agent(&peers, &dir, &tpm, id, &policy, &ima, &debug);
    let (_, start) = status(&peers, id);
    // Tokens of 16 s (renewed in their last 4 s, room for a cycle on a
    // loaded machine): three renewals, each followed by accepted evidence,
    // take about 48 s of attesting.
    let renewed_three_times = || {
        let out = agent.output();
        out.matches("renewed the verifier token").count() >= 3
            && out
                .rfind("renewed the verifier token")
                .is_some_and(|last| out[last..].contains("evidence accepted"))
    };
    assert!(
        wait_until(150, renewed_three_times),
        "fewer than three renewals with evidence after them:\n{}",
        agent.output()
    );
    let (verdict, end) = status(&peers, id);
    let log = agent.stop();
    assert_eq!(verdict, "PASS");
    assert!(end > start, "attestations went on: {start} -> {end}");
    // No cycle lost: from the first accepted evidence on, no cycle failed
    // and no token was refused (a token used past its expiry gets 401).
    let since_enrolled = log
        .split_once("cycle 1: evidence accepted")
        .map_or("", |(_, after)| after);
    assert!(!since_enrolled.contains(" WARN "), "a cycle failed:\n{log}");
    assert!(
        !since_enrolled.contains("token refused (401)"),
        "a token was used past its expiry:\n{log}"
    );
    // Each renewal came between accepted cycles: accepted evidence before
    // the first renewal and after the last.
    let first = log.find("renewed the verifier token").expect("renewal");
    let last = log.rfind("renewed the verifier token").expect("renewal");
    assert!(log[..first].contains("evidence accepted"), "{log}");
    assert!(log[last..].contains("evidence accepted"), "{log}");
    assert!(!log.contains("Bearer"), "the token is never logged");
}

#[test]
fn push_settings_are_checked_at_start_with_one_line() {
    let dir = common::state_dir();
    let Some(tpm) = Swtpm::start() else { return };
    let (ca, _) = common::make_ca_and_client(dir.path(), "push");
    let ca_line = format!("verifier_tls_ca_cert = {:?}", ca.display().to_string());
    let url = "verifier_url = \"https://127.0.0.1:1\"".to_string();
    let cases: [(Vec<String>, &str); 3] = [
        (vec![ca_line.clone()], "verifier_url"),
        (
            vec![
                url.clone(),
                "verifier_tls_ca_cert = \"/nonexistent/ca.crt\"".into(),
            ],
            "verifier_tls_ca_cert",
        ),
        (
            vec![
                url,
                ca_line,
                "tpm_encryption_alg = \"ecc\"".into(),
                "tpm_signing_alg = \"ecdsa\"".into(),
            ],
            "tpm_signing_alg",
        ),
    ];
    for (extra, key) in cases {
        let mut lines =
            common::agent_lines(dir.path(), "9e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b", None);
        lines.extend(extra);
        let config = common::write_config(dir.path(), &lines);
        let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
        assert_eq!(agent.wait_exit(10), Some(2), "{}", agent.output());
        let out = agent.output();
        let errors: Vec<&str> = out.lines().filter(|l| !l.contains(" WARN ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(
            errors[0].starts_with("keylime_push_model_agent: config: invalid ")
                && errors[0].contains(key),
            "{key}: {out}"
        );
    }
}

/// Against a FAKE verifier (the real one cannot be made to answer 429 and
/// 503 on demand): a 429 and a 503 with `Retry-After: 2` each hold the next
/// request back at least 2 s; after that every session request fails (500),
/// and the agent still opens at most 10 sessions a minute: the 11th comes at
/// least 60 s after the first.
#[test]
fn push_honours_retry_after_and_opens_at_most_ten_sessions_a_minute() {
    use common::fake::{ip_server_identity, tls_acceptor, FakePeer};
    use std::io::Write;
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = ip_server_identity(pki.path());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answer: common::fake::Answer = {
        let answered = answered.clone();
        std::sync::Arc::new(move |_: &str, w: &mut dyn Write| {
            let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = match n {
                0 => "429 Too Many Requests\r\nRetry-After: 2",
                1 => "503 Service Unavailable\r\nRetry-After: 2",
                _ => "500 Internal Server Error",
            };
            let body = r#"{"errors": [{"status": "500", "detail": "fake"}]}"#;
            write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: application/vnd.api+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
    };
    let fake = FakePeer::start(Some(tls_acceptor(&cert, &key)), answer);
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let ima = dir.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    let mut lines = common::agent_lines(
        dir.path(),
        "9e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b",
        Some(&peers),
    );
    // Retry-After is honoured up to exponential_backoff_max_delay: room
    // for the 2 s asked.
    lines.retain(|l| !l.starts_with("exponential_backoff_max_delay"));
    lines.push("exponential_backoff_max_delay = 5000".into());
    lines.push(format!(
        "verifier_url = \"https://127.0.0.1:{}\"",
        fake.port
    ));
    lines.push(format!(
        "verifier_tls_ca_cert = {:?}",
        ca.display().to_string()
    ));
    lines.push(format!("ima_ml_path = {:?}", ima.display().to_string()));
    let config = common::write_config(dir.path(), &lines);
    let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
    agent.wait_for("registered and activated", 30);
    assert!(
        wait_until(120, || fake.requests() >= 11),
        "{:?}\n{}",
        fake.seen(),
        agent.output()
    );
    let seen = fake.seen_at();
    assert!(
        seen.iter()
            .take(11)
            .all(|(_, line)| line.starts_with("POST /v3.0/sessions")),
        "only session requests: {:?}",
        fake.seen()
    );
    let gap = |i: usize| seen[i + 1].0.duration_since(seen[i].0);
    assert!(
        gap(0) >= Duration::from_millis(1900),
        "after the 429: {:?}",
        gap(0)
    );
    assert!(
        gap(1) >= Duration::from_millis(1900),
        "after the 503: {:?}",
        gap(1)
    );
    let eleventh = seen[10].0.duration_since(seen[0].0);
    assert!(
        eleventh >= Duration::from_secs(59),
        "11 sessions in {eleventh:?}:\n{}",
        agent.output()
    );
    assert!(
        agent
            .output()
            .contains("10 verifier sessions in the last minute"),
        "{}",
        agent.output()
    );
}
