//! The IMA measurement list, one entry per line. An index of line start
//! offsets grows with the log and survives between requests, so a request
//! costs the lines it returns (plus any lines appended since the last one),
//! never a re-read of the whole log. The slice handed out is a byte range
//! streamed straight from the file, so a large log is never held in memory.
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
    /// Start offset of every complete line seen so far.
    line_starts: Vec<u64>,
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
        tokio::task::spawn_blocking(move || {
            this.with_index(|index, _| Ok(index.line_starts.len() as u64))
        })
        .await
        .map_err(io::Error::other)?
    }

    fn slice_blocking(&self, entry: u64) -> io::Result<Option<ImaSlice>> {
        self.with_index(|index, file| {
            let lines = index.line_starts.len() as u64;
            let entry = if entry > lines { 0 } else { entry };
            let offset = usize::try_from(entry)
                .ok()
                .and_then(|e| index.line_starts.get(e).copied())
                .unwrap_or(index.scanned);
            Ok(ImaSlice {
                entry,
                file: file.clone(),
                offset,
                len: index.scanned - offset,
            })
        })
    }

    /// Runs `f` on the index brought up to the file's end; `None` when
    /// there is no log file.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&LineIndex, &LogFile) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let Some(file) = self.file.open()? else {
            return Ok(None);
        };
        let mut index = self
            .index
            .lock()
            .map_err(|_| io::Error::other("IMA index lock poisoned"))?;
        index.refresh(&file)?;
        f(&index, &self.file).map(Some)
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
            for (i, byte) in buf[..n].iter().enumerate() {
                if *byte == b'\n' {
                    self.line_starts.push(line_start);
                    line_start = pos + i as u64 + 1;
                }
            }
            pos += n as u64;
        }
        // A trailing line without its newline is still being written: leave it.
        self.scanned = line_start;
        Ok(())
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
mod tests {
    use super::*;
    use std::io::Write;

    fn line(i: usize) -> String {
        format!("10 {:040x} ima-ng sha256:{:064x} /bin/file{i}\n", i, i)
    }

    async fn text(slice: &ImaSlice) -> String {
        slice.read_text().await.expect("read")
    }

    #[tokio::test]
    async fn slices_follow_the_verifier_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ima");
        let mut f = File::create(&path).expect("create");
        for i in 0..5 {
            f.write_all(line(i).as_bytes()).expect("write");
        }
        let log = ImaLog::new(&path);
        assert_eq!(log.entry_count().await.expect("count"), Some(5));
        let all = log.slice_from(0).await.expect("io").expect("present");
        assert_eq!(
            (all.entry, text(&all).await),
            (0, (0..5).map(line).collect::<String>())
        );
        let tail = log.slice_from(3).await.expect("io").expect("present");
        assert_eq!((tail.entry, text(&tail).await), (3, line(3) + &line(4)));
        let none = log.slice_from(5).await.expect("io").expect("present");
        assert_eq!((none.entry, none.is_empty()), (5, true));
        let past = log.slice_from(9).await.expect("io").expect("present");
        assert_eq!(past.entry, 0, "past the end: the whole list from 0");
        assert_eq!(text(&past).await.lines().count(), 5);
    }

    #[tokio::test]
    async fn appended_lines_are_indexed_and_partial_lines_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ima");
        std::fs::write(&path, line(0)).expect("write");
        let log = ImaLog::new(&path);
        assert_eq!(
            log.slice_from(1).await.expect("io").expect("present").len,
            0
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        let next = line(1);
        f.write_all(&next.as_bytes()[..10]).expect("partial");
        assert!(
            log.slice_from(1)
                .await
                .expect("io")
                .expect("present")
                .is_empty(),
            "half a line is not an entry"
        );
        f.write_all(&next.as_bytes()[10..]).expect("rest");
        let s = log.slice_from(1).await.expect("io").expect("present");
        assert_eq!(text(&s).await, next);
    }

    #[tokio::test]
    async fn a_shrunk_or_replaced_file_is_indexed_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ima");
        std::fs::write(&path, (0..10).map(line).collect::<String>()).expect("write");
        let log = ImaLog::new(&path);
        assert_eq!(
            log.slice_from(0).await.expect("io").expect("p").len as usize,
            (0..10).map(|i| line(i).len()).sum::<usize>()
        );
        // Replaced by a shorter log (a new file: new inode).
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, line(7) + &line(8)).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        let s = log.slice_from(2).await.expect("io").expect("p");
        assert_eq!((s.entry, s.is_empty()), (2, true));
        let s = log.slice_from(1).await.expect("io").expect("p");
        assert_eq!(text(&s).await, line(8));
        // Truncated in place.
        std::fs::write(&path, line(3)).expect("truncate");
        let s = log.slice_from(0).await.expect("io").expect("p");
        assert_eq!(text(&s).await, line(3));
    }

    #[tokio::test]
    async fn a_missing_log_is_none() {
        let log = ImaLog::new("/nonexistent/ima");
        assert!(log.slice_from(0).await.expect("io").is_none());
    }
}
