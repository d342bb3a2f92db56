//! Push-model benchmark: on one swtpm, the TPM's own cost of a push quote
//! (measured in-process) next to the push agent's cost per attestation
//! cycle (capabilities + TPM quote + evidence, over TLS to the real 7.14.3
//! verifier in push mode), and the agent's RSS after the first cycle and
//! after 300. The verifier runs with `quote_interval = 0`, so cycles follow
//! each other at once and the run takes seconds, not ten minutes.
//! Figures, not assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::{ima_entries, Agent, Peers, Swtpm};
use keylime_agent::tpm::QuoteRequest;
use support::{row, rss_kib, stats, tpm_cost};

const CYCLES: usize = 300;

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
        200,
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
    let started = Instant::now();
    agent.wait_for(&format!("cycle {CYCLES}: evidence accepted"), 600);
    let elapsed = started.elapsed();
    let rss_last = rss_kib(agent.pid());
    let log = agent.stop();
    let phase = |label: &str| -> Vec<f64> {
        log.lines()
            .filter(|l| l.contains("evidence accepted in "))
            .filter_map(|l| l.split_once(label)?.1.split_once(" ms"))
            .filter_map(|(ms, _)| ms.parse().ok())
            .collect()
    };
    let cycle_ms = phase("evidence accepted in ");
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
    );
    let cycle = stats(cycle_ms.clone());
    row(
        "push agent: one cycle (capabilities, quote, evidence)",
        &cycle,
    );
    row(
        "  POST capabilities → 201 (verifier chooses)",
        &stats(phase("(capabilities ")),
    );
    row(
        "  evidence collected (TPM quote + IMA slice)",
        &stats(phase("evidence collected ")),
    );
    row(
        "  PATCH evidence → 202 (verifier parses)",
        &stats(phase(", sent ")),
    );
    println!(
        "{:<52} {:>10.1} ms",
        "push agent: cycle cost beyond the TPM quote",
        cycle.0 - tpm_quote.0
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
        "cycles timed / token renewals / warnings",
        format!("{} / {renewals} / {}", cycle_ms.len(), warnings.len())
    );
    for warning in warnings.iter().take(3) {
        println!("  {warning}");
    }
}
