//! The secure directory (`<keylime_dir>/secure`) where K and payloads go:
//! a memory-backed tmpfs, mounted by the agent when it runs as root (or
//! already mounted by the system), else a 0700 directory with a warning.
//! It is opened without following links and mounted through its
//! descriptor, so a link planted there never sends the mount elsewhere;
//! the tmpfs has a bounded size and inode count. It belongs to the
//! identity the agent writes it as (`run_as` after the switch).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::secure_fs::{self, Owner};

/// Files and directories the tmpfs may hold: K, the payload, its
/// unpacked entries (at most 1000 per archive) and the
/// revocation message files.
pub const TMPFS_INODES: u32 = 2048;

/// What backs the secure directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureBacking {
    /// A tmpfs: secrets never reach a disk.
    Tmpfs,
    /// A plain directory on disk (not root, and no tmpfs there).
    Directory,
}

/// What [`prepare`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// What backs the directory.
    pub backing: SecureBacking,
    /// Whether the agent mounted the tmpfs (and so takes it away at stop).
    pub mounted_here: bool,
}

/// Makes sure `dir` exists and is a tmpfs when possible, owned by
/// `writer` (the agent's own user when `None`), mode 0700.
pub fn prepare(dir: &Path, size: &str, writer: Option<Owner>) -> io::Result<Prepared> {
    let owner = writer.unwrap_or_else(Owner::me);
    // Owned by the writer from the start: a restart finds it that way and
    // changes nothing.
    let opened = secure_fs::Dir::ensure(dir, 0o700, owner)?;
    let mut prepared = Prepared {
        backing: SecureBacking::Tmpfs,
        mounted_here: false,
    };
    if !is_tmpfs_mount(dir)? {
        if may_mount() {
            let options = format!("size={size},nr_inodes={TMPFS_INODES},mode=0700");
            // Through the descriptor: the directory opened above, whatever
            // the path names by now.
            let target = format!("/proc/self/fd/{}", opened.fd().as_raw_fd());
            mount(
                Some("tmpfs"),
                target.as_str(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(io::Error::from)?;
            prepared.mounted_here = true;
            tracing::info!(
                "mounted a {size} tmpfs ({TMPFS_INODES} inodes) on {}",
                dir.display()
            );
        } else {
            tracing::warn!(
                "{} is not a tmpfs and the agent may not mount one (it needs CAP_SYS_ADMIN): \
                 K and payloads are stored on disk (mode 0700)",
                dir.display()
            );
            prepared.backing = SecureBacking::Directory;
        }
    }
    drop(opened);
    // The mount's root (or the directory): checked again and handed to
    // the writer through its descriptor.
    secure_fs::Dir::ensure(dir, 0o700, owner)?;
    Ok(prepared)
}

/// At stop: a tmpfs the agent mounted is unmounted when it still may (it
/// runs as root), so K and the payload do not outlive it. After the switch
/// to `run_as` it may not: the tmpfs then stays until the mount is taken
/// away (at reboot, or by the mount unit), and a restarted agent finds its
/// payload there.
pub fn release(dir: &Path, prepared: Prepared) {
    if !prepared.mounted_here || !may_mount() {
        return;
    }
    match umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => tracing::info!("unmounted the tmpfs on {}", dir.display()),
        Err(e) => tracing::warn!("unmounting the tmpfs on {}: {e}", dir.display()),
    }
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
