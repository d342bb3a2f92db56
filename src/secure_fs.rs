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

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{getegid, geteuid, unlinkat, Gid, Uid, UnlinkatFlags};

/// The largest private file the agent reads (keys, certificates, the AK
/// store and its own records are a few KiB).
pub const MAX_PRIVATE_FILE: u64 = 1 << 20;
/// Links followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

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

/// A directory held open by descriptor; everything done inside it is
/// relative to that descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the existing directory `path`, following only trusted links.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            fd: walk(path, false)?,
            path: path.to_path_buf(),
        })
    }

    /// Opens `path`, creating it and missing parents (mode 0700), and makes
    /// it owned by `owner` with `mode`. The last component must not be a
    /// link.
    pub fn ensure(path: &Path, mode: u32, owner: Owner) -> io::Result<Self> {
        let (parent, name) = split(path)?;
        let parent = Self {
            fd: walk(parent, true)?,
            path: parent.to_path_buf(),
        };
        parent.subdir(name, mode, owner)
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `name` inside this directory, created if missing, owned by `owner`
    /// with `mode`; a link or a non-directory there is an error. The
    /// checks and changes go through an `O_PATH` descriptor, so root needs
    /// no read or search right on a directory `owner` keeps to itself (the
    /// service units give root no `CAP_DAC_OVERRIDE`).
    pub fn subdir(&self, name: &OsStr, mode: u32, owner: Owner) -> io::Result<Self> {
        let path = self.path.join(name);
        let created = match mkdirat(self.fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(at(&path, e)),
        };
        let fd = openat(
            self.fd(),
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| opened(&path, e))?;
        let stat = fstat(&fd).map_err(|e| at(&path, e))?;
        let wrong_mode = stat.st_mode & 0o7777 != mode;
        if wrong_mode {
            // Only the owner (or CAP_FOWNER) may change the mode: the
            // agent's own user first, then the one asked for.
            set_owner(&fd, Owner::me(), &path)?;
            let through = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            nix::sys::stat::fchmodat(
                AT_FDCWD,
                through.as_str(),
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| at(&path, e))?;
        }
        if created || wrong_mode {
            set_owner(&fd, owner, &path)?;
        } else {
            take_ownership(&fd, &stat, &path, owner)?;
        }
        // Readable when the agent may read it; else the O_PATH descriptor
        // serves (to mount on, to pass on).
        let fd = openat(
            &fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or(fd);
        Ok(Self { fd, path })
    }

    /// Gives this directory to `owner` (through its descriptor).
    pub fn chown(&self, owner: Owner) -> io::Result<()> {
        set_owner(&self.fd, owner, &self.path)
    }

    /// Writes `bytes` to `name` with mode 0600, replacing it atomically:
    /// a temporary file under a random name created with `O_EXCL`, synced,
    /// then renamed over `name` (a link there is replaced, not followed).
    pub fn write_private(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        let mut random = [0u8; 8];
        openssl::rand::rand_bytes(&mut random).map_err(io::Error::other)?;
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.tmp", hex::encode(random)));
        let fd = openat(
            self.fd(),
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| opened(&self.path.join(&tmp), e))?;
        let result = (|| {
            let mut file = File::from(fd);
            // The umask may have taken bits away, never added any; this
            // makes the mode exact.
            fchmod(&file, Mode::from_bits_truncate(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            renameat(self.fd(), tmp.as_os_str(), self.fd(), name)?;
            // The rename made durable; an O_PATH descriptor cannot be
            // synced (EBADF), and the file itself already is.
            match File::from(self.fd.try_clone()?).sync_all() {
                Err(e) if e.raw_os_error() == Some(Errno::EBADF as i32) => Ok(()),
                other => other,
            }
        })();
        if result.is_err() {
            let _ = unlinkat(self.fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        result.map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", self.path.join(name).display()))
        })
    }

    /// Reads the private file `name` (at most [`MAX_PRIVATE_FILE`] bytes),
    /// first tightening its mode to 0600 if group or others could read it.
    /// Returns whether the mode had to be fixed. A link, a special file, a
    /// file with other hard links or one owned by another user (when the
    /// agent cannot take it back) is an error.
    pub fn read_private(&self, name: &OsStr) -> io::Result<(Vec<u8>, bool)> {
        self.read(name, Custody::TakeBack)
    }

    /// As [`Self::read_private`], for a private key: one another user owned
    /// may have been read or replaced by that user, so it is refused, never
    /// taken back.
    pub fn read_secret(&self, name: &OsStr) -> io::Result<(Vec<u8>, bool)> {
        self.read(name, Custody::OwnOnly)
    }

    fn read(&self, name: &OsStr, custody: Custody) -> io::Result<(Vec<u8>, bool)> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| opened(&path, e))?;
        let stat = own_regular_file(&fd, &path, Owner::me(), custody)?;
        let loose = stat.st_mode & 0o077 != 0;
        if loose {
            fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|e| at(&path, e))?;
        }
        let mut bytes = Vec::new();
        File::from(fd)
            .take(MAX_PRIVATE_FILE + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PRIVATE_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: larger than {MAX_PRIVATE_FILE} bytes", path.display()),
            ));
        }
        Ok((bytes, loose))
    }

    /// Opens `name` for appending, created 0600 if missing, with the same
    /// checks as [`Self::read_private`].
    pub fn open_append(&self, name: &OsStr) -> io::Result<File> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd(),
            name,
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| opened(&path, e))?;
        let stat = own_regular_file(&fd, &path, Owner::me(), Custody::TakeBack)?;
        if stat.st_mode & 0o077 != 0 {
            fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|e| at(&path, e))?;
        }
        Ok(File::from(fd))
    }

    /// Removes the file `name`; a missing file is no error.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        match unlinkat(self.fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(at(&self.path.join(name), e)),
        }
    }
}

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

