//! The TCTIs operators configure, through the `tcti` key and the `TCTI`
//! variable: here `tabrmd:` (the access broker tpm2-abrmd, on a private
//! D-Bus session bus, in front of swtpm), with the real 7.14.3 registrar
//! and an identity quote over mTLS. (`swtpm:` is what every other test
//! uses; `device:` needs a TPM character device this machine lacks.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_lines, https_get, write_config, Agent, Peers, Swtpm};

const ID: &str = "8c9d0e1f-2a3b-4c4d-8e5f-6a7b8c9d0e1f";

/// A D-Bus session bus and tpm2-abrmd on it, over `tpm`; both stopped by
/// PID when dropped.
struct Broker {
    bus_address: String,
    bus_pid: u32,
    abrmd: Child,
}

impl Broker {
    fn start(tpm: &Swtpm) -> Option<Self> {
        if Command::new("tpm2-abrmd")
            .arg("--version")
            .output()
            .is_err()
        {
            return common::skip("tpm2-abrmd is not installed (swtpm-ci/install brings it)");
        }
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let bus_address = lines.next().expect("bus address").to_string();
        let bus_pid: u32 = lines.next().and_then(|p| p.parse().ok()).expect("bus pid");
        let abrmd = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root"])
            .arg(format!("--tcti={}", tpm.tcti()))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tpm2-abrmd");
        let broker = Self {
            bus_address,
            bus_pid,
            abrmd,
        };
        // Ready once its name is on the bus.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let names = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.ListNames",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &broker.bus_address)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            if names.contains("com.intel.tss2.Tabrmd") {
                return Some(broker);
            }
            assert!(Instant::now() < deadline, "tpm2-abrmd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.abrmd.kill();
        let _ = self.abrmd.wait();
        let _ = Command::new("kill").arg(self.bus_pid.to_string()).status();
    }
}

#[test]
fn the_agent_registers_and_quotes_through_tpm2_abrmd_by_key_and_by_variable() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let Some(broker) = Broker::start(&tpm) else {
        return;
    };
    let dir = common::state_dir();
    let port = common::free_port();
    let mut lines = agent_lines(dir.path(), ID, Some(&peers));
    lines.retain(|l| !l.starts_with("port = "));
    lines.push(format!("port = {port}"));
    let bus = [("DBUS_SESSION_BUS_ADDRESS", broker.bus_address.as_str())];

    // The `tcti` key (no TCTI variable).
    let mut by_key = lines.clone();
    by_key.push("tcti = \"tabrmd:bus_type=session\"".into());
    let config = write_config(dir.path(), &by_key);
    let mut agent = Agent::spawn(&config, "", &bus);
    agent.wait_for("registered and activated", 30);
    let cert = dir.path().join("server-cert.crt");
    let (status, body) = https_get(
        port,
        "/v2.6/quotes/identity?nonce=tabrmd0123",
        &cert,
        Some(&peers.client()),
    )
    .expect("curl");
    assert_eq!(status, 200, "{body}");
    assert!(body["results"]["quote"]
        .as_str()
        .is_some_and(|q| q.starts_with('r')));
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");

    // The TCTI variable beats a key that names another TPM.
    let mut by_variable = lines;
    by_variable.push("tcti = \"device:/dev/no-such-tpm\"".into());
    let config = write_config(dir.path(), &by_variable);
    let mut agent = Agent::spawn(&config, "tabrmd:bus_type=session", &bus);
    agent.wait_for("registered and activated", 30);
    let (status, _) = https_get(
        port,
        "/v2.6/quotes/identity?nonce=tabrmd4567",
        &cert,
        Some(&peers.client()),
    )
    .expect("curl");
    assert_eq!(status, 200);
    let log = agent.stop();
    assert!(
        log.contains("AK reloaded"),
        "the AK persisted through the broker reloads: {log}"
    );
}
