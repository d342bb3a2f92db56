//! What both front ends start before anything else so that operators can
//! watch the agent: the audit file (with the loaded config as its first
//! record) and the metrics server.

use actix_web::dev::ServerHandle;
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Why observing could not start.
#[derive(Debug, Error)]
pub enum ObserveError {
    /// The audit file could not be opened.
    #[error("audit_log {path}: {source}")]
    Audit {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metrics server could not bind.
    #[error("metrics server on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The metrics server, while it runs.
pub struct Observing {
    metrics: Option<(ServerHandle, JoinHandle<std::io::Result<()>>)>,
}

impl Observing {
    /// Opens the audit file and records the loaded config, and starts the
    /// metrics server, as `config` asks (both front ends call this first).
    pub fn start(config: &Config) -> Result<Self, ObserveError> {
        let observe = &config.observe;
        if let Some(path) = &observe.audit_log {
            crate::audit::open(path).map_err(|source| ObserveError::Audit {
                path: path.display().to_string(),
                source,
            })?;
        }
        crate::audit::record(crate::audit::Event::ConfigLoaded, config_summary(config));
        let metrics = match observe.metrics_address {
            Some(addr) => {
                let server =
                    crate::metrics::serve(addr).map_err(|source| ObserveError::Metrics {
                        addr: addr.to_string(),
                        source,
                    })?;
                tracing::info!("serving metrics on http://{addr}/metrics");
                let handle = server.handle();
                Some((handle, tokio::spawn(server)))
            }
            None => None,
        };
        Ok(Self { metrics })
    }

    /// Stops the metrics server.
    pub async fn stop(self) {
        if let Some((handle, task)) = self.metrics {
            handle.stop(false).await;
            let _ = task.await;
        }
    }
}

/// What the audit trail records of the config: the settings that decide
/// who is trusted and what runs; for secrets only whether they are set.
fn config_summary(config: &Config) -> serde_json::Value {
    let set = |secret: bool| if secret { "set (redacted)" } else { "unset" };
    serde_json::json!({
        "uuid": format!("{:?}", config.agent_id),
        "listen": format!("{}:{}", config.ip, config.port),
        "contact": format!("{}:{}", config.contact_ip, config.contact_port),
        "registrar": format!("{}:{}", config.registrar_ip, config.registrar_port),
        "registrar_tls": config.registrar_tls.is_some(),
        "enable_agent_mtls": config.enable_agent_mtls,
        "trusted_client_ca": config.trusted_client_ca,
        "api_versions": config.api_versions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tpm": {
            "tcti": config.tcti,
            "hash_alg": config.tpm_hash_alg.as_str(),
            "encryption_alg": format!("{:?}", config.tpm_encryption_alg),
            "signing_alg": config.tpm_signing_alg.as_str(),
        },
        "run_as": config.run_as.as_ref().map(|r| r.user.clone()),
        "payload_script": config.payload.payload_script,
        "enable_insecure_payload": config.payload.enable_insecure_payload,
        "revocation_actions": config.revocation.actions,
        "metrics_address": config.observe.metrics_address.map(|a| a.to_string()),
        "secrets": {
            "tpm_ownerpassword": set(!config.tpm_ownerpassword.is_empty()),
            "server_key_password": set(!config.server_key_password.is_empty()),
            "payload_key_password": set(!config.payload_key_password.is_empty()),
        },
    })
}
