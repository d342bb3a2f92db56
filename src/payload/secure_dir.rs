//! The secure directory (`<keylime_dir>/secure`) where K and payloads go:
//! a memory-backed tmpfs, mounted by the agent when it runs as root (or
//! already mounted by the system), else a 0700 directory with a warning.

use std::io;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::secure_fs;

/// What backs the secure directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureBacking {
    /// A tmpfs: secrets never reach a disk.
    Tmpfs,
    /// A plain directory on disk (not root, and no tmpfs there).
    Directory,
}

/// Makes sure `dir` exists and is a tmpfs when possible.
pub fn prepare(dir: &Path, size: &str) -> io::Result<SecureBacking> {
    secure_fs::ensure_private_dir(dir)?;
    if is_tmpfs_mount(dir)? {
        return Ok(SecureBacking::Tmpfs);
    }
    if !may_mount() {
        tracing::warn!(
            "{} is not a tmpfs and the agent may not mount one (it needs CAP_SYS_ADMIN): \
             K and payloads are stored on disk (mode 0700)",
            dir.display()
        );
        return Ok(SecureBacking::Directory);
    }
    let options = format!("size={size},mode=0700");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)?;
    tracing::info!("mounted a {size} tmpfs on {}", dir.display());
    Ok(SecureBacking::Tmpfs)
}

/// Whether this process may mount a tmpfs: CAP_SYS_ADMIN is in its
/// effective set (root normally has it; root under the service units, whose
/// bounding set is empty, does not).
pub fn may_mount() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|effective| effective & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether `dir` is itself a tmpfs mount point (per /proc/self/mountinfo).
pub fn is_tmpfs_mount(dir: &Path) -> io::Result<bool> {
    let dir = std::fs::canonicalize(dir)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let mount_point = left.split(' ').nth(4).map(unescape_octal);
        let fs_type = right.split(' ').next();
        fs_type == Some("tmpfs") && mount_point.as_deref() == Some(dir.to_string_lossy().as_ref())
    }))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal("/a\\040b"), "/a b");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }

    #[test]
    fn a_plain_directory_is_not_a_tmpfs_mount() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_tmpfs_mount(dir.path()).expect("mountinfo"));
    }
}
