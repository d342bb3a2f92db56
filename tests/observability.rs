//! What operators watch, against the real 7.14.3 peers and swtpm:
//! Prometheus metrics while the verifier attests, JSON log lines, the
//! audit trail through registration, a payload and a signed revocation,
//! and `keylime_agent info --json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use base64::Engine;
use common::{agent_lines, https_get, wait_until, write_config, Agent, Peers, Swtpm, AGENT_BIN};

/// `GET http://127.0.0.1:{port}{path}`: status and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Listening TCP sockets of process `pid`.
fn listening_sockets(pid: u32) -> usize {
    let out = Command::new("ss").args(["-ltnpH"]).output().expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .count()
}

#[test]
fn metrics_rise_while_the_real_verifier_attests_and_nothing_listens_without_metrics_address() {
    const ID: &str = "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a";
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let metrics_port = common::free_port();
    let (agent, _, port) = common::registered_agent(
        &peers,
        &tpm,
        &dir,
        ID,
        &[format!("metrics_address = \"127.0.0.1:{metrics_port}\"")],
    );
    assert!(agent.output().contains(&format!(
        "serving metrics on http://127.0.0.1:{metrics_port}/metrics"
    )));
    assert_eq!(listening_sockets(agent.pid()), 2, "the API and the metrics");
    peers.tenant_add(ID, port, &[]);
    assert!(
        wait_until(40, || peers.verifier_state(ID).1 >= 2),
        "{}",
        peers.verifier_agent(ID)
    );
    let served = r#"keylime_agent_quotes_total{kind="integrity",outcome="served"}"#;
    let (status, first) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200, "{first}");
    let before = sample(&first, served).expect("integrity quotes counted");
    assert!(before >= 2.0, "{first}");
    assert!(
        wait_until(30, || {
            sample(&http_get(metrics_port, "/metrics").1, served).unwrap_or(0.0) > before
        }),
        "the counter rises as the verifier polls"
    );
    let (_, text) = http_get(metrics_port, "/metrics");
    let quote_samples = sample(
        &text,
        r#"keylime_agent_tpm_transaction_seconds_count{kind="quote"}"#,
    )
    .expect("TPM histogram");
    assert!(quote_samples >= 3.0, "{text}");
    assert!(
        sample(
            &text,
            r#"keylime_agent_tpm_transaction_seconds_count{kind="activate_credential"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("keylime_agent_tpm_transaction_seconds_bucket{le=\"0.001\",kind=\"quote\"}")
            || text.contains(
                "keylime_agent_tpm_transaction_seconds_bucket{kind=\"quote\",le=\"0.001\"}"
            ),
        "histogram buckets: {text}"
    );
    assert_eq!(
        sample(&text, "keylime_agent_registered"),
        Some(1.0),
        "{text}"
    );
    let since = sample(&text, "keylime_agent_seconds_since_last_attestation").expect("since");
    assert!((0.0..10.0).contains(&since), "{since}");
    assert!(
        sample(
            &text,
            r#"keylime_agent_requests_total{endpoint="/v{version}/quotes/integrity",status="200"}"#
        )
        .is_some_and(|n| n >= before),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"keylime_agent_quotes_total{kind="identity",outcome="served"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "the tenant's identity quote: {text}"
    );
    assert!(sample(&text, "keylime_agent_process_resident_memory_bytes").is_some_and(|b| b > 1e6));
    assert!(sample(&text, "keylime_agent_process_open_fds").is_some_and(|n| n > 3.0));
    assert_eq!(http_get(metrics_port, "/other").0, 404);

    // Without metrics_address: the API socket only.
    let other_dir = common::state_dir();
    let lines = agent_lines(
        other_dir.path(),
        "0e1f2a3b-4c5d-4e6f-8a7b-8c9d0e1f2a3b",
        None,
    );
    let other_tpm = Swtpm::start().expect("swtpm");
    let mut other = Agent::spawn(
        &write_config(other_dir.path(), &lines),
        &other_tpm.tcti(),
        &[],
    );
    other.wait_for("serving API over plain HTTP", 30);
    assert_eq!(listening_sockets(other.pid()), 1, "nothing else listens");
    assert!(!other.output().contains("serving metrics"));
}

