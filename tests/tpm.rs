//! The TPM owner against a fresh swtpm: EK (RSA and ECC) with its
//! certificate, AK and NK persisted and reused across restarts, and no
//! transient handle left behind on success or failure paths.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;

use common::{write_config, Swtpm};
use keylime_agent::agent::{AgentCore, AgentError};
use keylime_agent::config::Config;
use keylime_agent::tpm::{CredentialBlob, TpmError};

fn config(dir: &Path, tpm: &Swtpm, uuid: &str, extra: &[&str]) -> Config {
    let mut lines = common::agent_lines(dir, uuid, None);
    lines.extend(extra.iter().map(|s| s.to_string()));
    let file = write_config(dir, &lines);
    common::load_config(file, tpm.tcti())
}

fn cert_public_pem(cert_pem: &str) -> String {
    let cert = openssl::x509::X509::from_pem(cert_pem.as_bytes()).expect("cert");
    String::from_utf8(
        cert.public_key()
            .expect("key")
            .public_key_to_pem()
            .expect("pem"),
    )
    .expect("utf8")
}

#[tokio::test]
async fn rsa_ek_certificate_and_persisted_ak_nk_id_survive_a_restart() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let cfg = config(dir.path(), &tpm, "generate", &[]);

    let first = AgentCore::prepare(&cfg).await.expect("first start");
    let keys = first.tpm.keys().clone();
    let cert = keys
        .ek_cert_pem
        .clone()
        .expect("RSA EK certificate read from NV");
    assert_eq!(
        cert.matches("BEGIN CERTIFICATE").count(),
        1,
        "the certificate alone"
    );
    assert_eq!(
        cert_public_pem(&cert),
        keys.ek_public_pem,
        "certificate is for this EK"
    );
    assert!(!keys.ak_reused);
    assert_eq!(
        first.tpm.transient_handles().await.expect("handles").len(),
        2,
        "EK and AK"
    );
    let (id, nk) = (first.agent_id.clone(), first.nk.public_pem().to_string());
    first.tpm.shutdown().await;
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "stop flushes EK and AK"
    );

    let second = AgentCore::prepare(&cfg).await.expect("second start");
    assert!(
        second.tpm.keys().ak_reused,
        "AK reloaded from agent_data_path"
    );
    assert_eq!(second.tpm.keys().ak_public, keys.ak_public);
    assert_eq!(second.tpm.keys().ek_public, keys.ek_public);
    assert_eq!(second.nk.public_pem(), nk, "NK PEM stable byte for byte");
    assert_eq!(second.agent_id, id, "generated id persisted");
    second.tpm.shutdown().await;
    assert_eq!(tpm.transient_handles(), Vec::<u32>::new());
}

#[tokio::test]
async fn ecc_ek_with_certificate_and_ecdsa_ak() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let extra = [
        "tpm_encryption_alg = \"ecc\"",
        "tpm_signing_alg = \"ecdsa\"",
    ];
    let cfg = config(dir.path(), &tpm, "hash_ek", &extra);
    let core = AgentCore::prepare(&cfg).await.expect("start");
    let keys = core.tpm.keys();
    assert!(keys.ek_public_pem.contains("BEGIN PUBLIC KEY"));
    let ek = openssl::pkey::PKey::public_key_from_pem(keys.ek_public_pem.as_bytes()).expect("ek");
    assert_eq!(ek.id(), openssl::pkey::Id::EC);
    let cert = keys
        .ek_cert_pem
        .as_deref()
        .expect("ECC EK certificate read from NV 0x01c0000a");
    assert_eq!(cert_public_pem(cert), keys.ek_public_pem);
    // TPM2B_PUBLIC of the AK: u16 size, then TPMT_PUBLIC starting with type ECC (0x0023).
    assert_eq!(&keys.ak_public[2..4], &[0x00, 0x23]);
    let expected_id = hex::encode(openssl::sha::sha256(keys.ek_public_pem.as_bytes()));
    assert_eq!(core.agent_id.as_str(), expected_id);
    core.tpm.shutdown().await;
    assert_eq!(tpm.transient_handles(), Vec::<u32>::new());
}

#[tokio::test]
async fn failed_activations_leak_no_handle() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let core = AgentCore::prepare(&config(dir.path(), &tpm, "generate", &[]))
        .await
        .expect("start");
    let baseline = core.tpm.transient_handles().await.expect("handles");
    for i in 0..20u8 {
        let garbage = CredentialBlob {
            id_object: vec![i; 50],
            secret: vec![i; 256],
        };
        assert!(
            core.tpm.activate_credential(garbage).await.is_err(),
            "garbage must not activate"
        );
    }
    assert_eq!(
        core.tpm.transient_handles().await.expect("handles"),
        baseline
    );
    core.tpm.shutdown().await;
    assert!(
        core.tpm.transient_handles().await.is_err(),
        "calls after shutdown fail cleanly"
    );
    assert_eq!(tpm.transient_handles(), Vec::<u32>::new());
}

fn tpm2(tpm: &Swtpm, args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("tpm2-tools");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_persistent_ek_handle_is_used_and_not_flushed() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    // swtpm_setup leaves the RSA EK persistent at the TCG's usual handle.
    tpm2(&tpm, &["tpm2_readpublic", "-c", "0x81010001"]);
    let cfg = config(dir.path(), &tpm, "hash_ek", &["ek_handle = \"0x81010001\""]);
    let core = AgentCore::prepare(&cfg)
        .await
        .expect("start with a persistent EK");
    let keys = core.tpm.keys().clone();
    let cert = keys.ek_cert_pem.clone().expect("certificate");
    assert_eq!(
        cert_public_pem(&cert),
        keys.ek_public_pem,
        "the persistent EK is the certified one"
    );
    assert_eq!(
        core.tpm.transient_handles().await.expect("handles").len(),
        1,
        "only the AK is transient"
    );
    core.tpm.shutdown().await;
    assert_eq!(tpm.transient_handles(), Vec::<u32>::new());
    // Still there for the next start.
    let again = AgentCore::prepare(&cfg).await.expect("second start");
    assert_eq!(again.tpm.keys().ek_public, keys.ek_public);
    assert!(again.tpm.keys().ak_reused);
    again.tpm.shutdown().await;
}

#[tokio::test]
async fn the_endorsement_password_is_used_in_plain_and_hex_form() {
    let Some(tpm) = Swtpm::start() else { return };
    tpm2(&tpm, &["tpm2_changeauth", "-c", "e", "s3cret"]);
    let dir = common::state_dir();
    let without = config(dir.path(), &tpm, "generate", &[]);
    let err = AgentCore::prepare(&without)
        .await
        .expect_err("no password, no EK");
    // TPM_RC_BAD_AUTH (0x9a2) from the TPM, while creating the EK.
    match &err {
        AgentError::Tpm(TpmError::Tss { op, .. }) => assert_eq!(*op, "creating the EK", "{err}"),
        other => panic!("not the TPM's refusal: {other:?}"),
    }
    assert!(err.to_string().contains("0x000009a2"), "{err}");
    assert_eq!(
        tpm.transient_handles(),
        Vec::<u32>::new(),
        "nothing left after the failure"
    );
    for form in ["s3cret", "hex:733363726574"] {
        let dir = common::state_dir();
        let cfg = config(
            dir.path(),
            &tpm,
            "generate",
            &[&format!("tpm_ownerpassword = {form:?}")],
        );
        let core = AgentCore::prepare(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        core.tpm.shutdown().await;
    }
    assert_eq!(tpm.transient_handles(), Vec::<u32>::new());
}
