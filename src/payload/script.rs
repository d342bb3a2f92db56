//! Running payload scripts and revocation actions: with a time limit,
//! output drained line by line into the log, exit status logged. A script
//! still running at the limit is killed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
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

/// Runs `program args…` in `cwd`, logging its output as `label: line`.
pub async fn run(
    label: &str,
    program: &Path,
    args: &[&std::ffi::OsStr],
    cwd: &Path,
    limit: Duration,
) -> RunOutcome {
    let mut command = Command::new(program);
    for name in crate::service::CHILD_ENV_REMOVED {
        command.env_remove(name);
    }
    let mut child = match command
        .args(args)
        .current_dir(cwd)
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
    let drains = [
        child
            .stdout
            .take()
            .map(|out| drain(label.to_string(), BufReader::new(out))),
        child
            .stderr
            .take()
            .map(|err| drain(label.to_string(), BufReader::new(err))),
    ];
    let outcome = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => RunOutcome::Exited(status.code()),
        Ok(Err(e)) => RunOutcome::NotStarted(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            RunOutcome::TimedOut
        }
    };
    for task in drains.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    match &outcome {
        RunOutcome::Exited(Some(0)) => tracing::info!("{label}: exited with status 0"),
        RunOutcome::Exited(Some(code)) => tracing::warn!("{label}: exited with status {code}"),
        RunOutcome::Exited(None) => tracing::warn!("{label}: killed by a signal"),
        RunOutcome::TimedOut => tracing::warn!("{label}: killed after {} s", limit.as_secs()),
        RunOutcome::NotStarted(e) => tracing::warn!("{label}: {e}"),
    }
    outcome
}

fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    label: String,
    reader: BufReader<R>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = reader.lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!("{label}: {line}");
        }
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
}