#[test]
fn with_log_format_json_every_line_is_a_json_object_with_fields() {
    const ID: &str = "1f2a3b4c-5d6e-4f7a-8b8c-9d0e1f2a3b4c";
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let port = common::free_port();
    let mut lines = agent_lines(dir.path(), ID, Some(&peers));
    lines.retain(|l| !l.starts_with("port = "));
    lines.push(format!("port = {port}"));
    lines.push("log_format = \"json\"".into());
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(
        &config,
        &tpm.tcti(),
        &[(
            "RUST_LOG",
            "debug,tss_esapi=warn,actix_server=warn,hyper_util=warn,hyper=warn,h2=warn,mio=warn",
        )],
    );
    agent.wait_for("registered and activated", 30);
    let cert = dir.path().join("server-cert.crt");
    let (status, _) = https_get(
        port,
        "/v2.6/quotes/identity?nonce=json0123456",
        &cert,
        Some(&peers.client()),
    )
    .expect("curl");
    assert_eq!(status, 200);
    let (status, _) =
        https_get(port, "/v2.6/quotes/identity", &cert, Some(&peers.client())).expect("curl");
    assert_eq!(status, 400);
    let log = agent.stop();
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(records.len() > 5, "{log}");
    for r in &records {
        assert!(r["timestamp"].is_string() && r["level"].is_string(), "{r}");
        assert!(r["message"].is_string(), "{r}");
    }
    let registered = records
        .iter()
        .find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("registered and activated"))
        })
        .expect("registration line");
    assert_eq!(registered["agent_id"], ID, "{registered}");
    assert_eq!(registered["api_version"], "2.6", "{registered}");
    let request = records
        .iter()
        .find(|r| r["message"] == "request" && r["endpoint"] == "/v{version}/quotes/identity")
        .expect("a request line");
    assert_eq!(request["status"], 200, "{request}");
    assert_eq!(request["api_version"], "2.6", "{request}");
    assert!(
        request["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{request}"
    );
    assert!(request["duration_ms"].is_number(), "{request}");
    assert!(
        records.iter().any(|r| r["event"] == "activated"),
        "audit records are log lines with an event field"
    );
}

#[test]
fn the_audit_file_records_registration_payload_and_revocation_in_order_without_keys() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let ca = peers.init_ca();
    let Some(tpm_a) = Swtpm::start() else { return };
    let Some(tpm_b) = Swtpm::start() else { return };
    let failing_dir = common::state_dir();
    let watcher_dir = common::state_dir();
    let failing_id = "2a3b4c5d-6e7f-4a8b-9c9d-0e1f2a3b4c5d";
    let watcher_id = "3b4c5d6e-7f8a-4b9c-8d0e-1f2a3b4c5d6e";
    let audit = watcher_dir.path().join("audit.jsonl");
    let (_failing, _, failing_port) =
        common::registered_agent(&peers, &tpm_a, &failing_dir, failing_id, &[]);
    let (watcher, _, watcher_port) = common::registered_agent(
        &peers,
        &tpm_b,
        &watcher_dir,
        watcher_id,
        &[format!("audit_log = {:?}", audit.display().to_string())],
    );
    // A --cert package with an autorun.sh of our own.
    let include = watcher_dir.path().join("include");
    std::fs::create_dir(&include).expect("include dir");
    std::fs::write(
        include.join("autorun.sh"),
        "#!/bin/sh\necho ran > autorun.out\n",
    )
    .expect("autorun");
    let ca_arg = ca.to_str().expect("utf8");
    peers.tenant_add(failing_id, failing_port, &["--cert", ca_arg]);
    peers.tenant_add(
        watcher_id,
        watcher_port,
        &[
            "--cert",
            ca_arg,
            "--include",
            include.to_str().expect("utf8"),
        ],
    );
    let unzipped = watcher_dir.path().join("secure/unzipped");
    assert!(
        wait_until(30, || unzipped.join("autorun.out").exists()),
        "{}",
        watcher.output()
    );
    assert!(
        wait_until(40, || peers.verifier_state(failing_id).1 >= 1),
        "{}",
        peers.verifier_agent(failing_id)
    );
    tpm_a.change_pcr17();
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    assert!(
        wait_until(60, || events()
            .iter()
            .any(|e| e["event"] == "revocation_received")),
        "no revocation recorded:\n{}",
        watcher.output()
    );
    let events = events();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let position = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    let order = [
        "config_loaded",
        "registered",
        "activated",
        "identity_quote_served",
        "k_verified",
        "payload_decrypted",
        "payload_extracted",
        "payload_run",
        "revocation_received",
    ];
    for pair in order.windows(2) {
        assert!(
            position(pair[0]) < position(pair[1]),
            "{pair:?} out of order: {names:?}"
        );
    }
    for half in ["u_received", "v_received"] {
        assert!(position(half) < position("k_verified"), "{names:?}");
    }
    let revocation = &events[position("revocation_received")];
    assert_eq!(revocation["verdict"], "verified", "{revocation}");
    assert_eq!(revocation["revoked_agent"], failing_id, "{revocation}");
    assert_eq!(events[position("payload_run")]["exit_status"], "0");
    assert!(events[position("identity_quote_served")]["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1")));
    assert!(events.iter().all(|e| e["timestamp"].is_string()));

    // 0600, and no key material: neither K nor anything key-shaped.
    let mode = std::fs::metadata(&audit)
        .expect("audit")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&audit).expect("audit");
    let k = std::fs::read(unzipped.join("derived_tci_key")).expect("K");
    assert!(
        !text.contains(&hex::encode(&k)),
        "K (hex) in the audit file"
    );
    assert!(
        !text.contains(&base64::engine::general_purpose::STANDARD.encode(&k)),
        "K (base64) in the audit file"
    );
    assert!(
        !text.contains("encrypted_key") && !text.contains("auth_tag\":\""),
        "{text}"
    );
    let config_record = &events[position("config_loaded")];
    assert_eq!(config_record["secrets"]["tpm_ownerpassword"], "unset");
}

