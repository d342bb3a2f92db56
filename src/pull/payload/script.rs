//! Running payload scripts and revocation actions: in a process group of
//! their own with a minimal environment and a time limit, output drained
//! line by line into the log with a bound per line and per run, exit
//! status logged. At the limit the whole group is killed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// Killed at the time limit.
    TimedOut,
    /// Could not be started.
    NotStarted(String),
}

impl RunOutcome {
    /// The exit status as a label: the code, `signal`, `timeout` or
    /// `not_started`.
    pub fn status_label(&self) -> String {
        match self {
            Self::Exited(Some(code)) => code.to_string(),
            Self::Exited(None) => "signal".into(),
            Self::TimedOut => "timeout".into(),
            Self::NotStarted(_) => "not_started".into(),
        }
    }
}

/// The whole environment a script gets: nothing of the agent's (no
/// `KEYLIME_AGENT_*` setting, no password, no systemd socket).
pub const SCRIPT_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LANG", "C.UTF-8"),
];
/// Bytes of one output line that are logged; the rest of the line is
/// counted and dropped.
pub const MAX_LINE: usize = 4096;
/// Bytes of output logged per stream and run; the rest is counted and
/// dropped.
pub const MAX_LOGGED: usize = 256 * 1024;

/// Runs `program args…` in `cwd`, logging its output as `label: line`.
/// The script gets [`SCRIPT_ENV`] only, its own process group, and at
/// `limit` the whole group (children and grandchildren too) is killed.
pub async fn run(
    label: &str,
    program: &Path,
    args: &[&std::ffi::OsStr],
    cwd: &Path,
    limit: Duration,
) -> RunOutcome {
    let mut command = Command::new(program);
    close_inherited(&mut command);
    let mut child = match command
        .env_clear()
        .envs(SCRIPT_ENV)
        .args(args)
        .current_dir(cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tracing::error!("{label}: cannot start {}: {e}", program.display());
            return RunOutcome::NotStarted(e.to_string());
        }
    };
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let drains = [
        child.stdout.take().map(|out| drain(label.to_string(), out)),
        child.stderr.take().map(|err| drain(label.to_string(), err)),
    ];
    let outcome = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => RunOutcome::Exited(status.code()),
        Ok(Err(e)) => RunOutcome::NotStarted(e.to_string()),
        Err(_) => {
            // The script is not reaped yet, so its pid (the group's id)
            // cannot have been reused.
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.kill().await;
            RunOutcome::TimedOut
        }
    };
    collect_drains(label, drains).await;
    log_outcome(label, &outcome, limit);
    outcome
}

/// Waits for the output readers, a second at most, and says what was dropped.
async fn collect_drains(label: &str, drains: [Option<tokio::task::JoinHandle<u64>>; 2]) {
    for mut task in drains.into_iter().flatten() {
        // A child that outlived the script may hold the pipe open: its
        // output is not waited for beyond a second.
        let drained = tokio::time::timeout(Duration::from_secs(1), &mut task).await;
        task.abort();
        if let Ok(Ok(dropped)) = drained {
            if dropped > 0 {
                tracing::warn!(
                    "{label}: {dropped} bytes of output dropped (lines are cut at {MAX_LINE} bytes, at most {MAX_LOGGED} bytes are logged)"
                );
            }
        }
    }
}

/// One log line saying how the script ended.
fn log_outcome(label: &str, outcome: &RunOutcome, limit: Duration) {
    match outcome {
        RunOutcome::Exited(Some(0)) => tracing::info!("{label}: exited with status 0"),
        RunOutcome::Exited(Some(code)) => tracing::warn!("{label}: exited with status {code}"),
        RunOutcome::Exited(None) => tracing::warn!("{label}: killed by a signal"),
        RunOutcome::TimedOut => tracing::warn!(
            "{label}: killed after {} s, with its process group",
            limit.as_secs()
        ),
        RunOutcome::NotStarted(e) => tracing::warn!("{label}: {e}"),
    }
}

