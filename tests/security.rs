//! Attacks on the agent from everything around it, against the real
//! binaries on swtpm (and the real Keylime 7.14.3 peers where a case needs
//! them). Each test names the attack and what must hold afterwards:
//!
//! - links planted in a state directory that an older release handed to
//!   `run_as` (the AK store, the NK, the mTLS key and certificate, the
//!   secure directory, the audit file): the agent stops at start naming
//!   the link, and what the link points at is unchanged; without links,
//!   root takes the directory back and `run_as` gets only `secure/` and
//!   `revocation/`, also after a restart;
//! - payloads accepted without client authentication: refused at start
//!   (and by `check`) unless dangerously allowed; an agent left running as
//!   root: warned about at start and by `check`; the push agent switching
//!   to `run_as`;
//! - payload scripts that leave a grandchild behind at their time limit,
//!   print a 100 MB line, or read the agent's environment;
//! - a hostile registrar (a 300 MB answer, HTML instead of JSON, control
//!   characters in an error) and a hostile push verifier (control
//!   characters in an error detail, a 300 MB answer);
//! - signed revocation notifications replayed, replayed after a restart,
//!   and older than the newest one acted on;
//! - 600 idle connections from 40 source addresses while the verifier
//!   polls, and connections from outside `allowed_client_cidrs`;
//! - a secret on a config line that does not parse;
//! - core dumps, /proc entries of an agent started as another user, and a
//!   metrics port off loopback;
//! - a client certificate on the configured CRL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::fake::{fixed_answer, ip_server_identity, tls_acceptor, Answer, FakePeer};

use std::fs::Permissions;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    agent_lines, agent_post, https_get, proc_kib, proc_status, serve, wait_until, write_config,
    Agent, Client, Peers, StateDir, Swtpm, AGENT_BIN,
};
use openssl::pkey::{PKey, Private};

/// `nobody` and `nogroup`.
const NOBODY: u32 = 65534;
const RUN_AS: &str = "run_as = \"nobody:nogroup\"";
/// Nothing listens there: TPM probes fail at once.
const CLOSED_TCTI: &str = "swtpm:host=127.0.0.1,port=1";
/// What a hostile peer streams: 300 MB.
const HUGE: usize = 300_000_000;
/// The agent's peak RSS bound under every flood.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Whether the test runs as root (CI does); otherwise skips with a reason.
fn running_as_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    common::skip::<()>("this attack needs the tests to run as root (as CI does)");
    false
}

fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .unwrap_or_else(|e| panic!("chown nobody {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A path as a TOML string.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Runs `cmd` to its end, at most `secs`; its output is kept in files so
/// that a chatty command never blocks on a full pipe.
fn run_bounded(cmd: &mut Command, secs: u64) -> Output {
    let files = tempfile::tempdir().expect("tempdir");
    let (stdout, stderr) = (files.path().join("stdout"), files.path().join("stderr"));
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn();
    let mut child = spawned.unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(stdout).unwrap_or_default(),
        stderr: std::fs::read(stderr).unwrap_or_default(),
    }
}

/// `keylime_agent NAME` (`check`, `info`) with `config` and `tcti` only.
fn subcommand(name: &str, config: &Path, tcti: &str) -> Output {
    let mut cmd = Command::new(AGENT_BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("KEYLIME") || key == "TCTI" {
            cmd.env_remove(key);
        }
    }
    cmd.arg(name)
        .env("KEYLIME_AGENT_CONFIG", config)
        .env("TCTI", tcti);
    run_bounded(&mut cmd, 120)
}

/// Standard output then standard error.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `args` run as nobody:nogroup without supplementary groups.
fn as_nobody(args: &[&str]) -> Output {
    run_bounded(
        Command::new("setpriv")
            .args([
                "--reuid",
                "nobody",
                "--regid",
                "nogroup",
                "--clear-groups",
                "--",
            ])
            .args(args),
        30,
    )
}

/// Real, effective, saved and filesystem uid of `pid`.
fn uids(pid: u32) -> Vec<u32> {
    proc_status(pid, "Uid")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Waits (bounded) for the agent to exit by itself, asserts it failed, and
/// returns its output.
fn stops_at_start(agent: &mut Agent, what: &str) -> String {
    let status = agent.wait_exit(30);
    let out = agent.output();
    assert!(
        matches!(status, Some(code) if code != 0),
        "{what}: the agent must exit non-zero at start, got {status:?}:\n{out}"
    );
    out
}

/// Whether some line of `log` starts with `prefix` (after any blanks or
/// control characters a forger could put first).
fn some_line_starts_with(log: &str, prefix: &str) -> bool {
    log.lines().any(|l| {
        l.trim_start_matches(|c: char| c.is_whitespace() || c.is_control())
            .starts_with(prefix)
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `secs` after the epoch as Python's `time.asctime()` writes it in UTC
/// (`Sun Nov 22 04:24:56 2020`), the verifier's `event_time`.
fn asctime(secs: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = i64::try_from(secs / 86_400).expect("days");
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {day:>2} {:02}:{:02}:{:02} {year}",
        WEEKDAYS[usize::try_from(days % 7).expect("weekday")],
        MONTHS[usize::try_from(month - 1).expect("month")],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `(state, parent pid, start time)` of `pid` from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Whether `pid` (the process that started at `started`, when known) is
/// still running: present, not a zombie, not a newer process on that pid.
fn still_running(pid: u32, started: Option<u64>) -> bool {
    match proc_stat(pid) {
        None => false,
        Some((state, _, start)) => state != 'Z' && started.is_none_or(|s| s == start),
    }
}

/// Kills a process the test caused (a payload script's grandchild) if a
/// failed assertion left it running.
struct KillIfRunning {
    pid: u32,
    started: Option<u64>,
}

impl Drop for KillIfRunning {
    fn drop(&mut self) {
        if self.started.is_some() && still_running(self.pid, self.started) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status();
        }
    }
}

/// A TCP connection to 127.0.0.1:`port` from the local address `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> Option<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((source, 0))).ok()?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let connected = tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
            .await
            .ok()?
            .ok()?;
        connected.into_std().ok()
    })?;
    stream.set_nonblocking(false).ok()?;
    Some(stream)
}

/// `GET /version` over mTLS on an open connection (trusting
/// `server_cert`, presenting `client`): the HTTP status, or `None` when the
/// handshake fails or no answer comes.
fn status_over_mtls(tcp: TcpStream, server_cert: &Path, client: &Client) -> Option<u16> {
    let builder = common::mtls_connector(server_cert, Some(client));
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut config = builder.build().configure().expect("configure");
    config.set_verify_hostname(false);
    let mut tls = config.connect("127.0.0.1", tcp).ok()?;
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .ok()?;
    let answer = common::read_answer(&mut tls, |_| false);
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// `GET /version` over mTLS from 127.0.0.1.
fn mtls_status(port: u16, server_cert: &Path, client: &Client) -> Option<u16> {
    status_over_mtls(
        TcpStream::connect(("127.0.0.1", port)).ok()?,
        server_cert,
        client,
    )
}

// ---------------------------------------------------------------------------
// 1. The state directory
// ---------------------------------------------------------------------------

/// What a victim file or directory looks like: mode, owner, bytes, and for a
/// directory each entry's name, mode, owner and bytes.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    mode: u32,
    uid: u32,
    gid: u32,
    bytes: Vec<u8>,
    entries: Vec<(String, u32, u32, u32, Vec<u8>)>,
}

fn snapshot(path: &Path) -> Snapshot {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            let entry = entry.expect("entry");
            let m = entry.metadata().expect("entry metadata");
            let content = if m.is_file() {
                std::fs::read(entry.path()).expect("entry bytes")
            } else {
                Vec::new()
            };
            entries.push((
                entry.file_name().to_string_lossy().into_owned(),
                m.mode(),
                m.uid(),
                m.gid(),
                content,
            ));
        }
        entries.sort();
    } else {
        bytes = std::fs::read(path).expect("victim bytes");
    }
    Snapshot {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        bytes,
        entries,
    }
}

