//! The core end-to-end cases against every Keylime release in the field
//! (7.12.2, 7.13.1, 7.14.0, 7.14.2 and 7.14.3, each from its own venv), each with an RSA
//! and an ECC (P-256 EK, ECDSA AK) identity: register and activate,
//! `keylime_tenant -c add` with a PCR 17 policy, an IMA runtime policy and
//! a payload with `--verify`, attestation over at least five polls, then
//! PCR 17 changed behind the agent → Invalid Quote. Where a release cannot
//! verify an identity (ECDSA on 7.12), the agent must say so at start and
//! the release must indeed refuse it. Also: registration with each
//! release's registrar when `api_versions` or `registrar_api_versions`
//! limit the versions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{
    ima_entries, registered_agent, wait_until, Peers, Release, Swtpm, KEYLIME_7_12, KEYLIME_7_13,
    KEYLIME_7_14, KEYLIME_7_14_0, KEYLIME_7_14_2,
};

const GET_QUOTE: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// RSA 2048 EK, RSASSA AK (the default).
    Rsa,
    /// ECC P-256 EK, ECDSA P-256 AK.
    Ecc,
}

impl Identity {
    fn config(self) -> Vec<String> {
        match self {
            Self::Rsa => vec![],
            Self::Ecc => vec![
                "tpm_encryption_alg = \"ecc\"".into(),
                "tpm_signing_alg = \"ecdsa\"".into(),
            ],
        }
    }

    /// `enc_alg` as the verifier records it: the API version the release
    /// uses decides the spelling (2.4 for releases before 7.14, see
    /// `/version`'s `supported_version`; sized names from 2.5 on).
    fn recorded_enc_alg(self, release: Release) -> &'static str {
        match (self, negotiated(release) >= "2.5") {
            (Self::Rsa, false) => "rsa",
            (Self::Ecc, false) => "ecc",
            (Self::Rsa, true) => "rsa2048",
            (Self::Ecc, true) => "ecc256",
        }
    }
}

/// The agent API version a release ends up using with this agent: 7.14
/// negotiates over `supported_versions` (its own newest), older releases
/// take `supported_version` (2.4).
fn negotiated(release: Release) -> &'static str {
    if release.api >= "2.5" {
        release.api
    } else {
        "2.4"
    }
}

fn core_cases(release: Release, identity: Identity, id: &str) {
    let Some(peers) = Peers::start_release("all", release) else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    tpm.extend_pcr10(&ima_entries(&ima, 5, 0, Some(&policy)));
    let mut extra = vec![format!("ima_ml_path = {:?}", ima.display().to_string())];
    extra.extend(identity.config());
    let (mut agent, _, port) = registered_agent(&peers, &tpm, &dir, id, &extra);

    // Registered and activated with the release's own registrar API.
    assert!(
        agent.output().contains(&format!(
            "registered and activated (registrar API {})",
            release.api
        )),
        "{}",
        agent.output()
    );
    let (status, body) = peers.registrar_agent(id);
    assert_eq!(status, 200, "registrar record: {body}");
    assert!(body["results"]["aik_tpm"].as_str().is_some(), "{body}");

    if identity == Identity::Ecc {
        peers.tenant_accepts_ecdsa();
    }
    let payload = dir.path().join("payload.bin");
    let mut content = vec![0u8; 4096];
    openssl::rand::rand_bytes(&mut content).expect("rand");
    std::fs::write(&payload, &content).expect("payload");
    let add = [
        "--runtime-policy",
        policy.to_str().expect("utf8"),
        "-f",
        payload.to_str().expect("utf8"),
        "--verify",
    ];

    if release == KEYLIME_7_12 && identity == Identity::Ecc {
        // The agent said at start that this release cannot verify ECDSA
        // quotes, and the release indeed refuses the identity quote.
        agent.wait_for("cannot verify ECDSA quotes", 10);
        let log = agent.output();
        let warning: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("cannot verify ECDSA quotes"))
            .collect();
        assert_eq!(warning.len(), 1, "one line at start:\n{log}");
        assert!(warning[0].contains("WARN"), "{}", warning[0]);
        let (ok, text) = peers.try_tenant_add(id, port, &add);
        assert!(
            !ok && text.contains("PCR #16 was not included"),
            "7.12 was expected to refuse the ECDSA quote:\n{text}"
        );
        return;
    }
    assert!(
        !agent.output().contains("cannot verify ECDSA quotes"),
        "no refusal warning for {release:?} {identity:?}"
    );

    // tenant add with a PCR 17 policy, an IMA policy and a verified payload.
    let log = peers.tenant_add(id, port, &add);
    assert!(log.contains("Successful key derivation"), "{log}");
    let stored = dir.path().join("secure/unzipped/decrypted_payload");
    assert!(wait_until(10, || stored.exists()), "{}", agent.output());
    assert!(
        std::fs::read(&stored).expect("read") == content,
        "payload differs"
    );

    // Attestation goes on over at least five polls.
    assert!(
        wait_until(60, || peers.verifier_state(id).1 >= 6),
        "attestation stalled: {}",
        peers.verifier_agent(id)
    );
    assert_eq!(
        peers.verifier_state(id).0,
        GET_QUOTE,
        "{}",
        peers.verifier_agent(id)
    );
    assert_eq!(
        peers.verifier_db(id, "supported_version"),
        negotiated(release)
    );
    assert_eq!(
        peers.verifier_db(id, "enc_alg"),
        identity.recorded_enc_alg(release)
    );
    assert_eq!(peers.verifier_db(id, "next_ima_ml_entry"), "5");

    // PCR 17 changed behind the agent: Invalid Quote.
    tpm.expect_invalid_quote_after_pcr17_change(&peers, id);
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn keylime_7_12_rsa() {
    core_cases(
        KEYLIME_7_12,
        Identity::Rsa,
        "71200000-aaaa-4bbb-8ccc-000000000001",
    );
}

