//! The Debian package, as an operator gets it: built by
//! `swtpm-ci/package`, installed with `dpkg -i` on this machine, its files,
//! modes, conffile and account checked, its units passed through
//! `systemd-analyze verify`, the installed binary run against swtpm and the
//! real 7.14.3 registrar with the installed config, and then removed and
//! purged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
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

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "keylime-agent"]);
    }
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
        eprintln!("SKIP: installing a package needs root");
        return;
    }
    if Path::new(CONFFILE).exists() && !run("dpkg", &["-S", CONFFILE]).1.contains("keylime-agent") {
        eprintln!(
            "SKIP: {CONFFILE} exists and belongs to no keylime-agent package; not touching it"
        );
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("swtpm-ci/package");
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

    let account_before = run("getent", &["passwd", "keylime"]).1;
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
    assert_eq!(mode(CONFFILE), 0o640, "the config holds tpm_ownerpassword");
    let tss = run("getent", &["group", "tss"]).1;
    let tss_gid: u32 = tss
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("tss gid");
    assert_eq!(std::fs::metadata(CONFFILE).expect("conf").gid(), tss_gid);
    assert_eq!(
        std::fs::read_to_string(CONFFILE).expect("conf"),
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("keylime-agent.conf"))
            .expect("shipped"),
        "the documented default config"
    );
    let conffiles = run("dpkg-query", &["-W", "-f=${Conffiles}", "keylime-agent"]).1;
    assert!(conffiles.contains(CONFFILE), "{conffiles}");
    assert_eq!(mode("/var/lib/keylime"), 0o700);
    let account = run("getent", &["passwd", "keylime"]).1;
    assert!(
        account.starts_with("keylime:"),
        "the keylime account: {account}"
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
        assert!(score <= 2.0, "{unit}: exposure {score}");
    }

    // The installed binary with the installed config (plus the test's
    // registrar, CA and TPM): check, then register.
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
    let mut agent = Agent::spawn_logged(
        "/usr/bin/keylime_agent",
        Path::new(CONFFILE),
        out_dir.path().join("agent.log"),
        &tpm.tcti(),
        &env,
    );
    agent.wait_for("registered and activated", 30);
    let log = agent.stop();
    assert!(log.contains(&format!("agent {ID} stopped")), "{log}");
    assert!(
        Path::new("/var/lib/keylime/agent_data.json").exists()
            || std::fs::read_dir("/var/lib/keylime")
                .expect("state")
                .count()
                > 0,
        "the agent kept its state in /var/lib/keylime"
    );

    // Remove: nothing left but the conffile.
    let (ok, text) = run("dpkg", &["-r", "keylime-agent"]);
    assert!(ok, "dpkg -r: {text}");
    for gone in [
        "/usr/bin/keylime_agent",
        "/usr/bin/keylime_push_model_agent",
        "/var/lib/keylime",
    ]
    .iter()
    .chain(UNITS.iter())
    {
        assert!(!Path::new(gone).exists(), "{gone} left after remove");
    }
    assert!(
        Path::new(CONFFILE).exists(),
        "the conffile stays until purge"
    );
    if account_before.is_empty() {
        assert!(
            run("getent", &["passwd", "keylime"]).1.is_empty(),
            "the account the package made is gone"
        );
    } else {
        assert_eq!(
            run("getent", &["passwd", "keylime"]).1,
            account_before,
            "an account the package did not make is kept"
        );
    }
    let (ok, text) = run("dpkg", &["--purge", "keylime-agent"]);
    assert!(ok, "dpkg --purge: {text}");
    assert!(!Path::new(CONFFILE).exists(), "purge removes the conffile");
}

fn nix_root() -> bool {
    run("id", &["-u"]).1.trim() == "0"
}
