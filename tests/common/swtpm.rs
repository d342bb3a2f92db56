//! swtpm: a fresh TPM per test from the provisioned template, on free ports,
//! killed on drop, with the PCR and handle helpers the tests need.

use super::*;

/// The provisioned swtpm template (provisioned once per test binary).
pub fn template() -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            if Command::new("swtpm").arg("--version").output().is_err() {
                return Err("swtpm is not installed (run swtpm-ci/install)".into());
            }
            provisioned("provision-swtpm")
        })
        .clone()
}

/// The identity swtpm template (`swtpm-ci/provision-identity`: RSA 3072 and
/// P-384 EKs, the EK chain in NV, IAK/IDevID with their certificates).
pub fn identity_template() -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            template()?;
            provisioned("provision-identity")
        })
        .clone()
}

/// Runs the provisioning script `name`; the directory it prints.
fn provisioned(name: &str) -> Result<PathBuf, String> {
    let out = Command::new(script(name))
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The swtpm local CA certificates (root then issuer), PEM.
pub fn ek_ca_chain() -> PathBuf {
    template().expect("template").join("ek-ca-chain.pem")
}

/// A swtpm process with a private copy of the template state.
pub struct Swtpm {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Swtpm {
    pub fn start() -> Option<Self> {
        Self::start_from(template())
    }

    /// A swtpm with a copy of the identity template.
    pub fn start_identity() -> Option<Self> {
        Self::start_from(identity_template())
    }

    fn start_from(template: Result<PathBuf, String>) -> Option<Self> {
        let template = match template {
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

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// swtpm on `port` (control on `port + 1`) with `state`, once it accepts
/// connections; `None` when it exited (the port was taken).
pub fn spawn_swtpm(state: &Path, port: u16) -> Option<Child> {
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

/// PCR 17 of a fresh swtpm: all ones until a DRTM sequence changes it.
pub const PCR17_POLICY: &str =
    r#"{"17":["ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"]}"#;
