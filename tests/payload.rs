//! Secure payloads and revocation end to end with the real Keylime 7.14.3
//! tenant and verifier: `-f FILE --verify`, a zip with `autorun.sh`, a
//! `--cert` package, and signed revocation notifications between two
//! agents attested by one verifier.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{agent_post, wait_until, Agent, Peers, StateDir, Swtpm};

struct Node {
    agent: Agent,
    dir: StateDir,
    tpm: Swtpm,
    port: u16,
    id: String,
}

impl Node {
    fn start(peers: &Peers, id: &str, extra: &[String]) -> Option<Self> {
        let tpm = Swtpm::start()?;
        let dir = common::state_dir();
        let (agent, _, port) = common::registered_agent(peers, &tpm, &dir, id, extra);
        Some(Self {
            agent,
            dir,
            tpm,
            port,
            id: id.into(),
        })
    }

    fn unzipped(&self) -> PathBuf {
        self.dir.path().join("secure/unzipped")
    }

    fn add(&self, peers: &Peers, extra: &[&str]) -> String {
        peers.tenant_add(&self.id, self.port, extra)
    }
}

#[test]
fn a_file_payload_is_verified_by_the_tenant_and_stored_byte_identical() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(node) = Node::start(&peers, "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", &[]) else {
        return;
    };
    let file = node.dir.path().join("payload.bin");
    let mut content = vec![0u8; 70_000];
    openssl::rand::rand_bytes(&mut content).expect("rand");
    std::fs::write(&file, &content).expect("write");
    let log = node.add(&peers, &["-f", file.to_str().expect("utf8"), "--verify"]);
    assert!(
        log.contains("Successful key derivation"),
        "the tenant's keys/verify check: {log}"
    );
    let stored = node.unzipped().join("decrypted_payload");
    assert!(wait_until(10, || stored.exists()));
    assert!(
        std::fs::read(&stored).expect("read") == content,
        "decrypted payload differs from the file"
    );
    let key = std::fs::metadata(node.unzipped().join("derived_tci_key")).expect("K stored");
    assert_eq!((key.len(), key.permissions().mode() & 0o777), (32, 0o600));
    let agent_log = node.agent.output();
    assert!(
        !agent_log.contains(&hex::encode(
            std::fs::read(node.unzipped().join("derived_tci_key")).expect("k")
        )),
        "K must never be logged"
    );
}

fn zip(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    for (name, body) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("start");
        w.write_all(body.as_bytes()).expect("write");
    }
    w.finish().expect("finish");
    buf.into_inner()
}

#[test]
fn a_zip_payload_is_extracted_and_its_autorun_script_runs() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(mut node) = Node::start(&peers, "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d", &[]) else {
        return;
    };
    let marker = node.dir.path().join("autorun-ran");
    let script = format!(
        "#!/bin/sh\necho \"autorun in $(pwd)\"\ncat data.txt > {}\n",
        marker.display()
    );
    let payload = node.dir.path().join("payload.zip");
    std::fs::write(
        &payload,
        zip(&[("autorun.sh", &script), ("data.txt", "from the payload\n")]),
    )
    .expect("zip");
    node.add(&peers, &["-f", payload.to_str().expect("utf8"), "--verify"]);
    // The exit line comes once the script has exited and its output is
    // drained: the marker is complete by then (it exists, empty, earlier).
    node.agent
        .wait_for("payload script: exited with status 0", 30);
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "from the payload\n"
    );
    assert!(node.unzipped().join("data.txt").exists());
    let log = node.agent.output();
    assert!(
        log.contains("payload script: autorun in"),
        "script output drained to the log: {log}"
    );
}

#[test]
fn a_cert_package_is_delivered_byte_for_byte_and_private() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let id = "3b4c5d6e-7f80-4a9b-8c1d-2e3f4a5b6c7d";
    let Some(node) = Node::start(&peers, id, &[]) else {
        return;
    };
    let ca = peers.init_ca();
    node.add(&peers, &["--cert", ca.to_str().expect("utf8")]);
    // The tenant's CA made a certificate and key for the agent; the package
    // carries them, the CA and the revocation certificate, byte for byte,
    // each readable by the agent's user alone.
    for name in [
        format!("{id}-cert.crt"),
        format!("{id}-private.pem"),
        "cacert.crt".into(),
        "RevocationNotifier-cert.crt".into(),
    ] {
        let path = node.unzipped().join(&name);
        let made =
            std::fs::read(ca.join(&name)).unwrap_or_else(|e| panic!("{name} in the CA: {e}"));
        // Until the bytes match: an entry is created, then written.
        assert!(
            wait_until(20, || std::fs::read(&path).is_ok_and(|d| d == made)),
            "{name} not delivered byte for byte ({:?}):\n{}",
            std::fs::read(&path).map(|d| d.len()),
            node.agent.output()
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} is mode {mode:o}");
    }
    let cert = openssl::x509::X509::from_pem(
        &std::fs::read(node.unzipped().join(format!("{id}-cert.crt"))).expect("cert"),
    )
    .expect("PEM certificate");
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(node.unzipped().join(format!("{id}-private.pem"))).expect("key"),
    )
    .expect("PEM key");
    assert!(
        cert.public_key().expect("public").public_eq(&key),
        "the key is the certificate's"
    );
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    assert_eq!(cn.as_deref(), Some(id), "issued to the agent");
}

