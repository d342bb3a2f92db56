//! systemd as PID 1 of its own PID and mount namespaces, on this machine's
//! root file system with a fresh `/run`: installed units run under the real
//! service manager (sandbox, notify, watchdog, restart) although the
//! machine's own PID 1 is not systemd. It starts only what the test starts;
//! the test's drop-ins give those units `DefaultDependencies=no`, so no
//! boot-time unit touches the machine. Stopped (PID 1 killed, which ends the
//! namespace) when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The systemd binary every Debian system has.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// A running systemd in its own namespaces.
pub struct Systemd {
    unshare: Child,
    /// `/tmp/systemd-private-*` before the boot: what PrivateTmp= made
    /// since is removed with the namespace.
    private_tmp_before: Vec<std::path::PathBuf>,
    /// PID 1 of the namespace, as this machine numbers it.
    pub pid: u32,
}

impl Systemd {
    /// Boots systemd with the unit files and drop-ins of `units` in
    /// `/run/systemd/system`, into `keylime-test.target` (which `units`
    /// must hold); what goes wrong before systemd runs goes to `log`.
    /// `None` (through `skip`) without systemd or `unshare`.
    pub fn boot(units: &Path, log: &Path) -> Option<Self> {
        if !Path::new(SYSTEMD).exists() {
            return super::skip(&format!("{SYSTEMD} is missing"));
        }
        let private_tmp_before = private_tmp();
        let log_file = std::fs::File::create(log).expect("systemd log");
        let script = format!(
            "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/systemd/system && \
             cp -r \"$1\"/. /run/systemd/system/ && \
             exec env container=keylime-test {SYSTEMD} --system --unit=keylime-test.target \
             --log-target=console --log-level=info"
        );
        let unshare = match Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "boot",
            ])
            .arg(units)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return super::skip(&format!("unshare: {e}")),
        };
        let mut booted = Self {
            unshare,
            private_tmp_before,
            pid: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let children = std::fs::read_to_string(format!(
                "/proc/{0}/task/{0}/children",
                booted.unshare.id()
            ))
            .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                booted.pid = pid;
                if booted.systemctl(&["show", "-P", "Version"]).0 {
                    return Some(booted);
                }
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not come up:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `systemctl ARGS` inside the namespace: whether it succeeded, and
    /// what it printed.
    pub fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["--target", &self.pid.to_string(), "--mount", "--pid", "--"])
            .arg("systemctl")
            .args(args)
            .output()
            .expect("nsenter systemctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-P", name, unit])
            .1
            .trim()
            .to_string()
    }

    /// The machine's PID of the unit's main process, if it has one.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        let inner: u32 = self.property(unit, "MainPID").parse().ok()?;
        if inner == 0 {
            return None;
        }
        let namespace = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()?;
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? != namespace {
                    return None;
                }
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let ns_pid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))?
                    .split_whitespace()
                    .last()?
                    .parse::<u32>()
                    .ok()?;
                (ns_pid == inner).then_some(pid)
            })
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        for dir in private_tmp() {
            if !self.private_tmp_before.contains(&dir) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The directories systemd makes in `/tmp` for units with PrivateTmp=.
fn private_tmp() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("systemd-private-"))
                })
                .collect()
        })
        .unwrap_or_default()
}
