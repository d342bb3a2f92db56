//! This agent next to another pull agent binary, in one run on one machine:
//! `swtpm-ci/bench --against BIN` (or `cargo bench --bench compare --
//! --against BIN`). Each agent gets its own swtpm and state directory, one
//! config both understand (the upstream `agent.conf` keys) and the same
//! real Keylime 7.14.3 registrar, a 100,000-entry IMA log and the
//! verifier's client certificate. Every latency row is measured in rounds
//! that alternate the two agents, so that the machine's noise falls on both;
//! each row says how many samples each column holds.
//!
//! The agent users compare with is the official one, built from its source:
//!
//! ```text
//! git clone https://github.com/keylime/rust-keylime && cd rust-keylime
//! git checkout v0.2.9
//! cargo build --release --bin keylime_agent --bin keylime_push_model_agent
//! swtpm-ci/bench --against target/release/keylime_agent
//! ```
//!
//! Rows: integrity quote over a fresh mTLS connection (what the verifier
//! does) and over a kept-open one; the 100,000-entry IMA log from entry 0;
//! CPU time per fresh-connection quote (utime + stime of the agent process
//! over that row); idle memory, 20 s after registration, as RSS, as USS
//! (private pages from `/proc/PID/smaps_rollup`, what each more agent
//! costs a machine) and as anonymous memory by what holds it; and a
//! restart (identity and AK kept, transient TPM objects flushed as the
//! kernel's resource manager would) to the first answered quote. Figures,
//! not assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    free_port, ima_entries, write_config, Agent, Peers, Swtpm, AGENT_BIN, PUSH_AGENT_BIN,
};
use support::{anon_breakdown, cpu_ms, memory_mb, stats, timed, TlsClient};

const IMA_ENTRIES: usize = 100_000;
/// Latency rows: this many rounds per agent, alternating, each of
/// `PER_ROUND` samples.
const ROUNDS: usize = 4;
const PER_ROUND: usize = 50;
const LOG_ROUNDS: usize = 5;
const RESTARTS: usize = 3;
/// Both agents serve API 2.5.
const VERSION: &str = "v2.5";

/// One agent under test.
struct Subject {
    name: &'static str,
    binary: String,
    dir: tempfile::TempDir,
    tpm: Swtpm,
    config: PathBuf,
    port: u16,
    agent: Option<Agent>,
}

impl Subject {
    fn new(name: &'static str, binary: &str, peers: &Peers, ima: &Path, n: usize) -> Option<Self> {
        let tpm = Swtpm::start()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let lines = vec![
            "version = \"2.5\"".to_string(),
            format!("uuid = \"c0a1b2c3-d4e5-4f60-8a7b-8c9d0e1f200{n}\""),
            "ip = \"127.0.0.1\"".into(),
            format!("port = {port}"),
            "contact_ip = \"127.0.0.1\"".into(),
            format!("contact_port = {port}"),
            "registrar_ip = \"127.0.0.1\"".into(),
            format!("registrar_port = {}", peers.registrar_port),
            "enable_agent_mtls = true".into(),
            format!("keylime_dir = {d:?}"),
            "server_key = \"default\"".into(),
            "server_key_password = \"\"".into(),
            "server_cert = \"default\"".into(),
            format!(
                "trusted_client_ca = {:?}",
                peers.cv_ca().join("cacert.crt").display().to_string()
            ),
            "enc_keyname = \"derived_tci_key\"".into(),
            "dec_payload_file = \"decrypted_payload\"".into(),
            "secure_size = \"1m\"".into(),
            "tpm_ownerpassword = \"\"".into(),
            "extract_payload_zip = true".into(),
            "enable_revocation_notifications = false".into(),
            format!("revocation_actions_dir = \"{d}/actions\""),
            "revocation_cert = \"default\"".into(),
            "revocation_actions = \"\"".into(),
            "payload_script = \"autorun.sh\"".into(),
            "enable_insecure_payload = false".into(),
            "allow_payload_revocation_actions = true".into(),
            "tpm_hash_alg = \"sha256\"".into(),
            "tpm_encryption_alg = \"rsa\"".into(),
            "tpm_signing_alg = \"rsassa\"".into(),
            "ek_handle = \"generate\"".into(),
            "enable_iak_idevid = false".into(),
            "run_as = \"\"".into(),
            "agent_data_path = \"default\"".into(),
            format!("ima_ml_path = {:?}", ima.display().to_string()),
            "measuredboot_ml_path = \"default\"".into(),
            "api_versions = \"default\"".into(),
        ];
        let config = write_config(dir.path(), &lines);
        Some(Self {
            name,
            binary: binary.to_string(),
            dir,
            tpm,
            config,
            port,
            agent: None,
        })
    }

