//! Files the agent trusts but does not write (CA certificates, CRLs): they
//! must be root's in a directory only root can change.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::geteuid;

use super::dir::{Dir, MAX_PRIVATE_FILE};
use super::names::{at, opened, split};

/// Reads a file the agent trusts but does not write (a CA certificate, a
/// CRL): reached without following untrusted links, at most
/// [`MAX_PRIVATE_FILE`] bytes, and refused unless root (or the agent's own
/// user) owns it and its directory and nobody else may write either.
pub fn read_trusted(path: &Path) -> io::Result<Vec<u8>> {
    let (parent, name) = split(path)?;
    let dir = Dir::open(parent)?;
    let dir_stat = fstat(dir.fd()).map_err(|e| at(parent, e))?;
    let fd = openat(
        dir.fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| opened(path, e))?;
    let stat = fstat(&fd).map_err(|e| at(path, e))?;
    let me = geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == me;
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: {why}; the agent trusts only files root owns in directories only root can change",
                path.display()
            ),
        )
    };
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(refuse("not a regular file".into()));
    }
    if !trusted(stat.st_uid) || stat.st_mode & 0o022 != 0 {
        return Err(refuse(format!(
            "owned by uid {} with mode {:o}",
            stat.st_uid,
            stat.st_mode & 0o7777
        )));
    }
    if !trusted(dir_stat.st_uid) || dir_stat.st_mode & 0o022 != 0 && dir_stat.st_mode & 0o1000 == 0
    {
        return Err(refuse(format!(
            "its directory is owned by uid {} with mode {:o}",
            dir_stat.st_uid,
            dir_stat.st_mode & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_PRIVATE_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PRIVATE_FILE {
        return Err(refuse(format!("larger than {MAX_PRIVATE_FILE} bytes")));
    }
    Ok(bytes)
}
