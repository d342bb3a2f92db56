//! Push-model benchmark: on one swtpm, the TPM's own cost of a push quote
//! (measured in-process) next to a push attestation cycle as the real
//! 7.14.3 verifier (push mode) logged it: the time between the "Created
//! attestation" lines it writes when a cycle's capabilities arrive, so the
//! figure is the whole cycle (capabilities, the verifier's choice, the
//! quote, evidence, the verifier's check, its answer) on the verifier's
//! clock, not the agent's. (Its attestation list API answers 500 and its
//! database keeps only the latest attestations, so neither gives the
//! phases.) Also the agent's
//! CPU time per cycle and its RSS after the first cycle and after 300. The
//! verifier runs with `quote_interval = 0`, so cycles follow each other at
//! once and the run takes seconds, not ten minutes. Figures, not
//! assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::{ima_entries, Agent, Peers, Swtpm};
use keylime_agent::tpm::QuoteRequest;
use support::{cpu_ms, row, rss_kib, stats, tpm_cost};

const CYCLES: usize = 300;
const TPM_SAMPLES: usize = 200;

/// A time the verifier wrote (`2026-11-24 18:17:50.123` in its log) as
/// seconds since the start of its month (runs last minutes).
fn seconds(text: &str) -> Option<f64> {
    let (date, time) = text.split_once(['T', ' '])?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let time = time.trim_end_matches("+00:00").trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(day * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let tpm_quote = tpm_cost(
        &tpm,
        dir.path(),
        QuoteRequest {
            nonce: vec![0x5a; 16],
            pcrs: vec![10, 17],
            data_pcr_digest: None,
        },
        TPM_SAMPLES,
    );
    let Some(peers) = Peers::start_push("all", &[("KEYLIME_VERIFIER_QUOTE_INTERVAL", "0")]) else {
        return;
    };
    let ima = dir.path().join("ascii_runtime_measurements");
    let policy = dir.path().join("runtime-policy.json");
    tpm.extend_pcr10(&ima_entries(&ima, 5, 0, Some(&policy)));
    let id = "8e5c6d7f-8091-4a2b-9c3d-4e5f60718293";
    let config = common::write_config(dir.path(), &peers.push_agent_lines(dir.path(), id, &ima));
    let mut agent = Agent::spawn_push(
        &config,
        &tpm.tcti(),
        &[("RUST_LOG", "warn,keylime_agent=debug")],
    );
    agent.wait_for("registered and activated", 30);
    peers.tenant_add_push(id, &policy);
    agent.wait_for("cycle 1: evidence accepted", 60);
    let rss_first = rss_kib(agent.pid());
    let cpu_first = cpu_ms(agent.pid());
    let started = Instant::now();
    agent.wait_for(&format!("cycle {CYCLES}: evidence accepted"), 600);
    let elapsed = started.elapsed();
    let rss_last = rss_kib(agent.pid());
    let cpu_per_cycle = (cpu_ms(agent.pid()) - cpu_first) / (CYCLES - 1) as f64;
    let log = agent.stop();
    // The verifier's own record of every attestation, as seconds.
    // The verifier's own log: one "Created attestation N" line when each
    // cycle's capabilities arrive (its clock, millisecond resolution).
    let verifier_log = peers.verifier_log();
    let created: Vec<f64> = verifier_log
        .lines()
        .filter(|l| l.contains("Created attestation") && l.contains(id))
        .filter_map(|l| seconds(l.get(..23)?))
        .collect();
    let periods: Vec<f64> = created.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    let renewals = log.matches("renewed the verifier token").count();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();

    println!();
    println!(
        "keylime-agent push-model benchmark (swtpm, real Keylime 7.14.3 verifier, {CYCLES} cycles)"
    );
    println!("{:-<78}", "");
    println!("{:<52} {:>11} {:>11}", "", "median", "p95");
    row(
        "TPM: PCR read + Quote, no PCR 16 binding (in-process)",
        &tpm_quote,
        TPM_SAMPLES,
    );
    let cycle = stats(periods.clone());
    row(
        "verifier's log: capabilities to the next capabilities",
        &cycle,
        periods.len(),
    );
    println!(
        "{:<52} {:>10.2} ms  (utime + stime over {} cycles, 10 ms ticks)",
        "push agent: CPU per cycle",
        cpu_per_cycle,
        CYCLES - 1
    );
    println!(
        "{:<52} {:>10.1} /s",
        "cycles per second (verifier asks for no pause)",
        (CYCLES - 1) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<52} {:>8.1} MB {:>8.1} MB",
        "RSS after cycle 1 / after cycle 300",
        rss_first as f64 / 1024.0,
        rss_last as f64 / 1024.0
    );
    println!(
        "{:<52} {:>11}",
        "cycles in the verifier's log / renewals / warnings",
        format!("{} / {renewals} / {}", created.len(), warnings.len())
    );
    for warning in warnings.iter().take(3) {
        println!("  {warning}");
    }
}
