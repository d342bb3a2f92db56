//! End to end with the real Keylime 7.14.3 verifier, registrar and tenant:
//! `keylime_tenant -c add` with a PCR policy and a runtime (IMA) policy,
//! continuous attestation over API 2.6, incremental IMA delivery, and the
//! failures the verifier must see: a PCR changed behind the agent, and an
//! IMA entry outside the policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{agent_lines, ima_entries, wait_until, write_config, Agent, Peers, Swtpm};
use keylime_agent::agent::AgentCore;

const GET_QUOTE: i64 = 3;
const INVALID_QUOTE: i64 = 9;

fn tenant_add(peers: &Peers, id: &str, port: u16, runtime_policy: Option<&std::path::Path>) {
    let policy = runtime_policy.map(|p| p.display().to_string());
    match &policy {
        Some(p) => peers.tenant_add(id, port, &["--runtime-policy", p]),
        None => peers.tenant_add(id, port, &[]),
    };
}

/// The agent binary registered, added by the tenant with the PCR 17
/// policy, and attested at least twice; returns it and its config file.
fn attested_agent(
    peers: &Peers,
    tpm: &Swtpm,
    dir: &common::StateDir,
    id: &str,
) -> (Agent, std::path::PathBuf) {
    let (agent, file, port) = common::registered_agent(peers, tpm, dir, id, &[]);
    tenant_add(peers, id, port, None);
    assert!(
        wait_until(40, || peers.verifier_state(id).1 >= 2),
        "{}",
        peers.verifier_agent(id)
    );
    assert_eq!(peers.verifier_state(id).0, GET_QUOTE);
    (agent, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_add_then_continuous_attestation_with_incremental_ima_until_a_policy_violation() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    // The policy allows entries 0-7; the log starts with 0-4, in PCR 10.
    ima_entries(&dir.path().join("allowed"), 8, 0, Some(&policy));
    tpm.extend_pcr10(&ima_entries(&ima, 5, 0, None));

    let id = "5a1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let mut lines = agent_lines(dir.path(), id, Some(&peers));
    lines.push(format!("ima_ml_path = {:?}", ima.display().to_string()));
    let file = write_config(dir.path(), &lines);
    let config = common::load_config(file, tpm.tcti());
    let mut core = AgentCore::prepare(&config).await.expect("prepare");
    let server = keylime_agent::pull::serve(&mut core, &config).expect("server");
    core.register().await.expect("register");

    tenant_add(&peers, id, config.port, Some(&policy));
    assert!(
        wait_until(60, || peers.verifier_state(id).1 >= 10),
        "attestation_count did not reach 10: {}",
        peers.verifier_agent(id)
    );
    assert_eq!(peers.verifier_state(id).0, GET_QUOTE);
    assert_eq!(
        peers.verifier_db(id, "supported_version"),
        "2.6",
        "negotiated API version"
    );
    assert_eq!(
        peers.verifier_db(id, "next_ima_ml_entry"),
        "5",
        "the verifier consumed the 5 entries"
    );

    // New allowed entries are delivered from entry 5 on and attestation goes on.
    for hash in ima_entries(&ima, 3, 5, None) {
        core.tpm.extend_pcr(10, hash).await.expect("extend PCR 10");
    }
    let count = peers.verifier_state(id).1;
    assert!(
        wait_until(30, || peers.verifier_db(id, "next_ima_ml_entry") == "8"
            && peers.verifier_state(id).1 >= count + 3),
        "incremental IMA entries not consumed: {}",
        peers.verifier_agent(id)
    );
    assert_eq!(peers.verifier_state(id).0, GET_QUOTE);

    // An entry outside the policy: Invalid Quote.
    for hash in ima_entries(&ima, 1, 100, None) {
        core.tpm.extend_pcr(10, hash).await.expect("extend PCR 10");
    }
    assert!(
        wait_until(30, || peers.verifier_state(id).0 == INVALID_QUOTE),
        "{}",
        peers.verifier_agent(id)
    );
    let event = peers.verifier_agent(id)["last_event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(event.contains("not_in_allowlist"), "last_event_id {event}");

    server.stop().await;
    core.tpm.shutdown().await;
}

#[test]
fn pcr17_changed_behind_the_agent_is_an_invalid_quote() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let id = "6b2f3d4e-5f60-4b7c-9d8e-0f1a2b3c4d5e";
    let (agent, _) = attested_agent(&peers, &tpm, &dir, id);
    tpm.expect_invalid_quote_after_pcr17_change(&peers, id);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_restarted_agent_is_still_attested_with_the_same_ak_and_nk() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let id = "7d8e9fa0-b1c2-4d3e-8f40-5162738495a6";
    let (agent, file) = attested_agent(&peers, &tpm, &dir, id);
    agent.stop();

    let mut again = Agent::spawn(&file, &tpm.tcti(), &[]);
    again.wait_for("registered and activated", 30);
    let before = peers.verifier_state(id).1;
    assert!(
        wait_until(40, || {
            let (state, count) = peers.verifier_state(id);
            state == GET_QUOTE && count >= before + 3
        }),
        "attestation did not resume after the restart: {}",
        peers.verifier_agent(id)
    );
    let log = again.stop();
    assert!(log.contains("AK reloaded"), "{log}");
}
