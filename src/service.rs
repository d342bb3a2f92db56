//! Talking to systemd when it runs the agent as a `Type=notify` service:
//! READY once the agent is registered and serving (or attesting), a status
//! line saying what it is waiting for, and the watchdog kept alive from the
//! TPM owner's thread. Outside systemd (no `NOTIFY_SOCKET`) every call here
//! does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the agent is up, with `status` as its status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sets the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd the agent is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Keeps the watchdog alive (one ping).
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, when systemd set one
/// for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|t| !t.is_zero())
        .map(|t| t / 2)
}

fn send(states: &[NotifyState]) {
    // A lost notification must not stop the agent; systemd notices the
    // missing READY or watchdog ping itself.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("systemd notification not sent: {e}");
    }
}
