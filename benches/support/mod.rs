//! What both benchmarks share: the TPM's own cost measured in-process,
//! timing statistics, a process's RSS, and the table rows.

#![allow(dead_code)]

use std::path::Path;
use std::time::Instant;

use crate::common::{self, write_config, Swtpm};
use keylime_agent::tpm::{QuoteRequest, Tpm, TpmConfig};

pub fn row(name: &str, (median, p95): &(f64, f64)) {
    println!("{name:<52} {median:>8.2} ms {p95:>8.2} ms");
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

/// The TPM transaction behind one quote (`request`), through the agent's
/// own TPM owner, in this process (no HTTP, no TLS): median and p95 ms.
pub fn tpm_cost(tpm: &Swtpm, dir: &Path, request: QuoteRequest, samples: usize) -> (f64, f64) {
    let file = write_config(
        dir,
        &[
            format!("keylime_dir = {:?}", dir.display().to_string()),
            "enable_agent_mtls = false".into(),
        ],
    );
    let config = common::load_config(file, tpm.tcti());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let tpm = Tpm::start(TpmConfig {
            tcti: config.tcti.clone(),
            hash_alg: config.tpm_hash_alg,
            encryption_alg: config.tpm_encryption_alg,
            signing_alg: config.tpm_signing_alg,
            ek_handle: None,
            owner_auth: config.tpm_ownerpassword.clone(),
            ak_store: config.agent_data_path.clone(),
        })
        .await
        .expect("tpm");
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
        let _ = std::fs::remove_file(&config.agent_data_path);
        stats(ms)
    })
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
