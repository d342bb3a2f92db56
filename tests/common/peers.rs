//! The real Keylime peers (verifier, registrar, tenant) of a tested release,
//! started by `swtpm-ci/peers` in a private directory and stopped on drop.

use super::*;

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

    /// What the registrar has logged so far.
    pub fn registrar_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registrar.log")).unwrap_or_default()
    }

    /// The registrar's SQLite database.
    pub fn registrar_database(&self) -> PathBuf {
        self.dir.path().join("keylime/reg_data.sqlite")
    }

    /// Creates the tenant's certificate authority for `--cert` packages.
    pub fn init_ca(&self) -> PathBuf {
        let ca = self.dir.path().join("tenant-ca");
        let dir = ca.to_str().expect("utf8");
        self.run("keylime_ca", &["-c", "init", "-d", dir]);
        ca
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
