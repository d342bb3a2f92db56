//! The one start-up and shutdown sequence of both agents. Start: the audit
//! file and metrics, the core (state directory, TPM, identity), the root-only
//! logs held open, the front end's root-only part (pull: secure directory,
//! mTLS identity, socket; push: the verifier's CA), the switch to `run_as`,
//! the front end started, registration, then the front end's work until the
//! shutdown signal, while `SIGHUP` (and `registrar_refresh_interval`)
//! register again. Stop, in this order: the front end, the TPM (its objects
//! flushed), observing.

use std::fmt::Display;
use std::future::Future;

use super::error::AgentError;
use super::setup::AgentCore;
use crate::config::Config;
use crate::observing::Observing;

/// What a front end adds to the core, at the points of the sequence where
/// it runs.
pub trait FrontEnd {
    /// Why the front end stopped.
    type Error: From<AgentError> + Display;

    /// While the agent may still be root: opens what needs it. May set
    /// what the core registers (the pull agent's mTLS certificate).
    fn open(&mut self, core: &mut AgentCore, config: &Config) -> Result<(), Self::Error>;

    /// After the switch to `run_as`: starts serving, if the front end serves.
    fn start(&mut self) {}

    /// Once registered: the front end's work, until it ends or the shutdown
    /// signal ends it.
    fn work(&mut self, core: &AgentCore) -> impl Future<Output = Result<(), Self::Error>>;

    /// At shutdown, before the TPM stops.
    fn stop(self, config: &Config) -> impl Future<Output = ()>;
}

/// Runs the agent with `front` until `shutdown` (or until the front end's
/// work ends), in the order this module describes.
pub async fn run<F: FrontEnd>(
    config: &Config,
    mut front: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), F::Error> {
    // From here SIGHUP means "register again" instead of ending the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let observing = Observing::start(config).map_err(AgentError::from)?;
    let mut core = match AgentCore::prepare(config).await {
        Ok(core) => core,
        Err(e) => {
            observing.stop().await;
            return Err(e.into());
        }
    };
    if core.run_as.is_some() {
        core.attestation.hold_logs().await;
    }
    let opened = front
        .open(&mut core, config)
        .and_then(|()| core.drop_privileges().map_err(F::Error::from));
    if let Err(e) = opened {
        core.tpm.shutdown().await;
        observing.stop().await;
        return Err(e);
    }
    front.start();
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        worked = async {
            core.register().await?;
            tokio::select! {
                worked = front.work(&core) => worked,
                never = core.keep_registered(hangup) => match never {},
                never = crate::memory::keep_trimmed() => match never {},
            }
        } => worked,
        () = &mut shutdown => Ok(()),
    };
    crate::service::stopping();
    front.stop(config).await;
    core.tpm.shutdown().await;
    observing.stop().await;
    tracing::info!("agent {} stopped", core.agent_id);
    outcome
}
