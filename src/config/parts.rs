//! The settings each part of the core takes, drawn from the config: the
//! TPM's and the registrar's. Front ends, `check` and `info` all ask here.

use super::Config;
use crate::http_client::ServerTrust;
use crate::registrar::RegistrarEndpoint;
use crate::tpm::TpmConfig;

impl Config {
    /// The TPM settings from the config.
    pub fn tpm_config(&self) -> TpmConfig {
        TpmConfig {
            tcti: self.tcti.clone(),
            hash_alg: self.tpm_hash_alg,
            encryption_alg: self.tpm_encryption_alg,
            signing_alg: self.tpm_signing_alg,
            ek_handle: self.ek_handle,
            owner_auth: self.tpm_ownerpassword.clone(),
            ak_store: self.agent_data_path.clone(),
        }
    }

    /// The registrar's address from the config: its HTTPS port and CA when
    /// `registrar_tls_enabled`, else its plain-HTTP port.
    pub fn registrar_endpoint(&self) -> RegistrarEndpoint {
        let (port, tls) = match &self.registrar_tls {
            Some(tls) => (
                tls.port,
                Some(ServerTrust {
                    ca_file: tls.ca_cert.clone(),
                    ca_key: "registrar_tls_ca_cert",
                }),
            ),
            None => (self.registrar_port, None),
        };
        RegistrarEndpoint {
            host: self.registrar_ip.clone(),
            port,
            tls,
            versions: self.registrar_api_versions.clone(),
        }
    }
}
