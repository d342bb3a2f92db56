//! The Debian package, as an operator gets it: built by
//! `swtpm-ci/package`, installed with `dpkg -i` on this machine, its files,
//! modes, conffile and account checked, its units passed through
//! `systemd-analyze verify`, the installed binary run against swtpm and the
//! real 7.14.3 registrar with the installed config and the service unit's
//! credentials (root without capabilities), then the installed unit under
//! the real systemd (booted as PID 1 of its own namespaces: sandbox,
//! notify, watchdog restart), and then removed and purged.
//!
//! The machine's own `keylime` account (made by `swtpm-ci/install` for the
//! `run_as` tests) is moved aside for the first install, so the package's
//! create-and-delete path runs, and put back before a second install shows
//! that an account the package did not make is kept. The test therefore
//! runs alone (`.config/nextest.toml`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Agent, Peers, Swtpm, AGENT_BIN};

const ID: &str = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
const CONFFILE: &str = "/etc/keylime/agent.conf";
const UNITS: [&str; 3] = [
    "/lib/systemd/system/keylime_agent.service",
    "/lib/systemd/system/keylime_push_model_agent.service",
    "/lib/systemd/system/var-lib-keylime-secure.mount",
];

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "keylime-agent"])
        .1
        .contains("install ok installed")
}

/// The comment the package's postinst gives the account it creates.
const TAG: &str = "Keylime agent (keylime-agent package)";

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "keylime-agent"]);
    }
}

fn passwd_entry() -> String {
    run("getent", &["passwd", "keylime"]).1.trim().to_string()
}

/// A `keylime` account the package did not make, deleted for the test and
/// re-created (same uid, group, comment, home and shell) by `restore` or
/// on drop.
struct AccountAside {
    entry: String,
}

impl AccountAside {
    fn take(entry: String) -> Self {
        let (ok, text) = run("userdel", &["keylime"]);
        assert!(ok, "userdel keylime: {text}");
        Self { entry }
    }

    fn restore(&self) {
        if !passwd_entry().is_empty() {
            return;
        }
        let f: Vec<&str> = self.entry.split(':').collect();
        assert_eq!(f.len(), 7, "passwd entry: {}", self.entry);
        let (ok, text) = run(
            "useradd",
            &[
                "--system",
                "--uid",
                f[2],
                "--gid",
                f[3],
                "--comment",
                f[4],
                "--home-dir",
                f[5],
                "--no-create-home",
                "--shell",
                f[6],
                "keylime",
            ],
        );
        assert!(ok, "useradd keylime: {text}");
    }
}

impl Drop for AccountAside {
    fn drop(&mut self) {
        if passwd_entry().is_empty() {
            self.restore();
        }
    }
}

/// The value of `key=` in a unit file (the last one, as systemd reads it).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(unit)
        .unwrap_or_else(|e| panic!("{unit}: {e}"))
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::to_string)
}

/// The capabilities the units start the agent with: what the switch to
/// `run_as` needs.
const UNIT_CAPABILITIES: &str = "CAP_SETUID CAP_SETGID CAP_CHOWN";

/// A script that starts the installed agent with the credentials
/// `keylime_agent.service` gives it: its umask, its capability bounding
/// set (only what the switch to run_as needs), no ambient or inheritable
/// capabilities, no new privileges, and its supplementary groups.
fn service_credentials_wrapper(dir: &Path) -> PathBuf {
    let unit = UNITS[0];
    for unit in &UNITS[..2] {
        assert_eq!(
            unit_value(unit, "CapabilityBoundingSet").as_deref(),
            Some(UNIT_CAPABILITIES)
        );
        assert_eq!(unit_value(unit, "LimitCORE").as_deref(), Some("0"));
        assert!(unit_value(unit, "MemoryMax").is_some(), "{unit}: MemoryMax");
    }
    assert_eq!(unit_value(unit, "NoNewPrivileges").as_deref(), Some("yes"));
    let umask = unit_value(unit, "UMask").expect("UMask");
    let groups: Vec<String> = unit_value(unit, "SupplementaryGroups")
        .expect("SupplementaryGroups")
        .split_whitespace()
        .map(|g| {
            run("getent", &["group", g])
                .1
                .split(':')
                .nth(2)
                .unwrap_or_else(|| panic!("group {g}"))
                .to_string()
        })
        .collect();
    let wrapper = dir.join("as-the-service");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\numask {umask}\nexec setpriv --bounding-set=-all,+setuid,+setgid,+chown \
             --inh-caps=-all --ambient-caps=-all --no-new-privs --groups={} \
             /usr/bin/keylime_agent \"$@\"\n",
            groups.join(",")
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    wrapper
}