    /// Starts the agent; the time until it answers a quote, ms.
    fn start(&mut self, peers: &Peers) -> f64 {
        let began = Instant::now();
        let agent = Agent::spawn_logged(
            &self.binary,
            &self.config,
            self.dir.path().join(format!("agent-{}.log", free_port())),
            &self.tpm.tcti(),
            &[("RUST_LOG", "warn")],
        );
        self.agent = Some(agent);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let cert = self.dir.path().join("server-cert.crt");
            if cert.exists() {
                let client = TlsClient::new(self.port, &cert, &peers.client());
                if client.try_get(&self.quote_path(IMA_ENTRIES)).is_some() {
                    return began.elapsed().as_secs_f64() * 1000.0;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered:\n{}",
                self.name,
                self.agent.as_ref().map(Agent::output).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop();
        }
    }

    fn pid(&self) -> u32 {
        self.agent.as_ref().expect("running").pid()
    }

    fn client(&self, peers: &Peers) -> TlsClient {
        TlsClient::new(
            self.port,
            &self.dir.path().join("server-cert.crt"),
            &peers.client(),
        )
    }

    fn quote_path(&self, entry: usize) -> String {
        format!(
            "/{VERSION}/quotes/integrity?nonce=ABCDEFGHIJ0123456789&mask=0x400&partial=1&ima_ml_entry={entry}"
        )
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        self.stop();
        // An agent running as root mounts its secure tmpfs in the state
        // directory; one that leaves it mounted would keep the directory
        // from being removed.
        let secure = self.dir.path().join("secure");
        let _ = std::process::Command::new("umount").arg(&secure).status();
    }
}

/// One line: the row, both medians (or values), their ratio, the samples.
fn line(name: &str, ours: f64, theirs: f64, unit: &str, samples: &str) {
    let ratio = if ours > 0.0 { theirs / ours } else { f64::NAN };
    println!("{name:<44} {ours:>9.2} {theirs:>9.2} {unit:<5} {ratio:>6.1}x  {samples}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let given = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|bin| {
                std::fs::canonicalize(bin)
                    .unwrap_or_else(|e| panic!("{flag} {bin}: {e}"))
                    .display()
                    .to_string()
            })
    };
    let (pull, push) = (given("--against"), given("--against-push"));
    if pull.is_none() && push.is_none() {
        println!("compare: no --against BIN or --against-push BIN given, nothing to compare (see the bench's doc)");
    }
    if let Some(other) = pull {
        compare_pull(&other);
    }
    if let Some(other) = push {
        compare_push(&other);
    }
}