/// Whether something is mounted on `path`.
fn mount_point(path: &Path) -> bool {
    let target = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

/// Unmounts whatever a broken agent mounted on a link's target.
struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        while mount_point(&self.0) {
            let unmounted = Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                break;
            }
        }
    }
}

#[test]
fn a_symlink_in_the_state_dir_stops_the_agent_and_changes_nothing_outside() {
    if !running_as_root() {
        return;
    }
    // (name in keylime_dir, the target is a directory, extra config line):
    // the config defaults of agent_data_path, payload_key, server_key and
    // server_cert, the secure directory, and an audit file.
    let cases: [(&str, bool, Option<&str>); 6] = [
        ("agent_data.json", false, None),
        ("payload-private.pem", false, None),
        ("server-private.pem", false, None),
        ("server-cert.crt", false, None),
        ("secure", true, None),
        ("audit.log", false, Some("audit_log = \"audit.log\"")),
    ];
    for (name, is_dir, extra) in cases {
        let Some(tpm) = Swtpm::start() else { return };
        let dir = common::state_dir();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join(format!("victim-of-{name}"));
        if is_dir {
            std::fs::create_dir(&victim).expect("victim dir");
            for (file, body) in [("keep-me", "root's data\n"), ("and-me", "more of it\n")] {
                let path = victim.join(file);
                std::fs::write(&path, body).expect("victim entry");
                chmod(&path, 0o644);
            }
            chmod(&victim, 0o755);
        } else {
            std::fs::write(&victim, format!("root's file, not the agent's ({name})\n"))
                .expect("victim file");
            chmod(&victim, 0o644);
        }
        let before = snapshot(&victim);
        assert_eq!((before.uid, before.gid), (0, 0), "the victim is root's");
        let _unmount = UnmountOnDrop(victim.clone());
        let (ca, _) = common::make_ca_and_client(outside.path(), "links");
        let ima = outside.path().join("ima");
        std::fs::write(&ima, "").expect("ima");
        let mut lines = vec![
            "uuid = \"5ec00001-1a2b-4c3d-8e4f-000000000001\"".to_string(),
            format!("keylime_dir = {}", quoted(dir.path())),
            format!("port = {}", common::free_port()),
            format!("registrar_port = {}", common::free_port()),
            format!("trusted_client_ca = {}", quoted(&ca)),
            format!("ima_ml_path = {}", quoted(&ima)),
            RUN_AS.to_string(),
        ];
        lines.extend(extra.map(str::to_string));
        let config = write_config(dir.path(), &lines);
        // As an older release left it: keylime_dir belongs to run_as, who
        // could plant anything in it.
        give_to_nobody(dir.path());
        let planted = dir.path().join(name);
        std::os::unix::fs::symlink(&victim, &planted).expect("plant the link");
        std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).expect("lchown");

        let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
        let out = stops_at_start(&mut agent, name);
        assert!(
            out.contains(&planted.display().to_string()),
            "{name}: the output names the link {}:\n{out}",
            planted.display()
        );
        assert!(
            out.contains("symlink"),
            "{name}: the output says it is a symlink:\n{out}"
        );
        assert!(
            !mount_point(&victim),
            "{name}: a tmpfs was mounted on the link's target {}",
            victim.display()
        );
        assert_eq!(
            snapshot(&victim),
            before,
            "{name}: the link's target {} changed",
            victim.display()
        );
    }
}

/// Everything under `dir` (not following links, not descending into
/// `handed`) that belongs to nobody.
fn owned_by_nobody(dir: &Path, handed: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if handed.contains(&path) {
            continue;
        }
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = path.read_dir() {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
        if meta.uid() == NOBODY {
            found.push(path);
        }
    }
    found
}

