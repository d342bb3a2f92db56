//! Reaching a directory by path without following a link another user
//! controls: one component at a time from `/`, with `O_PATH` and
//! `O_NOFOLLOW`, a link followed only when it is trusted.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::geteuid;

use super::names::at;

/// Links followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Opens the directory `path`, walking it from `/` (or the working
/// directory) one component at a time, following a link only when
/// [`trusted_link`] says so; with `create`, missing components are made
/// (mode 0700). Returns a descriptor open for reading.
pub(super) fn walk(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut pending = components(path);
    let mut current = start(path)?;
    let mut links = 0;
    let mut walked = PathBuf::from(if path.is_absolute() { "/" } else { "." });
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            current = open_path(&current, OsStr::new(".."), &walked)?;
            walked.pop();
            continue;
        }
        let here = walked.join(&name);
        let fd = match open_path(&current, &name, &here) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                match mkdirat(&current, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(at(&here, e)),
                }
                open_path(&current, &name, &here)?
            }
            other => other?,
        };
        let stat = fstat(&fd).map_err(|e| at(&here, e))?;
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {
                current = fd;
                walked = here;
            }
            SFlag::S_IFLNK => {
                let parent = fstat(&current).map_err(|e| at(&walked, e))?;
                if !trusted_link(&stat, &parent) {
                    return Err(link_refused(&here));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(at(&here, Errno::ELOOP));
                }
                let target = PathBuf::from(
                    readlinkat(&current, name.as_os_str()).map_err(|e| at(&here, e))?,
                );
                let mut spliced = components(&target);
                spliced.extend(pending);
                pending = spliced;
                if target.is_absolute() {
                    current = start(&target)?;
                    walked = PathBuf::from("/");
                }
            }
            _ => return Err(at(&here, Errno::ENOTDIR)),
        }
    }
    openat(
        &current,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(path, e))
}

/// `/` for an absolute path, the working directory otherwise.
fn start(path: &Path) -> io::Result<OwnedFd> {
    let from = if path.is_absolute() { "/" } else { "." };
    openat(
        AT_FDCWD,
        from,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(Path::new(from), e))
}

/// `name` in `dir` as an `O_PATH` descriptor, not following a link.
fn open_path(dir: &OwnedFd, name: &OsStr, path: &Path) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(path, e))
}

/// The names to walk: normal components and `..`.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A link may be followed when root or the agent's user owns it and
/// nobody else may replace it: its directory belongs to root or the agent
/// and is not writable by others, or is sticky (as `/tmp` is).
fn trusted_link(link: &FileStat, dir: &FileStat) -> bool {
    let me = geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == me;
    let sticky = dir.st_mode & 0o1000 != 0;
    trusted(link.st_uid) && (sticky || (trusted(dir.st_uid) && dir.st_mode & 0o022 == 0))
}

fn link_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{}: is a symlink that another user controls; the agent does not follow it (remove it)",
            path.display()
        ),
    )
}
