//! Measured boot end to end: a UEFI Secure Boot event log written by
//! `tcg_boot_log` and replayed into swtpm, so that the log and the PCRs
//! agree as firmware leaves them; `tpm2_eventlog` reads it; the agent
//! sends it with quotes of the PCRs it covers; the real Keylime 7.14.3
//! verifier replays it against the quoted PCRs and judges it with a
//! reference state made by `keylime-policy create measured-boot`, under
//! its `example` policy and under `accept-all`, in pull and push mode; and
//! fails the agent when the log and the PCRs disagree or the boot differs
//! from the reference state. The `example` cases also run against the
//! 7.13.1 and 7.12.2 verifiers (pull mode, API 2.4), whose parser fails a
//! log on any warning `tpm2_eventlog` prints: the generated logs must
//! draw none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{
    registered_agent, wait_until, Agent, Peers, Release, StateDir, Swtpm, KEYLIME_7_12,
    KEYLIME_7_13, KEYLIME_7_14,
};
use keylime_agent::evidence::tcg::EventLog;

const NONCE: &str = "mbNonce0123456789";
/// What the tenant asks for with a measured-boot policy: PCRs 0-9, 11-15.
const MB_MASK: &str = "0xfbff";
const GET_QUOTE: i64 = 3;
const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;

/// `tcg_boot_log write DIR/NAME --keys KEYS ARGS`; returns the log.
fn write_log(dir: &Path, name: &str, keys: &Path, args: &[&str]) -> PathBuf {
    let log = dir.join(name);
    common::boot_log(&log, keys, args);
    log
}

/// `tcg_boot_log replay` into `tpm`, leaving out event `withhold`.
fn replay(tpm: &Swtpm, log: &Path, withhold: Option<usize>) {
    let mut cmd = Command::new(common::boot_log_tool());
    cmd.arg("replay").arg(log).args(["--tcti", &tpm.tcti()]);
    if let Some(n) = withhold {
        cmd.args(["--withhold", &n.to_string()]);
    }
    common::run_ok(&mut cmd, "tcg_boot_log replay");
}

/// The position (1-based, as `--withhold` counts) of GRUB's image event.
fn grub_event(log: &Path) -> usize {
    let parsed = EventLog::parse(&std::fs::read(log).unwrap()).unwrap();
    parsed
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pcr == 4 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("GRUB's image event")
}

