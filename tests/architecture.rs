//! The tree keeps its shape: `tools/architecture.py --check` passes on this
//! repository (no file over 400 lines, no handler over 20, no import cycle
//! between files, no module importing from the module that composes it, no
//! front end used by the core or by the other front end), and fails on a
//! tree that breaks each rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn architecture(root: &Path) -> Option<Output> {
    let tool = common::repo().join("tools").join("architecture.py");
    match Command::new("python3")
        .arg(tool)
        .arg("--check")
        .arg(root)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => common::skip(&format!("python3 cannot run: {e}")),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn this_tree_keeps_every_rule() {
    let Some(out) = architecture(&common::repo()) else {
        return;
    };
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "a rule is broken:\n{report}");
    for line in [
        "files over 400 lines: 0",
        "imports from a composing module: 0",
        "import cycles: 0",
        "imports into a front end from elsewhere: 0",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
}

#[test]
fn a_tree_that_breaks_each_rule_fails_with_each_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for sub in ["a", "pull/api", "push"] {
        std::fs::create_dir_all(src.join(sub)).unwrap();
    }
    let write = |rel: &str, body: &str| std::fs::write(src.join(rel), body).unwrap();
    write(
        "lib.rs",
        "pub mod a;\npub mod big;\npub mod pull;\npub mod push;\n",
    );
    // a/b.rs takes a type from a/mod.rs, which composes it, and a/mod.rs
    // uses b: both a back arrow and a cycle.
    write(
        "a/mod.rs",
        "mod b;\npub struct Shared;\npub fn f() { b::g(); }\n",
    );
    write(
        "a/b.rs",
        "use super::Shared;\npub fn g() -> Option<Shared> { None }\n",
    );
    write("big.rs", &"// filler\n".repeat(401));
    write("pull/mod.rs", "pub mod api;\n");
    write("pull/api/mod.rs", "mod handlers;\n");
    let long_handler = format!(
        "pub async fn identity() -> u8 {{\n{}    0\n}}\n",
        "    let _x = 1;\n".repeat(25)
    );
    write("pull/api/handlers.rs", &long_handler);
    write("push/mod.rs", "use crate::pull::api;\n");
    let Some(out) = architecture(dir.path()) else {
        return;
    };
    let report = text(&out);
    assert!(!out.status.success(), "passed a broken tree:\n{report}");
    for line in [
        "files over 400 lines: 1",
        "handlers over 20 lines: 1 of 1",
        "imports from a composing module: 1",
        "a::b -> a (super::Shared)",
        "import cycles: 1",
        "imports into a front end from elsewhere: 1",
        "push -> pull",
        "5 rule(s) broken",
    ] {
        assert!(report.contains(line), "{line:?} missing from:\n{report}");
    }
}
