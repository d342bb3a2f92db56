//! The key and certificate the API server presents. The certificate is
//! self-signed and registered as `mtls_cert`; the verifier and tenant trust
//! exactly that certificate, so it must be what the server presents.

use std::net::IpAddr;
use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{SubjectAlternativeName, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use super::error::IdentityError;
use super::key_file::load_or_generate_key;
use crate::secure_fs;

/// Days of validity of a newly issued certificate.
const VALIDITY_DAYS: u32 = 365;
/// A self-signed certificate this close to expiry is re-issued at start.
const RENEW_WITHIN_DAYS: u32 = 30;

/// The mTLS key pair and certificate.
pub struct MtlsIdentity {
    /// The private key.
    pub key: PKey<Private>,
    /// The certificate, presented by the server and registered as `mtls_cert`.
    pub cert: X509,
}

impl std::fmt::Debug for MtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsIdentity")
            .field("cert", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl MtlsIdentity {
    /// Loads the key and certificate, creating what is missing. A
    /// self-signed certificate is re-issued when it names another agent id or
    /// contact address, or expires within 30 days; a CA-issued one is kept.
    pub fn load_or_create(
        key_path: &Path,
        password: &str,
        cert_path: &Path,
        agent_id: &str,
        contact: &str,
    ) -> Result<Self, IdentityError> {
        let key = load_or_create_key(key_path, password)?;
        // A link counts as there (and is then refused by read_private).
        if std::fs::symlink_metadata(cert_path).is_ok() {
            let (pem, _) =
                secure_fs::read_private(cert_path).map_err(|source| IdentityError::Io {
                    what: "mTLS certificate",
                    path: cert_path.to_path_buf(),
                    source,
                })?;
            let cert = X509::from_pem(&pem).map_err(IdentityError::crypto(format!(
                "reading {}",
                cert_path.display()
            )))?;
            let cert_key = cert
                .public_key()
                .map_err(IdentityError::crypto("certificate key"))?;
            if !cert_key.public_eq(&key) {
                return Err(IdentityError::KeyMismatch {
                    cert: cert_path.into(),
                    key: key_path.into(),
                });
            }
            match renewal_reason(&cert, agent_id, contact)? {
                None => return Ok(Self { key, cert }),
                Some(reason) if is_self_signed(&cert, &key) => {
                    tracing::info!("re-issuing the mTLS certificate: {reason}");
                }
                Some(reason) => {
                    tracing::warn!(
                        "keeping the CA-issued mTLS certificate {} although {reason}",
                        cert_path.display()
                    );
                    return Ok(Self { key, cert });
                }
            }
        }
        let cert = issue_self_signed(&key, agent_id, contact)?;
        let pem = cert
            .to_pem()
            .map_err(IdentityError::crypto("encoding the certificate"))?;
        secure_fs::write_private(cert_path, &pem).map_err(|source| IdentityError::Io {
            what: "mTLS certificate",
            path: cert_path.to_path_buf(),
            source,
        })?;
        Ok(Self { key, cert })
    }

    /// The certificate as PEM, for the registrar's `mtls_cert`.
    pub fn cert_pem(&self) -> Result<String, IdentityError> {
        let pem = self
            .cert
            .to_pem()
            .map_err(IdentityError::crypto("encoding the certificate"))?;
        String::from_utf8(pem).map_err(|_| IdentityError::AgentId("non-UTF-8 PEM".into()))
    }
}

fn load_or_create_key(path: &Path, password: &str) -> Result<PKey<Private>, IdentityError> {
    let (key, _) = load_or_generate_key(path, password, "mTLS key", || {
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
            .and_then(|group| EcKey::generate(&group))
            .and_then(PKey::from_ec_key)
    })?;
    Ok(key)
}

fn renewal_reason(
    cert: &X509,
    agent_id: &str,
    contact: &str,
) -> Result<Option<String>, IdentityError> {
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    if cn.as_deref() != Some(agent_id) {
        return Ok(Some(format!(
            "its CN {cn:?} is not the agent id {agent_id}"
        )));
    }
    if !san_names(cert).iter().any(|n| n == contact) {
        return Ok(Some(format!(
            "its SAN does not name the contact address {contact}"
        )));
    }
    let soon = Asn1Time::days_from_now(RENEW_WITHIN_DAYS).map_err(IdentityError::crypto("time"))?;
    if cert.not_after() < soon {
        return Ok(Some(format!(
            "it expires {} (within {RENEW_WITHIN_DAYS} days)",
            cert.not_after()
        )));
    }
    Ok(None)
}

fn san_names(cert: &X509) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.dnsname().map(str::to_string).or_else(|| {
                        n.ipaddress().and_then(|b| match b.len() {
                            4 => <[u8; 4]>::try_from(b)
                                .ok()
                                .map(|a| IpAddr::from(a).to_string()),
                            16 => <[u8; 16]>::try_from(b)
                                .ok()
                                .map(|a| IpAddr::from(a).to_string()),
                            _ => None,
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_self_signed(cert: &X509, key: &PKey<Private>) -> bool {
    cert.verify(key).unwrap_or(false)
        && cert.issuer_name().to_der().ok() == cert.subject_name().to_der().ok()
}

/// X.509 v3, CN = agent id, SAN = contact address, a positive random
/// 127-bit serial (a zero serial makes the peers' cryptography library warn
/// that it will be rejected), no KU/EKU (accepted by OpenSSL's `ssl_server`
/// purpose as is), signed last so every extension is covered.
fn issue_self_signed(
    key: &PKey<Private>,
    agent_id: &str,
    contact: &str,
) -> Result<X509, IdentityError> {
    let build = || -> Result<X509, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, agent_id)?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        serial.add_word(1)?;
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        b.set_serial_number(Asn1Integer::from_bn(&serial)?.as_ref())?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(key)?;
        b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
        b.set_not_after(Asn1Time::days_from_now(VALIDITY_DAYS)?.as_ref())?;
        let mut san = SubjectAlternativeName::new();
        if contact.parse::<IpAddr>().is_ok() {
            san.ip(contact);
        } else {
            san.dns(contact);
        }
        let san = san.build(&b.x509v3_context(None, None))?;
        b.append_extension(san)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(key, MessageDigest::sha256())?;
        Ok(b.build())
    };
    build().map_err(IdentityError::crypto("issuing the mTLS certificate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, id: &str, contact: &str) -> MtlsIdentity {
        MtlsIdentity::load_or_create(&dir.join("k.pem"), "", &dir.join("c.crt"), id, contact)
            .expect("identity")
    }

    #[test]
    fn issues_v3_cert_with_cn_san_and_positive_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = make(dir.path(), "agent-1", "127.0.0.1");
        assert_eq!(id.cert.version(), 2);
        let serial = id.cert.serial_number().to_bn().expect("bn");
        assert!(!serial.is_negative() && serial.num_bits() > 64);
        assert_eq!(san_names(&id.cert), vec!["127.0.0.1"]);
        assert!(is_self_signed(&id.cert, &id.key));
        let dns = make(tempfile::tempdir().expect("t").path(), "a", "node.example");
        assert_eq!(san_names(&dns.cert), vec!["node.example"]);
    }

    #[test]
    fn reuses_then_reissues_on_id_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = make(dir.path(), "agent-1", "127.0.0.1");
        let again = make(dir.path(), "agent-1", "127.0.0.1");
        assert_eq!(first.cert.to_der().ok(), again.cert.to_der().ok());
        let renamed = make(dir.path(), "agent-2", "127.0.0.1");
        assert_ne!(first.cert.to_der().ok(), renamed.cert.to_der().ok());
        assert!(renamed.key.public_eq(&first.key), "the key is kept");
    }

    #[test]
    fn reissues_when_close_to_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = make(dir.path(), "agent-1", "127.0.0.1");
        // Replace the cert with one that expires in 10 days.
        let mut b = X509Builder::new().expect("b");
        b.set_version(2).expect("v");
        let mut name = X509NameBuilder::new().expect("n");
        name.append_entry_by_nid(Nid::COMMONNAME, "agent-1")
            .expect("cn");
        let name = name.build();
        b.set_subject_name(&name).expect("s");
        b.set_issuer_name(&name).expect("i");
        b.set_pubkey(&first.key).expect("p");
        b.set_not_before(Asn1Time::days_from_now(0).expect("t").as_ref())
            .expect("nb");
        b.set_not_after(Asn1Time::days_from_now(10).expect("t").as_ref())
            .expect("na");
        let mut san = SubjectAlternativeName::new();
        san.ip("127.0.0.1");
        let san = san.build(&b.x509v3_context(None, None)).expect("san");
        b.append_extension(san).expect("ext");
        b.sign(&first.key, MessageDigest::sha256()).expect("sign");
        std::fs::write(dir.path().join("c.crt"), b.build().to_pem().expect("pem")).expect("write");
        let renewed = make(dir.path(), "agent-1", "127.0.0.1");
        let limit = Asn1Time::days_from_now(300).expect("t");
        assert!(renewed.cert.not_after() > limit);
    }
}
