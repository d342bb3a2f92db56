//! A directory held open by descriptor, and everything done inside it:
//! opening, creating, reading and atomically replacing private files and
//! subdirectories without following a link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::custody::{own_regular_file, set_owner, take_ownership, Custody, Owner};
use super::names::{at, opened, split};
use super::walk::walk;

/// The largest private file the agent reads (keys, certificates, the AK
/// store and its own records are a few KiB).
pub const MAX_PRIVATE_FILE: u64 = 1 << 20;

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
