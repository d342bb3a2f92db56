//! The pull front end (`keylime_agent`): the mTLS API the verifier polls
//! and the tenant delivers to. On top of the core it has the secure
//! directory, the mTLS identity, the key halves and payloads
//! ([`payload`]), revocation notifications ([`revocation`]), TLS
//! ([`tls`]) and the HTTP server ([`server`], [`api`]). The API is bound
//! before the switch to `run_as` and served while registration retries.

pub mod api;
pub mod payload;
pub mod revocation;
pub mod server;
pub mod tls;

use std::future::Future;

use thiserror::Error;

use crate::agent::{AgentCore, AgentError, FrontEnd};
use crate::config::Config;
use crate::identity::{IdentityError, MtlsIdentity};
use crate::privileges::Identity;
use crate::secure_fs;
use payload::{secure_dir, PayloadService};
use revocation::Revocation;
pub use server::{BoundServer, RunningServer};
use tls::TlsError;

/// Why the pull agent stopped before or instead of serving.
#[derive(Debug, Error)]
pub enum PullError {
    /// The core failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The mTLS identity could not be set up.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The secure directory or `revocation/` could not be prepared.
    #[error("{path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API server could not bind or run.
    #[error("API server on {addr}: {source}")]
    Server {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What only the pull agent has, made while it may still be root.
pub struct PullParts {
    /// The mTLS identity, `None` when mTLS is off.
    pub mtls: Option<MtlsIdentity>,
    /// The key exchange and payloads.
    pub payload: PayloadService,
    /// Revocation notifications.
    pub revocation: Revocation,
    /// The secure directory as prepared.
    pub secure: secure_dir::Prepared,
}

impl PullParts {
    /// Lays out the directories the pull agent writes after the switch
    /// (the secure tmpfs, `revocation/`), owned by `run_as`; makes or loads
    /// the mTLS identity and gives its certificate to the registration.
    pub fn prepare(core: &mut AgentCore, config: &Config) -> Result<Self, PullError> {
        let writer = core.run_as.as_ref().map(Identity::owner);
        let dir_error = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| PullError::StateDir { path, source }
        };
        secure_fs::Dir::open(&config.keylime_dir)
            .and_then(|state| {
                state.subdir(
                    std::ffi::OsStr::new("revocation"),
                    0o700,
                    writer.unwrap_or_else(secure_fs::Owner::me),
                )
            })
            .map_err(dir_error(&config.revocation.state_dir))?;
        let secure = secure_dir::prepare(
            &config.payload.secure_dir,
            &config.payload.secure_size,
            writer,
        )
        .map_err(dir_error(&config.payload.secure_dir))?;
        let mtls = if config.enable_agent_mtls {
            Some(MtlsIdentity::load_or_create(
                &config.server_key,
                &config.server_key_password,
                &config.server_cert,
                core.agent_id.as_str(),
                &config.contact_ip,
            )?)
        } else {
            tracing::warn!(
                "enable_agent_mtls = false: the API is served over plain HTTP without client authentication; \
                 anyone who can reach port {} can ask for quotes",
                config.port
            );
            if !config.payload.enable_insecure_payload {
                tracing::warn!(
                    "mTLS is off and enable_insecure_payload = false: payloads will be refused"
                );
            }
            None
        };
        core.registration.mtls_cert_pem = mtls.as_ref().map(MtlsIdentity::cert_pem).transpose()?;
        let payload = PayloadService::new(
            core.agent_id.as_str(),
            core.nk.private_key().clone(),
            config.payload.clone(),
            mtls.is_some(),
        );
        let revocation = Revocation::new(
            config.revocation.clone(),
            payload::unzipped_dir(&config.payload),
            config.payload.secure_dir.clone(),
        );
        Ok(Self {
            mtls,
            payload,
            revocation,
            secure,
        })
    }
}

/// The pull front end, as the lifecycle drives it.
#[derive(Default)]
pub struct PullAgent {
    secure: Option<secure_dir::Prepared>,
    bound: Option<BoundServer>,
    running: Option<RunningServer>,
}

impl FrontEnd for PullAgent {
    type Error = PullError;

    fn open(&mut self, core: &mut AgentCore, config: &Config) -> Result<(), PullError> {
        AgentCore::warn_lowered_protection(config, true);
        let keys = core.tpm.keys();
        tracing::info!(
            "agent {} ready: EK {} certificate, AK {}",
            core.agent_id,
            if keys.ek_cert_pem.is_some() {
                "with"
            } else {
                "without"
            },
            if keys.ak_reused { "reloaded" } else { "new" },
        );
        for note in
            crate::peer_compat::default_list_notes(config.tpm_hash_alg, config.tpm_signing_alg)
        {
            tracing::info!("{note}");
        }
        let parts = PullParts::prepare(core, config)?;
        self.secure = Some(parts.secure);
        self.bound = Some(server::bind(core, &parts, config)?);
        Ok(())
    }

    fn start(&mut self) {
        self.running = self.bound.take().map(BoundServer::start);
    }

    async fn work(&mut self, core: &AgentCore) -> Result<(), PullError> {
        let addrs = self
            .running
            .as_ref()
            .map(|r| server::list(&r.addrs))
            .unwrap_or_default();
        crate::service::ready(&format!(
            "registered as {}; serving the API on {addrs}",
            core.agent_id
        ));
        // Served until the shutdown signal.
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn stop(self, config: &Config) {
        if let Some(running) = self.running {
            running.stop().await;
        }
        if let Some(prepared) = self.secure {
            secure_dir::release(&config.payload.secure_dir, prepared);
        }
    }
}

/// Runs the pull agent until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), PullError> {
    crate::agent::run(&config, PullAgent::default(), shutdown).await
}

/// The pull agent's parts on a core prepared by the caller, serving at
/// once (for tests that drive the steps themselves).
pub fn serve(core: &mut AgentCore, config: &Config) -> Result<RunningServer, PullError> {
    let parts = PullParts::prepare(core, config)?;
    Ok(server::bind(core, &parts, config)?.start())
}