#[test]
fn info_json_names_the_tpm_manufacturer_and_pcr_banks() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let lines = agent_lines(dir.path(), "4c5d6e7f-8a9b-4c0d-8e1f-2a3b4c5d6e7f", None);
    let config = write_config(dir.path(), &lines);
    let out = Command::new(AGENT_BIN)
        .args(["info", "--json"])
        .env("KEYLIME_AGENT_CONFIG", &config)
        .env("TCTI", tpm.tcti())
        .output()
        .expect("info");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(info["tpm"]["manufacturer"], "IBM", "{info}");
    assert!(
        info["tpm"]["pcr_banks"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x == "sha256")),
        "{info}"
    );
    assert_eq!(info["agent"]["id"], "4c5d6e7f-8a9b-4c0d-8e1f-2a3b4c5d6e7f");
    assert_eq!(info["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["agent"]["build"]["rustc"]
        .as_str()
        .is_some_and(|r| r.starts_with("rustc ")));
    assert!(info["host"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.trim().is_empty()));
    assert!(info["host"]["uptime_seconds"].as_u64().is_some());
    assert!(info["tpm"]["ek"]["certificate"]["issuer"]
        .as_str()
        .is_some_and(|i| i.contains("swtpm")));
    assert!(
        !dir.path().join("agent_data.json").exists(),
        "info creates no AK"
    );
    // The text form says the same, one `key: value` per line.
    let out = Command::new(AGENT_BIN)
        .arg("info")
        .env("KEYLIME_AGENT_CONFIG", &config)
        .env("TCTI", tpm.tcti())
        .output()
        .expect("info");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "tpm.manufacturer: IBM"), "{text}");
}

/// The audit file's claim, seen in the system calls: each record is one
/// write to the file and is synced (fdatasync) before the next record is
/// written. The agent runs under strace with the real registrar.
#[test]
fn each_audit_record_is_synced_before_the_next_is_written() {
    if Command::new("strace").arg("-V").output().is_err() {
        common::skip::<()>("strace is not installed (swtpm-ci/install brings it)");
        return;
    }
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let audit = dir.path().join("audit.jsonl");
    let trace = dir.path().join("trace");
    let id = "4d5e6f70-8192-4a3b-8c4d-5e6f70819203";
    let mut lines = common::agent_lines(dir.path(), id, Some(&peers));
    lines.push(format!("audit_log = {:?}", audit.display().to_string()));
    let config = common::write_config(dir.path(), &lines);
    let wrapper = dir.path().join("traced-agent");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq -y -e trace=write,fdatasync,fsync -o {} {} \"$@\"\n",
            trace.display(),
            common::AGENT_BIN
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut agent = Agent::spawn_logged(
        wrapper.to_str().expect("path"),
        &config,
        dir.path().join("agent.log"),
        &tpm.tcti(),
        &[],
    );
    agent.wait_for("registered and activated", 60);
    let records = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(wait_until(10, || records() >= 3), "{}", agent.output());
    // Stop the traced agent itself (strace's child); strace ends with it.
    let traced = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.pid()))
        .ok()
        .and_then(|c| {
            c.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .expect("the traced agent");
    let _ = Command::new("kill")
        .args(["-TERM", &traced.to_string()])
        .status();
    assert!(agent.wait_exit(30).is_some(), "the agent did not stop");
    let written = records();
    // The calls on the audit file, in order: W for a write, S for a sync.
    let name = audit.display().to_string();
    let calls: String = std::fs::read_to_string(&trace)
        .expect("trace")
        .lines()
        .filter(|l| l.contains(&format!("<{name}>")))
        .filter_map(|l| {
            if l.contains("fdatasync(") || l.contains("fsync(") {
                Some('S')
            } else if l.contains("write(") {
                Some('W')
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        calls,
        "WS".repeat(written),
        "{written} records: each one write, then a sync"
    );
}
