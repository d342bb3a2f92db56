//! A private key kept in a file: loaded, or made and stored 0600.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use zeroize::Zeroizing;

use super::error::IdentityError;
use crate::secure_fs;

/// Loads the private key at `path` (PEM, encrypted when `password` is not
/// empty), or makes one with `generate` and stores it there (0600,
/// PKCS#8, AES-256 when a password is set). `what` names the key in errors.
/// Returns the key and whether it was created now.
pub(super) fn load_or_generate_key(
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
