//! The agent under systemd's notify protocol, with the real 7.14.3
//! registrar and swtpm. The listening socket stands in for systemd's (no
//! systemd runs PID 1 in the test): it receives exactly the datagrams
//! systemd would, from the real agent binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{agent_lines, https_get, write_config, Agent, Peers, Swtpm};

const ID: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";

/// The notifications that arrive within `within`, each as its lines.
fn collect(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

#[test]
fn under_systemd_ready_comes_after_registration_and_a_wedged_tpm_stops_the_watchdog() {
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let dir = common::state_dir();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = common::free_port();
    let mut lines = agent_lines(dir.path(), ID, Some(&peers));
    lines.retain(|l| !l.starts_with("port = "));
    lines.push(format!("port = {port}"));
    let config = write_config(dir.path(), &lines);
    let socket_env = path.display().to_string();
    // A 1 s watchdog: the agent pings every 0.5 s.
    let agent = Agent::spawn(
        &config,
        &tpm.tcti(),
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "1000000")],
    );

    // Everything up to READY, in order.
    let mut before_ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !before_ready.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(Instant::now() < deadline, "no READY: {before_ready:?}");
        before_ready.extend(collect(&socket, Duration::from_millis(200)));
    }
    let statuses: Vec<&String> = before_ready
        .iter()
        .filter(|m| m.contains("STATUS="))
        .collect();
    let position = |needle: &str| statuses.iter().position(|m| m.contains(needle));
    let opening = position("STATUS=opening the TPM").expect("status while opening the TPM");
    let registering =
        position("STATUS=registering with the registrar at").expect("status while registering");
    let ready = position("READY=1").expect("ready");
    assert!(opening < registering && registering < ready, "{statuses:?}");
    assert!(
        statuses[ready].contains(&format!("STATUS=registered as {ID}; serving the API on")),
        "{}",
        statuses[ready]
    );
    assert!(
        agent.output().contains("registered and activated"),
        "READY only after registration: {}",
        agent.output()
    );

    // The owner thread keeps the watchdog alive.
    let idle = collect(&socket, Duration::from_secs(3));
    assert!(pings(&idle) >= 4, "pings every 0.5 s: {idle:?}");

    // A TPM call that never returns (swtpm stopped) wedges the owner: the
    // pings stop, so systemd would restart the agent.
    tpm.signal("STOP");
    let cert = dir.path().join("server-cert.crt");
    let client = peers.client();
    let quote = std::thread::spawn(move || {
        https_get(
            port,
            "/v2.6/quotes/identity?nonce=wedged0123",
            &cert,
            Some(&client),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let wedged = collect(&socket, Duration::from_secs(3));
    tpm.signal("CONT");
    assert_eq!(
        pings(&wedged),
        0,
        "no ping while the owner is stuck: {wedged:?}"
    );
    let resumed = collect(&socket, Duration::from_secs(2));
    assert!(
        pings(&resumed) >= 2,
        "pings again once the TPM answers: {resumed:?}"
    );
    let (status, _) = quote.join().expect("quote thread").expect("curl");
    assert_eq!(status, 200, "the stuck quote completes");

    // SIGTERM: STOPPING before the process ends.
    let _ = agent.stop();
    let last = collect(&socket, Duration::from_millis(300));
    assert!(
        last.iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING sent: {last:?}"
    );
}
