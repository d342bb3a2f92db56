//! Files that hold secrets or identity, opened so that root never follows a
//! path another user controls.
//!
//! Every directory is reached by walking its path one component at a time
//! from `/` with `O_NOFOLLOW`: a symbolic link on the way is followed only
//! when root (or the agent's own user) owns it and it sits in a directory
//! nobody else may change. Inside a directory, files are opened relative
//! to the directory's descriptor with `O_NOFOLLOW`, new files with
//! `O_EXCL` under a random name and renamed into place, and modes and
//! owners are set on the descriptor (`fchmod`, `fchown`), never by path.
//! A link where the agent expects its own file or directory is an error
//! naming the path. A file or directory owned by another user is taken
//! back through its descriptor when the agent runs as root (an earlier
//! release handed the state directory to `run_as`), and refused otherwise.
//!
//! Directories are 0700 (or the mode asked for), files 0600, written
//! atomically (temporary file, fsync, rename) so that a crash never leaves
//! a half-written key behind.

mod custody;
mod dir;
mod names;
mod trusted;
mod walk;

use std::io;
use std::path::Path;

pub use custody::Owner;
pub use dir::{Dir, MAX_PRIVATE_FILE};
use names::split;
pub use trusted::read_trusted;

/// Creates `dir` (and missing parents) with mode 0700 and tightens an
/// existing `dir` to 0700; it must be (or is made) the agent's own.
pub fn ensure_private_dir(dir: &Path) -> io::Result<Dir> {
    Dir::ensure(dir, 0o700, Owner::me())
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically. The
/// parent directory is created 0700 if missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (parent, name) = split(path)?;
    let dir = match Dir::open(parent) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => ensure_private_dir(parent)?,
        Err(e) => return Err(e),
    };
    dir.write_private(name, bytes)
}

/// Reads a private file, first tightening its mode to 0600 if group or
/// others could read it. Returns whether the mode had to be fixed.
pub fn read_private(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    let (parent, name) = split(path)?;
    Dir::open(parent)?.read_private(name)
}

/// Reads a private key file: as [`read_private`], but a file another user
/// owned is refused (see [`Dir::read_secret`]).
pub fn read_secret(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    let (parent, name) = split(path)?;
    Dir::open(parent)?.read_secret(name)
}

#[cfg(test)]
mod tests;
