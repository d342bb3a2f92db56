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
    allocate_port(2)
}

/// A free TCP port.
pub fn free_port() -> u16 {
    allocate_port(1)
}

/// The next `span` consecutive free ports (1 or 2), handed out in turn from
/// 20000 up to just below the kernel's ephemeral range, by the protocol of
/// `swtpm-ci/free-port` (a counter file under an exclusive flock, shared
/// with the scripts): no other test, script or outgoing connection of the
/// run takes the port before the process it is for binds it.
fn allocate_port(span: u16) -> u16 {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    const LOW: u16 = 20000;
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .map_or(32766, |first| first.saturating_sub(2))
        .max(LOW + 1000);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(std::env::temp_dir().join("keylime-agent-ports"))
        .expect("port counter");
    let mut file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock the port counter");
    let mut text = String::new();
    file.read_to_string(&mut text)
        .expect("read the port counter");
    let mut port = text.trim().parse::<u16>().unwrap_or(LOW);
    for _ in LOW..top {
        if port < LOW || port + span - 1 > top {
            port = LOW;
        }
        let chosen = port;
        port += span;
        if (chosen..chosen + span).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            file.set_len(0).expect("truncate the port counter");
            file.rewind().expect("rewind the port counter");
            write!(file, "{port}").expect("write the port counter");
            return chosen;
        }
    }
    panic!("no free port between {LOW} and {top}");
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
