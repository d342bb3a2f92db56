//! The agent configuration: upstream `agent.conf` keys, layered from
//! built-in defaults, `/etc/keylime/agent.conf`, its `agent.conf.d/*.conf`
//! drop-ins (lexical order) or the one file named by `KEYLIME_AGENT_CONFIG`,
//! then `KEYLIME_AGENT_<KEY>` environment overrides (which, unlike upstream,
//! also apply when `KEYLIME_AGENT_CONFIG` is set).
//!
//! Every value is parsed here, once, into a typed [`Config`]; later code never
//! sees a raw string or the word "default". This is the only module that
//! reads the process environment.

mod keys;
mod limits;
mod observe;
mod parts;
mod payload;
mod protection;
mod push;
mod raw;
mod values;
mod versions;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::algorithms::{
    EncryptionAlg, HashAlg, SigningAlg, ENCRYPTION_ALG_ACCEPTED, HASH_ALG_ACCEPTED,
    SIGNING_ALG_ACCEPTED,
};
use crate::api_version::ApiVersion;
use crate::identity::AgentIdSource;
use crate::retry::RetryPolicy;
pub use crate::secret::Secret;
pub use limits::ApiLimits;
pub use observe::ObserveConfig;
pub use payload::{PayloadConfig, RevocationConfig};
pub use protection::Lowered;
pub use push::{PushConfig, PushSettings};
use raw::RawAgentSection;
pub use values::InvalidValue;
pub use values::LogFormat;
pub use values::RunAs;
pub use values::{client_cidrs, ClientCidr};
use versions::{api_versions, registrar_api_versions};

/// The system-wide config file, as upstream.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/keylime/agent.conf";
/// The drop-in directory read after [`SYSTEM_CONFIG_FILE`].
pub const SYSTEM_CONFIG_DIR: &str = "/etc/keylime/agent.conf.d";

/// A config problem that stops the agent at start; its `Display` is the one
/// line the operator sees.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A value that does not parse.
    #[error("config: invalid {key} = {value:?}: expected {accepted}")]
    Invalid {
        /// The `[agent]` key.
        key: String,
        /// The value as given (redacted for secrets).
        value: String,
        /// What the key accepts.
        accepted: String,
    },
    /// A file that could not be read or parsed.
    #[error("config: cannot use {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where the raw configuration comes from; [`ConfigSources::from_process`]
/// builds it from the real environment, tests build it by hand.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// Files read in order, later ones overriding earlier ones.
    pub files: Vec<PathBuf>,
    /// Whether a missing file in `files` is an error (an explicitly named file).
    pub files_required: bool,
    /// `(key, value)` overrides applied last, as from `KEYLIME_AGENT_<KEY>`.
    pub overrides: Vec<(String, String)>,
    /// The `TCTI` environment variable, which beats the `tcti` key.
    pub tcti_env: Option<String>,
}

impl ConfigSources {
    /// The sources of a real agent process: `explicit` (the `--config`
    /// option) or `KEYLIME_AGENT_CONFIG`, else the system file and drop-ins;
    /// `KEYLIME_AGENT_*` overrides; `TCTI`.
    pub fn from_process(explicit: Option<PathBuf>) -> Result<Self, ConfigError> {
        let named =
            explicit.or_else(|| std::env::var_os("KEYLIME_AGENT_CONFIG").map(PathBuf::from));
        let (files, files_required) = match named {
            Some(file) => (vec![file], true),
            None => (system_files()?, false),
        };
        let overrides = std::env::vars()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("KEYLIME_AGENT_")?;
                (key != "CONFIG").then(|| (key.to_ascii_lowercase(), value))
            })
            .collect();
        Ok(Self {
            files,
            files_required,
            overrides,
            tcti_env: std::env::var("TCTI").ok().filter(|t| !t.is_empty()),
        })
    }
}

fn system_files() -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = vec![PathBuf::from(SYSTEM_CONFIG_FILE)];
    match std::fs::read_dir(SYSTEM_CONFIG_DIR) {
        Ok(entries) => {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::File {
                path: SYSTEM_CONFIG_DIR.into(),
                reason: e.to_string(),
            })
        }
    }
    Ok(files)
}

/// Which agent a binary is: Keylime's two attestation modes. `check` and
/// `info` look at what that agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `keylime_agent`: the mTLS API the verifier polls.
    Pull,
    /// `keylime_push_model_agent`: evidence sent to the verifier.
    Push,
}

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

/// Registration over HTTPS (`registrar_tls_enabled = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarTls {
    /// The registrar's HTTPS port (`registrar_tls_port`).
    pub port: u16,
    /// The CA the registrar's server certificate must chain to
    /// (`registrar_tls_ca_cert`; `"default"` = `cv_ca/cacert.crt`).
    pub ca_cert: PathBuf,
}

/// Where the kernel publishes the IMA list.
pub const DEFAULT_IMA_ML_PATH: &str = "/sys/kernel/security/ima/ascii_runtime_measurements";
/// Where the kernel publishes the UEFI event log.
pub const DEFAULT_MEASUREDBOOT_ML_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// A loaded config and the warnings to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// One line per warning (unknown keys, keys not used yet).
    pub warnings: Vec<String>,
}

