//! Starting the agent binary with real config files: the upstream
//! `agent.conf` written by `keylime_upgrade_config --defaults` starts it
//! unchanged, and each bad value stops it at start with one line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{write_config, Agent, Peers, Swtpm};

/// Edits `key = ...` lines of an upstream config.
fn set(conf: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = conf
        .lines()
        .map(|l| {
            if l.split('=').next().map(str::trim) == Some(key) && !l.trim_start().starts_with('#') {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "upstream config has no {key}");
    out.join("\n")
}

#[test]
fn upstream_agent_conf_with_paths_ports_and_uuid_edited_starts_and_registers() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let upstream = std::fs::read_to_string(peers.dir.path().join("conf/agent.conf"))
        .expect("upstream agent.conf");
    let dir = common::state_dir();
    let port = common::free_port().to_string();
    let mut conf = upstream.clone();
    for (key, value) in [
        (
            "uuid",
            "\"6bb5a3b6-2f3c-4c39-9d4a-1f3c2b1a0e01\"".to_string(),
        ),
        (
            "keylime_dir",
            format!("{:?}", dir.path().display().to_string()),
        ),
        (
            "trusted_client_ca",
            format!(
                "{:?}",
                peers.cv_ca().join("cacert.crt").display().to_string()
            ),
        ),
        ("port", port.clone()),
        ("contact_port", port),
        ("registrar_port", peers.registrar_port.to_string()),
    ] {
        conf = set(&conf, key, &value);
    }
    let file = dir.path().join("agent.conf");
    std::fs::write(&file, conf).expect("write");
    let mut agent = Agent::spawn(&file, &tpm.tcti(), &[]);
    agent.wait_for("registered and activated", 30);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(
        !log.contains("unknown key"),
        "every upstream key is known: {log}"
    );
}

#[test]
fn each_bad_value_stops_the_agent_with_one_line() {
    let cases = [
        ("uuid", "\"not-a-uuid\"", "not-a-uuid"),
        ("port", "99999", "99999"),
        ("tpm_hash_alg", "\"md5\"", "md5"),
        ("ek_handle", "\"0x01000000\"", "0x01000000"),
        (
            "trusted_client_ca",
            "\"/nonexistent/cacert.crt\"",
            "/nonexistent/cacert.crt",
        ),
    ];
    for (key, value, shown) in cases {
        let dir = common::state_dir();
        let mut lines = vec![format!(
            "keylime_dir = {:?}",
            dir.path().display().to_string()
        )];
        if key != "trusted_client_ca" {
            lines.push("enable_agent_mtls = false".into());
        }
        lines.push(format!("{key} = {value}"));
        let file = write_config(dir.path(), &lines);
        let mut agent = Agent::spawn(&file, "swtpm:host=127.0.0.1,port=1", &[]);
        assert_eq!(
            agent.wait_exit(10),
            Some(2),
            "{key}: exit status 2\n{}",
            agent.output()
        );
        let out = agent.output();
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{key}: exactly one line, got:\n{out}");
        assert!(
            lines[0].contains(key) && lines[0].contains(shown) && lines[0].contains("expected"),
            "{}",
            lines[0]
        );
    }
}
