//! The boot time of this machine, which push-model capabilities report as
//! `system_info.boot_time`: constant for a boot (the kernel's `btime`), so
//! the verifier knows when the IMA log started over.

use std::io;
use std::path::Path;

/// The kernel's boot time, Unix seconds, from `btime` in `stat` (normally
/// `/proc/stat`).
pub fn boot_time(stat: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(stat)?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btime_is_read_and_stable() {
        let first = boot_time(Path::new("/proc/stat")).expect("btime");
        assert!(first > 1_000_000_000);
        assert_eq!(boot_time(Path::new("/proc/stat")).expect("btime"), first);
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("stat");
        std::fs::write(&fake, "cpu 1 2 3\nbtime 1700000000\nprocesses 5\n").expect("write");
        assert_eq!(boot_time(&fake).expect("btime"), 1_700_000_000);
        std::fs::write(&fake, "cpu 1 2 3\n").expect("write");
        assert!(boot_time(&fake).is_err());
    }
}
