//! The NK: an RSA-2048 key the tenant and verifier encrypt U and V to. Its
//! public PEM is hashed into PCR 16 before every quote, and the verifier
//! caches it for the whole enrolment, so it is persisted and its PEM must
//! stay identical byte for byte across restarts.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

use super::error::IdentityError;
use super::key_file::load_or_generate_key;

/// The NK.
pub struct Nk {
    private: PKey<Private>,
    public_pem: String,
}

impl std::fmt::Debug for Nk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nk")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl Nk {
    /// Loads the NK from `path`, or creates and persists a new one (0600,
    /// encrypted when `password` is not empty).
    pub fn load_or_create(path: &Path, password: &str) -> Result<Self, IdentityError> {
        let (private, created) = load_or_generate_key(path, password, "payload key", || {
            Rsa::generate(2048).and_then(PKey::from_rsa)
        })?;
        if created {
            tracing::info!("created payload key (NK) {}", path.display());
        }
        if private.rsa().map(|r| r.size() * 8).ok() != Some(2048) {
            return Err(IdentityError::AgentId(format!(
                "payload key {} must be RSA 2048 (the peers encrypt U and V to it with RSA-OAEP)",
                path.display()
            )));
        }
        let public_pem = private
            .public_key_to_pem()
            .map_err(IdentityError::crypto("encoding the payload public key"))
            .and_then(|pem| {
                String::from_utf8(pem).map_err(|_| IdentityError::AgentId("non-UTF-8 PEM".into()))
            })?;
        Ok(Self {
            private,
            public_pem,
        })
    }

    /// The public key as PEM SubjectPublicKeyInfo, exactly as served as
    /// `pubkey` and hashed into PCR 16.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The private key, for RSA-OAEP decryption of U and V.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.private
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reloaded_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nk.pem");
        let first = Nk::load_or_create(&path, "").expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Nk::load_or_create(&path, "").expect("load");
        assert_eq!(first.public_pem(), second.public_pem());
        assert!(first.public_pem().ends_with("-----END PUBLIC KEY-----\n"));
    }

    #[test]
    fn password_protected_key_needs_its_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nk.pem");
        let first = Nk::load_or_create(&path, "pw").expect("create");
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("ENCRYPTED"));
        assert!(Nk::load_or_create(&path, "wrong").is_err());
        let again = Nk::load_or_create(&path, "pw").expect("load");
        assert_eq!(first.public_pem(), again.public_pem());
    }
}
