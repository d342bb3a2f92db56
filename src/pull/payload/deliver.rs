//! What happens once K is known: K and the decrypted payload are written
//! to `secure/unzipped/`, a zip payload is extracted there, the payload's
//! revocation actions are made executable, and the payload script runs.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{script, zip_extract};
use crate::audit;
use crate::config::PayloadConfig;
use crate::crypto;
use crate::secure_fs;

/// The payload's list of revocation actions, inside `unzipped/`.
pub const ACTION_LIST: &str = "action_list";

/// A delivery failure (logged; the key exchange itself already succeeded).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Writing to the secure directory failed.
    #[error("secure directory: {0}")]
    Io(#[from] io::Error),
    /// The payload did not decrypt with K.
    #[error("the payload does not decrypt with the derived key")]
    Decrypt,
}

/// `secure/unzipped`.
pub fn unzipped_dir(config: &PayloadConfig) -> PathBuf {
    config.secure_dir.join("unzipped")
}

/// Stores K and the payload and runs the payload script.
pub async fn deliver(
    config: &PayloadConfig,
    key: &[u8],
    payload: Option<&[u8]>,
) -> Result<(), DeliveryError> {
    let dir = unzipped_dir(config);
    let prepared = {
        let (config, dir, key, payload) = (
            config.clone(),
            dir.clone(),
            zeroize::Zeroizing::new(key.to_vec()),
            payload.map(<[u8]>::to_vec),
        );
        tokio::task::spawn_blocking(move || store(&config, &dir, &key, payload.as_deref()))
            .await
            .map_err(io::Error::other)??
    };
    if let Err(e) = super::revocation_cert::adopt_payload_certificate(&dir, &config.revocation_dir)
    {
        tracing::error!("keeping the payload's revocation certificate: {e}");
    }
    if !prepared {
        return Ok(());
    }
    if let Some(script_name) = &config.payload_script {
        let script = dir.join(script_name);
        if script.is_file() {
            tracing::info!("running payload script {}", script.display());
            let outcome = script::run(
                "payload script",
                Path::new("/bin/sh"),
                &[script.as_os_str()],
                &dir,
                config.payload_script_timeout,
            )
            .await;
            let status = outcome.status_label();
            crate::metrics::Metrics::count(&crate::metrics::get().payload_runs, &status);
            audit::record(
                audit::Event::PayloadRun,
                serde_json::json!({ "script": script_name, "exit_status": status }),
            );
        }
    }
    Ok(())
}

/// Writes K, decrypts, extracts. Returns whether a payload was stored.
fn store(
    config: &PayloadConfig,
    dir: &Path,
    key: &[u8],
    payload: Option<&[u8]>,
) -> Result<bool, DeliveryError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    secure_fs::ensure_private_dir(dir)?;
    secure_fs::write_private(&dir.join(&config.enc_keyname), key)?;
    let Some(encrypted) = payload else {
        tracing::info!("derived key stored in {}", dir.display());
        return Ok(false);
    };
    let plain = crypto::decrypt_payload(key, encrypted).ok_or(DeliveryError::Decrypt)?;
    secure_fs::write_private(&dir.join(&config.dec_payload_file), &plain)?;
    audit::record(
        audit::Event::PayloadDecrypted,
        serde_json::json!({ "bytes": plain.len(), "file": config.dec_payload_file }),
    );
    if config.extract_payload_zip && zip_extract::is_zip(&plain) {
        let files = zip_extract::extract(&plain, dir)?;
        audit::record(
            audit::Event::PayloadExtracted,
            serde_json::json!({ "files": files.len() }),
        );
        tracing::info!(
            "payload extracted into {} ({} files)",
            dir.display(),
            files.len()
        );
        for name in action_names(dir) {
            let path = dir.join(&name);
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            }
        }
    } else {
        tracing::info!(
            "payload stored as {}",
            dir.join(&config.dec_payload_file).display()
        );
    }
    Ok(true)
}

/// The names in `unzipped/action_list` (comma- or line-separated); names
/// with a directory part are ignored.
pub fn action_names(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(ACTION_LIST))
        .map(|text| {
            text.split([',', '\n'])
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::Duration;

    fn config(dir: &Path) -> PayloadConfig {
        PayloadConfig {
            secure_dir: dir.to_path_buf(),
            secure_size: "1m".into(),
            enc_keyname: "derived_tci_key".into(),
            dec_payload_file: "decrypted_payload".into(),
            extract_payload_zip: true,
            payload_script: Some("autorun.sh".into()),
            payload_script_timeout: Duration::from_secs(5),
            enable_insecure_payload: false,
            dangerous_allow_unauthenticated: false,
            revocation_dir: dir.join("revocation"),
        }
    }

    #[tokio::test]
    async fn stores_key_and_decrypted_payload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = hex::decode("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0")
            .expect("hex");
        let blob = base64::engine::general_purpose::STANDARD
            .decode("AAECAwQFBgcICQoLDA0ODylCXAbDbBL41r3/DjsquxgEF8PdCw==")
            .expect("b64");
        deliver(&config(dir.path()), &k, Some(&blob))
            .await
            .expect("deliver");
        let unzipped = dir.path().join("unzipped");
        assert_eq!(
            std::fs::read(unzipped.join("decrypted_payload")).expect("payload"),
            b"hello"
        );
        assert_eq!(
            std::fs::read(unzipped.join("derived_tci_key")).expect("key"),
            k
        );
        let mode = std::fs::metadata(unzipped.join("derived_tci_key"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            deliver(&config(dir.path()), &k, Some(&blob[..blob.len() - 1])).await,
            Err(DeliveryError::Decrypt)
        ));
    }

    #[test]
    fn action_list_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(ACTION_LIST), "a.sh, b\n../c\n/abs\n\n").expect("write");
        assert_eq!(action_names(dir.path()), vec!["a.sh", "b"]);
    }
}