/// keylime_dir is root's and closed to nobody; the keys are root's 0600;
/// only `secure/` and `revocation/` belong to nobody (0700).
fn state_is_roots(dir: &Path, when: &str, log: &str) {
    let meta = std::fs::metadata(dir).expect("keylime_dir");
    assert_eq!(meta.uid(), 0, "{when}: keylime_dir is root's again\n{log}");
    assert!(
        as_nobody(&["true"]).status.success(),
        "setpriv cannot act as nobody"
    );
    let file = dir.join("planted-by-nobody");
    let wrote = as_nobody(&[
        "sh",
        "-c",
        "echo planted > \"$1\"",
        "sh",
        file.to_str().expect("utf8"),
    ]);
    assert!(
        !wrote.status.success() && !file.exists(),
        "{when}: nobody created a file in keylime_dir"
    );
    let link = dir.join("link-by-nobody");
    let linked = as_nobody(&["ln", "-s", "/etc/shadow", link.to_str().expect("utf8")]);
    assert!(
        !linked.status.success() && link.symlink_metadata().is_err(),
        "{when}: nobody created a symlink in keylime_dir"
    );
    for name in [
        "payload-private.pem",
        "server-private.pem",
        "server-cert.crt",
        "agent_data.json",
    ] {
        let m = std::fs::symlink_metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{when}: {name}: {e}\n{log}"));
        assert!(m.is_file(), "{when}: {name} is a plain file");
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o600),
            "{when}: {name} is root's with mode 0600"
        );
    }
    for name in ["secure", "revocation"] {
        let m = std::fs::symlink_metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{when}: {name}: {e}\n{log}"));
        assert!(m.is_dir(), "{when}: {name} is a directory");
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (NOBODY, 0o700),
            "{when}: {name} belongs to run_as with mode 0700"
        );
    }
    let handed = owned_by_nobody(dir, &[dir.join("secure"), dir.join("revocation")]);
    assert!(
        handed.is_empty(),
        "{when}: nothing but secure/ and revocation/ belongs to nobody: {handed:?}"
    );
}

#[test]
fn a_state_dir_left_to_run_as_is_taken_back_by_root_and_only_secure_and_revocation_are_handed_over()
{
    if !running_as_root() {
        return;
    }
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    // As an older release left it.
    give_to_nobody(dir.path());
    let id = "5ec00002-1a2b-4c3d-8e4f-000000000002";
    let (agent, config, _) =
        common::registered_agent(&peers, &tpm, &dir, id, &[RUN_AS.to_string()]);
    let log = agent.output();
    assert!(log.contains("now running as nobody"), "{log}");
    state_is_roots(dir.path(), "at the first start", &log);

    agent.stop();
    let mut again = Agent::spawn(&config, &tpm.tcti(), &[]);
    again.wait_for("registered and activated", 30);
    state_is_roots(dir.path(), "after a restart", &again.output());
}

// ---------------------------------------------------------------------------
// 2. and 3. Unauthenticated code, root by default, run_as in push mode
// ---------------------------------------------------------------------------

#[test]
fn payloads_without_client_authentication_are_refused_at_start_unless_dangerously_allowed() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let mut lines = agent_lines(dir.path(), "5ec00003-1a2b-4c3d-8e4f-000000000003", None);
    lines.push("enable_insecure_payload = true".into());
    let config = write_config(dir.path(), &lines);
    let mut refused = Agent::spawn(&config, &tpm.tcti(), &[]);
    let out = stops_at_start(&mut refused, "enable_insecure_payload without mTLS");
    assert!(
        out.contains("dangerous_allow_unauthenticated_payloads"),
        "the refusal names the key that would allow it:\n{out}"
    );
    let check = subcommand("check", &config, &tpm.tcti());
    let report = text(&check);
    assert!(!check.status.success(), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("enable_insecure_payload")),
        "check FAILs naming enable_insecure_payload:\n{report}"
    );

    lines.push("dangerous_allow_unauthenticated_payloads = true".into());
    let config = write_config(dir.path(), &lines);
    let mut allowed = Agent::spawn(&config, &tpm.tcti(), &[]);
    allowed.wait_for("serving API over plain HTTP", 30);
    let out = allowed.output();
    assert!(out.contains("DANGEROUS"), "{out}");
}

#[test]
fn running_as_root_without_run_as_is_warned_about_at_start_and_by_check() {
    if !running_as_root() {
        return;
    }
    let Some(mut s) = serve(&[], 0) else { return };
    s.agent.wait_for("run_as is empty", 30);
    let log = s.agent.output();
    assert!(
        log.lines()
            .any(|l| l.contains("run_as is empty") && l.contains("WARN")),
        "a WARN line:\n{log}"
    );
    let check = subcommand("check", &s.dir.path().join("agent.conf"), CLOSED_TCTI);
    let report = text(&check);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("run_as")),
        "check WARNs about run_as:\n{report}"
    );
}

#[test]
fn the_push_agent_started_as_root_switches_to_run_as() {
    if !running_as_root() {
        return;
    }
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let mut lines = agent_lines(
        dir.path(),
        "5ec00004-1a2b-4c3d-8e4f-000000000004",
        Some(&peers),
    );
    // A verifier that is not there: the agent starts, switches, and retries.
    lines.push(format!(
        "verifier_url = \"https://127.0.0.1:{}\"",
        common::free_port()
    ));
    lines.push(format!(
        "verifier_tls_ca_cert = {}",
        quoted(&peers.cv_ca().join("cacert.crt"))
    ));
    lines.push(RUN_AS.to_string());
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
    agent.wait_for("now running as", 60);
    assert_eq!(
        uids(agent.pid()),
        vec![NOBODY; 4],
        "real, effective, saved and filesystem uid:\n{}",
        agent.output()
    );
    agent.wait_for("next attempt in", 60);
    assert_eq!(agent.wait_exit(1), None, "{}", agent.output());
}

// ---------------------------------------------------------------------------
// 4. Payload scripts
// ---------------------------------------------------------------------------

/// An agent registered with the real registrar; fields drop in order.
#[allow(dead_code)]
struct Node {
    agent: Agent,
    dir: StateDir,
    tpm: Swtpm,
    port: u16,
    id: String,
}

impl Node {
    fn start(peers: &Peers, id: &str, extra: &[String], env: &[(&str, &str)]) -> Option<Self> {
        let tpm = Swtpm::start()?;
        let dir = common::state_dir();
        let (agent, _, port) = common::registered_agent_with_env(peers, &tpm, &dir, id, extra, env);
        Some(Self {
            agent,
            dir,
            tpm,
            port,
            id: id.into(),
        })
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.crt")
    }