/// A revocation action that appends each message it is given, one line
/// each, to `marker`.
fn marker_action(dir: &Path, marker: &Path) -> PathBuf {
    let actions = dir.join("actions");
    std::fs::create_dir_all(&actions).expect("mkdir");
    let action = actions.join("record.sh");
    std::fs::write(
        &action,
        format!(
            "#!/bin/sh\n{{ cat \"$1\"; echo; }} >> {}\n",
            marker.display()
        ),
    )
    .expect("action");
    std::fs::set_permissions(&action, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    actions
}

#[test]
fn a_signed_revocation_runs_the_other_agents_action_and_forgeries_run_nothing() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let ca = peers.init_ca();
    let Some(failing) = Node::start(&peers, "4c5d6e7f-8091-4aab-9c2d-3e4f5a6b7c8d", &[]) else {
        return;
    };
    let marker_dir = common::state_dir();
    let marker = marker_dir.path().join("revoked.json");
    let actions = marker_action(marker_dir.path(), &marker);
    let extra = [
        "revocation_actions = \"record.sh\"".to_string(),
        format!(
            "revocation_actions_dir = {:?}",
            actions.display().to_string()
        ),
    ];
    let Some(watcher) = Node::start(&peers, "5d6e7f80-91a2-4bbc-8d3e-4f5a6b7c8d9e", &extra) else {
        return;
    };
    failing.add(&peers, &["--cert", ca.to_str().expect("utf8")]);
    watcher.add(&peers, &["--cert", ca.to_str().expect("utf8")]);
    let cert = watcher.unzipped().join("RevocationNotifier-cert.crt");
    assert!(
        wait_until(20, || cert.exists()),
        "no revocation certificate delivered"
    );
    for node in [&failing, &watcher] {
        assert!(
            wait_until(40, || peers.verifier_state(&node.id).1 >= 1),
            "{}",
            peers.verifier_agent(&node.id)
        );
    }

    // Unsigned and forged notifications are answered, each with its
    // verdict, and run nothing: the action file ends up holding the genuine
    // message alone.
    let msg =
        serde_json::json!({"type": "revocation", "agent_id": failing.id, "event_id": "forged"})
            .to_string();
    let client = peers.client();
    let server_cert = watcher.dir.path().join("server-cert.crt");
    for (signature, verdict) in [
        ("", "Notification not signed; no action taken"),
        ("bm90IGEgc2lnbmF0dXJl", "Invalid signature; no action taken"),
    ] {
        let body = serde_json::json!({"msg": msg, "signature": signature}).to_string();
        let (status, reply) = agent_post(
            watcher.port,
            "/v2.6/notifications/revocation",
            &server_cert,
            &client,
            &body,
        )
        .expect("post");
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["status"], verdict, "{reply}");
    }
    let output = watcher.agent.output();
    for line in [
        "event forged) is not signed; no action taken",
        "event forged) has an invalid signature; no action taken",
    ] {
        assert!(output.contains(line), "{line:?} missing:\n{output}");
    }

    // The real thing: PCR 17 changes on one node, the verifier revokes it,
    // and the other node's action runs with the signed message.
    failing.tpm.change_pcr17();
    assert!(
        wait_until(30, || peers.verifier_state(&failing.id).0 == 9),
        "{}",
        peers.verifier_agent(&failing.id)
    );
    assert!(
        wait_until(30, || marker.exists()),
        "no action ran:\n{}",
        watcher.agent.output()
    );
    assert!(
        wait_until(10, || watcher
            .agent
            .output()
            .contains("record.sh: exited with status 0")),
        "the action did not finish:\n{}",
        watcher.agent.output()
    );
    let recorded = std::fs::read_to_string(&marker).expect("marker");
    let messages: Vec<&str> = recorded.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(messages.len(), 1, "one message acted on: {recorded}");
    let event: serde_json::Value = serde_json::from_str(messages[0]).expect("JSON");
    assert_eq!(event["agent_id"], failing.id.as_str());
    assert_eq!(event["type"], "revocation");
    // What the verifier writes and the forgery lacks.
    assert_ne!(event["event_id"], "forged", "{event}");
    assert!(event["event_time"].is_string(), "{event}");
    assert!(event["severity_label"].is_string(), "{event}");
    // The healthy node keeps attesting: back in Get Quote (3) with more
    // quotes than now (on a slow machine it may be between two states).
    let count = peers.verifier_state(&watcher.id).1;
    assert!(
        wait_until(30, || {
            let (state, n) = peers.verifier_state(&watcher.id);
            state == 3 && n > count
        }),
        "the healthy node keeps attesting: {}",
        peers.verifier_agent(&watcher.id)
    );
}
