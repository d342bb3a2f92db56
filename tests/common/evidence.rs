//! Evidence the tests feed the agent: UEFI boot logs written with the
//! `tcg_boot_log` tool (tools/tcg-boot-log, its own crate) and synthetic
//! IMA entries.

use super::*;

/// The `tcg_boot_log` tool, built by `swtpm-ci/test` (`cargo build -p
/// tcg-boot-log`) into the target directory the tests run from. A missing
/// tool fails the test under `AGENT_TESTS_STRICT=1`, else it panics with
/// the command that builds it.
pub fn boot_log_tool() -> PathBuf {
    let tool = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tcg_boot_log")))
        .expect("the test's target directory");
    if !tool.is_file() {
        let reason = format!(
            "{} is missing: build it with `cargo build -p tcg-boot-log` (swtpm-ci/test does)",
            tool.display()
        );
        skip::<()>(&reason);
        panic!("{reason}");
    }
    tool
}

/// Writes a UEFI Secure Boot event log to `log` with `tcg_boot_log write`
/// (its certificates in `keys`, made there if missing), with `args`.
pub fn boot_log(log: &Path, keys: &Path, args: &[&str]) {
    run_ok(
        Command::new(boot_log_tool())
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