    /// Delivers a zip holding `script` as `autorun.sh` with the tenant.
    fn deliver_script(&self, peers: &Peers, scratch: &Path, script: &str) {
        let payload = scratch.join("payload.zip");
        std::fs::write(&payload, zip_with_autorun(script)).expect("payload zip");
        peers.tenant_add(
            &self.id,
            self.port,
            &["-f", payload.to_str().expect("utf8"), "--verify"],
        );
    }
}

fn zip_with_autorun(script: &str) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    zip.start_file("autorun.sh", zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    zip.write_all(script.as_bytes()).expect("zip write");
    zip.finish().expect("zip finish");
    out.into_inner()
}

#[test]
fn a_payload_script_killed_at_its_time_limit_takes_its_grandchildren_with_it() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let extra = ["payload_script_timeout = 3".to_string()];
    let Some(mut node) = Node::start(&peers, "5ec00005-1a2b-4c3d-8e4f-000000000005", &extra, &[])
    else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let pid_file = scratch.path().join("grandchild.pid");
    node.deliver_script(
        &peers,
        scratch.path(),
        &format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {}\necho grandchild started\nsleep 600\n",
            pid_file.display()
        ),
    );
    let read_pid =
        || -> Option<u32> { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() };
    assert!(
        wait_until(60, || read_pid().is_some()),
        "autorun.sh did not start:\n{}",
        node.agent.output()
    );
    let pid = read_pid().expect("grandchild pid");
    let started = proc_stat(pid).map(|(_, _, start)| start);
    let _cleanup = KillIfRunning { pid, started };
    node.agent.wait_for("killed after", 30);
    assert!(
        wait_until(20, || !still_running(pid, started)),
        "the grandchild {pid} outlived its script ({:?}):\n{}",
        proc_stat(pid),
        node.agent.output()
    );
    if let Some((state, parent, start)) = proc_stat(pid) {
        if started.is_none_or(|s| s == start) {
            assert!(
                state == 'Z' && parent != std::process::id(),
                "the grandchild {pid} is dead, not a zombie child of the test: state {state}, parent {parent}"
            );
        }
    }
}

#[test]
fn a_payload_script_printing_a_100_mb_line_cannot_grow_the_agent() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(mut node) = Node::start(&peers, "5ec00006-1a2b-4c3d-8e4f-000000000006", &[], &[])
    else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    node.deliver_script(
        &peers,
        scratch.path(),
        "#!/bin/sh\nhead -c 100000000 /dev/zero | tr '\\0' a\necho\necho done-marker\n",
    );
    node.agent.wait_for("done-marker", 120);
    assert!(
        wait_until(30, || node.agent.output().contains("dropped")),
        "the cut-off output is reported as dropped:\n{}",
        node.agent.output()
    );
    let peak = proc_kib(node.agent.pid(), "VmHWM");
    assert!(
        peak < MEMORY_BOUND_KIB,
        "peak RSS {peak} KiB over {MEMORY_BOUND_KIB} KiB"
    );
    let answer = https_get(
        node.port,
        "/version",
        &node.server_cert(),
        Some(&peers.client()),
    );
    assert!(matches!(answer, Ok((200, _))), "{answer:?}");
}

