//! Unit tests of `secure_fs`.

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
}
