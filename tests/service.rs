//! The agent's side of systemd's notify protocol, with the real 7.14.3
//! registrar and swtpm. A datagram socket the test owns stands in for
//! systemd's (no systemd runs PID 1 here): it receives the datagrams the
//! real agent binary sends to `NOTIFY_SOCKET`. What systemd then does (a
//! restart when pings stop) is systemd's and not tested here.

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
fn notify_says_ready_after_registration_and_watchdog_pings_stop_while_the_tpm_owner_is_stuck() {
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
    let mut idle = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pings(&idle) < 3 {
        assert!(Instant::now() < deadline, "no pings while idle: {idle:?}");
        idle.extend(collect(&socket, Duration::from_millis(500)));
    }

    // The pings come from the TPM owner thread. A TPM call that never
    // returns (swtpm stopped) holds the owner: once the pings sent before
    // it are read, none comes until the TPM answers.
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
    let mut before_stuck = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A window of four ping intervals: a live owner pings in it.
        let window = collect(&socket, Duration::from_secs(2));
        if pings(&window) == 0 {
            break;
        }
        before_stuck.extend(window);
        assert!(
            Instant::now() < deadline,
            "the pings never stopped while the TPM was stopped: {before_stuck:?}"
        );
    }
    let stuck = collect(&socket, Duration::from_secs(2));
    assert_eq!(
        pings(&stuck),
        0,
        "no ping while the owner is stuck: {stuck:?}"
    );
    tpm.signal("CONT");
    let mut resumed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pings(&resumed) < 2 {
        assert!(
            Instant::now() < deadline,
            "no pings after the TPM answered again: {resumed:?}"
        );
        resumed.extend(collect(&socket, Duration::from_millis(500)));
    }
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
