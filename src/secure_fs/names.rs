//! A path split into its directory and last name, and errors that name
//! the path (a link where the agent keeps its own files says so).

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use nix::errno::Errno;

/// A path's parent (`.` for a bare name) and last component.
pub(super) fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: path has no file name", path.display()),
        )
    })?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name))
}

/// An open with `O_NOFOLLOW` that failed: `ELOOP` (or `ENOTDIR` when a
/// directory was asked for) with a link at `path` means a link stood where
/// the agent expects its own file or directory.
pub(super) fn opened(path: &Path, errno: Errno) -> io::Error {
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if errno == Errno::ELOOP || (errno == Errno::ENOTDIR && is_link()) {
        return io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: is a symlink; the agent never follows a link where it keeps its own files (remove it)",
                path.display()
            ),
        );
    }
    at(path, errno)
}

/// An error that names `path`.
pub(super) fn at(path: &Path, errno: Errno) -> io::Error {
    let e = io::Error::from(errno);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
