//! Why a request got no HTTP answer, worded for the operator who has to
//! act on it: which config key to look at when the server's certificate
//! was not accepted, the transport's own reason otherwise.

use thiserror::Error;

use std::path::Path;

use super::connection::{ConnectError, Target};

/// Why a request got no HTTP answer.
#[derive(Debug, Error)]
pub enum RequestFailure {
    /// The server's certificate does not chain to the configured CA.
    #[error(
        "the server certificate of {url} is not signed by the CA in {ca_key} ({ca_file}): {detail}"
    )]
    UntrustedCertificate {
        /// The request URL.
        url: String,
        /// The CA config key.
        ca_key: &'static str,
        /// The CA file.
        ca_file: String,
        /// OpenSSL's reason.
        detail: String,
    },
    /// The certificate is trusted but names another host or address.
    #[error(
        "the server certificate of {url} does not name {host} (check {host_key}, or give a name \
         the certificate holds): {detail}"
    )]
    NameMismatch {
        /// The request URL.
        url: String,
        /// The host or IP connected to.
        host: String,
        /// The config key that gave the host.
        host_key: &'static str,
        /// OpenSSL's reason.
        detail: String,
    },
    /// Connection refused, reset, timed out, or any other transport error.
    #[error("{url} unreachable: {detail}")]
    Transport {
        /// The request URL.
        url: String,
        /// What went wrong, one line.
        detail: String,
    },
}

impl RequestFailure {
    /// A transport failure of a request to `url`.
    pub(super) fn transport(url: &str, detail: impl std::fmt::Display) -> Self {
        Self::Transport {
            url: url.into(),
            detail: detail.to_string().replace('\n', " "),
        }
    }

    /// Classifies a failed connection to `url` (parsed: `target`); `ca` is
    /// the config key and the file of the CA the server was checked with,
    /// `host_key` the config key the URL's host came from.
    pub(super) fn from_connect(
        error: &ConnectError,
        url: &str,
        target: &Target,
        ca: Option<(&'static str, &Path)>,
        host_key: &'static str,
    ) -> Self {
        let verify = match error {
            ConnectError::Tls {
                verify: Some(reason),
                ..
            } => Some(reason.as_str()),
            _ => None,
        };
        match (ca, verify) {
            (Some(_), Some(reason)) if is_name_mismatch(reason) => Self::NameMismatch {
                url: target.origin(),
                host: target.host.clone(),
                host_key,
                detail: reason.into(),
            },
            (Some((ca_key, ca_file)), Some(reason)) => Self::UntrustedCertificate {
                url: target.origin(),
                ca_key,
                ca_file: ca_file.display().to_string(),
                detail: reason.into(),
            },
            _ => Self::transport(url, error),
        }
    }
}

/// OpenSSL's verify results for a certificate that names another peer.
fn is_name_mismatch(reason: &str) -> bool {
    [
        "hostname mismatch",
        "IP address mismatch",
        "email address mismatch",
    ]
    .iter()
    .any(|m| reason.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: &str) -> ConnectError {
        ConnectError::Tls {
            verify: Some(reason.into()),
            detail: "error:0A000086:SSL routines::certificate verify failed".into(),
        }
    }

    #[test]
    fn name_mismatches_are_told_apart_from_unknown_cas() {
        let trust = ("registrar_tls_ca_cert", Path::new("/etc/keylime/ca.crt"));
        let url = "https://127.0.0.1:8891/version";
        let target = Target::parse(url).expect("url");
        let mismatch = RequestFailure::from_connect(
            &refused("IP address mismatch"),
            url,
            &target,
            Some(trust),
            "registrar_ip",
        );
        assert!(
            matches!(&mismatch, RequestFailure::NameMismatch { host, url, .. }
                if host == "127.0.0.1" && url == "https://127.0.0.1:8891"),
            "{mismatch}"
        );
        assert!(
            mismatch.to_string().contains("check registrar_ip"),
            "{mismatch}"
        );
        let unknown = RequestFailure::from_connect(
            &refused("self-signed certificate in certificate chain"),
            url,
            &target,
            Some(trust),
            "registrar_ip",
        );
        assert_eq!(
            unknown.to_string(),
            "the server certificate of https://127.0.0.1:8891 is not signed by the CA in \
             registrar_tls_ca_cert (/etc/keylime/ca.crt): self-signed certificate in certificate chain"
        );
        let io = ConnectError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            RequestFailure::from_connect(&io, url, &target, Some(trust), "registrar_ip"),
            RequestFailure::Transport { .. }
        ));
    }
}
