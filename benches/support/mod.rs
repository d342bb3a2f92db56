//! What both benchmarks share: the TPM's own cost measured in-process,
//! timing statistics, a process's RSS, CPU time and private memory, and the
//! table rows.

#![allow(dead_code)]

mod client;

#[allow(unused_imports)]
pub use client::TlsClient;

use std::path::Path;
use std::time::Instant;

use crate::common::{self, write_config, Swtpm};
use keylime_agent::tpm::{QuoteRequest, Tpm, TpmConfig};

/// A latency row: median and p95, and how many samples they come from.
pub fn row(name: &str, (median, p95): &(f64, f64), samples: usize) {
    println!("{name:<52} {median:>8.2} ms {p95:>8.2} ms  ({samples} samples)");
}

pub fn timed(f: impl FnOnce() -> usize) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

pub fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

/// The agent's TPM settings for a state directory `dir` on `tpm`, and
/// where the AK is persisted.
fn tpm_config(tpm: &Swtpm, dir: &Path) -> (TpmConfig, std::path::PathBuf) {
    let file = write_config(
        dir,
        &[
            format!("keylime_dir = {:?}", dir.display().to_string()),
            "enable_agent_mtls = false".into(),
        ],
    );
    let config = common::load_config(file, tpm.tcti());
    (config.tpm_config(), config.agent_data_path)
}

/// The TPM transaction behind one quote (`request`), through the agent's
/// own TPM owner, in this process (no HTTP, no TLS): median and p95 ms.
pub fn tpm_cost(tpm: &Swtpm, dir: &Path, request: QuoteRequest, samples: usize) -> (f64, f64) {
    let (config, ak_store) = tpm_config(tpm, dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let tpm = Tpm::start(config).await.expect("tpm");
        for _ in 0..5 {
            tpm.quote(request.clone()).await.expect("quote");
        }
        let mut ms = Vec::new();
        for _ in 0..samples {
            let start = Instant::now();
            tpm.quote(request.clone()).await.expect("quote");
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        tpm.shutdown().await;
        // The agent binary that runs next creates its own AK.
        let _ = std::fs::remove_file(&ak_store);
        stats(ms)
    })
}

/// The TPM's own cost of a first start: the EK made from its template and
/// a new AK, in-process on a fresh swtpm (ms).
pub fn tpm_first_start_ms() -> Option<f64> {
    let tpm = Swtpm::start()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = tpm_config(&tpm, dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    Some(rt.block_on(async {
        let start = Instant::now();
        let tpm = Tpm::start(config).await.expect("tpm");
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        tpm.shutdown().await;
        ms
    }))
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` by what holds it, from /proc/PID/smaps, in
/// KiB: the agent binary, OpenSSL, the TSS libraries, other libraries, the
/// main heap, thread stacks and other anonymous memory (allocator arenas).
pub fn rss_breakdown(pid: u32) -> Vec<(String, u64)> {
    breakdown(pid, "Rss:")
}

/// Anonymous memory (private, written: what each agent of a fleet costs on
/// its own) of `pid` by what holds it, KiB, as [`rss_breakdown`].
pub fn anon_breakdown(pid: u32) -> Vec<(String, u64)> {
    breakdown(pid, "Anonymous:")
}

fn breakdown(pid: u32, field: &str) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut totals: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            current = match path {
                "" => "anonymous (arenas, thread stacks)".into(),
                "[heap]" => "main heap".into(),
                "[stack]" => "main stack".into(),
                p if p.contains("keylime_agent") => "agent binary".into(),
                p if p.contains("libcrypto") || p.contains("libssl") => "OpenSSL".into(),
                p if p.contains("libtss2") => "tpm2-tss".into(),
                p if p.contains(".so") => "other libraries".into(),
                p => p.to_string(),
            };
        } else if let Some(kib) = line.strip_prefix(field) {
            let kib: u64 = kib
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match totals.iter_mut().find(|(name, _)| *name == current) {
                Some((_, total)) => *total += kib,
                None => totals.push((current.clone(), kib)),
            }
        }
    }
    totals.retain(|(_, kib)| *kib > 0);
    totals.sort_by_key(|t| std::cmp::Reverse(t.1));
    totals
}

/// Threads of `pid`, by name.
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// utime + stime of `pid`, ms.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = stat.rsplit_once(')').expect("stat").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line: the 12th and 13th after the name.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks * 1000.0 / 100.0
}

/// RSS and USS (private pages) of `pid`, MB.
pub fn memory_mb(pid: u32) -> (f64, f64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |field: &str| -> f64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        kib("Rss:") / 1024.0,
        (kib("Private_Clean:") + kib("Private_Dirty:")) / 1024.0,
    )
}
