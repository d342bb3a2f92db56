//! `swtpm-ci/demo` as a person runs it: in a terminal (a pseudo-terminal
//! made by `script`), with the real Keylime peers, swtpm and the agent,
//! until the agent is attested; then Ctrl-C typed at the terminal, or
//! SIGTERM sent to the demo as `kill` or a service manager would. The demo
//! must exit 130 (143), say where its logs are, and leave no process and
//! no mount behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::AGENT_BIN;

/// Processes whose command line, working directory or environment name
/// `dir`: what the demo started and left.
fn processes_using(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let base = entry.path();
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(base.join("environ")).unwrap_or_default();
        let cwd = std::fs::read_link(base.join("cwd")).unwrap_or_default();
        let mentions = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(dir);
        if mentions(&cmdline) || mentions(&environ) || cwd.starts_with(dir) {
            found.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// How the demo is stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Ctrl-C typed at its terminal.
    CtrlC,
    /// SIGTERM to the demo script's own process.
    Sigterm,
}

#[test]
fn ctrl_c_in_the_terminal_stops_everything_the_demo_started() {
    run_the_demo_and_stop_it(Stop::CtrlC);
}

#[test]
fn sigterm_stops_everything_the_demo_started() {
    run_the_demo_and_stop_it(Stop::Sigterm);
}

/// The PID of the demo script itself (bash running `demo` on `work`).
fn demo_pid(demo: &str, work: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let is_demo = args.iter().any(|a| a == demo)
                && args.iter().any(|a| a == work)
                && args.first().is_some_and(|a| a.ends_with("bash"));
            is_demo.then_some(pid)
        })
}

fn run_the_demo_and_stop_it(how: Stop) {
    if common::Swtpm::start().is_none() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let work_dir = work.path().join("demo");
    let work_str = work_dir.display().to_string();
    let demo = common::repo().join("swtpm-ci/demo");
    let mut terminal = Command::new("script")
        .args(["-q", "-e", "-f", "-c"])
        .arg(format!("{} {}", demo.display(), work_str))
        .arg("/dev/null")
        .env("DEMO_AGENT_BIN", AGENT_BIN)
        .env_remove("KEYLIME_AGENT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script");
    let (lines, seen) = mpsc::channel();
    let stdout = terminal.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let line = seen
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo never attested:\n{}", screen.join("\n")));
        let attesting = line.contains("agent attesting; Ctrl-C to stop");
        screen.push(line);
        if attesting {
            break;
        }
    }
    assert!(
        screen.iter().any(|l| l.contains("attestation_status PASS")),
        "attested before Ctrl-C:\n{}",
        screen.join("\n")
    );
    assert!(
        !processes_using(&work_str).is_empty(),
        "the demo's processes are found while it runs"
    );

    match how {
        // Ctrl-C, typed at the terminal: the line discipline sends SIGINT
        // to the terminal's foreground process group.
        Stop::CtrlC => terminal
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"\x03")
            .expect("type Ctrl-C"),
        Stop::Sigterm => {
            let pid = demo_pid(&demo.display().to_string(), &work_str)
                .unwrap_or_else(|| panic!("the demo's process:\n{}", screen.join("\n")));
            let killed = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success(), "kill -TERM {pid}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = terminal.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = seen.recv_timeout(Duration::from_millis(500)) {
        screen.push(line);
    }
    let screen = screen.join("\n");
    let expected = if how == Stop::CtrlC { 130 } else { 143 };
    assert_eq!(
        status.code(),
        Some(expected),
        "exit status after {}:\n{screen}",
        if how == Stop::CtrlC {
            "Ctrl-C"
        } else {
            "SIGTERM"
        }
    );
    assert!(
        screen.contains(&format!("stopped; logs are in {work_str}")),
        "{screen}"
    );
    let left = processes_using(&work_str);
    assert!(left.is_empty(), "left running: {left:#?}\n{screen}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&work_str), "left mounted:\n{mounts}");
}
