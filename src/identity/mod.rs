//! Who the agent is: its id (the `uuid` key and its modes), its mTLS key
//! and self-signed certificate, and the NK ("payload key") that the tenant
//! and verifier encrypt the U and V key halves to.

mod agent_id;
mod mtls;
mod nk;

pub use agent_id::{AgentId, AgentIdSource, GENERATED_ID_FILE};
pub use mtls::MtlsIdentity;
pub use nk::Nk;

use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::secure_fs;

/// A failure to establish the agent's identity.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be parsed or built.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The agent id could not be determined.
    #[error("agent id: {0}")]
    AgentId(String),
    /// The certificate on disk does not belong to the key on disk.
    #[error("mTLS certificate {cert} does not match the key {key}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl IdentityError {
    fn crypto(what: impl Into<String>) -> impl FnOnce(openssl::error::ErrorStack) -> Self {
        let what = what.into();
        move |source| Self::Crypto { what, source }
    }
}

/// Loads the private key at `path` (PEM, encrypted when `password` is not
/// empty), or makes one with `generate` and stores it there (0600,
/// PKCS#8, AES-256 when a password is set). `what` names the key in errors.
/// Returns the key and whether it was created now.
fn load_or_generate_key(
    path: &Path,
    password: &str,
    what: &'static str,
    generate: impl FnOnce() -> Result<PKey<Private>, openssl::error::ErrorStack>,
) -> Result<(PKey<Private>, bool), IdentityError> {
    let io = |source| IdentityError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    // A link counts as there (and is then refused by read_private).
    if std::fs::symlink_metadata(path).is_ok() {
        let (pem, loosened) = secure_fs::read_secret(path).map_err(io)?;
        if loosened {
            tracing::warn!(
                "{} was readable by others; its mode is now 0600",
                path.display()
            );
        }
        let pem = Zeroizing::new(pem);
        let key = if password.is_empty() {
            PKey::private_key_from_pem(&pem)
        } else {
            PKey::private_key_from_pem_passphrase(&pem, password.as_bytes())
        }
        .map_err(IdentityError::crypto(format!(
            "reading {what} {}",
            path.display()
        )))?;
        return Ok((key, false));
    }
    let key = generate().map_err(IdentityError::crypto(format!("generating the {what}")))?;
    let pem = if password.is_empty() {
        key.private_key_to_pem_pkcs8()
    } else {
        key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), password.as_bytes())
    }
    .map_err(IdentityError::crypto(format!("encoding the {what}")))?;
    secure_fs::write_private(path, &Zeroizing::new(pem)).map_err(io)?;
    Ok((key, true))
}