#[test]
fn keylime_7_12_ecc_is_refused_and_said_at_start() {
    core_cases(
        KEYLIME_7_12,
        Identity::Ecc,
        "71200000-aaaa-4bbb-8ccc-000000000002",
    );
}

#[test]
fn keylime_7_13_rsa() {
    core_cases(
        KEYLIME_7_13,
        Identity::Rsa,
        "71300000-aaaa-4bbb-8ccc-000000000001",
    );
}

#[test]
fn keylime_7_13_ecc() {
    core_cases(
        KEYLIME_7_13,
        Identity::Ecc,
        "71300000-aaaa-4bbb-8ccc-000000000002",
    );
}

#[test]
fn keylime_7_14_0_rsa() {
    core_cases(
        KEYLIME_7_14_0,
        Identity::Rsa,
        "e6f7a8b9-0c1d-4e2f-8a3b-4c5d6e7f8a9b",
    );
}

#[test]
fn keylime_7_14_0_ecc() {
    core_cases(
        KEYLIME_7_14_0,
        Identity::Ecc,
        "f7a8b9c0-1d2e-4f3a-9b4c-5d6e7f8a9b0c",
    );
}

#[test]
fn keylime_7_14_2_rsa() {
    core_cases(
        KEYLIME_7_14_2,
        Identity::Rsa,
        "a8b9c0d1-2e3f-4a4b-8c5d-6e7f8a9b0c1d",
    );
}

#[test]
fn keylime_7_14_2_ecc() {
    core_cases(
        KEYLIME_7_14_2,
        Identity::Ecc,
        "b9c0d1e2-3f4a-4b5c-9d6e-7f8a9b0c1d2e",
    );
}

#[test]
fn keylime_7_14_rsa() {
    core_cases(
        KEYLIME_7_14,
        Identity::Rsa,
        "71400000-aaaa-4bbb-8ccc-000000000001",
    );
}

#[test]
fn keylime_7_14_ecc() {
    core_cases(
        KEYLIME_7_14,
        Identity::Ecc,
        "71400000-aaaa-4bbb-8ccc-000000000002",
    );
}

/// Limiting the agent API (`api_versions`) does not limit registration,
/// and `registrar_api_versions` does: one registrar per old release, two
/// agents each.
#[test]
fn registration_negotiates_with_each_old_registrar_under_version_limits() {
    for release in [KEYLIME_7_12, KEYLIME_7_13] {
        let Some(peers) = Peers::start_release("all", release) else {
            return;
        };
        let Some(tpm) = Swtpm::start() else { return };
        let dir = common::state_dir();
        // Only 2.5 and 2.6 served: registration still uses the registrar's newest.
        let (agent, _, _) = registered_agent(
            &peers,
            &tpm,
            &dir,
            "7aaa0000-aaaa-4bbb-8ccc-000000000001",
            &["api_versions = \"2.5, 2.6\"".into()],
        );
        assert!(
            agent
                .output()
                .contains(&format!("(registrar API {})", release.api)),
            "{}",
            agent.output()
        );
        agent.stop();

        // registrar_api_versions below the registrar's newest is honoured.
        let dir = common::state_dir();
        let (agent, _, _) = registered_agent(
            &peers,
            &tpm,
            &dir,
            "7aaa0000-aaaa-4bbb-8ccc-000000000002",
            &["registrar_api_versions = \"2.1, 2.2\"".into()],
        );
        assert!(
            agent.output().contains("(registrar API 2.2)"),
            "{}",
            agent.output()
        );
        agent.stop();

        // None in common: one line naming the key, and the agent stops.
        let dir = common::state_dir();
        let mut lines = common::agent_lines(
            dir.path(),
            "7aaa0000-aaaa-4bbb-8ccc-000000000003",
            Some(&peers),
        );
        lines.push("registrar_api_versions = \"2.5, 2.6\"".into());
        let config = common::write_config(dir.path(), &lines);
        let mut agent = common::Agent::spawn(&config, &tpm.tcti(), &[]);
        assert_eq!(agent.wait_exit(30), Some(1), "{}", agent.output());
        let log = agent.output();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(
            errors[0].contains("registrar_api_versions allows 2.5, 2.6: no version in common"),
            "{log}"
        );
    }
}