/// Reads a file the agent trusts but does not write (a CA certificate, a
/// CRL): reached without following untrusted links, at most
/// [`MAX_PRIVATE_FILE`] bytes, and refused unless root (or the agent's own
/// user) owns it and its directory and nobody else may write either.
pub fn read_trusted(path: &Path) -> io::Result<Vec<u8>> {
    let (parent, name) = split(path)?;
    let dir = Dir::open(parent)?;
    let dir_stat = fstat(&dir.fd).map_err(|e| at(parent, e))?;
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

/// What the agent does with a file another user owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Custody {
    /// Root takes it back (a directory or a record an older release gave
    /// away).
    TakeBack,
    /// Refused: a private key another user held is no longer private.
    OwnOnly,
}

/// A path's parent (`.` for a bare name) and last component.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
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

/// Checks that `fd` is a regular file with one link, and makes it
/// `owner`'s (root takes back what another user owns).
fn own_regular_file(
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
fn take_ownership(fd: &OwnedFd, stat: &FileStat, path: &Path, owner: Owner) -> io::Result<()> {
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
    if stat.st_uid != owner.uid.as_raw() {
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
fn set_owner(fd: &OwnedFd, owner: Owner, path: &Path) -> io::Result<()> {
    nix::unistd::fchownat(
        fd,
        "",
        Some(owner.uid),
        Some(owner.gid),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| at(path, e))
}

/// Opens the directory `path`, walking it from `/` (or the working
/// directory) one component at a time, following a link only when
/// [`trusted_link`] says so; with `create`, missing components are made
/// (mode 0700). Returns a descriptor open for reading.
fn walk(path: &Path, create: bool) -> io::Result<OwnedFd> {
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

/// An open with `O_NOFOLLOW` that failed: `ELOOP` (or `ENOTDIR` when a
/// directory was asked for) with a link at `path` means a link stood where
/// the agent expects its own file or directory.
fn opened(path: &Path, errno: Errno) -> io::Error {
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

fn at(path: &Path, errno: Errno) -> io::Error {
    let e = io::Error::from(errno);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Whether a name is safe as one component inside a directory.
pub fn is_plain_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && bytes != b"." && bytes != b".." && !bytes.contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn private_files_and_dirs_have_tight_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("a/b/key.pem");
        write_private(&file, b"secret").expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
        write_private(&file, b"again").expect("rewrite");
        assert_eq!(fs::read(&file).expect("read"), b"again");
        assert_eq!(
            fs::read_dir(tmp.path().join("a/b")).expect("dir").count(),
            1
        );
    }

    #[test]
    fn loose_files_are_tightened_on_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("k");
        fs::write(&file, b"x").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let (bytes, fixed) = read_private(&file).expect("read");
        assert_eq!((bytes.as_slice(), fixed), (&b"x"[..], true));
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_link_where_a_private_file_belongs_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).expect("chmod");
        let state = tmp.path().join("state");
        fs::create_dir(&state).expect("state");
        std::os::unix::fs::symlink(&victim, state.join("key.pem")).expect("link");
        let err = read_private(&state.join("key.pem")).expect_err("link read");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(mode(&victim), 0o644, "no chmod through the link");
        // Writing replaces the link itself; the target keeps its bytes.
        write_private(&state.join("key.pem"), b"new").expect("write");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert!(!fs::symlink_metadata(state.join("key.pem"))
            .expect("meta")
            .file_type()
            .is_symlink());
        // A linked directory where the agent expects its own is refused.
        let victim_dir = tmp.path().join("victim_dir");
        fs::create_dir(&victim_dir).expect("victim dir");
        std::os::unix::fs::symlink(&victim_dir, state.join("secure")).expect("dir link");
        let err = ensure_private_dir(&state.join("secure")).expect_err("dir link");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(mode(&victim_dir), 0o755);
    }

    #[test]
    fn hard_links_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("k");
        fs::write(&file, b"x").expect("write");
        fs::hard_link(&file, tmp.path().join("other")).expect("link");
        let err = read_private(&file).expect_err("hard link");
        assert!(err.to_string().contains("hard links"), "{err}");
    }

    #[test]
    fn trusted_links_on_the_way_are_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        fs::create_dir(&real).expect("real");
        std::os::unix::fs::symlink(&real, tmp.path().join("alias")).expect("alias");
        write_private(&tmp.path().join("alias/f"), b"ok").expect("through own link");
        assert_eq!(fs::read(real.join("f")).expect("read"), b"ok");
        assert!(is_plain_name(OsStr::new("a.json")));
        assert!(!is_plain_name(OsStr::new("../a")));
    }
}
