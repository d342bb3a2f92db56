//! The core's set-up, in order: the state directory, the TPM owner and the
//! identity beside it, registration, quote production, and the switch to
//! `run_as`.

use super::error::AgentError;
use crate::attestation::Attestation;
use crate::config::Config;
use crate::evidence::{ImaLog, UefiLog};
use crate::identity::{AgentId, IdentityError, Nk};
use crate::peer_compat;
use crate::privileges::{self, Identity};
use crate::registrar::{RegistrarClient, Registration};
use crate::secure_fs;
use crate::tpm::Tpm;

/// Everything the agent is, once set up: TPM, id, keys, registrar client.
#[derive(Debug)]
pub struct AgentCore {
    /// The TPM owner handle.
    pub tpm: Tpm,
    /// The resolved agent id.
    pub agent_id: AgentId,
    /// The NK.
    pub nk: Nk,
    /// The registrar client.
    pub registrar: RegistrarClient,
    /// What is registered.
    pub registration: Registration,
    /// Quote production.
    pub attestation: Attestation,
    /// The account `run_as` names, when the agent will switch to it.
    pub run_as: Option<Identity>,
    /// Register again this often (`registrar_refresh_interval`), or never.
    pub registrar_refresh: Option<std::time::Duration>,
}

/// Lays out `keylime_dir`: root's (or the agent user's), 0700, or 0710
/// with `run_as`'s group so that it can reach the directories a front end
/// gives it. Returns `run_as` when the agent will switch to it.
fn lay_out_state(config: &Config) -> Result<Option<Identity>, AgentError> {
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
    secure_fs::Dir::ensure(&config.keylime_dir, mode, owner).map_err(|source| {
        AgentError::StateDir {
            path: config.keylime_dir.display().to_string(),
            source,
        }
    })?;
    Ok(run_as)
}

impl AgentCore {
    /// Prepares the state directory, starts the TPM owner and resolves the
    /// identity. On failure after the TPM started, the TPM is shut down.
    pub async fn prepare(config: &Config) -> Result<Self, AgentError> {
        let run_as = lay_out_state(config)?;
        // The NK (an RSA 2048 key, generated on the first start) does not
        // depend on the TPM: it is made while the TPM creates the EK and AK.
        let nk = {
            let (path, password) = (
                config.payload_key.clone(),
                config.payload_key_password.clone(),
            );
            tokio::task::spawn_blocking(move || Nk::load_or_create(&path, &password))
        };
        // So is the registrar's HTTP client: building it loads OpenSSL's
        // default CA paths (tens of milliseconds), also done meanwhile.
        let registrar = {
            let (endpoint, retry) = (config.registrar_endpoint(), config.registrar_retry.clone());
            tokio::task::spawn_blocking(move || RegistrarClient::new(&endpoint, retry))
        };
        crate::service::status("opening the TPM");
        let tpm = Tpm::start(config.tpm_config()).await;
        let nk = joined(nk, "generating the NK").await;
        let registrar = joined(registrar, "building the registrar client").await;
        let tpm = tpm?;
        let (nk, registrar) = match (nk, registrar) {
            (Ok(key), Ok(client)) => (key, client),
            (Err(e), _) | (_, Err(e)) => {
                tpm.shutdown().await;
                return Err(e);
            }
        };
        if let Some(interval) = crate::service::watchdog_interval() {
            tpm.keep_alive_from_owner(interval, crate::service::watchdog_ping);
        }
        match Self::with_tpm(config, tpm.clone(), nk, registrar, run_as) {
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
        nk: Nk,
        registrar: RegistrarClient,
        run_as: Option<Identity>,
    ) -> Result<Self, AgentError> {
        let agent_id = config
            .agent_id
            .resolve(&config.keylime_dir, &tpm.keys().ek_public_pem)?;
        let registration = Registration {
            agent_id: agent_id.to_string(),
            mtls_cert_pem: None,
            contact_ip: config.contact_ip.clone(),
            contact_port: config.contact_port,
        };
        let attestation = Attestation::new(
            tpm.clone(),
            nk.public_pem(),
            (
                config.tpm_hash_alg,
                tpm.keys().ek_alg,
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
        Ok(Self {
            tpm,
            agent_id,
            nk,
            registrar,
            registration,
            attestation,
            run_as,
            registrar_refresh: config.registrar_refresh_interval,
        })
    }

    /// Logs the settings of `config` that lower protection for a front end
    /// that runs payloads (`runs_payloads`) or not.
    pub fn warn_lowered_protection(config: &Config, runs_payloads: bool) {
        for lowered in config.lowered_protection(runs_payloads, privileges::will_switch()) {
            tracing::warn!("{} ({}: {})", lowered.what, lowered.key, lowered.fix);
        }
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
        let algs = (self.attestation.enc_alg(), self.attestation.sign_alg());
        for refusal in peer_compat::release_refusals(version, algs) {
            tracing::warn!("{refusal}");
        }
        Ok(())
    }
}

impl AgentCore {
    /// Registers again, with the same identity and a fresh challenge, on
    /// every `SIGHUP` (`hangup`) and every `registrar_refresh_interval`:
    /// a record the registrar lost (deleted, or a database restored from
    /// before) comes back without a restart. A failed re-registration is
    /// logged and the agent goes on serving; the next signal or tick tries
    /// again. Never ends.
    pub async fn keep_registered(
        &self,
        mut hangup: Option<tokio::signal::unix::Signal>,
    ) -> std::convert::Infallible {
        let mut ticks = self.registrar_refresh.map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let why = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                Some(_) = async { Some(ticks.as_mut()?.tick().await) } => "registrar_refresh_interval",
                // Neither source (no signal handler, no interval): nothing to do.
                else => std::future::pending().await,
            };
            tracing::info!(
                "{why}: registering with the registrar again (only the registration is redone; \
                 restart the agent to apply config or certificate changes)"
            );
            crate::audit::record(
                crate::audit::Event::Reregistering,
                serde_json::json!({ "agent_id": self.agent_id.to_string(), "why": why }),
            );
            if let Err(e) = self.register().await {
                tracing::error!("registering again ({why}) failed: {e}; the agent goes on serving");
            }
        }
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
