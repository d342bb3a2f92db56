//! The settings each part of the core takes, drawn from the config: the
//! TPM's, the registrar's and the push agent's. Front ends, `check` and
//! `info` all ask here.

use super::error::{invalid, ConfigError};
use super::push::PushSettings;
use super::raw;
use super::settings::Config;
use crate::algorithms::{HashAlg, SigningAlg};
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
            device_identity: self.device_identity.clone(),
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

impl Config {
    /// The push-model settings, or the one-line error that stops
    /// `keylime_push_model_agent` at start: `verifier_url` must be set, its
    /// CA file usable, and the AK one the 7.14 verifier accepts in push
    /// mode (its proof of possession takes only RSASSA with SHA-256).
    pub fn push_settings(&self) -> Result<PushSettings, ConfigError> {
        let verifier_url = self.push.verifier_url.clone().ok_or_else(|| {
            invalid(
                "verifier_url",
                "",
                "the verifier's https:// URL (required by keylime_push_model_agent)",
            )
        })?;
        let ca = &self.push.verifier_tls_ca_cert;
        raw::check_ca_file(ca).map_err(|why| {
            invalid(
                "verifier_tls_ca_cert",
                &ca.display().to_string(),
                &format!(
                    "a readable PEM file with the CA of the verifier's server certificate ({why})"
                ),
            )
        })?;
        if self.tpm_signing_alg != SigningAlg::RsaSsa {
            return Err(invalid(
                "tpm_signing_alg",
                self.tpm_signing_alg.as_str(),
                "rsassa: the Keylime 7.14 verifier authenticates push agents only with an RSA AK signing RSASSA",
            ));
        }
        if self.tpm_hash_alg != HashAlg::Sha256 {
            return Err(invalid(
                "tpm_hash_alg",
                self.tpm_hash_alg.as_str(),
                "sha256: the Keylime 7.14 verifier checks push agents' proof of possession with SHA-256 only",
            ));
        }
        Ok(PushSettings {
            verifier_url,
            verifier_tls_ca_cert: ca.clone(),
            attestation_interval: self.push.attestation_interval,
            certification_key_id: self.push.certification_key_id.clone(),
            uefi_logs_evidence_version: self.push.uefi_logs_evidence_version.clone(),
        })
    }
}
