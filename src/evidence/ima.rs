//! The IMA measurement list, one entry per line. An index grows with the
//! log and survives between requests, so a request costs the lines it
//! returns (plus any lines appended since the last one, and at most
//! [`STRIDE`] lines skipped to reach its first entry), never a re-read of
//! the whole log. The index keeps the start of every [`STRIDE`]th line
//! only: 16 bytes per 1,000 entries rather than 8 KB (a 100,000-entry log
//! held 1 MB of offsets for the agent's lifetime). The slice handed out is
//! a byte range streamed straight from the file, so a large log is never
//! held in memory.
//!
//! The kernel's list is readable by root only. [`ImaLog::hold_open`], called
//! before the agent drops to `run_as`, keeps a descriptor opened as root;
//! when the path can no longer be opened, reads go through a duplicate of
//! it. Every read is positional (`pread`), so duplicates sharing one file
//! offset never race.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Read size when scanning for new lines.
const SCAN_CHUNK: usize = 64 * 1024;
/// The index keeps the start offset of every `STRIDE`th line.
const STRIDE: u64 = 64;
/// Read size when skipping from a kept offset to an entry (less than
/// `STRIDE` lines).
const SKIP_CHUNK: usize = 16 * 1024;

/// The IMA log at one path, with its line index.
#[derive(Debug, Clone)]
pub struct ImaLog {
    file: LogFile,
    index: Arc<Mutex<LineIndex>>,
}

/// Where the log is read from: its path, or the descriptor held open.
#[derive(Debug, Clone)]
struct LogFile {
    path: PathBuf,
    held: Arc<OnceLock<File>>,
}

impl LogFile {
    /// The log opened for reading; `None` when there is none. A path the
    /// process may no longer open (it dropped root) falls back to the held
    /// descriptor.
    fn open(&self) -> io::Result<Option<File>> {
        match File::open(&self.path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => match self.held.get() {
                Some(held) => held.try_clone().map(Some),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// A run of whole lines to send: entries from `entry` on, `len` bytes at `offset`.
#[derive(Debug, Clone)]
pub struct ImaSlice {
    /// The first entry returned (`ima_measurement_list_entry`).
    pub entry: u64,
    file: LogFile,
    offset: u64,
    /// Bytes in the slice (whole lines, each ending in `\n`).
    pub len: u64,
}

#[derive(Debug, Default)]
struct LineIndex {
    /// Device and inode of the indexed file, to notice a replaced file.
    identity: Option<(u64, u64)>,
    /// Complete lines seen so far.
    lines: u64,
    /// `checkpoints[k]` is where line `(k + 1) * STRIDE` starts (line 0
    /// starts at 0).
    checkpoints: Vec<u64>,
    /// Offset just past the last complete line.
    scanned: u64,
}

impl ImaLog {
    /// A log at `path`; nothing is read until the first request.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            file: LogFile {
                path: path.into(),
                held: Arc::default(),
            },
            index: Arc::default(),
        }
    }

    /// Opens the log now and keeps the descriptor, for reads after the
    /// process gives up the right to open it. A missing log is not an
    /// error (there is nothing to hold).
    pub fn hold_open(&self) -> io::Result<()> {
        match File::open(&self.file.path) {
            Ok(f) => {
                let _ = self.file.held.set(f);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The entries from `entry` on, as the verifier asks for them: an
    /// `entry` equal to the number of lines gives an empty slice, a larger
    /// one (the log restarted, e.g. after a reboot) the whole log from 0.
    /// `None` when there is no log file.
    pub async fn slice_from(&self, entry: u64) -> io::Result<Option<ImaSlice>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.slice_blocking(entry))
            .await
            .map_err(io::Error::other)?
    }

    /// The number of complete entries in the log now, or `None` when there
    /// is no log file (what push-model capabilities report as `entry_count`).
    pub async fn entry_count(&self) -> io::Result<Option<u64>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with_index(|index, _| Ok(index.lines)))
            .await
            .map_err(io::Error::other)?
    }

    fn slice_blocking(&self, entry: u64) -> io::Result<Option<ImaSlice>> {
        self.with_index(|index, opened| {
            let entry = if entry > index.lines { 0 } else { entry };
            let offset = index.start_of(opened, entry)?;
            Ok(ImaSlice {
                entry,
                file: self.file.clone(),
                offset,
                len: index.scanned - offset,
            })
        })
    }

