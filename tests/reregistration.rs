//! A registrar record lost while the agent runs (`keylime_tenant -c
//! regdelete`, a registrar database restored from an old backup), with the
//! real Keylime 7.14.3 registrar, verifier and tenant: SIGHUP makes the
//! agent register again with the same identity, and so does
//! `registrar_refresh_interval` by itself; the tenant can then add the
//! agent and the verifier attests it, with no restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;

use common::{registered_agent, Peers, Swtpm};

const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4e";

/// The registrar's agent ids (its admin list).
fn registrar_ids(peers: &Peers) -> Vec<String> {
    let (status, body) = peers.registrar_get("/v2.6/agents/");
    assert_eq!(status, 200, "{body}");
    body["results"]["uuids"]
        .as_array()
        .expect("uuids")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Deletes the agent's registrar record (`keylime_tenant -c regdelete`)
/// and checks that it is gone.
fn lose_the_record(peers: &Peers) {
    let out = peers.tenant(&["-c", "regdelete", "-u", ID]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(registrar_ids(peers).is_empty());
}

/// Waits up to `secs` for the agent's second activation, then checks
/// that the registrar lists the record again. The activation line is what
/// is waited for: the registrar lists a record from the registration on, a
/// moment before the activation that completes it.
fn the_record_comes_back(peers: &Peers, agent: &common::Agent, secs: u64) {
    assert!(
        common::wait_until(secs, || agent
            .output()
            .matches("registered and activated")
            .count()
            == 2),
        "{}",
        agent.output()
    );
    assert_eq!(
        registrar_ids(peers),
        vec![ID.to_string()],
        "the record is back"
    );
}

#[test]
fn a_record_deleted_at_the_registrar_comes_back_on_sighup_and_the_tenant_adds_again() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    tpm.extend_pcr10(&common::ima_entries(&ima, 3, 0, Some(&policy)));
    let extra = [format!("ima_ml_path = {:?}", ima.display().to_string())];
    let (mut agent, _, port) = registered_agent(&peers, &tpm, &dir, ID, &extra);
    assert_eq!(registrar_ids(&peers), vec![ID.to_string()]);

    // The record is lost: the tenant can no longer add the agent.
    lose_the_record(&peers);
    let policy_arg = ["--runtime-policy", policy.to_str().expect("utf8")];
    let (added, text) = peers.try_tenant_add(ID, port, &policy_arg);
    assert!(!added, "added without a registrar record:\n{text}");

    // SIGHUP: the same agent registers again.
    let pid = agent.pid();
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    agent.wait_for("SIGHUP: registering with the registrar again", 30);
    the_record_comes_back(&peers, &agent, 30);
    assert_eq!(agent.pid(), pid, "no restart");

    // The tenant adds it and the verifier attests it.
    peers.tenant_add(ID, port, &policy_arg);
    assert!(
        common::wait_until(60, || peers.verifier_state(ID).1 >= 3),
        "{}",
        peers.verifier_agent(ID)
    );
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_record_deleted_at_the_registrar_comes_back_by_itself_with_a_refresh_interval() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    // The shortest interval accepted.
    let extra = ["registrar_refresh_interval = 60".to_string()];
    let (agent, _, _) = registered_agent(&peers, &tpm, &dir, ID, &extra);
    let pid = agent.pid();
    lose_the_record(&peers);
    // Within the interval (and a margin), with nothing sent to the agent.
    the_record_comes_back(&peers, &agent, 120);
    let log = agent.output();
    assert!(
        log.contains("registrar_refresh_interval: registering with the registrar again"),
        "{log}"
    );
    assert_eq!(agent.pid(), pid, "no restart");
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}
