//! Test fixtures: a fresh swtpm per test on free ports (killed on drop),
//! the real Keylime peers started by `swtpm-ci/peers`, and the agent binary
//! run as a child process with its own config. A missing prerequisite
//! skips with a printed reason, and fails the test under `CI=true` or
//! `AGENT_TESTS_STRICT=1` (as `swtpm-ci/test` runs them).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::CapabilityData;

/// The repository the tests run in. Read at run time (cargo and nextest
/// set it for every test process), so a build directory shared by two
/// clones never points a test at the other clone's scripts.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_keylime_agent");
pub const PUSH_AGENT_BIN: &str = env!("CARGO_BIN_EXE_keylime_push_model_agent");

/// Loads an agent config file, with the TPM connection given as `TCTI`.
pub fn load_config(file: PathBuf, tcti: String) -> keylime_agent::config::Config {
    let sources = keylime_agent::config::ConfigSources {
        files: vec![file],
        files_required: true,
        overrides: vec![],
        tcti_env: Some(tcti),
    };
    keylime_agent::config::Config::load(&sources)
        .expect("config")
        .config
}

/// `(status, JSON body)` from curl run with `-w "\n%{http_code}"`, or
/// curl's exit code when the connection failed.
fn curl_json(out: std::process::Output) -> Result<(u16, serde_json::Value), i32> {
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    Ok((
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Runs `cmd`, asserts that it succeeded (naming `what` and its stderr
/// otherwise), and returns its standard output.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A field of `/proc/PID/status` (`field` without its colon), trimmed.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), 0 when absent.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    proc_status(pid, field)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Skips (returns `None`) with a printed reason, or panics under `CI=true`
/// or `AGENT_TESTS_STRICT=1` (set by `swtpm-ci/test`, which installs every
/// prerequisite first, so a skip there would be a test that cannot fail).
pub fn skip<T>(reason: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("AGENT_TESTS_STRICT").as_deref() == Ok("1")
    {
        panic!("prerequisite missing (CI=true or AGENT_TESTS_STRICT=1): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

fn script(name: &str) -> PathBuf {
    repo().join("swtpm-ci").join(name)
}

/// The provisioned swtpm template (provisioned once per test binary).
fn template() -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            if Command::new("swtpm").arg("--version").output().is_err() {
                return Err("swtpm is not installed (run swtpm-ci/install)".into());
            }
            let out = Command::new(script("provision-swtpm"))
                .output()
                .map_err(|e| format!("provision-swtpm: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "provision-swtpm failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
}

/// The swtpm local CA certificates (root then issuer), PEM.
pub fn ek_ca_chain() -> PathBuf {
    template().expect("template").join("ek-ca-chain.pem")
}

/// A port P with P and P+1 free (the swtpm TCTI puts control on P+1).
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A free TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A swtpm process with a private copy of the template state.
pub struct Swtpm {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Swtpm {
    pub fn start() -> Option<Self> {
        let template = match template() {
            Ok(t) => t,
            Err(reason) => return skip(&reason),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        std::fs::copy(
            template.join("state/tpm2-00.permall"),
            state.join("tpm2-00.permall"),
        )
        .expect("copy state");
        for _ in 0..5 {
            let port = free_port_pair();
            if let Some(child) = spawn_swtpm(&state, port) {
                return Some(Self { child, dir, port });
            }
        }
        panic!("swtpm did not start");
    }

    /// Starts swtpm again on the same state and ports after [`Self::kill`]
    /// (a TPM that went away and came back, as after a power cycle).
    pub fn restart(&mut self) {
        let state = self.dir.path().join("state");
        for _ in 0..50 {
            if let Some(child) = spawn_swtpm(&state, self.port) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("swtpm did not restart on port {}", self.port);
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Kills the TPM under a running agent (a real fault, not a fake).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    /// Sends swtpm `signal` (`STOP` wedges every TPM call until `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} swtpm");
    }

    /// Transient object handles in the TPM, seen through a fresh context
    /// (only while no agent holds the swtpm connection).
    pub fn transient_handles(&self) -> Vec<u32> {
        let tcti = self.tcti().parse().expect("tcti");
        let mut ctx = tss_esapi::Context::new(tcti).expect("context");
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, 0x8000_0000, 64)
            .expect("getcap");
        match data {
            CapabilityData::Handles(list) => list.into_inner().into_iter().map(u32::from).collect(),
            _ => panic!("unexpected capability data"),
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Keylime release the agent is tested against (`swtpm-ci/install`
/// makes a venv for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The PyPI version.
    pub name: &'static str,
    /// Its newest agent and registrar API version.
    pub api: &'static str,
    /// Whether its generated server certificates carry 127.0.0.1 (7.14.1
    /// on); older ones name only `server`.
    pub ip_in_server_cert: bool,
}

/// The release the full suite runs against.
pub const KEYLIME_7_14: Release = Release {
    name: "7.14.3",
    api: "2.6",
    ip_in_server_cert: true,
};
/// The last 7.14 release with API 2.5 (its certificates name 127.0.0.1).
pub const KEYLIME_7_14_2: Release = Release {
    name: "7.14.2",
    api: "2.5",
    ip_in_server_cert: true,
};
/// The first 7.14 release (API 2.5, certificates naming only `server`).
pub const KEYLIME_7_14_0: Release = Release {
    name: "7.14.0",
    api: "2.5",
    ip_in_server_cert: false,
};
/// The previous release (API 2.4).
pub const KEYLIME_7_13: Release = Release {
    name: "7.13.1",
    api: "2.4",
    ip_in_server_cert: false,
};
/// The oldest release in the field (API 2.3).
pub const KEYLIME_7_12: Release = Release {
    name: "7.12.2",
    api: "2.3",
    ip_in_server_cert: false,
};

/// swtpm on `port` (control on `port + 1`) with `state`, once it accepts
/// connections; `None` when it exited (the port was taken).
fn spawn_swtpm(state: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .args([
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        ])
        .args([
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
        ])
        .args(["--flags", "not-need-init,startup-clear"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn swtpm");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The real Keylime verifier and registrar, in a private directory.
pub struct Peers {
    pub dir: tempfile::TempDir,
    pub verifier_port: u16,
    pub registrar_port: u16,
    pub registrar_tls_port: u16,
    pub release: Release,
}

impl Peers {
    /// Sets up and starts `which` (`all`, `verifier`) of the newest release.
    pub fn start(which: &str) -> Option<Self> {
        Self::start_release(which, KEYLIME_7_14)
    }

    /// Sets up and starts `which` of `release`.
    pub fn start_release(which: &str, release: Release) -> Option<Self> {
        Self::start_with(which, release, "pull", &[])
    }

    /// Sets up and starts `which` of the newest release in pull mode, with
    /// extra `KEYLIME_*` settings for the services and the tenant.
    pub fn start_with_env(which: &str, env: &[(&str, &str)]) -> Option<Self> {
        Self::start_release_with_env(which, KEYLIME_7_14, env)
    }

    /// As [`Self::start_with_env`], of `release`.
    pub fn start_release_with_env(
        which: &str,
        release: Release,
        env: &[(&str, &str)],
    ) -> Option<Self> {
        Self::start_with(which, release, "pull", env)
    }

    /// Sets up and starts `which` of the newest release with the verifier
    /// in push mode; `verifier_env` are extra `KEYLIME_VERIFIER_*` settings.
    pub fn start_push(which: &str, verifier_env: &[(&str, &str)]) -> Option<Self> {
        Self::start_with(which, KEYLIME_7_14, "push", verifier_env)
    }

    fn start_with(which: &str, release: Release, mode: &str, env: &[(&str, &str)]) -> Option<Self> {
        template().err().map(|reason| skip::<()>(&reason));
        template().ok()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = Command::new(script("peers"))
            .arg("setup")
            .arg(dir.path())
            .arg(release.name)
            .arg(mode)
            .output()
            .expect("peers");
        if !setup.status.success() {
            return skip(&format!(
                "swtpm-ci/peers setup failed: {}",
                String::from_utf8_lossy(&setup.stderr)
            ));
        }
        let settings = env;
        let env = std::fs::read_to_string(dir.path().join("peers.env")).expect("peers.env");
        let var = |name: &str| -> u16 {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .expect("port in peers.env")
        };
        let peers = Self {
            verifier_port: var("VERIFIER_PORT"),
            registrar_port: var("REGISTRAR_PORT"),
            registrar_tls_port: var("REGISTRAR_TLS_PORT"),
            dir,
            release,
        };
        for (name, value) in settings {
            peers.export(name, value);
        }
        peers.service("start", which);
        Some(peers)
    }

    pub fn service(&self, action: &str, which: &str) {
        run_ok(
            Command::new(script("peers"))
                .arg(action)
                .arg(self.dir.path())
                .arg(which),
            &format!("peers {action} {which}"),
        );
    }

    pub fn cv_ca(&self) -> PathBuf {
        self.dir.path().join("keylime/cv_ca")
    }

    /// `GET` on the registrar's TLS port with the tenant's client certificate.
    pub fn registrar_get(&self, path: &str) -> (u16, serde_json::Value) {
        self.peer_get(self.registrar_tls_port, path)
            .unwrap_or_else(|code| panic!("curl to the registrar failed with exit code {code}"))
    }

    /// The registrar's record of an agent, on this release's API version.
    pub fn registrar_agent(&self, id: &str) -> (u16, serde_json::Value) {
        self.registrar_get(&format!("/v{}/agents/{id}", self.release.api))
    }

    /// `GET` on the verifier as an admin (the tenant's client certificate).
    pub fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        self.peer_get(self.verifier_port, path)
            .unwrap_or_else(|code| panic!("curl to the verifier failed with exit code {code}"))
    }

    /// `GET` on a peer's TLS `port` as the tenant, by a name its server
    /// certificate holds (releases before 7.14.1 name only `server`).
    fn peer_get(&self, port: u16, path: &str) -> Result<(u16, serde_json::Value), i32> {
        let host = if self.release.ip_in_server_cert {
            "127.0.0.1"
        } else {
            "server"
        };
        let client = self.client();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--max-time", "30"])
            .args(["--resolve", &format!("server:{port}:127.0.0.1")])
            .arg("--cacert")
            .arg(self.cv_ca().join("cacert.crt"))
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key)
            .arg(format!("https://{host}:{port}{path}"))
            .output()
            .expect("curl");
        curl_json(out)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = Command::new(script("peers"))
            .arg("stop")
            .arg(self.dir.path())
            .arg("all")
            .output();
    }
}

/// An agent config file in `dir` with `[agent]` `lines`.
pub fn write_config(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("agent.conf");
    std::fs::write(&path, format!("[agent]\n{}\n", lines.join("\n"))).expect("write config");
    path
}

/// The usual test config: state in `dir`, the peers' CA, free API port.
pub fn agent_lines(dir: &Path, uuid: &str, peers: Option<&Peers>) -> Vec<String> {
    let mut lines = vec![
        format!("uuid = {uuid:?}"),
        format!("keylime_dir = {:?}", dir.display().to_string()),
        format!("port = {}", free_port()),
        "exponential_backoff_initial_delay = 200".into(),
        "exponential_backoff_max_delay = 1000".into(),
    ];
    match peers {
        Some(p) => {
            lines.push(format!("registrar_port = {}", p.registrar_port));
            lines.push(format!(
                "trusted_client_ca = {:?}",
                p.cv_ca().join("cacert.crt").display().to_string()
            ));
        }
        None => lines.push("enable_agent_mtls = false".into()),
    }
    lines
}

/// The agent binary with the usual test config (`agent_lines` plus
/// `extra`), started and registered with `peers`' registrar. Returns it, its
/// config file, and its API port.
pub fn registered_agent(
    peers: &Peers,
    tpm: &Swtpm,
    dir: &StateDir,
    id: &str,
    extra: &[String],
) -> (Agent, PathBuf, u16) {
    registered_agent_with_env(peers, tpm, dir, id, extra, &[])
}

/// As [`registered_agent`], with `env` added to the agent's environment.
pub fn registered_agent_with_env(
    peers: &Peers,
    tpm: &Swtpm,
    dir: &StateDir,
    id: &str,
    extra: &[String],
    env: &[(&str, &str)],
) -> (Agent, PathBuf, u16) {
    let mut lines = agent_lines(dir.path(), id, Some(peers));
    lines.extend(extra.iter().cloned());
    let port = lines
        .iter()
        .find_map(|l| l.strip_prefix("port = "))
        .and_then(|p| p.parse().ok())
        .expect("port line");
    let config = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&config, &tpm.tcti(), env);
    agent.wait_for("registered and activated", 30);
    (agent, config, port)
}

/// The agent binary running as a child, its output in a log file.
pub struct Agent {
    child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn spawn(config: &Path, tcti: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_binary(AGENT_BIN, config, tcti, extra_env)
    }

    /// `keylime_push_model_agent` with this config.
    pub fn spawn_push(config: &Path, tcti: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_binary(PUSH_AGENT_BIN, config, tcti, extra_env)
    }

    fn spawn_binary(binary: &str, config: &Path, tcti: &str, extra_env: &[(&str, &str)]) -> Self {
        let log = config.with_extension(format!("log{}", free_port()));
        Self::spawn_logged(binary, config, log, tcti, extra_env)
    }

    /// `binary` (e.g. an installed one) with `config`, its output in `log`.
    pub fn spawn_logged(
        binary: &str,
        config: &Path,
        log: PathBuf,
        tcti: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(binary);
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYLIME") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KEYLIME_AGENT_CONFIG", config)
            .env("TCTI", tcti)
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().copied())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file);
        Self {
            child: cmd.spawn().expect("spawn agent"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `secs`.
    pub fn wait_for(&mut self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "agent exited ({status}) before {needle:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no {needle:?} within {secs} s:\n{}", self.output());
    }

    /// SIGKILL, as the OOM killer does: nothing is flushed.
    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }

    /// SIGTERM, then waits for a clean exit (so the TPM objects are flushed).
    pub fn stop(mut self) -> String {
        self.terminate();
        self.output()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the agent to exit by itself; returns its status code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// PCR 17 of a fresh swtpm: all ones until a DRTM sequence changes it.
pub const PCR17_POLICY: &str =
    r#"{"17":["ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"]}"#;

/// Polls `cond` every 250 ms for up to `secs`; true once it holds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    cond()
}

impl Peers {
    /// `keylime_tenant -c add` for the agent `id` on `port` with the PCR 17
    /// policy and `extra` arguments; asserts success, returns the output.
    pub fn tenant_add(&self, id: &str, port: u16, extra: &[&str]) -> String {
        let (ok, log) = self.try_tenant_add(id, port, extra);
        assert!(ok, "tenant add failed:\n{log}");
        log
    }

    /// `keylime_tenant -c add` as [`Self::tenant_add`]; whether it succeeded,
    /// and its output.
    pub fn try_tenant_add(&self, id: &str, port: u16, extra: &[&str]) -> (bool, String) {
        let port = port.to_string();
        let mut args = vec![
            "-c",
            "add",
            "-u",
            id,
            "-t",
            "127.0.0.1",
            "-tp",
            &port,
            "--tpm_policy",
            PCR17_POLICY,
        ];
        args.extend_from_slice(extra);
        let out = self.tenant(&args);
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), log)
    }

    /// The usual test config plus push mode against this verifier, with
    /// `ima` as the IMA log.
    pub fn push_agent_lines(&self, dir: &Path, id: &str, ima: &Path) -> Vec<String> {
        let mut lines = agent_lines(dir, id, Some(self));
        lines.extend([
            format!(
                "verifier_url = \"https://127.0.0.1:{}\"",
                self.verifier_port
            ),
            format!(
                "verifier_tls_ca_cert = {:?}",
                self.cv_ca().join("cacert.crt").display().to_string()
            ),
            format!("ima_ml_path = {:?}", ima.display().to_string()),
        ]);
        lines
    }

    /// `keylime_tenant -c add --push-model` with the PCR 17 policy and the
    /// runtime policy `policy`; asserts success.
    pub fn tenant_add_push(&self, id: &str, policy: &Path) {
        let out = self.tenant(&[
            "-c",
            "add",
            "--push-model",
            "-u",
            id,
            "--tpm_policy",
            PCR17_POLICY,
            "--runtime-policy",
            policy.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "tenant add --push-model: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `ecdsa` to the tenant's `accept_tpm_signing_algs` (every
    /// release's default is `ecschnorr, rsassa`); the tenant hands its lists
    /// to the verifier.
    pub fn tenant_accepts_ecdsa(&self) {
        self.export(
            "KEYLIME_TENANT_ACCEPT_TPM_SIGNING_ALGS",
            "\"['ecschnorr', 'rsassa', 'ecdsa']\"",
        );
    }

    /// Adds `export NAME=VALUE` to `peers.env`: services started (or the
    /// tenant run) after this see it.
    pub fn export(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut env = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("peers.env"))
            .expect("peers.env");
        writeln!(env, "export {name}={value}").expect("append");
    }

    /// Runs `keylime_tenant` with this directory's config.
    pub fn tenant(&self, args: &[&str]) -> std::process::Output {
        Command::new(script("peers"))
            .arg("tenant")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("tenant")
    }

    /// The verifier's record of an agent (`results`), or `Null`.
    pub fn verifier_agent(&self, id: &str) -> serde_json::Value {
        let path = format!("/v{}/agents/{id}", self.release.api);
        self.peer_get(self.verifier_port, &path)
            .map(|(_, body)| body["results"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `(operational_state, attestation_count)` from the verifier.
    pub fn verifier_state(&self, id: &str) -> (i64, i64) {
        let r = self.verifier_agent(id);
        (
            r["operational_state"].as_i64().unwrap_or(-1),
            r["attestation_count"].as_i64().unwrap_or(-1),
        )
    }

    /// A column of the verifier's database row for an agent, as text.
    pub fn verifier_db(&self, id: &str, column: &str) -> String {
        let db = self.dir.path().join("keylime/cv_data.sqlite");
        let code = format!(
            "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute('select {column} from verifiermain where agent_id=?',(sys.argv[2],)).fetchone(); print('' if r is None else r[0])"
        );
        let out = Command::new("python3")
            .args(["-c", &code])
            .arg(db)
            .arg(id)
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Writes a UEFI Secure Boot event log to `log` with `tcg_boot_log write`
/// (its certificates in `keys`, made there if missing), with `args`.
pub fn boot_log(log: &Path, keys: &Path, args: &[&str]) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_tcg_boot_log"))
            .arg("write")
            .arg(log)
            .arg("--keys")
            .arg(keys)
            .args(args),
        "tcg_boot_log write",
    );
}

/// Appends `count` synthetic IMA entries from index `start` to `file`
/// (and writes a policy allowing all of them when `policy` is given);
/// returns the SHA-256 template hashes to extend into PCR 10.
pub fn ima_entries(file: &Path, count: usize, start: usize, policy: Option<&Path>) -> Vec<Vec<u8>> {
    let mut cmd = Command::new(script("ima-log"));
    cmd.arg(file)
        .arg(count.to_string())
        .arg("--start")
        .arg(start.to_string());
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    run_ok(&mut cmd, "ima-log")
        .lines()
        .map(|l| hex::decode(l.trim()).expect("hex"))
        .collect()
}

impl Swtpm {
    /// Extends PCR 10 (SHA-256 bank) with tpm2-tools; only while no agent
    /// holds the swtpm connection.
    pub fn extend_pcr10(&self, hashes: &[Vec<u8>]) {
        for h in hashes {
            let status = Command::new("tpm2_pcrextend")
                .arg(format!("10:sha256={}", hex::encode(h)))
                .env("TPM2TOOLS_TCTI", self.tcti())
                .status()
                .expect("tpm2_pcrextend");
            assert!(status.success());
        }
    }

    /// Changes PCR 17 behind the running agent `id` and waits for the
    /// verifier's Invalid Quote (9).
    pub fn expect_invalid_quote_after_pcr17_change(&self, peers: &Peers, id: &str) {
        self.change_pcr17();
        assert!(
            wait_until(30, || peers.verifier_state(id).0 == 9),
            "{}",
            peers.verifier_agent(id)
        );
    }

    /// Resets and extends PCR 17 behind a running agent, through the
    /// control channel (the DRTM hash sequence).
    pub fn change_pcr17(&self) {
        let status = Command::new("swtpm_ioctl")
            .args([
                "--tcp",
                &format!("127.0.0.1:{}", self.ctrl_port()),
                "-h",
                "a different launch",
            ])
            .status()
            .expect("swtpm_ioctl");
        assert!(status.success());
    }
}

/// Client-side TLS material for talking to an agent.
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `curl` GET over HTTPS with an optional client certificate; `server_cert`
/// is the CA or (for an agent) the self-signed certificate to trust. Returns `(status, body)` or curl's
/// exit code when the connection failed.
pub fn https_get(
    port: u16,
    path: &str,
    server_cert: &Path,
    client: Option<&Client>,
) -> Result<(u16, serde_json::Value), i32> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "30", "--cacert"])
        .arg(server_cert);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    curl_json(out)
}

/// A test CA and a client certificate it signed, written to `dir`.
pub fn make_ca_and_client(dir: &Path, name: &str) -> (PathBuf, Client) {
    make_ca_and_leaf(dir, name, "client", None)
}

/// A test CA and a server certificate it signed for DNS name `host`, written
/// to `dir`; the `Client` holds the server's certificate and key.
pub fn make_ca_and_server(dir: &Path, host: &str) -> (PathBuf, Client) {
    make_ca_and_leaf(dir, host, host, Some(host))
}

fn make_ca_and_leaf(dir: &Path, name: &str, leaf_cn: &str, dns: Option<&str>) -> (PathBuf, Client) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509NameBuilder, X509};
    let key = || {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
    };
    let name_of = |cn: &str| {
        let mut n = X509NameBuilder::new().expect("name");
        n.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
        n.build()
    };
    let (ca_key, client_key) = (key(), key());
    let build = |subject: &str,
                 issuer: &str,
                 pubkey: &PKey<openssl::pkey::Private>,
                 signer: &PKey<openssl::pkey::Private>,
                 ca: bool,
                 dns: Option<&str>| {
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        let serial = openssl::bn::BigNum::from_u32(rand_u32())
            .and_then(|s| s.to_asn1_integer())
            .expect("serial");
        b.set_serial_number(&serial).expect("serial");
        b.set_subject_name(&name_of(subject)).expect("subject");
        b.set_issuer_name(&name_of(issuer)).expect("issuer");
        b.set_pubkey(pubkey).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
            .expect("na");
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                .expect("ext");
        }
        if let Some(dns) = dns {
            let san = openssl::x509::extension::SubjectAlternativeName::new()
                .dns(dns)
                .build(&b.x509v3_context(None, None))
                .expect("san");
            b.append_extension(san).expect("ext");
        }
        b.sign(signer, MessageDigest::sha256()).expect("sign");
        b.build()
    };
    let ca = build(
        &format!("{name} CA"),
        &format!("{name} CA"),
        &ca_key,
        &ca_key,
        true,
        None,
    );
    let client = build(
        leaf_cn,
        &format!("{name} CA"),
        &client_key,
        &ca_key,
        false,
        dns,
    );
    let ca_path = dir.join(format!("{name}-ca.crt"));
    let cert = dir.join(format!("{name}-client.crt"));
    let key_path = dir.join(format!("{name}-client.key"));
    std::fs::write(&ca_path, ca.to_pem().expect("pem")).expect("write");
    std::fs::write(&cert, client.to_pem().expect("pem")).expect("write");
    std::fs::write(
        &key_path,
        client_key.private_key_to_pem_pkcs8().expect("pem"),
    )
    .expect("write");
    (
        ca_path,
        Client {
            cert,
            key: key_path,
        },
    )
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    u32::from_le_bytes(b) | 1
}

/// A temporary agent state directory. The agent mounts a tmpfs on its
/// `secure/` when it runs as root; dropping this unmounts it, then deletes.
pub struct StateDir(tempfile::TempDir);

/// A fresh agent state directory.
pub fn state_dir() -> StateDir {
    StateDir(tempfile::tempdir().expect("tempdir"))
}

impl StateDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let secure = self.0.path().join("secure");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let target = secure.display().to_string();
        if mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
        {
            let _ = Command::new("umount").arg(&secure).status();
        }
    }
}

/// `curl -X POST` of a JSON body to an agent; `(status, body)` or curl's exit code.
pub fn agent_post(
    port: u16,
    path: &str,
    server_cert: &Path,
    client: &Client,
    body: &str,
) -> Result<(u16, serde_json::Value), i32> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "30",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            "--cacert",
        ])
        .arg(server_cert)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("curl");
    curl_json(out)
}

impl Peers {
    /// The tenant's client certificate, to talk to agents as the verifier does.
    pub fn client(&self) -> Client {
        Client {
            cert: self.cv_ca().join("client-cert.crt"),
            key: self.cv_ca().join("client-private.pem"),
        }
    }

    /// Runs a tool of the peers' venv (`keylime-policy`, ...) in their
    /// directory; asserts success and returns its standard output.
    pub fn run(&self, tool: &str, args: &[&str]) -> String {
        run_ok(
            Command::new(script("peers"))
                .arg("run")
                .arg(self.dir.path())
                .arg(tool)
                .args(args),
            &format!("{tool} {args:?}"),
        )
    }

    /// `(attestation_status, attestation_count)` of a push-mode agent.
    pub fn push_status(&self, id: &str) -> (String, i64) {
        let r = self.verifier_agent(id);
        (
            r["attestation_status"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            r["attestation_count"].as_i64().unwrap_or(-1),
        )
    }

    /// Waits up to `secs` for [`Self::push_status`] to satisfy `cond`.
    pub fn wait_push_status(&self, id: &str, secs: u64, cond: impl Fn(&str, i64) -> bool) {
        assert!(
            wait_until(secs, || {
                let (s, c) = self.push_status(id);
                cond(&s, c)
            }),
            "verifier: {}",
            self.verifier_agent(id)
        );
    }

    /// What the verifier has logged so far.
    pub fn verifier_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("verifier.log")).unwrap_or_default()
    }

    /// Creates the tenant's certificate authority for `--cert` packages.
    pub fn init_ca(&self) -> PathBuf {
        let ca = self.dir.path().join("tenant-ca");
        let dir = ca.to_str().expect("utf8");
        self.run("keylime_ca", &["-c", "init", "-d", dir]);
        ca
    }
}

/// Fields drop in order: the agent stops, its state is unmounted and
/// deleted, then swtpm is killed.
pub struct Served {
    pub agent: Agent,
    pub dir: StateDir,
    pub tpm: Swtpm,
    pub port: u16,
    pub client: Client,
    pub ima: PathBuf,
}

impl Served {
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.crt")
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        https_get(self.port, path, &self.cert(), Some(&self.client))
            .unwrap_or_else(|code| panic!("curl {path}: exit {code}"))
    }
}

/// An agent with mTLS trusting a test CA, no registrar (it keeps retrying
/// in the background), and an IMA log of `ima_lines` entries.
pub fn serve(extra: &[String], ima_lines: usize) -> Option<Served> {
    Some(serve_on(Swtpm::start()?, extra, ima_lines))
}

/// [`serve`] on a TPM prepared by the caller.
pub fn serve_on(tpm: Swtpm, extra: &[String], ima_lines: usize) -> Served {
    let dir = state_dir();
    let (ca, client) = make_ca_and_client(dir.path(), "test");
    let ima = dir.path().join("ima");
    std::fs::write(&ima, "").expect("ima");
    if ima_lines > 0 {
        ima_entries(&ima, ima_lines, 0, None);
    }
    let port = free_port();
    let mut lines = vec![
        "uuid = \"7c3a4e5f-6071-4c8d-8e9f-1a2b3c4d5e6f\"".to_string(),
        format!("keylime_dir = {:?}", dir.path().display().to_string()),
        format!("port = {port}"),
        format!("registrar_port = {}", free_port()),
        format!("trusted_client_ca = {:?}", ca.display().to_string()),
        format!("ima_ml_path = {:?}", ima.display().to_string()),
    ];
    lines.extend(extra.iter().cloned());
    let file = write_config(dir.path(), &lines);
    let mut agent = Agent::spawn(&file, &tpm.tcti(), &[]);
    agent.wait_for("serving API over mTLS", 30);
    Served {
        tpm,
        dir,
        agent,
        port,
        client,
        ima,
    }
}

/// The AK's public key, from the TPM2B_PUBLIC persisted in agent_data.json.
pub fn ak_public_key(dir: &std::path::Path) -> openssl::pkey::PKey<openssl::pkey::Public> {
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("agent_data.json")).expect("ak"))
            .expect("json");
    let ak_tpm = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        stored["public"].as_str().expect("public"),
    )
    .expect("b64");
    let public =
        <tss_esapi::structures::PublicBuffer as tss_esapi::traits::UnMarshall>::unmarshall(&ak_tpm)
            .and_then(tss_esapi::structures::Public::try_from)
            .expect("TPM2B_PUBLIC");
    let pem = keylime_agent::tpm::public_key_pem(&public).expect("pem");
    openssl::pkey::PKey::public_key_from_pem(pem.as_bytes()).expect("AK key")
}

