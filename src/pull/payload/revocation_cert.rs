//! The revocation certificate a tenant's `--cert` package carries: kept
//! beside the revocation record at delivery, so that notifications are
//! verified with it even after the next delivery replaces the payload.

use std::path::Path;

use crate::secure_fs;

/// The certificate name the tenant's `--cert` package carries.
pub const PAYLOAD_CERT: &str = "RevocationNotifier-cert.crt";

/// Keeps the payload's revocation certificate: copied from `unzipped`
/// into `state_dir` at delivery, or removed there when the new payload has
/// none. Called by the delivery, right after the payload was stored.
pub fn adopt_payload_certificate(unzipped: &Path, state_dir: &Path) -> std::io::Result<()> {
    let copy = state_dir.join(PAYLOAD_CERT);
    match secure_fs::read_private(&unzipped.join(PAYLOAD_CERT)) {
        Ok((pem, _)) => {
            secure_fs::write_private(&copy, &pem)?;
            tracing::info!(
                "revocation certificate from the payload kept as {}",
                copy.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match secure_fs::Dir::open(state_dir)
        {
            Ok(dir) => dir.remove(std::ffi::OsStr::new(PAYLOAD_CERT)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}
