//! The API server's TLS: TLS 1.2 and 1.3 (Mozilla intermediate profile),
//! the agent's mTLS certificate, and client certificates required and
//! verified against `trusted_client_ca` only, and against the CRLs in
//! `trusted_client_crl` when given.

use std::path::PathBuf;

use openssl::asn1::Asn1Time;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{CrlStatus, X509Crl, X509VerifyResult, X509};
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
    /// A CRL file could not be read.
    #[error("trusted_client_crl {path}: {reason}")]
    ClientCrl {
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
    client_crls: &[PathBuf],
) -> Result<SslAcceptorBuilder, TlsError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_private_key(&identity.key)?;
    builder.set_certificate(&identity.cert)?;
    builder.check_private_key()?;
    let mut store = X509StoreBuilder::new()?;
    let mut anchors = Vec::new();
    for path in client_cas {
        let pem = crate::secure_fs::read_trusted(path).map_err(|e| TlsError::ClientCa {
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
            anchors.push(cert.clone());
            store.add_cert(cert)?;
        }
    }
    builder.set_verify_cert_store(store.build())?;
    let mode = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    let crls = load_crls(client_crls, &anchors)?;
    if crls.is_empty() {
        builder.set_verify(mode);
    } else {
        // The client's own certificate is looked up in its CA's CRL once
        // the chain verified: a listed one fails the handshake.
        builder.set_verify_callback(mode, move |verified, context| {
            if !verified || context.error_depth() != 0 {
                return verified;
            }
            let Some(cert) = context.current_cert().map(ToOwned::to_owned) else {
                return false;
            };
            let revoked = crls
                .iter()
                .any(|crl| !matches!(crl.get_by_cert(&cert), CrlStatus::NotRevoked));
            if revoked {
                context.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
            }
            !revoked
        });
    }
    // The verifier opens a fresh connection per poll and never resumes a
    // session: TLS 1.3 session tickets would be two extra records (and two
    // ticket encryptions) on every connection for nothing. No tickets in
    // TLS 1.2 either, no session cache; a client that offers a session
    // anyway gets a full handshake (the context id keeps OpenSSL from
    // answering such an offer with an internal-error alert).
    builder.set_num_tickets(0)?;
    builder.set_options(SslOptions::NO_TICKET);
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    builder.set_session_id_context(b"keylime-agent")?;
    Ok(builder)
}

/// Reads the CRL files; each must be signed by one of the client CAs
/// (`anchors`). One whose next update has passed earns a WARN: it is still
/// used, as the best list there is.
fn load_crls(paths: &[PathBuf], anchors: &[X509]) -> Result<Vec<X509Crl>, TlsError> {
    let mut crls = Vec::new();
    for path in paths {
        let crl_error = |reason: String| TlsError::ClientCrl {
            path: path.clone(),
            reason,
        };
        let pem = crate::secure_fs::read_trusted(path).map_err(|e| crl_error(e.to_string()))?;
        let crl = X509Crl::from_pem(&pem).map_err(|e| crl_error(e.to_string()))?;
        let issuer = anchors.iter().find(|ca| {
            ca.subject_name()
                .try_cmp(crl.issuer_name())
                .is_ok_and(|o| o.is_eq())
        });
        let signed = issuer
            .and_then(|ca| ca.public_key().ok())
            .is_some_and(|key| crl.verify(&key).unwrap_or(false));
        if !signed {
            return Err(crl_error(
                "not signed by any CA in trusted_client_ca".into(),
            ));
        }
        let now = Asn1Time::days_from_now(0)?;
        if crl.next_update().is_some_and(|next| next < now) {
            tracing::warn!(
                "trusted_client_crl {}: its next update has passed; using it anyway",
                path.display()
            );
        }
        crls.push(crl);
    }
    Ok(crls)
}
