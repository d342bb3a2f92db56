//! The IMA measurement list, one entry per line. An index of line start
//! offsets grows with the log and survives between requests, so a request
//! costs the lines it returns (plus any lines appended since the last one),
//! never a re-read of the whole log. The slice handed out is a byte range
//! streamed straight from the file, so a large log is never held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Read size when scanning for new lines.
const SCAN_CHUNK: usize = 64 * 1024;

/// The IMA log at one path, with its line index.
#[derive(Debug, Clone)]
pub struct ImaLog {
    path: PathBuf,
    index: Arc<Mutex<LineIndex>>,
}

/// A run of whole lines to send: entries from `entry` on, `len` bytes at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaSlice {
    /// The first entry returned (`ima_measurement_list_entry`).
    pub entry: u64,
    path: PathBuf,
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
            path: path.into(),
            index: Arc::default(),
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
        self.with_index(|index, path| {
            let lines = index.line_starts.len() as u64;
            let entry = if entry > lines { 0 } else { entry };
            let offset = usize::try_from(entry)
                .ok()
                .and_then(|e| index.line_starts.get(e).copied())
                .unwrap_or(index.scanned);
            Ok(ImaSlice {
                entry,
                path: path.clone(),
                offset,
                len: index.scanned - offset,
            })
        })
    }

    /// Runs `f` on the index brought up to the file's end; `None` when
    /// there is no log file.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&LineIndex, &PathBuf) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut index = self
            .index
            .lock()
            .map_err(|_| io::Error::other("IMA index lock poisoned"))?;
        index.refresh(&mut file)?;
        f(&index, &self.path).map(Some)
    }
}

impl LineIndex {
    /// Brings the index up to the file's current end. A replaced file, or
    /// one shorter than what was indexed, is indexed afresh.
    fn refresh(&mut self, file: &mut File) -> io::Result<()> {
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
        file.seek(SeekFrom::Start(self.scanned))?;
        let mut buf = vec![0u8; SCAN_CHUNK];
        let mut pos = self.scanned;
        let mut line_start = self.scanned;
        loop {
            let n = match file.read(&mut buf) {
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

    /// Opens the slice for streaming: an async reader of exactly its bytes
    /// (fewer if the file was truncated meanwhile).
    pub async fn open(&self) -> io::Result<tokio::io::Take<tokio::fs::File>> {
        let mut file = tokio::fs::File::open(&self.path).await?;
        file.seek(SeekFrom::Start(self.offset)).await?;
        Ok(file.take(self.len))
    }

    /// Opens the slice for positional reads on a blocking thread (no
    /// async hop per read): see [`SliceReader::read_chunk`].
    pub fn open_blocking(&self) -> io::Result<SliceReader> {
        Ok(SliceReader {
            file: File::open(&self.path)?,
            next: self.offset,
            end: self.offset + self.len,
        })
    }

    /// The slice as text, for a body that carries it as one JSON string
    /// (push-model evidence).
    pub async fn read_text(&self) -> io::Result<String> {
        let mut text = String::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.open().await?.read_to_string(&mut text).await?;
        Ok(text)
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
        use std::os::unix::fs::FileExt;
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
        let mut out = String::new();
        slice
            .open()
            .await
            .expect("open")
            .read_to_string(&mut out)
            .await
            .expect("read");
        out
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
        assert_eq!(log.slice_from(0).await.expect("io"), None);
    }
}
