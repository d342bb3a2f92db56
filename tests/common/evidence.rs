//! Evidence the tests feed the agent: UEFI boot logs written with the
//! `tcg_boot_log` tool and synthetic IMA entries.

use super::*;

/// Writes a UEFI Secure Boot event log to `log` with `tcg_boot_log write`
/// (its certificates in `keys`, made there if missing), with `args`.
pub fn boot_log(log: &Path, keys: &Path, args: &[&str]) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_tcg_boot_log"))
            .arg("write")
            .arg(log)
            .arg("--keys")
            .arg(keys)
            .args(args),
        "tcg_boot_log write",
    );
}

/// Appends `count` synthetic IMA entries from index `start` to `file`
/// (and writes a policy allowing all of them when `policy` is given);
/// returns the SHA-256 template hashes to extend into PCR 10.
pub fn ima_entries(file: &Path, count: usize, start: usize, policy: Option<&Path>) -> Vec<Vec<u8>> {
    let mut cmd = Command::new(script("ima-log"));
    cmd.arg(file)
        .arg(count.to_string())
        .arg("--start")
        .arg(start.to_string());
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    run_ok(&mut cmd, "ima-log")
        .lines()
        .map(|l| hex::decode(l.trim()).expect("hex"))
        .collect()
}
