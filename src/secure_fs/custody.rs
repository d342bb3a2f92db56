//! Who may own what the agent opens: its own files are taken back from
//! another user (or refused, for private keys).

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sys::stat::{fstat, FileStat, SFlag};
use nix::unistd::{getegid, geteuid, Gid, Uid};

use super::names::at;

/// Who must own a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user.
    pub uid: Uid,
    /// The group.
    pub gid: Gid,
}

impl Owner {
    /// The process's effective user and group: whoever writes the file.
    pub fn me() -> Self {
        Self {
            uid: geteuid(),
            gid: getegid(),
        }
    }
}

/// What the agent does with a file another user owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Custody {
    /// Root takes it back (a directory or a record an older release gave
    /// away).
    TakeBack,
    /// Refused: a private key another user held is no longer private.
    OwnOnly,
}

/// Checks that `fd` is a regular file with one link, and makes it
/// `owner`'s (root takes back what another user owns).
pub(super) fn own_regular_file(
    fd: &OwnedFd,
    path: &Path,
    owner: Owner,
    custody: Custody,
) -> io::Result<FileStat> {
    let stat = fstat(fd).map_err(|e| at(path, e))?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a regular file", path.display()),
        ));
    }
    if stat.st_nlink > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: has {} hard links; the agent's files have one (remove the other names)",
                path.display(),
                stat.st_nlink
            ),
        ));
    }
    if custody == Custody::OwnOnly && stat.st_uid != owner.uid.as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: a private key owned by uid {}, not by the agent (uid {}): that user may have read or \
                 replaced it; delete it so the agent makes a new one (the registrar and tenant then need \
                 the agent registered again)",
                path.display(),
                stat.st_uid,
                owner.uid
            ),
        ));
    }
    take_ownership(fd, &stat, path, owner)?;
    Ok(stat)
}

/// Makes the object behind `fd` owned by `owner`: nothing to do when it
/// is; root takes it over through the descriptor (with one WARN line);
/// anyone else is refused.
pub(super) fn take_ownership(
    fd: &OwnedFd,
    stat: &FileStat,
    path: &Path,
    owner: Owner,
) -> io::Result<()> {
    if stat.st_uid == owner.uid.as_raw() && stat.st_gid == owner.gid.as_raw() {
        return Ok(());
    }
    if !geteuid().is_root() {
        if stat.st_uid == owner.uid.as_raw() {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: owned by uid {}, not by the agent (uid {}); the agent uses only files it owns",
                path.display(),
                stat.st_uid,
                owner.uid
            ),
        ));
    }
    set_owner(fd, owner, path)?;
    // Root handing its own directory to `run_as` (a fresh tmpfs) is the
    // layout, not news; taking something back from another user is.
    if stat.st_uid != owner.uid.as_raw() && stat.st_uid != 0 {
        tracing::warn!(
            "{}: was owned by uid {}; taken back by the agent (now uid {}, gid {})",
            path.display(),
            stat.st_uid,
            owner.uid,
            owner.gid
        );
    }
    Ok(())
}

/// `fchown` through any descriptor, `O_PATH` ones included.
pub(super) fn set_owner(fd: &OwnedFd, owner: Owner, path: &Path) -> io::Result<()> {
    nix::unistd::fchownat(
        fd,
        "",
        Some(owner.uid),
        Some(owner.gid),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| at(path, e))
}
