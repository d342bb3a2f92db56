//! The typed agent configuration and how it is made from the raw `[agent]`
//! section: every value parsed once, here or in its section's file.

use std::path::{Path, PathBuf};

use super::error::{invalid, ConfigError};
use super::identity::device_identity;
use super::limits::ApiLimits;
use super::observe::ObserveConfig;
use super::payload::{PayloadConfig, RevocationConfig};
use super::push::PushConfig;
use super::raw::RawAgentSection;
use super::registrar::{refresh_interval, registrar_tls, retry_policy, RegistrarTls};
use super::values::{self, InvalidValue, RunAs};
use super::versions::{api_versions, registrar_api_versions};
use crate::algorithms::{
    EncryptionAlg, HashAlg, SigningAlg, ENCRYPTION_ALG_ACCEPTED, HASH_ALG_ACCEPTED,
    SIGNING_ALG_ACCEPTED,
};
use crate::api_version::ApiVersion;
use crate::identity::AgentIdSource;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::tpm::DeviceIdentityConfig;

/// The typed agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How the agent id is chosen (`uuid`).
    pub agent_id: AgentIdSource,
    /// Address the API server binds (`ip`).
    pub ip: String,
    /// Port the API server binds (`port`).
    pub port: u16,
    /// Address the verifier and tenant use to reach the agent (`contact_ip`).
    pub contact_ip: String,
    /// Port the verifier and tenant use (`contact_port`).
    pub contact_port: u16,
    /// Registrar host (`registrar_ip`).
    pub registrar_ip: String,
    /// Registrar plain-HTTP port (`registrar_port`).
    pub registrar_port: u16,
    /// Registration over HTTPS instead (`registrar_tls_*`), or `None` for HTTP.
    pub registrar_tls: Option<RegistrarTls>,
    /// Registrar API versions this agent may use, ascending (`registrar_api_versions`).
    pub registrar_api_versions: Vec<ApiVersion>,
    /// The agent's state directory (`keylime_dir`).
    pub keylime_dir: PathBuf,
    /// mTLS on the API server (`enable_agent_mtls`).
    pub enable_agent_mtls: bool,
    /// mTLS private key file (`server_key`).
    pub server_key: PathBuf,
    /// Password of the mTLS private key file (`server_key_password`).
    pub server_key_password: Secret<String>,
    /// mTLS certificate file (`server_cert`).
    pub server_cert: PathBuf,
    /// CA files trusted for client certificates (`trusted_client_ca`).
    pub trusted_client_ca: Vec<PathBuf>,
    /// CRL files (PEM) whose revoked client certificates are refused
    /// (`trusted_client_crl`); empty = none.
    pub trusted_client_crl: Vec<PathBuf>,
    /// AK signing hash and quoted PCR bank (`tpm_hash_alg`).
    pub tpm_hash_alg: HashAlg,
    /// EK template (`tpm_encryption_alg`).
    pub tpm_encryption_alg: EncryptionAlg,
    /// AK signing scheme (`tpm_signing_alg`).
    pub tpm_signing_alg: SigningAlg,
    /// A persistent EK handle, or `None` to create the EK (`ek_handle`).
    pub ek_handle: Option<u32>,
    /// Endorsement hierarchy authorization (`tpm_ownerpassword`).
    pub tpm_ownerpassword: Secret<Vec<u8>>,
    /// Where the AK is persisted (`agent_data_path`).
    pub agent_data_path: PathBuf,
    /// The IAK and IDevID (`enable_iak_idevid` and the `iak_*`/`idevid_*` keys).
    pub device_identity: Option<DeviceIdentityConfig>,
    /// The NK private key file (`payload_key`).
    pub payload_key: PathBuf,
    /// Password of the NK file (`payload_key_password`).
    pub payload_key_password: Secret<String>,
    /// The identity to switch to after start (`run_as`).
    pub run_as: Option<RunAs>,
    /// API versions served, ascending (`api_versions`).
    pub api_versions: Vec<ApiVersion>,
    /// Registrar retry policy (`exponential_backoff_*`).
    pub registrar_retry: RetryPolicy,
    /// Register again this often (`registrar_refresh_interval`), or never.
    pub registrar_refresh_interval: Option<std::time::Duration>,
    /// The TPM connection (`TCTI` environment variable or `tcti`).
    pub tcti: String,
    /// The IMA runtime measurement list (`ima_ml_path`).
    pub ima_ml_path: PathBuf,
    /// The UEFI boot event log (`measuredboot_ml_path`).
    pub measuredboot_ml_path: PathBuf,
    /// Payload delivery settings.
    pub payload: PayloadConfig,
    /// Revocation notification settings.
    pub revocation: RevocationConfig,
    /// Push-model settings (`keylime_push_model_agent`).
    pub push: PushConfig,
    /// Metrics, log format and audit trail.
    pub observe: ObserveConfig,
    /// What one client may cost the API server.
    pub api_limits: ApiLimits,
}