/// Keys whose values never appear in messages.
const SECRET_KEYS: &[&str] = &[
    "tpm_ownerpassword",
    "server_key_password",
    "payload_key_password",
    "idevid_password",
    "iak_password",
];

impl Config {
    /// Reads, merges and parses every source. The first invalid value stops
    /// loading with a one-line [`ConfigError`].
    pub fn load(sources: &ConfigSources) -> Result<Loaded, ConfigError> {
        let mut raw = RawAgentSection::default();
        for file in &sources.files {
            raw.merge_file(file, sources.files_required)?;
        }
        for (key, value) in &sources.overrides {
            raw.set(key, value.clone(), "environment");
        }
        let warnings = raw.warnings();
        let config = Self::from_raw(&raw, sources.tcti_env.as_deref())?;
        Ok(Loaded { config, warnings })
    }

    fn from_raw(raw: &RawAgentSection, tcti_env: Option<&str>) -> Result<Self, ConfigError> {
        let keylime_dir = PathBuf::from(raw.get("keylime_dir").unwrap_or("/var/lib/keylime"));
        if !keylime_dir.is_absolute() {
            return Err(invalid(
                "keylime_dir",
                &keylime_dir.display().to_string(),
                "an absolute path",
            ));
        }
        let dir = keylime_dir.as_path();
        let path = |key: &str, default: &str| {
            values::path_or_default(raw.get(key).unwrap_or("default"), dir, default)
        };
        let port = raw.parse("port", "9002", values::port)?;
        let ip = raw.parse("ip", "127.0.0.1", values::host)?;
        let enable_agent_mtls = raw.parse("enable_agent_mtls", "true", values::boolean)?;
        let trusted_client_ca = raw.trusted_client_ca(dir, enable_agent_mtls)?;
        let payload = PayloadConfig::from_raw(raw, dir)?;
        if !enable_agent_mtls
            && payload.enable_insecure_payload
            && !payload.dangerous_allow_unauthenticated
        {
            return Err(ConfigError::Invalid {
                key: "enable_insecure_payload".into(),
                value: "true".into(),
                accepted: "false while enable_agent_mtls = false: without mTLS anyone who reaches the port \
                           could deliver a payload whose autorun.sh the agent runs (to allow it anyway, set \
                           dangerous_allow_unauthenticated_payloads = true)"
                    .into(),
            });
        }
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
            registrar_tls: raw.registrar_tls(dir)?,
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
            tpm_hash_alg: raw.parse("tpm_hash_alg", "sha256", |v| {
                v.parse().map_err(|()| InvalidValue::new(HASH_ALG_ACCEPTED))
            })?,
            tpm_encryption_alg: raw.parse("tpm_encryption_alg", "rsa", |v| {
                v.parse()
                    .map_err(|()| InvalidValue::new(ENCRYPTION_ALG_ACCEPTED))
            })?,
            tpm_signing_alg: raw.parse("tpm_signing_alg", "rsassa", |v| {
                v.parse()
                    .map_err(|()| InvalidValue::new(SIGNING_ALG_ACCEPTED))
            })?,
            ek_handle: raw.parse("ek_handle", "generate", values::ek_handle)?,
            tpm_ownerpassword: Secret::new(raw.parse("tpm_ownerpassword", "", values::tpm_auth)?),
            agent_data_path: path("agent_data_path", "agent_data.json"),
            payload_key: path("payload_key", "payload-private.pem"),
            payload_key_password: Secret::new(raw.get("payload_key_password").unwrap_or("").into()),
            run_as: raw.parse("run_as", "", values::run_as)?,
            api_versions: raw.parse("api_versions", "default", api_versions)?,
            registrar_retry: retry_policy(raw)?,
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

/// The registrar retry policy (`exponential_backoff_*`).
fn retry_policy(raw: &RawAgentSection) -> Result<RetryPolicy, ConfigError> {
    Ok(RetryPolicy {
        max_retries: raw.parse(
            "exponential_backoff_max_retries",
            "forever",
            values::retry_count,
        )?,
        initial_delay: raw.parse("exponential_backoff_initial_delay", "1000", values::millis)?,
        max_delay: raw.parse("exponential_backoff_max_delay", "60000", values::millis)?,
        jitter: raw.parse("exponential_backoff_jitter", "0.2", values::fraction)?,
    })
}

/// `TCTI` env, else the `tcti` key, else the kernel resource manager if
/// present, else the raw device.
fn tcti(env: Option<&str>, key: Option<&str>) -> String {
    if let Some(t) = env.or(key).filter(|t| !t.is_empty() && *t != "default") {
        return t.to_string();
    }
    if Path::new("/dev/tpmrm0").exists() {
        "device:/dev/tpmrm0".into()
    } else {
        "device:/dev/tpm0".into()
    }
}

pub(super) fn invalid(key: &str, value: &str, accepted: &str) -> ConfigError {
    let value = if SECRET_KEYS.contains(&key) {
        "<redacted>"
    } else {
        value
    };
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}

#[cfg(test)]
mod tests;
