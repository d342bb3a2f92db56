//! A fleet of 10 agents started within one second against the real Keylime
//! 7.14.3 registrar (one worker process, SQLite) and verifier, through
//! `swtpm-ci/fleet` (the same script that measures fleets of 100): every
//! agent registered, added by the tenant and attested, none gave up, no
//! attestation failure over a 30 s steady window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;

#[test]
fn ten_agents_booting_together_are_all_registered_added_and_attested() {
    if common::template().is_err() {
        common::skip::<()>("no swtpm template (swtpm-ci/install)");
        return;
    }
    let dir = common::state_dir();
    let figures = dir.path().join("fleet.json");
    let out = Command::new(common::script("fleet"))
        .args([
            "10",
            "pull",
            "--steady",
            "30",
            "--binary",
            common::AGENT_BIN,
        ])
        .arg("--json")
        .arg(&figures)
        .output()
        .expect("swtpm-ci/fleet");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&figures).unwrap_or_default())
            .unwrap_or_else(|e| panic!("no figures ({e}):\n{printed}"));
    let ours = &results[0];
    assert_eq!(ours["agents"], 10, "{printed}");
    assert_eq!(ours["registered"], 10, "{printed}");
    assert_eq!(ours["tenant_add_failures"], 0, "{printed}");
    assert_eq!(ours["attested"], 10, "{printed}");
    assert_eq!(ours["gave_up"], 0, "{printed}");
    assert_eq!(ours["steady_failures"], 0, "{printed}");
    assert!(
        ours["attestations_in_window"].as_u64().unwrap_or(0) >= 10,
        "{printed}"
    );
    assert!(out.status.success(), "{printed}");
}
