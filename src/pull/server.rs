//! The API server of the pull agent: bound (as root, before the switch to
//! `run_as`), then started, then stopped at shutdown with a grace period
//! for requests in flight.

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::web;

use super::api::{self, AgentInfo, ApiState, BodyLimits, ServerLimits};
use super::error::PullError;
use super::parts::PullParts;
use crate::agent::AgentCore;
use crate::config::Config;

/// API worker threads. The verifier and the tenant are the only clients,
/// quotes wait on the TPM's one owner thread, and key-half RSA and file
/// reads run off the worker. In two `swtpm-ci/bench --against` runs the
/// quote medians were the same with one worker as with two (fresh
/// connection 8.61 and 8.59 ms, kept-open 4.67 and 4.70 ms); one spares
/// each machine a thread and a runtime.
const WORKERS: usize = 1;
/// How long in-flight requests may finish at shutdown.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// The API server, bound but not yet serving.
pub struct BoundServer {
    server: actix_web::dev::Server,
    addrs: Vec<SocketAddr>,
    mtls: bool,
}

impl BoundServer {
    /// Starts serving.
    pub fn start(self) -> RunningServer {
        let handle = self.server.handle();
        let task = tokio::spawn(self.server);
        tracing::info!(
            "serving API {} on {}",
            if self.mtls {
                "over mTLS"
            } else {
                "over plain HTTP"
            },
            list(&self.addrs)
        );
        RunningServer {
            addrs: self.addrs,
            handle,
            task,
        }
    }
}

/// The API server, running.
pub struct RunningServer {
    /// The addresses it listens on.
    pub addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// The addresses, comma-separated.
pub fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds `ip:port` (mTLS unless disabled) over the core and the pull
/// agent's parts, without serving yet.
pub fn bind(
    core: &AgentCore,
    parts: &PullParts,
    config: &Config,
) -> Result<BoundServer, PullError> {
    let state = web::Data::new(ApiState {
        attestation: core.attestation.clone(),
        versions: config.api_versions.clone(),
        info: AgentInfo {
            agent_id: core.agent_id.to_string(),
            hash_alg: config.tpm_hash_alg,
            enc_alg: core.tpm.keys().ek_alg,
            sign_alg: config.tpm_signing_alg,
            ak_handle: core.tpm.keys().ak_handle,
        },
        payload: parts.payload.clone(),
        revocation: parts.revocation.clone(),
        limits: BodyLimits::new(
            config.api_limits.ukey_body_limit,
            config.api_limits.body_timeout,
        ),
        key_work: Default::default(),
        refusals: Default::default(),
        buffers: Default::default(),
    });
    let tls = match &parts.mtls {
        Some(identity) => Some(
            super::tls::acceptor(
                identity,
                &config.trusted_client_ca,
                &config.trusted_client_crl,
            )?
            .build(),
        ),
        None => None,
    };
    let limits = ServerLimits {
        workers: WORKERS,
        max_connections: config.api_limits.max_connections,
        max_per_client: config.api_limits.max_connections_per_client,
        allowed: config.api_limits.allowed_client_cidrs.clone(),
        head_timeout: config.api_limits.head_timeout,
        shutdown_grace_secs: SHUTDOWN_GRACE_SECS,
    };
    let (server, addrs) = api::bind((config.ip.as_str(), config.port), tls, &limits, state)
        .map_err(|source| PullError::Server {
            addr: format!("{}:{}", config.ip, config.port),
            source,
        })?;
    Ok(BoundServer {
        server,
        addrs,
        mtls: parts.mtls.is_some(),
    })
}