/// Both push agents attesting at once to one real 7.14.3 verifier in push
/// mode for `PUSH_WINDOW`: cycles each completed (the verifier's "Created
/// attestation" lines), the agent's CPU per cycle, and its memory.
fn compare_push(other: &str) {
    let Some(peers) = Peers::start_push("all", &[("KEYLIME_VERIFIER_QUOTE_INTERVAL", "0")]) else {
        println!(
            "compare: push rows cannot run: the Keylime peers are not installed (swtpm-ci/install)"
        );
        return;
    };
    struct Pusher {
        _tpm: Swtpm,
        _dir: tempfile::TempDir,
        id: String,
        agent: Agent,
    }
    let mut pushers = Vec::new();
    for (n, binary) in [PUSH_AGENT_BIN, other].into_iter().enumerate() {
        let Some(tpm) = Swtpm::start() else {
            println!("compare: push rows cannot run: no swtpm (swtpm-ci/install)");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let ima = dir.path().join("ascii_runtime_measurements");
        let policy = dir.path().join("runtime-policy.json");
        tpm.extend_pcr10(&ima_entries(&ima, 5, 0, Some(&policy)));
        let id = format!("d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e50{n}");
        let mut lines = peers.push_agent_lines(dir.path(), &id, &ima);
        lines.push("attestation_interval_seconds = 1".into());
        // Upstream's default run_as is keylime:tss; both run as root here.
        lines.push("run_as = \"\"".into());
        let config = write_config(dir.path(), &lines);
        let agent = Agent::spawn_logged(
            binary,
            &config,
            dir.path().join("agent.log"),
            &tpm.tcti(),
            &[("RUST_LOG", "warn")],
        );
        // Enrolled once the registrar knows it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while peers.registrar_agent(&id).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "{binary} never registered:\n{}",
                agent.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        peers.tenant_add_push(&id, &policy);
        pushers.push(Pusher {
            _tpm: tpm,
            _dir: dir,
            id,
            agent,
        });
    }
    let cycles = |id: &str| {
        peers
            .verifier_log()
            .lines()
            .filter(|l| l.contains("Created attestation") && l.contains(id))
            .count()
    };
    // Both attesting before the window opens.
    let deadline = Instant::now() + Duration::from_secs(120);
    while pushers.iter().any(|p| cycles(&p.id) < 2) {
        assert!(
            Instant::now() < deadline,
            "not attesting:\n{}",
            pushers
                .iter()
                .map(|p| p.agent.output())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let start: Vec<(usize, f64)> = pushers
        .iter()
        .map(|p| (cycles(&p.id), cpu_ms(p.agent.pid())))
        .collect();
    std::thread::sleep(PUSH_WINDOW);
    let end: Vec<(usize, f64)> = pushers
        .iter()
        .map(|p| (cycles(&p.id), cpu_ms(p.agent.pid())))
        .collect();
    let memory: Vec<(f64, f64)> = pushers.iter().map(|p| memory_mb(p.agent.pid())).collect();
    let done: Vec<usize> = (0..2).map(|i| end[i].0 - start[i].0).collect();
    let cpu: Vec<f64> = (0..2)
        .map(|i| (end[i].1 - start[i].1) / done[i].max(1) as f64)
        .collect();
    println!();
    println!("this push agent next to {other}");
    println!(
        "(swtpm each, both attesting at once to the real Keylime 7.14.3 verifier, quote_interval 0, attestation_interval_seconds 1, {} s)",
        PUSH_WINDOW.as_secs()
    );
    println!("{:-<96}", "");
    println!(
        "{:<44} {:>9} {:>9} {:<5} {:>7}  samples each",
        "", "this", "other", "", "other/"
    );
    line(
        "attestations completed in the window",
        done[0] as f64,
        done[1] as f64,
        "",
        "1 window",
    );
    line(
        "CPU per attestation",
        cpu[0],
        cpu[1],
        "ms",
        &format!("{} / {} (10 ms ticks)", done[0], done[1]),
    );
    line("RSS at the end", memory[0].0, memory[1].0, "MB", "1");
    line(
        "USS (private) at the end",
        memory[0].1,
        memory[1].1,
        "MB",
        "1",
    );
    for p in pushers {
        drop(p.agent.stop());
    }
}

/// How long both push agents attest side by side.
const PUSH_WINDOW: Duration = Duration::from_secs(60);

/// The pull rows against `other`.
fn compare_pull(other: &str) {
    let Some(peers) = Peers::start("all") else {
        println!("compare: cannot run: the Keylime peers are not installed (swtpm-ci/install)");
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let ima = work.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    ima_entries(&ima, IMA_ENTRIES, 0, None);
    let (Some(ours), Some(theirs)) = (
        Subject::new("this agent", AGENT_BIN, &peers, &ima, 1),
        Subject::new("the other agent", other, &peers, &ima, 2),
    ) else {
        println!("compare: cannot run: no swtpm (swtpm-ci/install)");
        return;
    };
    let mut subjects = [ours, theirs];
    for s in &mut subjects {
        s.start(&peers);
    }
    // Idle as a fleet's machines spend most of their lives: past this
    // agent's first trim of free heap pages (15 s after registration).
    std::thread::sleep(Duration::from_secs(20));
    let idle: Vec<(f64, f64)> = subjects.iter().map(|s| memory_mb(s.pid())).collect();
    let anon: Vec<Vec<(String, u64)>> = subjects.iter().map(|s| anon_breakdown(s.pid())).collect();

    let mut fresh = [Vec::new(), Vec::new()];
    let mut kept = [Vec::new(), Vec::new()];
    let mut cpu = [0.0f64, 0.0];
    for _ in 0..ROUNDS {
        for (i, s) in subjects.iter().enumerate() {
            let client = s.client(&peers);
            let path = s.quote_path(IMA_ENTRIES);
            let before = cpu_ms(s.pid());
            for _ in 0..PER_ROUND {
                fresh[i].push(timed(|| client.fresh(&path)));
            }
            cpu[i] += cpu_ms(s.pid()) - before;
            let mut conn = client.connect();
            for _ in 0..PER_ROUND {
                kept[i].push(timed(|| client.on(&mut conn, &path)));
            }
        }
    }
    let mut full = [Vec::new(), Vec::new()];
    for _ in 0..LOG_ROUNDS {
        for (i, s) in subjects.iter().enumerate() {
            let client = s.client(&peers);
            full[i].push(timed(|| client.fresh(&s.quote_path(0))));
        }
    }
    let after_log: Vec<(f64, f64)> = subjects.iter().map(|s| memory_mb(s.pid())).collect();
    let mut restart = [Vec::new(), Vec::new()];
    for _ in 0..RESTARTS {
        for (i, s) in subjects.iter_mut().enumerate() {
            s.stop();
            // What the kernel's resource manager does when a process
            // closes /dev/tpmrm0: raw swtpm keeps an agent's leftover
            // transient objects loaded, and one that leaves some would run
            // out of object slots after a few restarts.
            let flushed = std::process::Command::new("tpm2_flushcontext")
                .arg("-t")
                .env("TPM2TOOLS_TCTI", s.tpm.tcti())
                .status()
                .expect("tpm2_flushcontext");
            assert!(flushed.success(), "tpm2_flushcontext -t");
            restart[i].push(s.start(&peers));
        }
    }
    for s in &mut subjects {
        s.stop();
    }

    let n = ROUNDS * PER_ROUND;
    let median = |v: &[f64]| stats(v.to_vec()).0;
    let p95 = |v: &[f64]| stats(v.to_vec()).1;
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    println!();
    println!("this agent next to {other}");
    println!("(swtpm each, the real Keylime 7.14.3 registrar, rounds alternating the two)");
    println!("{:-<96}", "");
    println!(
        "{:<44} {:>9} {:>9} {:<5} {:>7}  samples each",
        "", "this", "other", "", "other/"
    );
    line(
        "integrity quote, fresh mTLS connection, median",
        median(&fresh[0]),
        median(&fresh[1]),
        "ms",
        &format!("{n}"),
    );
    line(
        "  the same, p95",
        p95(&fresh[0]),
        p95(&fresh[1]),
        "ms",
        &format!("{n}"),
    );
    line(
        "integrity quote, kept-open connection, median",
        median(&kept[0]),
        median(&kept[1]),
        "ms",
        &format!("{n}"),
    );
    line(
        "100,000-entry IMA log from entry 0, best",
        best(&full[0]),
        best(&full[1]),
        "ms",
        &format!("{LOG_ROUNDS}"),
    );
    line(
        "  the same, median",
        median(&full[0]),
        median(&full[1]),
        "ms",
        &format!("{LOG_ROUNDS}"),
    );
    line(
        "CPU per fresh-connection quote",
        cpu[0] / n as f64,
        cpu[1] / n as f64,
        "ms",
        &format!("{n} (10 ms ticks)"),
    );
    line(
        "RSS idle after registration",
        idle[0].0,
        idle[1].0,
        "MB",
        "1",
    );
    line(
        "USS (private) idle after registration",
        idle[0].1,
        idle[1].1,
        "MB",
        "1",
    );
    let mb = |of: &[(String, u64)], what: Option<&str>| {
        of.iter()
            .filter(|(w, _)| what.is_none_or(|what| what == w))
            .map(|(_, kib)| kib)
            .sum::<u64>() as f64
            / 1024.0
    };
    line(
        "anonymous memory idle after registration",
        mb(&anon[0], None),
        mb(&anon[1], None),
        "MB",
        "1",
    );
    for (what, _) in &anon[0] {
        line(
            &format!("  {what}"),
            mb(&anon[0], Some(what)),
            mb(&anon[1], Some(what)),
            "MB",
            "1",
        );
    }
    line(
        "RSS after the log was served",
        after_log[0].0,
        after_log[1].0,
        "MB",
        "1",
    );
    line(
        "USS after the log was served",
        after_log[0].1,
        after_log[1].1,
        "MB",
        "1",
    );
    line(
        "restart to the first answered quote, median",
        median(&restart[0]),
        median(&restart[1]),
        "ms",
        &format!("{RESTARTS}"),
    );
}
