//! Processes and prerequisites: the repository path, the binaries under test, free
//! ports, `/proc` readings, bounded polling, and the rule that a missing
//! prerequisite skips (or fails under `AGENT_TESTS_STRICT=1`).

use super::*;

/// The repository the tests run in. Read at run time (cargo and nextest
/// set it for every test process), so a build directory shared by two
/// clones never points a test at the other clone's scripts.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_keylime_agent");

pub const PUSH_AGENT_BIN: &str = env!("CARGO_BIN_EXE_keylime_push_model_agent");

/// Runs `cmd`, asserts that it succeeded (naming `what` and its stderr
/// otherwise), and returns its standard output.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A field of `/proc/PID/status` (`field` without its colon), trimmed.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), 0 when absent.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    proc_status(pid, field)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Skips (returns `None`) with a printed reason, or panics under `CI=true`
/// or `AGENT_TESTS_STRICT=1` (set by `swtpm-ci/test`, which installs every
/// prerequisite first, so a skip there would be a test that cannot fail).
pub fn skip<T>(reason: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("AGENT_TESTS_STRICT").as_deref() == Ok("1")
    {
        panic!("prerequisite missing (CI=true or AGENT_TESTS_STRICT=1): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

pub fn script(name: &str) -> PathBuf {
    repo().join("swtpm-ci").join(name)
}

/// A port P with P and P+1 free (the swtpm TCTI puts control on P+1).
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A free TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `cond` every 250 ms for up to `secs`; true once it holds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    cond()
}