#[test]
fn payload_scripts_inherit_none_of_the_agents_keylime_variables() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let env = [
        ("KEYLIME_AGENT_SERVER_KEY_PASSWORD", "topsecret-xyz"),
        ("KEYLIME_AGENT_CONTACT_IP", "127.0.0.1"),
    ];
    let Some(node) = Node::start(&peers, "5ec00007-1a2b-4c3d-8e4f-000000000007", &[], &env) else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let seen = scratch.path().join("script-env");
    node.deliver_script(
        &peers,
        scratch.path(),
        &format!(
            "#!/bin/sh\nenv > {0}.part && mv {0}.part {0}\n",
            seen.display()
        ),
    );
    assert!(
        wait_until(60, || seen.exists()),
        "autorun.sh did not run:\n{}",
        node.agent.output()
    );
    let env = std::fs::read_to_string(seen).expect("env");
    assert!(!env.contains("KEYLIME_AGENT_"), "{env}");
    assert!(!env.contains("topsecret-xyz"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

// ---------------------------------------------------------------------------
// 5. Hostile peers
// ---------------------------------------------------------------------------

/// `status` with a declared and streamed body of 300 MB of `a`, until the
/// client hangs up.
fn huge_answer(status: &'static str) -> Answer {
    Arc::new(move |_: &str, w: &mut dyn Write| -> std::io::Result<()> {
        write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\nConnection: close\r\n\r\n"
            )?;
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < HUGE {
            let n = chunk.len().min(HUGE - sent);
            w.write_all(&chunk[..n])?;
            sent += n;
        }
        Ok(())
    })
}

/// A JSON error whose status carries a newline, a carriage return and a
/// terminal escape: decoded, it would start a log line of its own.
const FORGED_REGISTRAR_BODY: &str =
    r#"{"code": 500, "status": "x\nFORGED-LINE injected\r\u001b[2K", "results": {}}"#;
const FORGED_PUSH_BODY: &str =
    r#"{"errors": [{"status": "500", "detail": "evil\nFORGED-PUSH-LINE injected\r\u001b[2K"}]}"#;

/// The agent binary, mTLS off, registering with a fake registrar; fields
/// drop in order.
#[allow(dead_code)]
struct Running {
    agent: Agent,
    dir: StateDir,
    tpm: Swtpm,
}

/// The fake peer (`who`) saw at least `at_least` attempts, and the agent
/// is still running after them.
fn assert_retried_and_alive(fake: &FakePeer, agent: &mut Agent, at_least: usize, who: &str) {
    assert!(
        wait_until(90, || fake.requests() >= at_least),
        "the agent retries the {who}: {:?}\n{}",
        fake.seen(),
        agent.output()
    );
    assert_eq!(
        agent.wait_exit(1),
        None,
        "the agent stays up:\n{}",
        agent.output()
    );
}

fn against_fake_registrar(fake: &FakePeer, id: &str, env: &[(&str, &str)]) -> Option<Running> {
    let tpm = Swtpm::start()?;
    let dir = common::state_dir();
    let mut lines = agent_lines(dir.path(), id, None);
    lines.push(format!("registrar_port = {}", fake.port));
    let config = write_config(dir.path(), &lines);
    let agent = Agent::spawn(&config, &tpm.tcti(), env);
    Some(Running { agent, dir, tpm })
}

#[test]
fn a_registrar_streaming_300_mb_cannot_grow_the_agent() {
    let fake = FakePeer::start(None, huge_answer("200 OK"));
    let Some(mut run) = against_fake_registrar(&fake, "5ec00008-1a2b-4c3d-8e4f-000000000008", &[])
    else {
        return;
    };
    assert_retried_and_alive(&fake, &mut run.agent, 3, "registrar");
    let peak = proc_kib(run.agent.pid(), "VmHWM");
    assert!(
        peak < MEMORY_BOUND_KIB,
        "peak RSS {peak} KiB over {MEMORY_BOUND_KIB} KiB"
    );
    assert!(
        wait_until(10, || run.agent.output().contains("larger than")),
        "{}",
        run.agent.output()
    );
}

#[test]
fn a_registrar_answering_html_is_retried_not_fatal() {
    let fake = FakePeer::start(
        None,
        fixed_answer("200 OK", "text/html", "<html>oops</html>"),
    );
    let Some(mut run) = against_fake_registrar(&fake, "5ec00009-1a2b-4c3d-8e4f-000000000009", &[])
    else {
        return;
    };
    assert_retried_and_alive(&fake, &mut run.agent, 3, "registrar");
    assert!(
        wait_until(10, || run.agent.output().contains("not JSON")),
        "{}",
        run.agent.output()
    );
}

#[test]
fn control_characters_in_a_registrar_error_cannot_forge_log_lines() {
    let fake = FakePeer::start(
        None,
        fixed_answer(
            "500 Internal Server Error",
            "application/json",
            FORGED_REGISTRAR_BODY,
        ),
    );
    let debug = [("RUST_LOG", "info,keylime_agent=debug")];
    let Some(mut run) =
        against_fake_registrar(&fake, "5ec0000a-1a2b-4c3d-8e4f-00000000000a", &debug)
    else {
        return;
    };
    assert_retried_and_alive(&fake, &mut run.agent, 3, "registrar");
    let log = run.agent.output();
    assert!(
        !some_line_starts_with(&log, "FORGED-LINE"),
        "a forged log line:\n{log}"
    );
}

/// The push agent's config: the real registrar, the fake verifier on
/// `verifier_port` trusted through `ca`.
fn push_lines(peers: &Peers, dir: &Path, id: &str, verifier_port: u16, ca: &Path) -> Vec<String> {
    let ima = dir.join("ima");
    std::fs::write(&ima, "").expect("ima");
    let mut lines = agent_lines(dir, id, Some(peers));
    lines.push(format!(
        "verifier_url = \"https://127.0.0.1:{verifier_port}\""
    ));
    lines.push(format!("verifier_tls_ca_cert = {}", quoted(ca)));
    lines.push(format!("ima_ml_path = {}", quoted(&ima)));
    lines
}

#[test]
fn a_hostile_push_verifier_can_neither_forge_log_lines_nor_grow_the_agent() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = ip_server_identity(pki.path());

    // An error detail with a newline, a carriage return and an escape.
    {
        let fake = FakePeer::start(
            Some(tls_acceptor(&cert, &key)),
            fixed_answer(
                "500 Internal Server Error",
                "application/json",
                FORGED_PUSH_BODY,
            ),
        );
        let Some(tpm) = Swtpm::start() else { return };
        let dir = common::state_dir();
        let id = "5ec0000b-1a2b-4c3d-8e4f-00000000000b";
        let config = write_config(
            dir.path(),
            &push_lines(&peers, dir.path(), id, fake.port, &ca),
        );
        let mut agent = Agent::spawn_push(
            &config,
            &tpm.tcti(),
            &[("RUST_LOG", "info,keylime_agent=debug")],
        );
        agent.wait_for("registered and activated", 30);
        assert_retried_and_alive(&fake, &mut agent, 3, "verifier");
        let log = agent.output();
        assert!(
            !some_line_starts_with(&log, "FORGED-PUSH-LINE"),
            "a forged log line:\n{log}"
        );
    }

    // A 300 MB answer to every request.
    {
        let fake = FakePeer::start(Some(tls_acceptor(&cert, &key)), huge_answer("201 Created"));
        let Some(tpm) = Swtpm::start() else { return };
        let dir = common::state_dir();
        let id = "5ec0000c-1a2b-4c3d-8e4f-00000000000c";
        let config = write_config(
            dir.path(),
            &push_lines(&peers, dir.path(), id, fake.port, &ca),
        );
        let mut agent = Agent::spawn_push(&config, &tpm.tcti(), &[]);
        agent.wait_for("registered and activated", 30);
        assert_retried_and_alive(&fake, &mut agent, 2, "verifier");
        let peak = proc_kib(agent.pid(), "VmHWM");
        assert!(
            peak < MEMORY_BOUND_KIB,
            "peak RSS {peak} KiB over {MEMORY_BOUND_KIB} KiB"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Revocation replays
// ---------------------------------------------------------------------------

/// A revocation notification as the verifier sends it, about agent
/// `revoked`, signed with `key` (RSA-PSS, SHA-256, maximum salt).
fn signed_notification(
    key: &PKey<Private>,
    revoked: &str,
    event_id: &str,
    event_time: &str,
) -> String {
    use openssl::hash::MessageDigest;
    use openssl::rsa::Padding;
    use openssl::sign::{RsaPssSaltlen, Signer};
    let msg = serde_json::json!({
        "type": "revocation",
        "ip": "127.0.0.1",
        "agent_id": revoked,
        "port": 9002,
        "tpm_policy": "{\"mask\": \"0x20000\"}",
        "meta_data": "{}",
        "event_time": event_time,
        "event_id": event_id,
        "severity_label": "emergency",
        "context": "{}",
    })
    .to_string();
    let mut signer = Signer::new(MessageDigest::sha256(), key).expect("signer");
    signer.set_rsa_padding(Padding::PKCS1_PSS).expect("pss");
    signer
        .set_rsa_mgf1_md(MessageDigest::sha256())
        .expect("mgf1");
    signer
        .set_rsa_pss_saltlen(RsaPssSaltlen::MAXIMUM_LENGTH)
        .expect("salt");
    signer.update(msg.as_bytes()).expect("update");
    let signature =
        base64::engine::general_purpose::STANDARD.encode(signer.sign_to_vec().expect("sign"));
    serde_json::json!({"msg": msg, "signature": signature}).to_string()
}

fn marker_lines(marker: &Path) -> usize {
    std::fs::read_to_string(marker).map_or(0, |t| t.lines().count())
}

/// Log lines calling a notification a replay.
fn replays(log: &str) -> usize {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("replay"))
        .count()
}

/// Log lines refusing a notification as a replay or as older.
fn replays_or_older(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("replay") || l.contains("older than")
        })
        .count()
}