/// `{pcr: hex}` of one bank in `tpm2_eventlog`'s `pcrs:` section. It
/// must print nothing on stderr: Keylime 7.12 and 7.13 fail a boot log on
/// any `tpm2_eventlog` warning.
fn tpm2_eventlog_pcrs(log: &Path, bank: &str) -> BTreeMap<u32, String> {
    let out = Command::new("tpm2_eventlog")
        .arg("--eventlog-version=2")
        .arg(log)
        .output()
        .expect("tpm2_eventlog (tpm2-tools)");
    assert!(out.status.success(), "tpm2_eventlog {}", log.display());
    assert!(
        out.stderr.is_empty(),
        "tpm2_eventlog warns about {}: {}",
        log.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let section = text.split("\npcrs:\n").nth(1).expect("pcrs section");
    let mut in_bank = false;
    let mut pcrs = BTreeMap::new();
    for line in section.lines() {
        if let Some(name) = line.trim().strip_suffix(':') {
            in_bank = name == bank;
        } else if in_bank {
            let (pcr, value) = line.split_once(':').expect("pcr line");
            pcrs.insert(
                pcr.trim().parse().unwrap(),
                value.trim().trim_start_matches("0x").to_lowercase(),
            );
        }
    }
    pcrs
}

/// The PCR values in a quote's tpm2-tools PCR blob, by PCR (one bank).
fn quoted_pcrs(quote: &str) -> BTreeMap<u32, String> {
    let blob = B64.decode(quote[1..].split(':').nth(2).unwrap()).unwrap();
    let u16_at = |at: usize| u16::from_le_bytes([blob[at], blob[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap());
    // TPML_PCR_SELECTION: count, then 16 slots of {hash, size, select[4]}.
    assert_eq!(u32_at(0), 1, "one bank");
    let select = &blob[4 + 3..4 + 3 + 3];
    let pcrs: Vec<u32> = (0..24)
        .filter(|p| select[*p as usize / 8] & (1 << (p % 8)) != 0)
        .collect();
    // Then a count of TPML_DIGEST blocks of 8 {u16 size, [u8; 64]} slots.
    let mut values = Vec::new();
    let lists = u32_at(132) as usize;
    for list in 0..lists {
        let at = 136 + list * (4 + 8 * 66);
        for slot in 0..u32_at(at) as usize {
            let s = at + 4 + slot * 66;
            let size = usize::from(u16_at(s));
            values.push(hex::encode(&blob[s + 2..s + 2 + size]));
        }
    }
    assert_eq!(values.len(), pcrs.len());
    pcrs.into_iter().zip(values).collect()
}

#[test]
fn the_log_replayed_into_swtpm_is_what_tpm2_eventlog_reads_and_the_agent_quotes() {
    let Some(tpm) = Swtpm::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    let log = write_log(work.path(), "boot.log", &keys, &["--banks", "sha256,sha1"]);

    // tpm2_eventlog parses it and replays it to what the generator says.
    let out = common::run_ok(
        Command::new(common::boot_log_tool()).arg("pcrs").arg(&log),
        "tcg_boot_log pcrs",
    );
    let ours: serde_json::Value = serde_json::from_str(&out).unwrap();
    for bank in ["sha256", "sha1"] {
        let theirs = tpm2_eventlog_pcrs(&log, bank);
        assert_eq!(theirs.len(), 11, "PCRs 0-9 and 14 in {bank}: {theirs:?}");
        for (pcr, value) in &theirs {
            assert_eq!(
                ours["pcrs"][bank][pcr.to_string()],
                *value,
                "{bank} PCR {pcr}"
            );
        }
    }

    // Replayed into swtpm, the agent's quote of PCRs 0-15 carries the log
    // and PCR values equal to the log's replay.
    replay(&tpm, &log, None);
    let path = format!("measuredboot_ml_path = {:?}", log.display().to_string());
    let served = common::serve_on(tpm, &[path], 0);
    let (status, body) = served.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask={MB_MASK}&partial=1&ima_ml_entry=0"
    ));
    assert_eq!(status, 200, "{body}");
    let sent = body["results"]["mb_measurement_list"]
        .as_str()
        .expect("mb_measurement_list");
    assert_eq!(B64.decode(sent).unwrap(), std::fs::read(&log).unwrap());
    let quoted = quoted_pcrs(body["results"]["quote"].as_str().unwrap());
    let expected = EventLog::parse(&std::fs::read(&log).unwrap())
        .unwrap()
        .replay(0x000B)
        .unwrap();
    for pcr in (0..16).filter(|p| *p != 10) {
        let want = expected
            .get(&pcr)
            .map_or_else(|| "00".repeat(32), hex::encode);
        assert_eq!(quoted[&pcr], want, "PCR {pcr}");
    }

    // A quote of runtime PCRs only goes out without the log.
    let (status, body) = served.get(&format!(
        "/v2.6/quotes/integrity?nonce={NONCE}&mask=0x400&partial=1&ima_ml_entry=0"
    ));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["results"].get("mb_measurement_list").is_none(),
        "{body}"
    );
    let output = served.agent.output();
    assert!(
        !output.contains("UEFI boot event log"),
        "no warning: {output}"
    );
}

#[test]
fn a_quote_of_boot_pcrs_without_a_usable_log_goes_out_without_it_and_warns_once() {
    let work = tempfile::tempdir().unwrap();
    let broken = work.path().join("broken.log");
    std::fs::write(&broken, b"\x00\x00\x00\x00\x01\x00\x00\x00 not a TCG2 log").unwrap();
    let path = format!("measuredboot_ml_path = {:?}", broken.display().to_string());
    let Some(served) = common::serve(&[path], 0) else {
        return;
    };
    for _ in 0..3 {
        let (status, body) = served.get(&format!(
            "/v2.6/quotes/integrity?nonce={NONCE}&mask={MB_MASK}&partial=1&ima_ml_entry=0"
        ));
        assert_eq!(status, 200, "{body}");
        assert!(
            body["results"].get("mb_measurement_list").is_none(),
            "{body}"
        );
    }
    let output = served.agent.output();
    let warnings: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("UEFI boot event log"))
        .collect();
    assert_eq!(warnings.len(), 1, "{output}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("not a TCG2 event log"),
        "{}",
        warnings[0]
    );
}

/// One attested machine: its agent, state and TPM (dropped in that order).
struct Machine {
    agent: Agent,
    _dir: StateDir,
    tpm: Swtpm,
    id: String,
    port: u16,
}

/// A machine that booted `log` (replayed into a fresh swtpm, leaving out
/// event `withhold`), its agent registered with `peers` and sending `log`.
fn boot_machine(peers: &Peers, id: &str, log: &Path, withhold: Option<usize>) -> Option<Machine> {
    let tpm = Swtpm::start()?;
    replay(&tpm, log, withhold);
    let dir = common::state_dir();
    let path = format!("measuredboot_ml_path = {:?}", log.display().to_string());
    let (agent, _, port) = registered_agent(peers, &tpm, &dir, id, &[path]);
    Some(Machine {
        agent,
        _dir: dir,
        tpm,
        id: id.to_string(),
        port,
    })
}

