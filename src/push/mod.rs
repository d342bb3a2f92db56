//! The push-model front end (`keylime_push_model_agent`): no HTTP server,
//! no inbound port. The agent registers as the pull agent does, then
//! authenticates to the verifier (API v3.0) with a TPM proof of possession
//! and sends evidence on the verifier's schedule. Quotes, IMA entries and
//! the UEFI log come from the same [`crate::attestation`] back end as the
//! pull API's.
//!
//! [`protocol`] is the wire format, [`verifier`] the HTTPS calls, and
//! [`worker`] the loop that decides what to do after each outcome.

pub mod protocol;
pub mod verifier;
pub mod worker;

use std::future::Future;
use std::path::Path;

use thiserror::Error;

use crate::agent::{AgentCore, AgentError, FrontEnd};
use crate::config::{Config, PushSettings};
use crate::http_client::{ClientError, ServerTrust};
use verifier::VerifierClient;
use worker::{Worker, WorkerSetup};

/// Why the push agent stopped before attesting.
#[derive(Debug, Error)]
pub enum PushError {
    /// Set-up or registration failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The verifier client could not be set up.
    #[error("verifier: {0}")]
    Client(#[from] ClientError),
    /// The boot time could not be read.
    #[error("boot time (/proc/stat btime): {0}")]
    BootTime(#[source] std::io::Error),
}

/// The push front end, as the lifecycle drives it: the verifier's client
/// is made while the agent may still read root's files; the worker runs
/// once the agent is registered.
pub struct PushAgent {
    settings: PushSettings,
    boot_time: u64,
    worker: Option<Worker>,
}

impl FrontEnd for PushAgent {
    type Error = PushError;

    fn open(&mut self, core: &mut AgentCore, config: &Config) -> Result<(), PushError> {
        AgentCore::warn_lowered_protection(config, false);
        let client = verifier_client(core, &self.settings)?;
        self.worker = Some(worker_for(
            core,
            config,
            &self.settings,
            self.boot_time,
            client,
        ));
        Ok(())
    }

    async fn work(&mut self, core: &AgentCore) -> Result<(), PushError> {
        crate::service::ready(&format!(
            "registered as {}; attesting to the verifier {}",
            core.agent_id, self.settings.verifier_url
        ));
        if let Some(worker) = &mut self.worker {
            worker.run().await;
        }
        Ok(())
    }

    async fn stop(self, _config: &Config) {}
}

/// Runs the push agent: set-up, registration, then attestation cycles
/// until `shutdown`, which stops whichever of them is running.
pub async fn run(
    config: Config,
    settings: PushSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    let boot_time =
        crate::evidence::boot_time(Path::new("/proc/stat")).map_err(PushError::BootTime)?;
    let front = PushAgent {
        settings,
        boot_time,
        worker: None,
    };
    crate::agent::run(&config, front, shutdown).await
}

/// Registration, then attestation cycles until `shutdown`, for a core the
/// caller prepared (tests drive the steps themselves); the TPM stays up
/// afterwards.
pub async fn attest(
    core: &AgentCore,
    config: &Config,
    settings: &PushSettings,
    boot_time: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    let client = verifier_client(core, settings)?;
    let mut worker = worker_for(core, config, settings, boot_time, client);
    let work = async {
        core.register().await?;
        crate::service::ready(&format!(
            "registered as {}; attesting to the verifier {}",
            core.agent_id, settings.verifier_url
        ));
        worker.run().await;
        Ok(())
    };
    tokio::select! {
        outcome = work => outcome,
        () = shutdown => Ok(()),
    }
}

/// The verifier's client: its CA file is read here.
fn verifier_client(core: &AgentCore, settings: &PushSettings) -> Result<VerifierClient, PushError> {
    Ok(VerifierClient::new(
        &settings.verifier_url,
        ServerTrust {
            ca_file: settings.verifier_tls_ca_cert.clone(),
            ca_key: "verifier_tls_ca_cert",
        },
        core.agent_id.as_str(),
    )?)
}

/// The cycle loop over the core, logging the agent's ready line.
fn worker_for(
    core: &AgentCore,
    config: &Config,
    settings: &PushSettings,
    boot_time: u64,
    client: VerifierClient,
) -> Worker {
    let worker = Worker::new(WorkerSetup {
        client,
        attestation: core.attestation.clone(),
        tpm: core.tpm.clone(),
        retry: config.registrar_retry.clone(),
        interval: settings.attestation_interval,
        key_id: settings.certification_key_id.clone(),
        uefi_version: settings.uefi_logs_evidence_version.clone(),
        boot_time,
    });
    tracing::info!(
        "push agent {} ready (AK {}); no inbound port",
        core.agent_id,
        if core.tpm.keys().ak_reused {
            "reloaded"
        } else {
            "new"
        }
    );
    worker
}
