//! What only the pull agent has beside the core: the secure directory,
//! `revocation/`, the mTLS identity, the key exchange and payloads, and
//! revocation handling, all made while the agent may still be root.

use super::error::PullError;
use super::payload::{self, secure_dir, PayloadService};
use super::revocation::Revocation;
use crate::agent::AgentCore;
use crate::config::Config;
use crate::identity::MtlsIdentity;
use crate::privileges::Identity;
use crate::secure_fs;

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