/// `keylime-policy create measured-boot` from `log`.
fn reference_state(peers: &Peers, log: &Path, out: &Path) -> PathBuf {
    peers.run(
        "keylime-policy",
        &[
            "create",
            "measured-boot",
            "-e",
            log.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let refstate: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(refstate["has_secureboot"], true, "{refstate}");
    assert_eq!(
        refstate["kernels"].as_array().map(Vec::len),
        Some(1),
        "{refstate}"
    );
    out.to_path_buf()
}

/// The verifier judging boots with its `example` policy, on every quote.
const EXAMPLE_POLICY: &[(&str, &str)] = &[
    ("KEYLIME_VERIFIER_MEASURED_BOOT_POLICY_NAME", "example"),
    ("KEYLIME_VERIFIER_MEASURED_BOOT_EVALUATE", "always"),
];

/// The reference boot: its log (with the Secure Boot keys in `keys`) and
/// the reference state `keylime-policy` made from it, in `work`.
struct Reference {
    work: tempfile::TempDir,
    keys: PathBuf,
    good: PathBuf,
    refstate: PathBuf,
}

impl Reference {
    fn made(peers: &Peers) -> Self {
        let work = tempfile::tempdir().unwrap();
        let keys = work.path().join("keys");
        let good = write_log(work.path(), "good.log", &keys, &[]);
        let refstate = reference_state(peers, &good, &work.path().join("refstate.json"));
        Self {
            work,
            keys,
            good,
            refstate,
        }
    }
}

/// `keylime_tenant -c add --mb-policy REFSTATE` (with the PCR 17 policy).
fn tenant_add_with_mb_policy(peers: &Peers, machine: &Machine, refstate: &Path) {
    peers.tenant_add(
        &machine.id,
        machine.port,
        &["--mb-policy", refstate.to_str().unwrap()],
    );
}

fn wait_attested(peers: &Peers, id: &str, count: i64) {
    assert!(
        wait_until(60, || {
            let (state, n) = peers.verifier_state(id);
            state == GET_QUOTE && n >= count
        }),
        "not attested: {}",
        peers.verifier_agent(id)
    );
}

/// Waits for the verifier to fail the agent with an event id containing
/// `event`; returns its record.
fn wait_failed(peers: &Peers, id: &str, event: &str) -> serde_json::Value {
    let failed = wait_until(60, || {
        peers.verifier_agent(id)["last_event_id"]
            .as_str()
            .is_some_and(|e| e.contains(event))
    });
    let record = peers.verifier_agent(id);
    assert!(failed, "expected {event}: {record}");
    assert_ne!(record["operational_state"], GET_QUOTE, "{record}");
    record
}

#[test]
fn the_example_policy_passes_the_boot_it_was_made_from_and_fails_every_other() {
    example_policy_cases(KEYLIME_7_14);
}

#[test]
fn keylime_7_13_example_policy_judges_the_same_boots() {
    example_policy_cases(KEYLIME_7_13);
}

#[test]
fn keylime_7_12_example_policy_judges_the_same_boots() {
    example_policy_cases(KEYLIME_7_12);
}

/// Four machines under `release`'s `example` policy: the reference boot
/// passes; GRUB's event withheld from the PCRs, Secure Boot off and another
/// kernel build fail, each with its reason.
fn example_policy_cases(release: Release) {
    let Some(peers) = Peers::start_release_with_env("all", release, EXAMPLE_POLICY) else {
        return;
    };
    let Reference {
        work,
        keys,
        good,
        refstate,
    } = Reference::made(&peers);
    let secure_boot_off = write_log(work.path(), "sb-off.log", &keys, &["--secure-boot", "off"]);
    let other_kernel = write_log(work.path(), "kernel.log", &keys, &["--kernel-build", "2"]);
    for log in [&good, &secure_boot_off, &other_kernel] {
        assert!(!tpm2_eventlog_pcrs(log, "sha256").is_empty());
    }

    // (agent, log, withheld event, expected failure: event id and a
    // phrase of the verifier's reason)
    type Case<'a> = (&'a str, &'a Path, Option<usize>, Option<(&'a str, &'a str)>);
    let cases: [Case; 4] = [
        ("4c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d01", &good, None, None),
        (
            "4c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d02",
            &good,
            Some(grub_event(&good)),
            Some((
                "measured_boot.invalid_pcr_4",
                "the boot event log has value",
            )),
        ),
        (
            "4c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d03",
            &secure_boot_off,
            None,
            Some(("policy_example", "Enabled is not 'Yes'")),
        ),
        (
            "4c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d04",
            &other_kernel,
            None,
            Some(("policy_example", "has no digest approved by")),
        ),
    ];
    let machines: Vec<Machine> = cases
        .iter()
        .filter_map(|(id, log, withhold, _)| boot_machine(&peers, id, log, *withhold))
        .collect();
    assert_eq!(machines.len(), cases.len());
    for machine in &machines {
        tenant_add_with_mb_policy(&peers, machine, &refstate);
    }
    for (machine, (_, _, _, failure)) in machines.iter().zip(&cases) {
        match failure {
            None => wait_attested(&peers, &machine.id, 5),
            Some((event, reason)) => {
                wait_failed(&peers, &machine.id, event);
                assert!(
                    peers.verifier_log().contains(reason),
                    "the verifier's reason for {} names {reason:?}",
                    machine.id
                );
            }
        }
    }
    // The boot the reference state was made from is still attested.
    let (_, count) = peers.verifier_state(&machines[0].id);
    wait_attested(&peers, &machines[0].id, count + 2);
    for machine in machines {
        let output = machine.agent.stop();
        assert!(!output.contains(" ERROR "), "{output}");
    }
}

#[test]
fn accept_all_replays_the_log_against_the_quote_and_fails_a_pcr_the_log_does_not_explain() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Reference {
        work: _work,
        good,
        refstate,
        ..
    } = Reference::made(&peers);
    let passes = boot_machine(&peers, "5d2e3f40-5b6c-4d7e-8f90-a1b2c3d4e501", &good, None);
    let fails = boot_machine(
        &peers,
        "5d2e3f40-5b6c-4d7e-8f90-a1b2c3d4e502",
        &good,
        Some(grub_event(&good)),
    );
    let (Some(passes), Some(fails)) = (passes, fails) else {
        return;
    };
    tenant_add_with_mb_policy(&peers, &passes, &refstate);
    tenant_add_with_mb_policy(&peers, &fails, &refstate);
    wait_attested(&peers, &passes.id, 3);
    wait_failed(&peers, &fails.id, "measured_boot.invalid_pcr_4");
    // The PCR 17 policy is still checked next to the measured boot.
    passes
        .tpm
        .expect_invalid_quote_after_pcr17_change(&peers, &passes.id);
}

/// The evidence types of the verifier's latest push-mode attestation.
fn latest_evidence_types(peers: &Peers, id: &str) -> Vec<String> {
    let (_, body) = peers.admin_get(&format!("/v3.0/agents/{id}/attestations/latest"));
    body.pointer("/data/attributes/evidence")
        .and_then(|e| e.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["evidence_type"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn push_evidence_carries_the_log_and_the_verifier_judges_it() {
    let Some(peers) = Peers::start_push("all", EXAMPLE_POLICY) else {
        return;
    };
    let Reference {
        work,
        good,
        refstate,
        ..
    } = Reference::made(&peers);
    let ima = work.path().join("ascii_runtime_measurements");
    std::fs::write(&ima, "").unwrap();

    let mut agents = Vec::new();
    for (id, withhold) in [
        ("6e3f4051-6c7d-4e8f-9a01-b2c3d4e5f601", None),
        (
            "6e3f4051-6c7d-4e8f-9a01-b2c3d4e5f602",
            Some(grub_event(&good)),
        ),
    ] {
        let Some(tpm) = Swtpm::start() else { return };
        replay(&tpm, &good, withhold);
        let dir = common::state_dir();
        let mut lines = peers.push_agent_lines(dir.path(), id, &ima);
        lines.push(format!(
            "measuredboot_ml_path = {:?}",
            good.display().to_string()
        ));
        let config = common::write_config(dir.path(), &lines);
        let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
        agent.wait_for("registered and activated", 30);
        let out = peers.tenant(&[
            "-c",
            "add",
            "--push-model",
            "-u",
            id,
            "--tpm_policy",
            common::PCR17_POLICY,
            "--mb-policy",
            refstate.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "tenant add --push-model --mb-policy: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        agents.push((agent, dir, tpm, id));
    }
    let (passing, failing) = (agents[0].3, agents[1].3);
    peers.wait_push_status(passing, 60, |s, c| s == "PASS" && c >= 3);
    assert!(
        latest_evidence_types(&peers, passing).contains(&"uefi_log".to_string()),
        "the verifier asked for and got the boot log: {:?}",
        latest_evidence_types(&peers, passing)
    );
    peers.wait_push_status(failing, 60, |s, _| s == "FAIL");
    assert!(
        peers
            .verifier_log()
            .contains("the boot event log has value"),
        "the verifier replayed the log against the quote"
    );
    for (agent, ..) in agents {
        let output = agent.stop();
        assert!(!output.contains(" ERROR "), "{output}");
    }
}
