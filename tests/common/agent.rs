//! The agent under test: its config, its state directory (unmounted and
//! deleted on drop), the binary run as a child with its log, and an agent
//! serving mTLS without a registrar.

use super::*;

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
    let (mut agent, config, port) = spawned_agent(peers, tpm, dir, id, extra, env);
    if !agent.waited_for("registered and activated", 30) {
        panic!(
            "no \"registered and activated\" within 30 s:\n{}\nregistrar log:\n{}",
            agent.output(),
            peers.registrar_log()
        );
    }
    (agent, config, port)
}

/// The agent binary with the usual test config plus `extra` (whose keys
/// replace the usual ones), started against `peers`' registrar. Returns
/// it, its config file, and its API port.
pub fn spawned_agent(
    peers: &Peers,
    tpm: &Swtpm,
    dir: &StateDir,
    id: &str,
    extra: &[String],
    env: &[(&str, &str)],
) -> (Agent, PathBuf, u16) {
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let mut lines: Vec<String> = agent_lines(dir.path(), id, Some(peers))
        .into_iter()
        .filter(|l| !extra.iter().any(|e| key(e) == key(l)))
        .collect();
    lines.extend(extra.iter().cloned());
    let port = lines
        .iter()
        .find_map(|l| l.strip_prefix("port = "))
        .and_then(|p| p.parse().ok())
        .expect("port line");
    let config = write_config(dir.path(), &lines);
    (Agent::spawn(&config, &tpm.tcti(), env), config, port)
}

/// `keylime_agent check [extra args]` with `config` and `tcti`, in an
/// environment without `KEYLIME*` and `TCTI` variables of its own.
pub fn run_check(config: &Path, tcti: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(AGENT_BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYLIME") || k == "TCTI" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("check")
        .args(extra)
        .env("KEYLIME_AGENT_CONFIG", config)
        .env("TCTI", tcti)
        .output()
        .expect("run check")
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
        if !self.waited_for(needle, secs) {
            panic!("no {needle:?} within {secs} s:\n{}", self.output());
        }
    }

    /// Whether `needle` showed in the output within `secs`; panics if the
    /// agent exits first.
    pub fn waited_for(&mut self, needle: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "agent exited ({status}) before {needle:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
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