/// The installed `keylime_agent.service` run by systemd (as PID 1 of its
/// own namespaces): started, it is READY only once registered, runs inside
/// its sandbox (a read-only root, the system-call filter, no capabilities,
/// the `keylime` user) and serves quotes; a TPM owner stuck in a TPM call
/// stops the watchdog pings and systemd restarts the agent, which comes
/// back by itself; `systemctl stop` ends it cleanly. The test's drop-in
/// adds only the test's TPM, ports and CA, a short watchdog and restart
/// pause, and `DefaultDependencies=no`.
fn under_systemd(peers: &Peers, tpm: &Swtpm, env: &[(&str, &str)], dir: &Path, uid: u32) {
    const UNIT: &str = "keylime_agent.service";
    let units = dir.join("units");
    let service_d = units.join("keylime_agent.service.d");
    let mount_d = units.join("var-lib-keylime-secure.mount.d");
    std::fs::create_dir_all(&service_d).expect("drop-in dir");
    std::fs::create_dir_all(&mount_d).expect("drop-in dir");
    std::fs::write(
        units.join("keylime-test.target"),
        "[Unit]\nDescription=the package test\nDefaultDependencies=no\n",
    )
    .expect("target");
    let log = dir.join("agent-under-systemd.log");
    let mut drop_in = format!(
        "[Unit]\nDefaultDependencies=no\n[Service]\nWatchdogSec=3s\nRestartSec=1s\n\
         StandardOutput=append:{}\nStandardError=inherit\nEnvironment=\"TCTI={}\"\n",
        log.display(),
        tpm.tcti()
    );
    // PrivateTmp hides the test's CA under /tmp: it goes where an operator
    // keeps it, the default `cv_ca/cacert.crt` in /var/lib/keylime.
    let ca_dir = Path::new("/var/lib/keylime/cv_ca");
    std::fs::create_dir_all(ca_dir).expect("cv_ca");
    std::fs::set_permissions(ca_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::copy(peers.cv_ca().join("cacert.crt"), ca_dir.join("cacert.crt")).expect("CA");
    for (key, value) in env {
        if *key != "KEYLIME_AGENT_TRUSTED_CLIENT_CA" {
            drop_in.push_str(&format!("Environment=\"{key}={value}\"\n"));
        }
    }
    std::fs::write(service_d.join("test.conf"), drop_in).expect("drop-in");
    std::fs::write(
        mount_d.join("test.conf"),
        "[Unit]\nDefaultDependencies=no\n",
    )
    .expect("drop-in");
    let Some(systemd) = common::systemd::Systemd::boot(&units, &dir.join("systemd.log")) else {
        return;
    };
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Type=notify: `start` returns once the agent said READY.
    let (started, text) = systemd.systemctl(&["start", UNIT]);
    assert!(started, "systemctl start: {text}\n{}", agent_log());
    assert_eq!(systemd.property(UNIT, "ActiveState"), "active");
    assert!(
        systemd
            .property(UNIT, "StatusText")
            .starts_with(&format!("registered as {ID}")),
        "{}",
        systemd.property(UNIT, "StatusText")
    );
    let first = systemd.main_pid(UNIT).expect("main pid");
    let status = |pid: u32, field: &str| {
        common::proc_status(pid, field).unwrap_or_else(|| panic!("no {field}"))
    };
    assert_eq!(
        status(first, "Seccomp"),
        "2",
        "the system-call filter is on"
    );
    assert_eq!(status(first, "NoNewPrivs"), "1");
    assert_eq!(status(first, "CapEff"), "0000000000000000");
    assert_eq!(
        status(first, "Uid").split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    let mounts = std::fs::read_to_string(format!("/proc/{first}/mountinfo")).expect("mountinfo");
    let options = |point: &str| {
        mounts
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(point))
            .and_then(|l| l.split(' ').nth(5).map(str::to_string))
            .unwrap_or_else(|| panic!("no {point} in\n{mounts}"))
    };
    // ProtectSystem=strict: the whole tree read-only but what the unit
    // lists.
    assert!(
        options("/").starts_with("ro"),
        "ProtectSystem: / {}",
        options("/")
    );
    assert!(
        options("/var/lib/keylime").starts_with("rw"),
        "ReadWritePaths: {}",
        options("/var/lib/keylime")
    );
    let port: u16 = env
        .iter()
        .find(|(k, _)| *k == "KEYLIME_AGENT_PORT")
        .and_then(|(_, v)| v.parse().ok())
        .expect("port");
    let quote = |nonce: &str| {
        common::https_get(
            port,
            &format!("/v2.6/quotes/identity?nonce={nonce}"),
            Path::new("/var/lib/keylime/server-cert.crt"),
            Some(&peers.client()),
        )
        .map(|(status, _)| status)
    };
    assert_eq!(quote("systemd0123").ok(), Some(200), "{}", agent_log());

    // A TPM call that never returns: the pings stop, systemd restarts the
    // agent, and once the TPM answers again the new one serves.
    let before_stop = agent_log().len();
    tpm.signal("STOP");
    let stuck = std::thread::spawn({
        let (port, client) = (port, peers.client());
        move || {
            common::https_get(
                port,
                "/v2.6/quotes/identity?nonce=stuck0123",
                Path::new("/var/lib/keylime/server-cert.crt"),
                Some(&client),
            )
        }
    });
    let restarted = common::wait_until(60, || systemd.property(UNIT, "NRestarts") != "0");
    tpm.signal("CONT");
    assert!(
        restarted,
        "no restart by the watchdog: {}\n{}",
        systemd.systemctl(&["status", UNIT]).1,
        agent_log()
    );
    let _ = stuck.join();
    assert!(
        common::wait_until(60, || systemd.property(UNIT, "ActiveState") == "active"
            && systemd.main_pid(UNIT).is_some_and(|pid| pid != first)),
        "the restarted agent did not come up: {}\n{}",
        systemd.systemctl(&["status", UNIT]).1,
        agent_log()
    );
    assert_eq!(quote("again0123").ok(), Some(200), "{}", agent_log());
    // Nothing else ended the first agent: it logged no error, no panic
    // and no stop before the second one started (Restart=on-failure fires
    // on an exit, a signal or the watchdog; the test sent no signal).
    let log_text = agent_log();
    let since_stop = &log_text[before_stop..];
    let second_start = since_stop
        .find("registered and activated")
        .unwrap_or_else(|| panic!("no second registration:\n{log_text}"));
    let first_run = &since_stop[..second_start];
    for sign in [" ERROR ", "panicked", &format!("agent {ID} stopped")] {
        assert!(
            !first_run.contains(sign),
            "{sign:?} before the restart:\n{first_run}"
        );
    }

    let (stopped, text) = systemd.systemctl(&["stop", UNIT]);
    assert!(stopped, "systemctl stop: {text}");
    assert_eq!(systemd.property(UNIT, "ActiveState"), "inactive");
    assert!(
        agent_log().contains(&format!("agent {ID} stopped")),
        "{}",
        agent_log()
    );
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_package_installs_runs_against_the_real_registrar_and_removes_cleanly() {
    if !nix_root() {
        common::skip::<()>("installing a package needs root");
        return;
    }
    if Path::new(CONFFILE).exists() && !run("dpkg", &["-S", CONFFILE]).1.contains("keylime-agent") {
        common::skip::<()>(&format!(
            "{CONFFILE} exists and belongs to no keylime-agent package; not touching it"
        ));
        return;
    }
    if installed() {
        assert!(
            run("dpkg", &["--purge", "keylime-agent"]).0,
            "purge an old install"
        );
    }
    let Some(peers) = Peers::start("all") else {
        return;
    };
    let Some(tpm) = Swtpm::start() else { return };
    let out_dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = Path::new(AGENT_BIN).parent().expect("bin dir");
    let script = common::repo().join("swtpm-ci/package");
    let (built, text) = run(
        script.to_str().expect("path"),
        &[
            "--bin-dir",
            bin_dir.to_str().expect("path"),
            "--out",
            out_dir.path().to_str().expect("path"),
        ],
    );
    assert!(built, "swtpm-ci/package: {text}");
    let deb = text
        .lines()
        .find(|l| l.ends_with(".deb") && !l.starts_with('['))
        .expect("the package's path")
        .to_string();

    // The machine's own account goes aside (and comes back however the
    // test ends), so the package's postinst makes one.
    let account_before = passwd_entry();
    let aside = (!account_before.is_empty() && !account_before.contains(TAG))
        .then(|| AccountAside::take(account_before.clone()));
    let (ok, text) = run("dpkg", &["-i", &deb]);
    let _purge = Purge;
    assert!(ok, "dpkg -i: {text}");

    // Files, modes, the conffile, the account.
    for bin in [
        "/usr/bin/keylime_agent",
        "/usr/bin/keylime_push_model_agent",
    ] {
        assert_eq!(mode(bin), 0o755, "{bin}");
    }
    for unit in UNITS {
        assert_eq!(mode(unit), 0o644, "{unit}");
    }
    assert_eq!(mode(CONFFILE), 0o600, "the config holds tpm_ownerpassword");
    let tss = run("getent", &["group", "tss"]).1;
    let tss_gid: u32 = tss
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("tss gid");
    let conf_meta = std::fs::metadata(CONFFILE).expect("conf");
    assert_eq!((conf_meta.uid(), conf_meta.gid()), (0, 0), "root's alone");
    assert_eq!(
        std::fs::read_to_string(CONFFILE).expect("conf"),
        std::fs::read_to_string(common::repo().join("keylime-agent.conf"))
            .expect("shipped")
            .replace("\nrun_as = \"\"\n", "\nrun_as = \"keylime:tss\"\n"),
        "the documented default config, switching to keylime:tss"
    );
    let conffiles = run("dpkg-query", &["-W", "-f=${Conffiles}", "keylime-agent"]).1;
    assert!(conffiles.contains(CONFFILE), "{conffiles}");
    assert_eq!(mode("/var/lib/keylime"), 0o700);
    let account = passwd_entry();
    let fields: Vec<&str> = account.split(':').collect();
    assert_eq!(fields.len(), 7, "the keylime account: {account}");
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "a system account: {account}");
    assert_eq!(
        fields[3],
        tss_gid.to_string(),
        "primary group tss: {account}"
    );
    assert_eq!(fields[4], TAG, "tagged as the package's: {account}");
    assert_eq!(
        &fields[5..],
        ["/var/lib/keylime", "/usr/sbin/nologin"],
        "{account}"
    );

    // Every unit passes systemd-analyze verify.
    let (ok, text) = run("systemd-analyze", &["verify", UNITS[0], UNITS[1], UNITS[2]]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    // The exposure score the README states, for both services.
    for unit in &UNITS[..2] {
        let (_, text) = run("systemd-analyze", &["security", "--offline=true", unit]);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once("Overall exposure level for ")?;
                rest.split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        // 0.5 of it is the switch to run_as (CAP_SETUID, CAP_SETGID,
        // CAP_CHOWN), which systemd cannot see is given up at start.
        assert!(score <= 2.5, "{unit}: exposure {score}");
    }

    // The installed binary with the installed config (plus the test's
    // registrar, CA and TPM): check, then register and serve with the
    // service's credentials, the secure tmpfs mounted as the mount unit
    // does it.
    let overrides = [
        ("KEYLIME_AGENT_UUID", ID.to_string()),
        ("KEYLIME_AGENT_PORT", common::free_port().to_string()),
        (
            "KEYLIME_AGENT_REGISTRAR_PORT",
            peers.registrar_port.to_string(),
        ),
        (
            "KEYLIME_AGENT_TRUSTED_CLIENT_CA",
            peers.cv_ca().join("cacert.crt").display().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut check = Command::new("/usr/bin/keylime_agent");
    check
        .arg("check")
        .env("TCTI", tpm.tcti())
        .envs(env.iter().copied());
    let checked = check.output().expect("check");
    let report = String::from_utf8_lossy(&checked.stdout);
    println!("keylime_agent check (installed):\n{report}");
    assert!(
        report.lines().any(|l| l.starts_with("OK   registrar")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("OK   tpm")),
        "{report}"
    );
    // Under the service's credentials check sees that the agent could not
    // mount the secure tmpfs itself: the mount unit must.
    let wrapper = service_credentials_wrapper(out_dir.path());
    let mut check = Command::new(&wrapper);
    check
        .arg("check")
        .env("TCTI", tpm.tcti())
        .envs(env.iter().copied());
    let report = String::from_utf8_lossy(&check.output().expect("check").stdout).to_string();
    let secure_line = report
        .lines()
        .find(|l| l.contains("secure_dir"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        secure_line.starts_with("WARN") && secure_line.contains("no CAP_SYS_ADMIN"),
        "{report}"
    );
    let what = unit_value(UNITS[2], "What").expect("What");
    let options = unit_value(UNITS[2], "Options").expect("Options");
    let secure = unit_value(UNITS[2], "Where").expect("Where");
    let (ok, text) = run("mount", &["-t", "tmpfs", "-o", &options, &what, &secure]);
    assert!(ok, "mount {secure}: {text}");
    let mut agent = Agent::spawn_logged(
        wrapper.to_str().expect("path"),
        Path::new(CONFFILE),
        out_dir.path().join("agent.log"),
        &tpm.tcti(),
        &env,
    );
    agent.wait_for("registered and activated", 30);
    let status = |field: &str| {
        common::proc_status(agent.pid(), field).unwrap_or_else(|| panic!("no {field}"))
    };
    assert_eq!(
        status("Uid").split_whitespace().collect::<Vec<_>>(),
        vec![uid.to_string(); 4],
        "the service's agent switched to keylime for good"
    );
    for caps in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(
            status(caps),
            "0000000000000000",
            "{caps}: after the switch the agent has no capability"
        );
    }
    // CAP_CHOWN (0), CAP_SETGID (6), CAP_SETUID (7): the bounding set only.
    assert_eq!(status("CapBnd"), "00000000000000c1");
    assert_eq!(status("NoNewPrivs"), "1");
    let owner = |path: &str| {
        let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        (m.uid(), m.gid())
    };
    assert_eq!(
        owner("/var/lib/keylime"),
        (0, tss_gid),
        "root's, keylime may pass"
    );
    assert_eq!(mode("/var/lib/keylime"), 0o710);
    assert_eq!(owner("/var/lib/keylime/secure"), (uid, tss_gid));
    assert_eq!(owner("/var/lib/keylime/revocation"), (uid, tss_gid));
    assert_eq!(owner("/var/lib/keylime/server-private.pem"), (0, 0));
    let port: u16 = overrides[1].1.parse().expect("port");
    let (status, body) = common::https_get(
        port,
        "/v2.6/quotes/identity?nonce=package0123",
        Path::new("/var/lib/keylime/server-cert.crt"),
        Some(&peers.client()),
    )
    .expect("curl the installed agent");
    assert_eq!(
        status, 200,
        "identity quote from the service's agent: {body}"
    );
    assert_eq!(mode("/var/lib/keylime/server-private.pem"), 0o600);
    let log = agent.stop();
    assert!(log.contains(&format!("agent {ID} stopped")), "{log}");
    // A restart under the same credentials: root, without CAP_DAC_OVERRIDE,
    // meets the secure tmpfs and revocation/ that keylime now owns (0700)
    // and must still start, with the same identity.
    let mut again = Agent::spawn_logged(
        wrapper.to_str().expect("path"),
        Path::new(CONFFILE),
        out_dir.path().join("agent-again.log"),
        &tpm.tcti(),
        &env,
    );
    again.wait_for("registered and activated", 30);
    assert!(again.output().contains("AK reloaded"), "{}", again.output());
    assert_eq!(owner("/var/lib/keylime/secure"), (uid, tss_gid));
    let log = again.stop();
    assert!(log.contains(&format!("agent {ID} stopped")), "{log}");
    // The AK the second start reloaded is kept root's and private.
    assert_eq!(owner("/var/lib/keylime/agent_data.json"), (0, 0));
    assert_eq!(mode("/var/lib/keylime/agent_data.json"), 0o600);

    // The installed unit under the real service manager.
    under_systemd(&peers, &tpm, &env, out_dir.path(), uid);

    // Remove: the binaries and units go; the agent's identity, its
    // account and the conffile stay.
    let (ok, text) = run("dpkg", &["-r", "keylime-agent"]);
    assert!(ok, "dpkg -r: {text}");
    for gone in [
        "/usr/bin/keylime_agent",
        "/usr/bin/keylime_push_model_agent",
    ]
    .iter()
    .chain(UNITS.iter())
    {
        assert!(!Path::new(gone).exists(), "{gone} left after remove");
    }
    assert!(
        Path::new("/var/lib/keylime/server-private.pem").exists(),
        "remove keeps the agent's identity"
    );
    assert!(
        Path::new(CONFFILE).exists(),
        "the conffile stays until purge"
    );
    assert_eq!(passwd_entry(), account, "remove keeps the account");

    // Purge: the state, the account the package made and the conffile go.
    let (ok, text) = run("dpkg", &["--purge", "keylime-agent"]);
    assert!(ok, "dpkg --purge: {text}");
    for gone in ["/var/lib/keylime", CONFFILE] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(
        passwd_entry().is_empty(),
        "the account the package made is gone: {}",
        passwd_entry()
    );

    // With an account the package did not make, install and purge keep it.
    if let Some(aside) = &aside {
        aside.restore();
        assert_eq!(passwd_entry(), account_before);
        let (ok, text) = run("dpkg", &["-i", &deb]);
        assert!(ok, "dpkg -i again: {text}");
        assert_eq!(passwd_entry(), account_before, "install keeps the account");
        let (ok, text) = run("dpkg", &["--purge", "keylime-agent"]);
        assert!(ok, "dpkg --purge: {text}");
        assert_eq!(
            passwd_entry(),
            account_before,
            "an account the package did not make is kept"
        );
    }
}

fn nix_root() -> bool {
    run("id", &["-u"]).1.trim() == "0"
}