/// Whether an RSASSA quote signature (TPMT_SIGNATURE) over `attest`
/// verifies with the AK persisted in `dir`.
pub fn signed_by_ak(dir: &Path, attest: &[u8], signature: &[u8]) -> bool {
    let ak = ak_public_key(dir);
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &ak)
        .expect("verifier");
    verifier.update(attest).expect("update");
    verifier.verify(&signature[6..]).expect("verify")
}

/// An mTLS connection to an agent on `port`, as the verifier makes one
/// (trusting `server_cert`, presenting `client`, no Nagle delay); `None`
/// when the connection or handshake fails.
pub fn mtls_connect(
    port: u16,
    server_cert: &Path,
    client: &Client,
    read_timeout: Duration,
) -> Option<openssl::ssl::SslStream<TcpStream>> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(server_cert).expect("ca");
    b.set_certificate_file(&client.cert, SslFiletype::PEM)
        .expect("cert");
    b.set_private_key_file(&client.key, SslFiletype::PEM)
        .expect("key");
    b.set_verify(SslVerifyMode::PEER);
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(read_timeout)).expect("timeout");
    let mut config = b.build().configure().expect("configure");
    config.set_verify_hostname(false);
    config.connect("127.0.0.1", tcp).ok()
}

/// What a peer sends on `conn` until it closes, the read times out, or
/// `done` says the bytes so far are enough.
pub fn read_answer(conn: &mut impl std::io::Read, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !done(&out) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}
