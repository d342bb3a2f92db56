//! Unit tests of `evidence::ima`: the verifier's slicing rules, appends,
//! replaced and shrunk files, and the sparse index around its kept offsets.

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
async fn entries_around_the_kept_offsets_start_where_their_line_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ima");
    let n = 3 * STRIDE as usize + 5;
    std::fs::write(&path, (0..n).map(line).collect::<String>()).expect("write");
    let log = ImaLog::new(&path);
    assert_eq!(log.entry_count().await.expect("count"), Some(n as u64));
    let stride = STRIDE as usize;
    for entry in [
        0,
        1,
        stride - 1,
        stride,
        stride + 1,
        2 * stride,
        3 * stride,
        n - 1,
        n,
    ] {
        let s = log.slice_from(entry as u64).await.expect("io").expect("p");
        assert_eq!(s.entry, entry as u64);
        assert_eq!(
            text(&s).await,
            (entry..n).map(line).collect::<String>(),
            "from entry {entry}"
        );
    }
    // Lines appended one at a time keep the kept offsets right.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    for i in n..n + stride {
        f.write_all(line(i).as_bytes()).expect("append");
        assert_eq!(log.entry_count().await.expect("count"), Some(i as u64 + 1));
    }
    let entry = 4 * stride;
    let s = log.slice_from(entry as u64).await.expect("io").expect("p");
    assert_eq!(
        text(&s).await,
        (entry..n + stride).map(line).collect::<String>()
    );
}

#[tokio::test]
async fn a_missing_log_is_none() {
    let log = ImaLog::new("/nonexistent/ima");
    assert!(log.slice_from(0).await.expect("io").is_none());
}
