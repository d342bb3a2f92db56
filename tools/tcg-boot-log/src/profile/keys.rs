//! The Secure Boot keys the generated logs carry: self-signed RSA-2048
//! certificates kept in a directory, so that every log made with it has
//! the same keys.

use std::path::Path;

use anyhow::Context as _;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};

/// The Secure Boot keys: DER certificates for PK, KEK, db and the vendor
/// certificate shim carries.
pub struct Keys {
    pub(super) pk: Vec<u8>,
    pub(super) kek: Vec<u8>,
    pub(super) db: Vec<u8>,
    pub(super) vendor: Vec<u8>,
}

impl Keys {
    /// The keys in `dir` (`PK.der`, `KEK.der`, `db.der`, `vendor.der`),
    /// made there first (self-signed RSA-2048, as firmware vendors use)
    /// where missing, so that every log made with one directory has the
    /// same keys.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let load = |name: &str, subject: &str| -> anyhow::Result<Vec<u8>> {
            let path = dir.join(format!("{name}.der"));
            if let Ok(der) = std::fs::read(&path) {
                return Ok(der);
            }
            let der = self_signed(subject)?;
            std::fs::write(&path, &der).with_context(|| format!("writing {}", path.display()))?;
            Ok(der)
        };
        Ok(Self {
            pk: load("PK", "Keylime Agent Test Platform Key")?,
            kek: load("KEK", "Keylime Agent Test KEK CA")?,
            db: load("db", "Keylime Agent Test UEFI CA")?,
            vendor: load("vendor", "Keylime Agent Test Shim Vendor CA")?,
        })
    }
}

fn self_signed(subject: &str) -> anyhow::Result<Vec<u8>> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", subject)?;
    let name = name.build();
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    let serial = BigNum::from_u32(1)?.to_asn1_integer()?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    cert.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    cert.set_not_after(&*Asn1Time::days_from_now(3650)?)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok(cert.build().to_der()?)
}
