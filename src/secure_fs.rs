//! Files that hold secrets or identity: directories 0700, files 0600,
//! written atomically (temporary file, fsync, rename) so that a crash never
//! leaves a half-written key behind.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700 and tightens an
/// existing `dir` to 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically. The
/// parent directory is created 0700 if missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.exists() {
        ensure_private_dir(parent)?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a private file, first tightening its mode to 0600 if group or
/// others could read it. Returns whether the mode had to be fixed.
pub fn read_private(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    let loose = mode & 0o077 != 0;
    if loose {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok((fs::read(path)?, loose))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