/// Where the kernel publishes the IMA list.
pub const DEFAULT_IMA_ML_PATH: &str = "/sys/kernel/security/ima/ascii_runtime_measurements";
/// Where the kernel publishes the UEFI event log.
pub const DEFAULT_MEASUREDBOOT_ML_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

impl Config {
    /// The config from the merged raw section and the `TCTI` variable.
    pub(super) fn from_raw(
        raw: &RawAgentSection,
        tcti_env: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let keylime_dir = keylime_dir(raw)?;
        let dir = keylime_dir.as_path();
        let path = |key: &str, default: &str| {
            values::path_or_default(raw.get(key).unwrap_or("default"), dir, default)
        };
        let port = raw.parse("port", "9002", values::port)?;
        let ip = raw.parse("ip", "127.0.0.1", values::host)?;
        let enable_agent_mtls = raw.parse("enable_agent_mtls", "true", values::boolean)?;
        let trusted_client_ca = raw.trusted_client_ca(dir, enable_agent_mtls)?;
        let payload = PayloadConfig::from_raw(raw, dir)?;
        payload.refuse_without_mtls(enable_agent_mtls)?;
        Ok(Self {
            agent_id: raw.parse("uuid", "generate", |v| {
                AgentIdSource::parse(v).ok_or_else(|| InvalidValue::new(AgentIdSource::ACCEPTED))
            })?,
            contact_ip: raw.parse("contact_ip", "127.0.0.1", values::host)?,
            contact_port: raw.parse("contact_port", &port.to_string(), values::port)?,
            ip,
            port,
            registrar_ip: raw.parse("registrar_ip", "127.0.0.1", values::host)?,
            registrar_port: raw.parse("registrar_port", "8890", values::port)?,
            registrar_tls: registrar_tls(raw, dir)?,
            registrar_api_versions: raw.parse(
                "registrar_api_versions",
                "default",
                registrar_api_versions,
            )?,
            enable_agent_mtls,
            server_key: path("server_key", "server-private.pem"),
            server_key_password: Secret::new(raw.get("server_key_password").unwrap_or("").into()),
            server_cert: path("server_cert", "server-cert.crt"),
            trusted_client_ca,
            trusted_client_crl: values::list(raw.get("trusted_client_crl").unwrap_or(""))
                .iter()
                .map(|name| dir.join(name))
                .collect(),
            tpm_hash_alg: raw.parse("tpm_hash_alg", "sha256", values::one_of(HASH_ALG_ACCEPTED))?,
            tpm_encryption_alg: raw.parse(
                "tpm_encryption_alg",
                "rsa",
                values::one_of(ENCRYPTION_ALG_ACCEPTED),
            )?,
            tpm_signing_alg: raw.parse(
                "tpm_signing_alg",
                "rsassa",
                values::one_of(SIGNING_ALG_ACCEPTED),
            )?,
            ek_handle: raw.parse("ek_handle", "generate", values::ek_handle)?,
            tpm_ownerpassword: Secret::new(raw.parse("tpm_ownerpassword", "", values::tpm_auth)?),
            agent_data_path: path("agent_data_path", "agent_data.json"),
            device_identity: device_identity(raw, dir)?,
            payload_key: path("payload_key", "payload-private.pem"),
            payload_key_password: Secret::new(raw.get("payload_key_password").unwrap_or("").into()),
            run_as: raw.parse("run_as", "", values::run_as)?,
            api_versions: raw.parse("api_versions", "default", api_versions)?,
            registrar_retry: retry_policy(raw)?,
            registrar_refresh_interval: raw.parse(
                "registrar_refresh_interval",
                "off",
                refresh_interval,
            )?,
            tcti: tcti(tcti_env, raw.get("tcti")),
            ima_ml_path: path("ima_ml_path", DEFAULT_IMA_ML_PATH),
            measuredboot_ml_path: path("measuredboot_ml_path", DEFAULT_MEASUREDBOOT_ML_PATH),
            payload,
            revocation: RevocationConfig::from_raw(raw, dir)?,
            api_limits: ApiLimits::from_raw(raw)?,
            observe: ObserveConfig::from_raw(raw, dir)?,
            push: PushConfig::from_raw(raw, dir)?,
            keylime_dir,
        })
    }
}

/// `keylime_dir`: an absolute path.
fn keylime_dir(raw: &RawAgentSection) -> Result<PathBuf, ConfigError> {
    let value = raw.get("keylime_dir").unwrap_or("/var/lib/keylime");
    if !Path::new(value).is_absolute() {
        return Err(invalid("keylime_dir", value, "an absolute path"));
    }
    Ok(PathBuf::from(value))
}

/// `TCTI` env, else the `tcti` key, else the kernel resource manager if
/// present, else the raw device.
pub(super) fn tcti(env: Option<&str>, key: Option<&str>) -> String {
    if let Some(t) = env.or(key).filter(|t| !t.is_empty() && *t != "default") {
        return t.to_string();
    }
    if Path::new("/dev/tpmrm0").exists() {
        "device:/dev/tpmrm0".into()
    } else {
        "device:/dev/tpm0".into()
    }
}
