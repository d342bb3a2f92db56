//! `keylime_agent check` against swtpm and the real 7.14.3 registrar: all
//! OK when everything is there; one FAIL line naming the problem, and a
//! non-zero exit, with swtpm stopped, with an unreadable CA file and with
//! the registrar down; and the TPM and the disk unchanged afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{agent_lines, write_config, Peers, Swtpm};

const ID: &str = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d";

/// `keylime_agent check [extra args]` with `config` and `tcti`.
fn check(config: &Path, tcti: &str, extra: &[&str]) -> Output {
    common::run_check(config, tcti, extra)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The config every case starts from: the real registrar, its CA as
/// `trusted_client_ca`, and IMA and UEFI logs that exist.
fn config_lines(dir: &Path, peers: &Peers) -> Vec<String> {
    let ima = dir.join("ima");
    let uefi = dir.join("uefi");
    std::fs::write(&ima, "").expect("ima");
    common::boot_log(&uefi, &dir.join("boot-keys"), &[]);
    let mut lines = agent_lines(dir, ID, Some(peers));
    lines.push(format!("ima_ml_path = {:?}", ima.display().to_string()));
    lines.push(format!(
        "measuredboot_ml_path = {:?}",
        uefi.display().to_string()
    ));
    // As root without run_as, check warns that scripts would run as root.
    lines.push("run_as = \"nobody:nogroup\"".into());
    lines
}

/// The lines that start with `status`.
fn lines_with<'a>(text: &'a str, status: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(status)).collect()
}

#[test]
fn check_prints_all_ok_against_swtpm_and_the_real_registrar_and_changes_nothing() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let config = write_config(dir.path(), &config_lines(dir.path(), &peers));
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let out = check(&config, &tpm.tcti(), &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "exit {:?}:\n{text}", out.status);
    let items: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for item in [
        "config",
        "tpm",
        "ek_certificate",
        "ak",
        "registrar",
        "trusted_client_ca",
        "secure_dir",
        "ima_log",
        "uefi_log",
        "run_as",
    ] {
        assert!(items.contains(&item), "{item} is checked:\n{text}");
    }
    assert_eq!(
        lines_with(&text, "OK").len(),
        text.lines().count(),
        "every line OK:\n{text}"
    );
    assert!(text.contains("manufacturer \"IBM\""), "{text}");
    assert!(text.contains("sha256"), "the PCR banks:\n{text}");
    assert!(
        text.contains("issued by"),
        "the EK certificate's issuer:\n{text}"
    );
    assert!(text.contains("valid until"), "and expiry:\n{text}");
    assert!(text.contains("API 2.6"), "the registrar's API:\n{text}");
    assert!(
        text.contains("TCG2 log, 38 events, banks sha256, PCRs 0,1,2,3,4,5,6,7,8,9,14"),
        "the boot log:\n{text}"
    );

    // --json says the same.
    let out = check(&config, &tpm.tcti(), &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["passed"], true, "{report}");
    assert!(report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .all(|f| f["status"] == "OK"));

    // Nothing was written, nothing left in the TPM.
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(before, after, "no file created (no AK, no mTLS key)");
    assert!(
        tpm.transient_handles().is_empty(),
        "no transient object left"
    );
}

#[test]
fn check_names_a_stopped_tpm_an_unreadable_ca_and_a_registrar_that_is_down() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(mut tpm) = Swtpm::start() else {
        return;
    };
    let dir = common::state_dir();
    let lines = config_lines(dir.path(), &peers);

    // The registrar down: nothing listens on its port.
    let mut down = lines.clone();
    down.retain(|l| !l.starts_with("registrar_port"));
    down.push(format!("registrar_port = {}", common::free_port()));
    let out = check(&write_config(dir.path(), &down), &tpm.tcti(), &[]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fails = lines_with(&text, "FAIL");
    assert_eq!(fails.len(), 1, "{text}");
    assert!(
        fails[0].contains("registrar") && fails[0].contains("fix:"),
        "{text}"
    );

    // A CA file that holds no certificate.
    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let mut bad_ca = lines.clone();
    bad_ca.retain(|l| !l.starts_with("trusted_client_ca"));
    bad_ca.push(format!(
        "trusted_client_ca = {:?}",
        garbage.display().to_string()
    ));
    let out = check(&write_config(dir.path(), &bad_ca), &tpm.tcti(), &[]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fails = lines_with(&text, "FAIL");
    assert_eq!(fails.len(), 1, "{text}");
    assert!(
        fails[0].contains("trusted_client_ca") && fails[0].contains("garbage-ca.pem"),
        "{text}"
    );

    // A boot log that is not a TCG2 log: the agent will not send it.
    let not_a_log = dir.path().join("not-a-log");
    std::fs::write(&not_a_log, [0u8; 32]).expect("write");
    let mut bad_log = lines.clone();
    bad_log.retain(|l| !l.starts_with("measuredboot_ml_path"));
    bad_log.push(format!(
        "measuredboot_ml_path = {:?}",
        not_a_log.display().to_string()
    ));
    let out = check(&write_config(dir.path(), &bad_log), &tpm.tcti(), &[]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the agent attests without it:\n{text}"
    );
    let warnings = lines_with(&text, "WARN");
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("uefi_log") && warnings[0].contains("not a TCG2 event log"),
        "{text}"
    );

    // swtpm stopped.
    let config = write_config(dir.path(), &lines);
    tpm.kill();
    let out = check(&config, &tpm.tcti(), &[]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fails = lines_with(&text, "FAIL");
    assert_eq!(fails.len(), 1, "{text}");
    assert!(
        fails[0].starts_with("FAIL tpm") && fails[0].contains(&tpm.tcti()),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "no TSS noise: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bad config value: one FAIL naming it, nothing else checked.
    let mut bad = lines;
    bad.push("tpm_hash_alg = \"md5\"".into());
    let out = check(&write_config(dir.path(), &bad), "swtpm:port=1", &[]);
    let text = stdout(&out);
    assert!(!out.status.success());
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("FAIL config") && text.contains("tpm_hash_alg"),
        "{text}"
    );
}