/// Makes the script start with descriptors 0, 1 and 2 only. The TPM
/// library opens the TPM device without close-on-exec, and a payload
/// script holding the agent's TPM connection could use its loaded AK.
#[allow(unsafe_code)]
fn close_inherited(command: &mut Command) {
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; close_range(2) is one system
    // call, touches no memory of the parent and allocates nothing. It marks
    // the descriptors close-on-exec rather than closing them, so the pipe
    // on which the child reports a failed exec still works.
    unsafe {
        command.pre_exec(|| {
            let flags = nix::libc::CLOSE_RANGE_CLOEXEC as nix::libc::c_int;
            if nix::libc::close_range(3, u32::MAX, flags) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Logs `reader`'s lines, each cut at [`MAX_LINE`] bytes, up to
/// [`MAX_LOGGED`] bytes in all, escaped; never holds more than one line.
/// Ends at end of file with the number of bytes dropped.
fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    label: String,
    mut reader: R,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::with_capacity(256);
        let (mut logged, mut dropped) = (0usize, 0u64);
        let emit = |line: &mut Vec<u8>, logged: &mut usize| {
            *logged += line.len() + 1;
            tracing::info!(
                "{label}: {}",
                crate::untrusted::escape_bytes(line, MAX_LINE)
            );
            line.clear();
        };
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &byte in &buf[..n] {
                if logged >= MAX_LOGGED {
                    dropped += 1;
                } else if byte == b'\n' {
                    emit(&mut line, &mut logged);
                } else if line.len() < MAX_LINE {
                    line.push(byte);
                } else {
                    dropped += 1;
                }
            }
        }
        if !line.is_empty() && logged < MAX_LOGGED {
            emit(&mut line, &mut logged);
        }
        dropped
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes_and_time_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sh = Path::new("/bin/sh");
        let ok = run(
            "t",
            sh,
            &["-c".as_ref(), "echo out; echo err >&2; exit 3".as_ref()],
            dir.path(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ok, RunOutcome::Exited(Some(3)));
        let slow = run(
            "t",
            sh,
            &["-c".as_ref(), "sleep 30".as_ref()],
            dir.path(),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(slow, RunOutcome::TimedOut);
        let missing = run(
            "t",
            Path::new("/nonexistent/x"),
            &[],
            dir.path(),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(missing, RunOutcome::NotStarted(_)));
    }

    #[tokio::test]
    async fn at_the_limit_the_whole_group_dies_and_the_environment_is_the_scripts_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("grandchild");
        let env_file = dir.path().join("env");
        std::env::set_var("KEYLIME_AGENT_SCRIPT_TEST_SECRET", "do-not-pass");
        let script = format!(
            "env > {env}; sleep 600 & echo $! > {pid}; wait",
            env = env_file.display(),
            pid = pid_file.display()
        );
        let outcome = run(
            "t",
            Path::new("/bin/sh"),
            &["-c".as_ref(), script.as_ref()],
            dir.path(),
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(outcome, RunOutcome::TimedOut);
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        let proc_dir = format!("/proc/{}", pid.trim());
        let mut gone = false;
        for _ in 0..200 {
            // Killed, and reaped by init (it is not our child).
            let state = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "the grandchild {pid} outlived the time limit");
        let env = std::fs::read_to_string(&env_file).expect("env");
        assert!(!env.contains("KEYLIME_AGENT_"), "{env}");
        assert!(env.contains("PATH=/usr/local/sbin"), "{env}");
    }

    #[tokio::test]
    async fn the_script_inherits_no_descriptor_beyond_the_standard_three() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A descriptor without close-on-exec, as the TPM library opens its device.
        let leaky = nix::fcntl::open(
            dir.path().join("held").as_path(),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("open without O_CLOEXEC");
        let listing = dir.path().join("fds");
        let script = format!("ls /proc/self/fd > {}", listing.display());
        let outcome = run(
            "t",
            Path::new("/bin/sh"),
            &["-c".as_ref(), script.as_ref()],
            dir.path(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(outcome, RunOutcome::Exited(Some(0)));
        let fds: Vec<String> = std::fs::read_to_string(&listing)
            .expect("listing")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // 0-2, and the descriptor `ls` opened to list the directory.
        assert!(fds.len() <= 4, "{fds:?}");
        let held = std::os::fd::AsRawFd::as_raw_fd(&leaky).to_string();
        assert!(
            !fds.contains(&held),
            "fd {held} leaked into the script: {fds:?}"
        );
    }

    #[tokio::test]
    async fn a_huge_line_is_cut_and_counted_not_held() {
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let task = drain("t".into(), reader);
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..64 {
            tokio::io::AsyncWriteExt::write_all(&mut writer, &chunk)
                .await
                .expect("write");
        }
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"\nafter\n")
            .await
            .expect("write");
        drop(writer);
        let dropped = task.await.expect("drain");
        assert_eq!(dropped, 64 * 64 * 1024 - MAX_LINE as u64);
    }
}
