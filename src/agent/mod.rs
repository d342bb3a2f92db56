//! The composition root: builds every component from the [`Config`], in
//! order, into the one [`AgentCore`] both front ends run on (the TPM owner,
//! the identity, the registration, quote production, payloads and
//! revocation), and registers it. The pull front end is [`run`]; the
//! push front end is [`crate::push`].

mod pull;

pub use pull::{run, BoundServer, RunningServer};

use thiserror::Error;

use crate::attestation::Attestation;
use crate::config::Config;
use crate::evidence::{ImaLog, UefiLog};
use crate::http_client::ServerTrust;
use crate::identity::{AgentId, IdentityError, MtlsIdentity, PayloadKey};
use crate::payload::{secure_dir, PayloadService};
use crate::peer_compat;
use crate::privileges::{self, Identity, PrivilegeError};
use crate::registrar::{RegistrarClient, RegistrarEndpoint, RegistrarError, Registration};
use crate::revocation::Revocation;
use crate::secure_fs;
use crate::tls::TlsError;
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
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The secure directory could not be prepared.
    #[error("secure directory {path}: {source}")]
    SecureDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Switching to `run_as` failed.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The audit file could not be opened.
    #[error("audit_log {path}: {source}")]
    Audit {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A set-up task running beside the TPM's did not finish.
    #[error("{what}: the task failed: {reason}")]
    SetUpTask {
        /// What it was doing.
        what: &'static str,
        /// Why it stopped.
        reason: String,
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

/// Which front end the agent core is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// The mTLS API the verifier polls (`keylime_agent`).
    Pull,
    /// The worker that sends evidence to the verifier (`keylime_push_model_agent`).
    Push,
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
    /// Quote production.
    pub attestation: Attestation,
    /// The key exchange and payloads.
    pub payload: PayloadService,
    /// Revocation notifications.
    pub revocation: Revocation,
    /// The account `run_as` names, when the agent will switch to it.
    pub run_as: Option<Identity>,
    /// The secure directory as prepared (pull only).
    pub secure: Option<secure_dir::Prepared>,
}

/// The state directory as laid out at start.
struct StateLayout {
    /// `run_as`, when the agent runs as root and will switch to it.
    run_as: Option<Identity>,
    /// The secure directory, once prepared (pull only).
    secure: Option<secure_dir::Prepared>,
}

/// Lays out `keylime_dir`: root's (or the agent user's), 0700, or 0710
/// with `run_as`'s group so that it can reach the two directories it owns
/// (the secure directory and `revocation/`). Nothing else is given away.
fn lay_out_state(config: &Config) -> Result<StateLayout, AgentError> {
    let state_error = |source| AgentError::StateDir {
        path: config.keylime_dir.display().to_string(),
        source,
    };
    let run_as = match &config.run_as {
        Some(run_as) if privileges::will_switch() => Some(privileges::resolve(run_as)?),
        _ => None,
    };
    let me = secure_fs::Owner::me();
    let (mode, owner) = match &run_as {
        Some(identity) => (
            0o710,
            secure_fs::Owner {
                uid: me.uid,
                gid: identity.gid,
            },
        ),
        None => (0o700, me),
    };
    let state = secure_fs::Dir::ensure(&config.keylime_dir, mode, owner).map_err(state_error)?;
    let writer = run_as.as_ref().map_or(me, Identity::owner);
    // `<keylime_dir>/revocation` (`config.revocation.state_dir`): what
    // revocation keeps across restarts, written after the switch.
    state
        .subdir(std::ffi::OsStr::new("revocation"), 0o700, writer)
        .map_err(state_error)?;
    Ok(StateLayout {
        run_as,
        secure: None,
    })
}

impl AgentCore {
    /// Prepares the state directory, starts the TPM owner and resolves the
    /// identity, for the pull API. On failure after the TPM started, the
    /// TPM is shut down.
    pub async fn prepare(config: &Config) -> Result<Self, AgentError> {
        Self::prepare_for(config, FrontEnd::Pull).await
    }

    /// As [`Self::prepare`], for `front`: the push worker needs no mTLS
    /// certificate and no secure payload directory.
    pub async fn prepare_for(config: &Config, front: FrontEnd) -> Result<Self, AgentError> {
        for lowered in config.lowered_protection(front == FrontEnd::Pull, privileges::will_switch())
        {
            tracing::warn!("{} ({}: {})", lowered.what, lowered.key, lowered.fix);
        }
        let layout = lay_out_state(config)?;
        // The NK (an RSA 2048 key, generated on the first start) does not
        // depend on the TPM: it is made while the TPM creates the EK and AK.
        let nk = {
            let (path, password) = (
                config.payload_key.clone(),
                config.payload_key_password.clone(),
            );
            tokio::task::spawn_blocking(move || PayloadKey::load_or_create(&path, &password))
        };
        // So is the registrar's HTTP client: building it loads OpenSSL's
        // default CA paths (tens of milliseconds), also done meanwhile.
        let registrar = {
            let (endpoint, retry) = (registrar_endpoint(config), config.registrar_retry.clone());
            tokio::task::spawn_blocking(move || RegistrarClient::new(&endpoint, retry))
        };
        crate::service::status("opening the TPM");
        let tpm = Tpm::start(tpm_config(config)).await;
        let payload_key = joined(nk, "generating the NK").await;
        let registrar = joined(registrar, "building the registrar client").await;
        let tpm = tpm?;
        let (payload_key, registrar) = match (payload_key, registrar) {
            (Ok(key), Ok(client)) => (key, client),
            (Err(e), _) | (_, Err(e)) => {
                tpm.shutdown().await;
                return Err(e);
            }
        };
        if let Some(interval) = crate::service::watchdog_interval() {
            tpm.keep_alive_from_owner(interval, crate::service::watchdog_ping);
        }
        let secure = &config.payload.secure_dir;
        let mut layout = layout;
        if front == FrontEnd::Pull {
            let writer = layout.run_as.as_ref().map(Identity::owner);
            match secure_dir::prepare(secure, &config.payload.secure_size, writer) {
                Ok(prepared) => layout.secure = Some(prepared),
                Err(source) => {
                    tpm.shutdown().await;
                    return Err(AgentError::SecureDir {
                        path: secure.display().to_string(),
                        source,
                    });
                }
            }
        }
        match Self::with_tpm(config, tpm.clone(), payload_key, registrar, front, layout) {
            Ok(core) => Ok(core),
            Err(e) => {
                tpm.shutdown().await;
                Err(e)
            }
        }
    }

    fn with_tpm(
        config: &Config,
        tpm: Tpm,
        payload_key: PayloadKey,
        registrar: RegistrarClient,
        front: FrontEnd,
        layout: StateLayout,
    ) -> Result<Self, AgentError> {
        let agent_id = config
            .agent_id
            .resolve(&config.keylime_dir, &tpm.keys().ek_public_pem)?;
        let mtls = if front == FrontEnd::Push {
            None
        } else if config.enable_agent_mtls {
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
        let attestation = Attestation::new(
            tpm.clone(),
            payload_key.public_pem(),
            (
                config.tpm_hash_alg,
                config.tpm_encryption_alg,
                config.tpm_signing_alg,
            ),
            ImaLog::new(&config.ima_ml_path),
            UefiLog::new(
                &config.measuredboot_ml_path,
                config.tpm_hash_alg.tpm_alg_id(),
            ),
        )
        .map_err(|source| IdentityError::Crypto {
            what: "hashing the NK".into(),
            source,
        })?;
        if front == FrontEnd::Pull && mtls.is_none() && !config.payload.enable_insecure_payload {
            tracing::warn!(
                "mTLS is off and enable_insecure_payload = false: payloads will be refused"
            );
        }
        let payload = PayloadService::new(
            agent_id.as_str(),
            payload_key.private_key().clone(),
            config.payload.clone(),
            mtls.is_some(),
        );
        let revocation = Revocation::new(
            config.revocation.clone(),
            crate::payload::unzipped_dir(&config.payload),
            config.payload.secure_dir.clone(),
        );
        Ok(Self {
            tpm,
            agent_id,
            payload_key,
            mtls,
            registrar,
            registration,
            attestation,
            payload,
            revocation,
            run_as: layout.run_as,
            secure: layout.secure,
        })
    }

    /// Switches to `run_as`, when set and the agent runs as root: called
    /// by both front ends once the TPM, the secure directory, the logs and
    /// (pull) the socket are open.
    pub fn drop_privileges(&self) -> Result<(), AgentError> {
        let Some(identity) = &self.run_as else {
            return Ok(());
        };
        privileges::drop_to(identity)?;
        crate::audit::record(
            crate::audit::Event::PrivilegesDropped,
            serde_json::json!({ "user": identity.name, "group": identity.group, "uid": identity.uid.as_raw() }),
        );
        Ok(())
    }

    /// Registers with the registrar and activates, retrying per policy;
    /// then says what the registrar's Keylime release cannot verify.
    pub async fn register(&self) -> Result<(), AgentError> {
        let version = self
            .registrar
            .register(&self.registration, &self.tpm)
            .await?;
        if let Some(refusal) = peer_compat::release_refusal(version, self.attestation.sign_alg()) {
            tracing::warn!("{refusal}");
        }
        Ok(())
    }
}

/// The outcome of a blocking set-up task.
async fn joined<T, E: Into<AgentError>>(
    task: tokio::task::JoinHandle<Result<T, E>>,
    what: &'static str,
) -> Result<T, AgentError> {
    match task.await {
        Ok(outcome) => outcome.map_err(Into::into),
        Err(e) => Err(AgentError::SetUpTask {
            what,
            reason: e.to_string(),
        }),
    }
}

/// The TPM settings from the config.
pub fn tpm_config(config: &Config) -> TpmConfig {
    TpmConfig {
        tcti: config.tcti.clone(),
        hash_alg: config.tpm_hash_alg,
        encryption_alg: config.tpm_encryption_alg,
        signing_alg: config.tpm_signing_alg,
        ek_handle: config.ek_handle,
        owner_auth: config.tpm_ownerpassword.clone(),
        ak_store: config.agent_data_path.clone(),
    }
}

/// The registrar's address from the config: its HTTPS port and CA when
/// `registrar_tls_enabled`, else its plain-HTTP port.
pub fn registrar_endpoint(config: &Config) -> RegistrarEndpoint {
    let (port, tls) = match &config.registrar_tls {
        Some(tls) => (
            tls.port,
            Some(ServerTrust {
                ca_file: tls.ca_cert.clone(),
                ca_key: "registrar_tls_ca_cert",
            }),
        ),
        None => (config.registrar_port, None),
    };
    RegistrarEndpoint {
        host: config.registrar_ip.clone(),
        port,
        tls,
        versions: config.registrar_api_versions.clone(),
    }
}
