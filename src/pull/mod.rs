//! The pull front end (`keylime_agent`): the mTLS API the verifier polls
//! and the tenant delivers to. On top of the core it has the secure
//! directory, the mTLS identity, the key halves and payloads
//! ([`payload`]), revocation notifications ([`revocation`]), TLS
//! ([`tls`]) and the HTTP server ([`server`], [`api`]). The API is bound
//! before the switch to `run_as` and served while registration retries.

pub mod api;
mod error;
mod parts;
pub mod payload;
pub mod revocation;
pub mod server;
pub mod tls;

use std::future::Future;

use crate::agent::{AgentCore, FrontEnd};
use crate::config::Config;
pub use error::PullError;
pub use parts::PullParts;
use payload::secure_dir;
pub use server::{BoundServer, RunningServer};

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
        let algs = (config.tpm_hash_alg, keys.ek_alg, config.tpm_signing_alg);
        for note in crate::peer_compat::default_list_notes(algs) {
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
