//! The API server's TLS: TLS 1.2 and 1.3 (Mozilla intermediate profile),
//! the agent's mTLS certificate, and client certificates required and
//! verified against `trusted_client_ca` only.

use std::path::PathBuf;

use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslMethod, SslSessionCacheMode, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use thiserror::Error;

use crate::identity::MtlsIdentity;

/// A TLS set-up failure.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A CA file could not be read.
    #[error("trusted_client_ca {path}: {reason}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// OpenSSL refused the configuration.
    #[error("TLS set-up: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// Builds the acceptor: the agent's key and certificate; client
/// certificates requested, required (`FAIL_IF_NO_PEER_CERT`) and verified
/// against the given CA files, which are also advertised as acceptable CAs.
pub fn acceptor(
    identity: &MtlsIdentity,
    client_cas: &[PathBuf],
) -> Result<SslAcceptorBuilder, TlsError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_private_key(&identity.key)?;
    builder.set_certificate(&identity.cert)?;
    builder.check_private_key()?;
    let mut store = X509StoreBuilder::new()?;
    for path in client_cas {
        let pem = std::fs::read(path).map_err(|e| TlsError::ClientCa {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let certs = X509::stack_from_pem(&pem).map_err(|e| TlsError::ClientCa {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(TlsError::ClientCa {
                path: path.clone(),
                reason: "no PEM certificate".into(),
            });
        }
        for cert in certs {
            builder.add_client_ca(&cert)?;
            store.add_cert(cert)?;
        }
    }
    builder.set_verify_cert_store(store.build())?;
    builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // The verifier opens a fresh connection per poll and never resumes a
    // session: TLS 1.3 session tickets would be two extra records (and two
    // ticket encryptions) on every connection for nothing.
    builder.set_num_tickets(0)?;
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(builder)
}
