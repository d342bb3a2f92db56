//! The agent configuration: upstream `agent.conf` keys, layered from
//! built-in defaults, `/etc/keylime/agent.conf`, its `agent.conf.d/*.conf`
//! drop-ins (lexical order) or the one file named by `KEYLIME_AGENT_CONFIG`,
//! then `KEYLIME_AGENT_<KEY>` environment overrides (which, unlike upstream,
//! also apply when `KEYLIME_AGENT_CONFIG` is set).
//!
//! Every value is parsed here, once, into a typed [`Config`]; later code never
//! sees a raw string or the word "default". This is the only module that
//! reads the process environment.

mod error;
mod identity;
mod keys;
mod limits;
mod observe;
mod parts;
mod payload;
mod protection;
mod push;
mod raw;
mod registrar;
mod settings;
mod values;
mod versions;

use std::path::PathBuf;

pub use crate::secret::Secret;
pub use error::ConfigError;
pub use limits::ApiLimits;
pub use observe::ObserveConfig;
pub use payload::{PayloadConfig, RevocationConfig};
pub use protection::Lowered;
pub use push::{PushConfig, PushSettings};
use raw::RawAgentSection;
pub use registrar::RegistrarTls;
pub use settings::{Config, DEFAULT_IMA_ML_PATH, DEFAULT_MEASUREDBOOT_ML_PATH};
pub use values::InvalidValue;
pub use values::LogFormat;
pub use values::RunAs;
pub use values::{client_cidrs, ClientCidr};

/// The system-wide config file, as upstream.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/keylime/agent.conf";
/// The drop-in directory read after [`SYSTEM_CONFIG_FILE`].
pub const SYSTEM_CONFIG_DIR: &str = "/etc/keylime/agent.conf.d";

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

/// A loaded config and the warnings to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// One line per warning (unknown keys, keys not used yet).
    pub warnings: Vec<String>,
}

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
}

#[cfg(test)]
mod tests;
