//! The composition root: builds every component from the [`Config`], in
//! order, and runs the agent until the shutdown signal.

use std::future::Future;

use thiserror::Error;

use crate::config::Config;
use crate::identity::{AgentId, IdentityError, MtlsIdentity, PayloadKey};
use crate::registrar::{RegistrarClient, RegistrarError, Registration};
use crate::secure_fs;
use crate::tpm::{Tpm, TpmConfig, TpmError};

/// Why the agent stopped before or instead of serving.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The state directory could not be prepared.
    #[error("keylime_dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TPM could not be set up.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// Id, mTLS or NK set-up failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Registration failed for good.
    #[error(transparent)]
    Registrar(#[from] RegistrarError),
}

/// Everything the agent is, once set up: TPM, id, keys, registrar client.
#[derive(Debug)]
pub struct AgentCore {
    /// The TPM owner handle.
    pub tpm: Tpm,
    /// The resolved agent id.
    pub agent_id: AgentId,
    /// The NK.
    pub payload_key: PayloadKey,
    /// The mTLS identity, `None` when mTLS is off.
    pub mtls: Option<MtlsIdentity>,
    /// The registrar client.
    pub registrar: RegistrarClient,
    /// What is registered.
    pub registration: Registration,
}

impl AgentCore {
    /// Prepares the state directory, starts the TPM owner and resolves the
    /// identity. On failure after the TPM started, the TPM is shut down.
    pub async fn prepare(config: &Config) -> Result<Self, AgentError> {
        secure_fs::ensure_private_dir(&config.keylime_dir).map_err(|source| {
            AgentError::StateDir {
                path: config.keylime_dir.display().to_string(),
                source,
            }
        })?;
        let tpm = Tpm::start(TpmConfig {
            tcti: config.tcti.clone(),
            hash_alg: config.tpm_hash_alg,
            encryption_alg: config.tpm_encryption_alg,
            signing_alg: config.tpm_signing_alg,
            ek_handle: config.ek_handle,
            owner_auth: config.tpm_ownerpassword.clone(),
            ak_store: config.agent_data_path.clone(),
        })
        .await?;
        match Self::with_tpm(config, tpm.clone()) {
            Ok(core) => Ok(core),
            Err(e) => {
                tpm.shutdown().await;
                Err(e)
            }
        }
    }

    fn with_tpm(config: &Config, tpm: Tpm) -> Result<Self, AgentError> {
        let agent_id = config
            .agent_id
            .resolve(&config.keylime_dir, &tpm.keys().ek_public_pem)?;
        let payload_key =
            PayloadKey::load_or_create(&config.payload_key, &config.payload_key_password)?;
        let mtls = if config.enable_agent_mtls {
            Some(MtlsIdentity::load_or_create(
                &config.server_key,
                &config.server_key_password,
                &config.server_cert,
                agent_id.as_str(),
                &config.contact_ip,
            )?)
        } else {
            tracing::warn!(
                "enable_agent_mtls = false: the API is served over plain HTTP without client authentication; \
                 anyone who can reach port {} can ask for quotes",
                config.port
            );
            None
        };
        let registration = Registration {
            agent_id: agent_id.to_string(),
            mtls_cert_pem: mtls.as_ref().map(MtlsIdentity::cert_pem).transpose()?,
            contact_ip: config.contact_ip.clone(),
            contact_port: config.contact_port,
        };
        let registrar = RegistrarClient::new(
            &config.registrar_ip,
            config.registrar_port,
            config.registrar_retry.clone(),
        )?;
        Ok(Self {
            tpm,
            agent_id,
            payload_key,
            mtls,
            registrar,
            registration,
        })
    }

    /// Registers with the registrar and activates, retrying per policy.
    pub async fn register(&self) -> Result<(), AgentError> {
        self.registrar
            .register(&self.registration, &self.tpm)
            .await?;
        Ok(())
    }
}

/// Runs the agent: set-up, registration, then waits for `shutdown`.
/// Registration retries are abandoned when `shutdown` fires.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let core = AgentCore::prepare(&config).await?;
    if let Some(run_as) = &config.run_as {
        tracing::warn!(
            "run_as = {}{}: this version does not drop privileges yet; the agent keeps running as the user that started it",
            run_as.user,
            run_as.group.as_deref().map(|g| format!(":{g}")).unwrap_or_default()
        );
    }
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
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        registered = core.register() => match registered {
            Ok(()) => {
                (&mut shutdown).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        () = &mut shutdown => Ok(()),
    };
    core.tpm.shutdown().await;
    tracing::info!("agent {} stopped", core.agent_id);
    outcome
}