#[test]
fn a_revocation_is_acted_on_once_even_replayed_after_a_restart_and_older_ones_are_refused() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let ca = peers.init_ca();
    let scratch = tempfile::tempdir().expect("tempdir");
    let marker = scratch.path().join("actions-ran");
    let actions = scratch.path().join("actions");
    std::fs::create_dir(&actions).expect("actions dir");
    let action = actions.join("record.sh");
    std::fs::write(
        &action,
        format!("#!/bin/sh\necho ran >> {}\n", marker.display()),
    )
    .expect("action");
    chmod(&action, 0o755);
    let extra = [
        "revocation_actions = \"record.sh\"".to_string(),
        format!("revocation_actions_dir = {}", quoted(&actions)),
    ];
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let id = "5ec0000d-1a2b-4c3d-8e4f-00000000000d";
    let (agent, config, port) = common::registered_agent(&peers, &tpm, &dir, id, &extra);
    peers.tenant_add(id, port, &["--cert", ca.to_str().expect("utf8")]);
    let delivered = dir
        .path()
        .join("secure/unzipped/RevocationNotifier-cert.crt");
    assert!(
        wait_until(30, || delivered.exists()),
        "no revocation certificate delivered:\n{}",
        agent.output()
    );
    // The genuine revocation key, as the verifier keeps it for this agent.
    let key_pem = peers.verifier_db(id, "revocation_key");
    assert!(
        key_pem.contains("PRIVATE KEY"),
        "the verifier holds the revocation key: {key_pem:?}"
    );
    let key =
        PKey::private_key_from_pem(format!("{key_pem}\n").as_bytes()).expect("revocation key");
    // From here on only the test speaks to the agent.
    let deleted = peers.tenant(&["-c", "delete", "-u", id]);
    assert!(
        deleted.status.success(),
        "tenant delete: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );

    let client = peers.client();
    let server_cert = dir.path().join("server-cert.crt");
    let path = format!("/v{}/notifications/revocation", peers.release.api);
    let post = |body: &str| {
        let answer = agent_post(port, &path, &server_cert, &client, body);
        assert!(matches!(answer, Ok((200, _))), "{answer:?}");
    };
    let lines = || marker_lines(&marker);
    let revoked = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let first_time = now_secs();
    let first = signed_notification(&key, revoked, "first", &asctime(first_time));

    // Acted on once (posted again while the certificate may still be on
    // its way into the agent's revocation directory).
    assert!(
        wait_until(60, || {
            post(&first);
            wait_until(5, || lines() >= 1)
        }),
        "the first notification ran no action:\n{}",
        agent.output()
    );
    let before = replays(&agent.output());
    post(&first);
    post(&first);
    assert!(
        wait_until(30, || replays(&agent.output()) >= before + 2),
        "the two replays are logged as such:\n{}",
        agent.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lines(), 1, "a replay ran the action:\n{}", agent.output());

    // Replayed after a restart.
    agent.stop();
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("serving API over mTLS", 30);
    let before = replays(&agent.output());
    post(&first);
    assert!(
        wait_until(30, || replays(&agent.output()) > before),
        "the replay after a restart is logged as such:\n{}",
        agent.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines(),
        1,
        "a replay after a restart ran the action:\n{}",
        agent.output()
    );

    // Signed, new, but older than the one acted on.
    let before = replays_or_older(&agent.output());
    post(&signed_notification(
        &key,
        revoked,
        "older",
        "Sun Nov 22 04:24:56 2020",
    ));
    assert!(
        wait_until(30, || replays_or_older(&agent.output()) > before),
        "the older notification is refused as such:\n{}",
        agent.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines(),
        1,
        "an older notification ran the action:\n{}",
        agent.output()
    );

    // Newer, different: acted on.
    assert!(wait_until(5, || now_secs() > first_time));
    post(&signed_notification(
        &key,
        revoked,
        "newer",
        &asctime(now_secs()),
    ));
    assert!(
        wait_until(30, || lines() == 2),
        "a newer notification runs the action: {} line(s)\n{}",
        lines(),
        agent.output()
    );
}

// ---------------------------------------------------------------------------
// 7. Connection floods
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    /// Slots that made their first attempt.
    tried: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Connections opened in all.
    opened: AtomicUsize,
}

impl Flood {
    fn stats(&self) -> String {
        format!(
            "{} idle connections open, {} opened in all",
            self.open.load(Ordering::SeqCst),
            self.opened.load(Ordering::SeqCst)
        )
    }
}

/// Stops the flood when the test ends, passed or not.
struct StopFlood(Arc<Flood>);

impl Drop for StopFlood {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// Slot `slot`: an idle TCP connection to 127.0.0.1:`port` from
/// 127.0.0.(2 + slot % 40), opened again whenever it is closed.
async fn hold_idle(slot: usize, port: u16, flood: Arc<Flood>) {
    use tokio::io::AsyncReadExt;
    let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(slot % 40).expect("40 sources"));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut first = true;
    while !flood.stop.load(Ordering::SeqCst) {
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(target).await
        };
        let connected = tokio::time::timeout(Duration::from_secs(2), attempt).await;
        if std::mem::take(&mut first) {
            flood.tried.fetch_add(1, Ordering::SeqCst);
        }
        let Ok(Ok(mut stream)) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        flood.open.fetch_add(1, Ordering::SeqCst);
        flood.opened.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 512];
        while !flood.stop.load(Ordering::SeqCst) {
            let read =
                tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
            if matches!(read, Ok(Ok(0) | Err(_))) {
                break;
            }
        }
        flood.open.fetch_sub(1, Ordering::SeqCst);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `slots` idle connections held (and re-opened) on a thread of their own.
