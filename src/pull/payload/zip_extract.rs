//! Unzipping a payload into the secure directory, refusing any entry that
//! would land outside it: `..` components, absolute paths, and symlinks.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::secure_fs;

/// The zip local-file-header signature.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// Upper bound on what one payload may unpack to (the tmpfs bounds it too).
const MAX_UNPACKED: u64 = 1 << 30;
/// Upper bound on the entries of one archive (files and directories): a
/// zip of millions of empty entries would otherwise cost a file each.
pub const MAX_ENTRIES: usize = 1000;

/// Whether `data` looks like a zip archive.
pub fn is_zip(data: &[u8]) -> bool {
    data.starts_with(ZIP_MAGIC)
}

/// Extracts every entry of `data` under `dest`. Any escaping entry fails
/// the whole extraction before anything is written.
pub fn extract(data: &[u8], dest: &Path) -> io::Result<Vec<PathBuf>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut archive = zip::ZipArchive::new(io::Cursor::new(data))
        .map_err(|e| bad(format!("not a zip archive: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(bad(format!(
            "the archive has {} entries; at most {MAX_ENTRIES} are unpacked",
            archive.len()
        )));
    }
    let mut planned = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from("<non-UTF-8 name>"));
        if entry.is_symlink() {
            return Err(bad(format!("zip entry {name:?} is a symlink")));
        }
        let relative = safe_relative(&name)
            .ok_or_else(|| bad(format!("zip entry {name:?} escapes the payload directory")))?;
        planned.push((i, relative, entry.is_dir()));
    }
    let mut written = Vec::new();
    let mut total = 0u64;
    for (i, relative, is_dir) in planned {
        let target = dest.join(&relative);
        if is_dir {
            secure_fs::ensure_private_dir(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            secure_fs::ensure_private_dir(parent)?;
        }
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        // Payload files are secrets: owner-only, whatever the archive says.
        // A fresh file, never through a link: the directory is new, and a
        // name used twice in the archive is refused.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o600)
            .open(&target)?;
        let copied = io::copy(&mut (&mut entry).take(MAX_UNPACKED - total), &mut out)?;
        total += copied;
        if total >= MAX_UNPACKED {
            return Err(bad("payload unpacks to more than 1 GiB".into()));
        }
        written.push(target);
    }
    Ok(written)
}

/// The entry name as a relative path of normal components only.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn archive(entries: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> Vec<u8> {
        let mut buf = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, body) in entries {
            w.start_file(*name, SimpleFileOptions::default())
                .expect("start");
            w.write_all(body).expect("write");
        }
        if let Some((name, target)) = symlink {
            w.add_symlink(name, target, SimpleFileOptions::default())
                .expect("symlink");
        }
        w.finish().expect("finish");
        buf.into_inner()
    }

    #[test]
    fn extracts_nested_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = archive(&[("autorun.sh", b"echo hi"), ("sub/dir/file", b"x")], None);
        assert!(is_zip(&data));
        let written = extract(&data, dir.path()).expect("extract");
        assert_eq!(written.len(), 2);
        assert_eq!(
            std::fs::read(dir.path().join("sub/dir/file")).expect("read"),
            b"x"
        );
    }

    #[test]
    fn refuses_entries_that_escape() {
        for name in ["../evil", "a/../../evil", "/etc/evil"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let data = archive(&[("good", b"1"), (name, b"2")], None);
            assert!(extract(&data, dir.path()).is_err(), "{name}");
            assert!(
                !dir.path().join("good").exists(),
                "nothing is written when one entry is bad"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = archive(&[("good", b"1")], Some(("link", "/etc/passwd")));
        assert!(extract(&data, dir.path()).is_err(), "symlink");
    }

    #[test]
    fn an_archive_of_too_many_entries_is_refused_before_anything_is_written() {
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let err = extract(&archive(&entries, None), dir.path()).expect_err("too many");
        assert!(err.to_string().contains("entries"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
        let fewer = &entries[..MAX_ENTRIES];
        assert_eq!(
            extract(&archive(fewer, None), dir.path())
                .expect("at the cap")
                .len(),
            MAX_ENTRIES
        );
    }

    #[test]
    fn non_zip_is_detected() {
        assert!(!is_zip(b"hello"));
        assert!(extract(b"PK\x03\x04garbage", Path::new("/nonexistent")).is_err());
    }
}