    /// Runs `f` on the index brought up to the file's end, with the file
    /// opened; `None` when there is no log file.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&LineIndex, &File) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let Some(file) = self.file.open()? else {
            return Ok(None);
        };
        let mut index = self
            .index
            .lock()
            .map_err(|_| io::Error::other("IMA index lock poisoned"))?;
        index.refresh(&file)?;
        f(&index, &file).map(Some)
    }
}

impl LineIndex {
    /// Brings the index up to the file's current end. A replaced file, or
    /// one shorter than what was indexed, is indexed afresh.
    fn refresh(&mut self, file: &File) -> io::Result<()> {
        let meta = file.metadata()?;
        let identity = Some((meta.dev(), meta.ino()));
        // securityfs reports size 0, so size only says "shrunk" for regular files.
        let shrunk = meta.is_file() && meta.len() > 0 && meta.len() < self.scanned;
        if identity != self.identity || shrunk {
            *self = Self {
                identity,
                ..Self::default()
            };
        }
        let mut buf = vec![0u8; SCAN_CHUNK];
        let mut pos = self.scanned;
        let mut line_start = self.scanned;
        loop {
            let n = match file.read_at(&mut buf, pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for i in memchr::memchr_iter(b'\n', &buf[..n]) {
                self.lines += 1;
                line_start = pos + i as u64 + 1;
                if self.lines.is_multiple_of(STRIDE) {
                    self.checkpoints.push(line_start);
                }
            }
            pos += n as u64;
        }
        // A trailing line without its newline is still being written: leave it.
        self.scanned = line_start;
        Ok(())
    }

    /// Where line `entry` starts: from the nearest kept offset at or before
    /// it, the lines in between are skipped by reading them. `entry` equal
    /// to the number of lines gives the end.
    fn start_of(&self, file: &File, entry: u64) -> io::Result<u64> {
        if entry >= self.lines {
            return Ok(self.scanned);
        }
        let kept = entry / STRIDE;
        let mut pos = match kept.checked_sub(1) {
            None => 0,
            Some(k) => usize::try_from(k)
                .ok()
                .and_then(|k| self.checkpoints.get(k).copied())
                .ok_or_else(|| io::Error::other("IMA index: a kept offset is missing"))?,
        };
        let mut skip = entry % STRIDE;
        let mut buf = vec![0u8; SKIP_CHUNK];
        while skip > 0 {
            let n = match file.read_at(&mut buf, pos) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the IMA log shrank while it was read",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for i in memchr::memchr_iter(b'\n', &buf[..n]) {
                skip -= 1;
                if skip == 0 {
                    return Ok(pos + i as u64 + 1);
                }
            }
            pos += n as u64;
        }
        Ok(pos)
    }
}

impl ImaSlice {
    /// An empty slice at `entry` (no new lines).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Opens the slice for positional reads on a blocking thread (no
    /// async hop per read): see [`SliceReader::read_chunk`].
    pub fn open_blocking(&self) -> io::Result<SliceReader> {
        let file = self
            .file
            .open()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the IMA log is gone"))?;
        Ok(SliceReader {
            file,
            next: self.offset,
            end: self.offset + self.len,
        })
    }

    /// The whole slice in memory (fewer bytes if the file was truncated
    /// meanwhile), read on a blocking thread.
    pub async fn read_all(&self) -> io::Result<Vec<u8>> {
        let slice = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = slice.open_blocking()?;
            let mut out = Vec::new();
            reader.read_chunk(&mut out, usize::try_from(slice.len).unwrap_or(usize::MAX))?;
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The slice as text, for a body that carries it as one JSON string
    /// (push-model evidence).
    pub async fn read_text(&self) -> io::Result<String> {
        String::from_utf8(self.read_all().await?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The bytes of one [`ImaSlice`], read with `pread` (the file offset is
/// never moved, so nothing else shares or races it).
#[derive(Debug)]
pub struct SliceReader {
    file: File,
    next: u64,
    end: u64,
}

impl SliceReader {
    /// Reads the next up to `max` bytes of the slice into `buf` (replacing
    /// its contents); 0 at the end of the slice (or of a file truncated
    /// meanwhile).
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let want = usize::try_from(self.end.saturating_sub(self.next))
            .unwrap_or(usize::MAX)
            .min(max);
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self
                .file
                .read_at(&mut buf[filled..], self.next + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        self.next += filled as u64;
        Ok(filled)
    }
}

#[cfg(test)]
mod tests;