fn start_flood(port: u16, slots: usize) -> (Arc<Flood>, std::thread::JoinHandle<()>) {
    let flood = Arc::new(Flood::default());
    let thread = {
        let flood = flood.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..slots)
                    .map(|slot| tokio::spawn(hold_idle(slot, port, flood.clone())))
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
    };
    (flood, thread)
}

#[test]
fn six_hundred_idle_connections_from_forty_addresses_do_not_keep_the_verifier_out() {
    let Some(s) = serve(&[], 0) else { return };
    let (flood, thread) = start_flood(s.port, 600);
    let stop = StopFlood(flood.clone());
    assert!(
        wait_until(120, || flood.tried.load(Ordering::SeqCst) >= 600),
        "every slot tried to connect: {}",
        flood.stats()
    );
    let mut refused = Vec::new();
    for i in 0..40 {
        let answer = https_get(s.port, "/version", &s.cert(), Some(&s.client));
        if !matches!(answer, Ok((200, _))) {
            refused.push(format!("request {i}: {answer:?} ({})", flood.stats()));
        }
    }
    let during = flood.stats();
    drop(stop);
    thread.join().expect("flood thread");
    eprintln!("during the verifier's requests: {during}");
    assert!(
        refused.is_empty(),
        "the verifier was kept out ({} of 40): {refused:#?}",
        refused.len()
    );
    assert_eq!(s.get("/version").0, 200, "served after the flood");
}

#[test]
fn a_client_outside_allowed_client_cidrs_is_closed_at_once_and_loopback_is_served() {
    let Some(s) = serve(&["allowed_client_cidrs = \"127.0.0.1/32\"".into()], 0) else {
        return;
    };
    let outsider = Ipv4Addr::new(127, 0, 0, 2);
    // A bare connection gets nothing and is closed (or never accepted).
    if let Some(mut bare) = connect_from(outsider, s.port) {
        bare.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut buf = [0u8; 64];
        let read = bare.read(&mut buf);
        assert!(
            matches!(read, Ok(0))
                || read.as_ref().is_err_and(|e| !matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                )),
            "a connection from 127.0.0.2 is closed at once: {read:?}"
        );
    }
    // A valid client certificate does not help from there.
    if let Some(tcp) = connect_from(outsider, s.port) {
        assert_eq!(
            status_over_mtls(tcp, &s.cert(), &s.client),
            None,
            "127.0.0.2 was served"
        );
    }
    assert_eq!(
        mtls_status(s.port, &s.cert(), &s.client),
        Some(200),
        "127.0.0.1 is served"
    );
    assert_eq!(s.get("/version").0, 200);
}

// ---------------------------------------------------------------------------
// 8. Secrets in a config that does not parse
// ---------------------------------------------------------------------------

fn shows_no_secret(who: &str, out: &str, config: &Path) {
    assert!(
        !out.contains("hunter2-secret-value") && !out.contains("hunter2"),
        "{who} shows the secret:\n{out}"
    );
    assert!(
        out.contains(&config.display().to_string()),
        "{who} names the config file {}:\n{out}",
        config.display()
    );
    assert!(out.contains("line"), "{who} names the line:\n{out}");
}

#[test]
fn a_config_line_that_does_not_parse_never_shows_its_secret() {
    let dir = common::state_dir();
    let lines = [
        format!("keylime_dir = {}", quoted(dir.path())),
        "enable_agent_mtls = false".to_string(),
        "tpm_ownerpassword = \"hunter2-secret-value".to_string(),
    ];
    let config = write_config(dir.path(), &lines);
    for name in ["check", "info"] {
        let out = subcommand(name, &config, CLOSED_TCTI);
        let shown = text(&out);
        assert!(!out.status.success(), "{name} exits non-zero:\n{shown}");
        shows_no_secret(name, &shown, &config);
    }
    let mut agent = Agent::spawn(&config, CLOSED_TCTI, &[]);
    let out = stops_at_start(&mut agent, "a config that does not parse");
    shows_no_secret("the agent", &out, &config);
}

// ---------------------------------------------------------------------------
// 9. Process hygiene
// ---------------------------------------------------------------------------

/// `Max core file size` (soft, hard) of `pid`.
fn core_limit(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))?;
    let mut values = rest.split_whitespace();
    Some((values.next()?.to_string(), values.next()?.to_string()))
}

fn no_core(limit: Option<(String, String)>) -> bool {
    limit.is_some_and(|(soft, hard)| soft == "0" && hard == "0")
}

#[test]
fn the_pull_and_push_agents_cannot_dump_core() {
    let Some(s) = serve(&[], 0) else { return };
    let pid = s.agent.pid();
    assert!(
        no_core(core_limit(pid)),
        "pull agent: {:?}",
        core_limit(pid)
    );

    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let (ca, _) = common::make_ca_and_client(dir.path(), "push");
    let mut lines = agent_lines(dir.path(), "5ec0000e-1a2b-4c3d-8e4f-00000000000e", None);
    lines.push(format!(
        "verifier_url = \"https://127.0.0.1:{}\"",
        common::free_port()
    ));
    lines.push(format!("verifier_tls_ca_cert = {}", quoted(&ca)));
    let config = write_config(dir.path(), &lines);
    let mut push = Agent::spawn_push(&config, &tpm.tcti(), &[]);
    let pid = push.pid();
    assert!(
        wait_until(30, || no_core(core_limit(pid))),
        "push agent: {:?}\n{}",
        core_limit(pid),
        push.output()
    );
    assert_eq!(
        push.wait_exit(1),
        None,
        "the push agent runs (retrying its registrar):\n{}",
        push.output()
    );
}

/// The agent binary at a path nobody may execute.
fn binary_for_nobody(scratch: &Path) -> PathBuf {
    if as_nobody(&["test", "-x", AGENT_BIN]).status.success() {
        return PathBuf::from(AGENT_BIN);
    }
    let copy = scratch.join("keylime_agent");
    std::fs::copy(AGENT_BIN, &copy).expect("copy the agent binary");
    chmod(&copy, 0o755);
    chmod(scratch, 0o755);
    copy
}

