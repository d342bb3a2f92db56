//! The pull front end (`keylime_agent`): the mTLS API the verifier polls,
//! bound before privileges are dropped and served while registration
//! retries, until the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::web;

use super::{AgentCore, AgentError};
use crate::api::{self, AgentInfo, ApiState, BodyLimits, ServerLimits};
use crate::config::Config;
use crate::observing::Observing;
use crate::peer_compat;
use crate::tls;

/// API worker threads: the verifier and the tenant are the only clients.
const WORKERS: usize = 2;
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
            self.addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
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

impl AgentCore {
    /// Binds `ip:port` (mTLS unless disabled) and starts serving the API.
    pub fn start_server(&self, config: &Config) -> Result<RunningServer, AgentError> {
        Ok(self.bind_server(config)?.start())
    }

    /// Binds `ip:port` (mTLS unless disabled) without serving yet.
    pub fn bind_server(&self, config: &Config) -> Result<BoundServer, AgentError> {
        let state = web::Data::new(ApiState {
            attestation: self.attestation.clone(),
            versions: config.api_versions.clone(),
            info: AgentInfo {
                agent_id: self.agent_id.to_string(),
                hash_alg: config.tpm_hash_alg,
                enc_alg: config.tpm_encryption_alg,
                sign_alg: config.tpm_signing_alg,
                ak_handle: self.tpm.keys().ak_handle,
            },
            payload: self.payload.clone(),
            revocation: self.revocation.clone(),
            limits: BodyLimits::new(
                config.api_limits.max_payload_size,
                config.api_limits.body_timeout,
            ),
            key_work: Default::default(),
            refusals: Default::default(),
        });
        let tls = match &self.mtls {
            Some(identity) => Some(
                tls::acceptor(
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
            .map_err(|source| AgentError::Server {
                addr: format!("{}:{}", config.ip, config.port),
                source,
            })?;
        Ok(BoundServer {
            server,
            addrs,
            mtls: self.mtls.is_some(),
        })
    }
}

/// Runs the agent: set-up, API server, registration, then waits for
/// `shutdown`. The API is served while registration is still retrying, so a
/// restarted agent answers the verifier even while the registrar is down.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let observing = Observing::start(&config)?;
    let core = match AgentCore::prepare(&config).await {
        Ok(core) => core,
        Err(e) => {
            observing.stop().await;
            return Err(e);
        }
    };
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
    for note in peer_compat::default_list_notes(config.tpm_hash_alg, config.tpm_signing_alg) {
        tracing::info!("{note}");
    }
    if config.run_as.is_some() {
        core.attestation.hold_logs().await;
    }
    let server = match core.bind_server(&config).and_then(|bound| {
        core.drop_privileges()?;
        Ok(bound.start())
    }) {
        Ok(server) => server,
        Err(e) => {
            core.tpm.shutdown().await;
            observing.stop().await;
            return Err(e);
        }
    };
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        registered = core.register() => match registered {
            Ok(()) => {
                crate::service::ready(&format!(
                    "registered as {}; serving the API on {}",
                    core.agent_id,
                    server
                        .addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                (&mut shutdown).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        () = &mut shutdown => Ok(()),
    };
    crate::service::stopping();
    server.stop().await;
    if let Some(prepared) = core.secure {
        crate::payload::secure_dir::release(&config.payload.secure_dir, prepared);
    }
    core.tpm.shutdown().await;
    observing.stop().await;
    tracing::info!("agent {} stopped", core.agent_id);
    outcome
}