#[test]
fn an_agent_started_as_nobody_is_not_dumpable() {
    if !running_as_root() {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let scratch = tempfile::tempdir().expect("tempdir");
    let binary = binary_for_nobody(scratch.path());
    let wrapper = scratch.path().join("as-nobody");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --reuid nobody --regid nogroup --clear-groups -- '{}' \"$@\"\n",
            binary.display()
        ),
    )
    .expect("wrapper");
    chmod(&wrapper, 0o755);
    let ima = dir.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    let mut lines = agent_lines(dir.path(), "5ec0000f-1a2b-4c3d-8e4f-00000000000f", None);
    lines.push("enable_insecure_payload = false".into());
    lines.push(format!("ima_ml_path = {}", quoted(&ima)));
    let config = write_config(dir.path(), &lines);
    give_to_nobody(dir.path());
    let mut agent = Agent::spawn_logged(
        wrapper.to_str().expect("utf8"),
        &config,
        dir.path().join("agent-as-nobody.log"),
        &tpm.tcti(),
        &[],
    );
    agent.wait_for("serving API over plain HTTP", 30);
    let pid = agent.pid();
    assert_eq!(uids(pid), vec![NOBODY; 4], "{}", agent.output());
    // The files under /proc/PID (not the directory itself) of a
    // non-dumpable process belong to root, not to the uid it runs as: its
    // own user cannot read its environment or memory.
    for file in ["environ", "mem", "status"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{file}"))
            .expect("/proc/PID file")
            .uid();
        assert_eq!(owner, 0, "/proc/{pid}/{file} of a non-dumpable process");
    }
}

#[test]
fn a_metrics_address_off_loopback_is_warned_about_at_start_and_by_check() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let mut lines = agent_lines(dir.path(), "5ec00010-1a2b-4c3d-8e4f-000000000010", None);
    lines.push(format!(
        "metrics_address = \"0.0.0.0:{}\"",
        common::free_port()
    ));
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("not a loopback address", 30);
    let log = agent.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("not a loopback address") && l.contains("WARN")),
        "a WARN line:\n{log}"
    );
    let check = subcommand("check", &config, CLOSED_TCTI);
    let report = text(&check);
    assert!(report.contains("not a loopback address"), "{report}");
}

// ---------------------------------------------------------------------------
// 10. Client certificate revocation
// ---------------------------------------------------------------------------

/// `openssl ARGS` in `dir`; asserts success.
fn openssl_cli(dir: &Path, args: &[&str]) {
    let out = run_bounded(Command::new("openssl").args(args).current_dir(dir), 60);
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA (with an `openssl ca` database), a good and a revoked client
/// certificate, and the CRL: (CA, good, revoked, CRL).
fn crl_pki(dir: &Path) -> (PathBuf, Client, Client, PathBuf) {
    let d = dir.display();
    std::fs::write(
        dir.join("ca.cnf"),
        format!(
            "[ ca ]\ndefault_ca = test_ca\n\
             [ test_ca ]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}/newcerts\n\
             certificate = {d}/ca.crt\nprivate_key = {d}/ca.key\nserial = {d}/serial\n\
             crlnumber = {d}/crlnumber\ndefault_md = sha256\ndefault_days = 2\n\
             default_crl_days = 2\npolicy = any_name\nunique_subject = no\n\
             copy_extensions = none\nx509_extensions = client_ext\n\
             [ any_name ]\ncommonName = supplied\n\
             [ client_ext ]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n\
             [ req ]\ndistinguished_name = req_dn\nprompt = no\n\
             [ req_dn ]\nCN = CRL test CA\n\
             [ ca_ext ]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        ),
    )
    .expect("ca.cnf");
    std::fs::create_dir(dir.join("newcerts")).expect("newcerts");
    std::fs::write(dir.join("index.txt"), "").expect("index");
    std::fs::write(dir.join("serial"), "01\n").expect("serial");
    std::fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-config", "ca.cnf", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-extensions",
        "ca_ext",
    ]);
    openssl_cli(dir, &ca_args);
    for name in ["good", "revoked"] {
        let (key, csr, crt, subject) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("/CN={name}-client"),
        );
        let mut req = vec!["req", "-config", "ca.cnf", "-new"];
        req.extend(ec);
        req.extend([
            "-keyout",
            key.as_str(),
            "-out",
            csr.as_str(),
            "-subj",
            subject.as_str(),
        ]);
        openssl_cli(dir, &req);
        openssl_cli(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-notext",
                "-in",
                csr.as_str(),
                "-out",
                crt.as_str(),
            ],
        );
    }
    openssl_cli(dir, &["ca", "-config", "ca.cnf", "-revoke", "revoked.crt"]);
    openssl_cli(
        dir,
        &["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"],
    );
    let client = |name: &str| Client {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    (
        dir.join("ca.crt"),
        client("good"),
        client("revoked"),
        dir.join("crl.pem"),
    )
}

#[test]
fn a_client_certificate_on_the_crl_is_refused_and_a_good_one_is_served() {
    if Command::new("openssl").arg("version").output().is_err() {
        common::skip::<()>("the openssl command is not installed");
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, good, revoked, crl) = crl_pki(pki.path());
    let ima = pki.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    let port = common::free_port();
    let lines = [
        "uuid = \"5ec00011-1a2b-4c3d-8e4f-000000000011\"".to_string(),
        format!("keylime_dir = {}", quoted(dir.path())),
        format!("port = {port}"),
        format!("registrar_port = {}", common::free_port()),
        format!("trusted_client_ca = {}", quoted(&ca)),
        format!("trusted_client_crl = {}", quoted(&crl)),
        format!("ima_ml_path = {}", quoted(&ima)),
    ];
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&config, &tpm.tcti(), &[]);
    agent.wait_for("serving API over mTLS", 30);
    let server_cert = dir.path().join("server-cert.crt");
    assert_eq!(
        mtls_status(port, &server_cert, &good),
        Some(200),
        "the good client is served:\n{}",
        agent.output()
    );
    assert_eq!(
        mtls_status(port, &server_cert, &revoked),
        None,
        "the revoked client's handshake is refused:\n{}",
        agent.output()
    );
    assert_eq!(
        mtls_status(port, &server_cert, &good),
        Some(200),
        "and the good one still served"
    );
}
