//! Device identity keys (TCG "TPM 2.0 Keys for Device Identity and
//! Attestation"): the IDevID, a signing key, and the IAK, a restricted
//! signing key, both primaries of the endorsement hierarchy that the maker
//! certified. They are either persistent (a handle and its password) or
//! recreated from their TCG template, which yields the same key on the
//! same TPM. At start each is checked against its certificate; at
//! registration the IAK certifies the AK (TPM2_Certify), which the
//! registrar verifies to bind the AK to the certified TPM.

use std::path::{Path, PathBuf};

use openssl::pkey::{Id, PKey, Public as PublicKey};
use openssl::x509::X509;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Auth, Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SymmetricDefinitionObject,
};
use tss_esapi::Context;

use super::error::TpmError;
use super::public;
use crate::secret::Secret;

/// The TCG templates of the device identity keys this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityTemplate {
    /// H-1: RSA 2048, SHA-256.
    H1,
    /// H-2: ECC NIST P-256, SHA-256.
    H2,
    /// H-3: ECC NIST P-384, SHA-384.
    H3,
}

/// What `iak_idevid_template` accepts, for error messages.
pub const TEMPLATE_ACCEPTED: &str = "one of detect, H-1, H-2, H-3";

impl IdentityTemplate {
    /// `H-1` … `H-3`; `None` for `detect` (and the empty default).
    pub fn parse(text: &str) -> Result<Option<Self>, ()> {
        match text {
            "" | "detect" | "default" => Ok(None),
            "H-1" => Ok(Some(Self::H1)),
            "H-2" => Ok(Some(Self::H2)),
            "H-3" => Ok(Some(Self::H3)),
            _ => Err(()),
        }
    }

    /// The TCG name.
    pub fn name(self) -> &'static str {
        match self {
            Self::H1 => "H-1",
            Self::H2 => "H-2",
            Self::H3 => "H-3",
        }
    }

    /// The template whose key type a certificate's key has.
    fn of_key(key: &PKey<PublicKey>) -> Option<Self> {
        match key.id() {
            Id::RSA if key.bits() == 2048 => Some(Self::H1),
            Id::EC => match key.ec_key().ok()?.group().curve_name()? {
                openssl::nid::Nid::X9_62_PRIME256V1 => Some(Self::H2),
                openssl::nid::Nid::SECP384R1 => Some(Self::H3),
                _ => None,
            },
            _ => None,
        }
    }

    fn name_alg(self) -> HashingAlgorithm {
        match self {
            Self::H1 | Self::H2 => HashingAlgorithm::Sha256,
            Self::H3 => HashingAlgorithm::Sha384,
        }
    }
}

/// Which of the two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The attestation key that certifies the AK.
    Iak,
    /// The device identity (signing) key.
    Idevid,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Self::Iak => "IAK",
            Self::Idevid => "IDevID",
        }
    }

    /// The template's unique field: the key's name in ASCII.
    fn unique(self) -> &'static [u8] {
        match self {
            Self::Iak => b"IAK",
            Self::Idevid => b"IDEVID",
        }
    }

    /// The authPolicy of the template, as the TCG specification publishes
    /// it (its PolicyOR of the key's allowed uses).
    fn auth_policy(self, name_alg: HashingAlgorithm) -> Vec<u8> {
        let hex = match (self, name_alg) {
            (Self::Iak, HashingAlgorithm::Sha384) => {
                "129d94ebf84556652c6eef43bbb757512ac87e52be7b349ca6ce4d826f749fcf672f51716c5cbb605f313bf345aab312"
            }
            (Self::Idevid, HashingAlgorithm::Sha384) => {
                "4db1aa836d0b5615df6ee53a40ef70c61c217f4303d44695925972bc927006cfa5cbdf6dc18c4dbe329b2f1542c3dd33"
            }
            (Self::Iak, _) => "5437182326e414fca797d5f174615a1641f61255797c3a2b22c21d120b2d1e07",
            (Self::Idevid, _) => "ad6b3a2284fd698a0710bf5cc1b9bdf15e2532e3f601fa4b93a6a8fa8de579ea",
        };
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_default())
            .collect()
    }
}

/// One key's settings.
#[derive(Debug, Clone)]
pub struct IdentityKeyConfig {
    /// Persistent handle, or `None` to recreate the key from the template.
    pub handle: Option<u32>,
    /// The key's authorization value (for a persistent key).
    pub password: Secret<Vec<u8>>,
    /// The certificate file (PEM or DER).
    pub cert: PathBuf,
}

/// The device identity settings (`enable_iak_idevid = true`).
#[derive(Debug, Clone)]
pub struct DeviceIdentityConfig {
    /// The template, or `None` to pick it from the certificates' key type.
    pub template: Option<IdentityTemplate>,
    /// The IAK.
    pub iak: IdentityKeyConfig,
    /// The IDevID.
    pub idevid: IdentityKeyConfig,
}

/// One certified key as found at start.
#[derive(Debug, Clone)]
pub struct IdentityKey {
    /// The key as TPM2B_PUBLIC (`iak_tpm`, `idevid_tpm`).
    pub public: Vec<u8>,
    /// Its certificate as PEM (`iak_cert`, `idevid_cert`).
    pub cert_pem: String,
    /// Subject, issuer and expiry of the certificate, for `check` and `info`.
    pub subject: String,
    /// The certificate's issuer.
    pub issuer: String,
    /// The certificate's notAfter.
    pub not_after: String,
}

/// Both keys as found at start, and the template they were made with.
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    /// The template used (picked from the certificates when `detect`).
    pub template: IdentityTemplate,
    /// The IAK.
    pub iak: IdentityKey,
    /// The IDevID.
    pub idevid: IdentityKey,
}

/// Reads both certificates, finds both keys, and checks that each
/// certificate is for its TPM key; every object made is flushed again.
pub(super) fn load(ctx: &mut Context, config: &DeviceIdentityConfig) -> Result<DeviceKeys, TpmError> {
    let iak_cert = read_certificate(&config.iak.cert)?;
    let idevid_cert = read_certificate(&config.idevid.cert)?;
    let template = match config.template {
        Some(template) => template,
        None => detect(&config.iak.cert, &iak_cert)?,
    };
    let iak = found_key(ctx, Which::Iak, template, &config.iak, &iak_cert)?;
    let idevid = found_key(ctx, Which::Idevid, template, &config.idevid, &idevid_cert)?;
    Ok(DeviceKeys {
        template,
        iak,
        idevid,
    })
}

/// TPM2_Certify of `ak` by the IAK with `qualifying` data: the IAK is
/// opened (or recreated), used and released again.
pub(super) fn certify_ak(
    ctx: &mut Context,
    config: &DeviceIdentityConfig,
    template: IdentityTemplate,
    ak: KeyHandle,
    qualifying: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let (iak, persistent) = open_key(ctx, Which::Iak, template, &config.iak)?;
    let certified = super::quote::certify(ctx, ak, iak, qualifying);
    release(ctx, iak, persistent);
    certified
}

fn found_key(
    ctx: &mut Context,
    which: Which,
    template: IdentityTemplate,
    config: &IdentityKeyConfig,
    cert: &X509,
) -> Result<IdentityKey, TpmError> {
    let (handle, persistent) = open_key(ctx, which, template, config)?;
    let read = ctx
        .read_public(handle)
        .map_err(TpmError::tss("reading a device identity key"));
    release(ctx, handle, persistent);
    let (key_public, _, _) = read?;
    let tpm_key = public::openssl_public_key(&key_public)?;
    let cert_key = cert.public_key().map_err(|e| TpmError::Identity {
        file: config.cert.clone(),
        reason: format!("no usable public key: {e}"),
    })?;
    if !tpm_key.public_eq(&cert_key) {
        let source = match config.handle {
            Some(h) => format!("the persistent key at {h:#010x}"),
            None => format!("the key of template {}", template.name()),
        };
        return Err(TpmError::Identity {
            file: config.cert.clone(),
            reason: format!(
                "the {} certificate is for another key than {source} in this TPM (check iak_idevid_template and the {} handle)",
                which.name(),
                which.name()
            ),
        });
    }
    let pem = cert
        .to_pem()
        .map_err(|e| TpmError::Host(format!("certificate PEM: {e}")))?;
    Ok(IdentityKey {
        public: public::tpm2b_public(&key_public)?,
        cert_pem: String::from_utf8_lossy(&pem).into_owned(),
        subject: crate::crypto::name_text(cert.subject_name()),
        issuer: crate::crypto::name_text(cert.issuer_name()),
        not_after: cert.not_after().to_string(),
    })
}

/// The key's handle and whether it is persistent (else it was created
/// here and must be flushed).
fn open_key(
    ctx: &mut Context,
    which: Which,
    template: IdentityTemplate,
    config: &IdentityKeyConfig,
) -> Result<(KeyHandle, bool), TpmError> {
    let handle = match config.handle {
        Some(raw) => {
            let persistent =
                PersistentTpmHandle::new(raw).map_err(TpmError::tss("device identity handle"))?;
            let object = ctx
                .execute_without_session(|ctx| {
                    ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
                })
                .map_err(TpmError::tss("opening a persistent device identity key"))?;
            (KeyHandle::from(object), true)
        }
        None => {
            let created = ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.create_primary(
                        Hierarchy::Endorsement,
                        template_public(which, template)?,
                        None,
                        None,
                        None,
                        None,
                    )
                })
                .map_err(TpmError::tss("creating a device identity key"))?;
            (created.key_handle, false)
        }
    };
    if !config.password.is_empty() {
        let auth = Auth::try_from(config.password.to_vec());
        let set = auth.and_then(|auth| ctx.tr_set_auth(ObjectHandle::from(handle.0), auth));
        if let Err(e) = set {
            release(ctx, handle.0, handle.1);
            return Err(TpmError::tss("setting a device identity key's password")(e));
        }
    }
    Ok(handle)
}

fn release(ctx: &mut Context, handle: KeyHandle, persistent: bool) {
    let result = if persistent {
        ctx.tr_close(&mut handle.into())
    } else {
        ctx.flush_context(handle.into())
    };
    if let Err(e) = result {
        tracing::warn!("releasing a device identity key: {e}");
    }
}

/// The TCG template of `which` (section 7.3.4 of the device identity
/// specification): fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, adminWithPolicy and sign; the IAK restricted with the
/// name algorithm's RSA-PSS or ECDSA scheme, the IDevID unrestricted (RSA
/// without a scheme, ECC with ECDSA); the key's name as its unique field.
pub fn template_public(
    which: Which,
    template: IdentityTemplate,
) -> Result<Public, tss_esapi::Error> {
    let restricted = which == Which::Iak;
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_admin_with_policy(true)
        .with_sign_encrypt(true)
        .with_restricted(restricted)
        .build()?;
    let name_alg = template.name_alg();
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(name_alg)
        .with_object_attributes(attributes)
        .with_auth_policy(Digest::try_from(which.auth_policy(name_alg))?);
    let unique = which.unique();
    match template {
        IdentityTemplate::H1 => {
            let scheme = if restricted {
                RsaScheme::RsaPss(HashScheme::new(name_alg))
            } else {
                RsaScheme::Null
            };
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_scheme(scheme)
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        .with_is_signing_key(true)
                        .with_restricted(restricted)
                        .build()?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::try_from(unique)?)
                .build()
        }
        IdentityTemplate::H2 | IdentityTemplate::H3 => {
            let curve = if template == IdentityTemplate::H2 {
                EccCurve::NistP256
            } else {
                EccCurve::NistP384
            };
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(
                    PublicEccParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(name_alg)))
                        .with_curve(curve)
                        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                        .with_is_signing_key(true)
                        .with_restricted(restricted)
                        .build()?,
                )
                .with_ecc_unique_identifier(EccPoint::new(
                    EccParameter::try_from(unique)?,
                    EccParameter::try_from(unique)?,
                ))
                .build()
        }
    }
}

/// The template of the IAK certificate's key type (`detect`).
fn detect(file: &Path, cert: &X509) -> Result<IdentityTemplate, TpmError> {
    let key = cert.public_key().map_err(|e| TpmError::Identity {
        file: file.into(),
        reason: format!("no usable public key: {e}"),
    })?;
    IdentityTemplate::of_key(&key).ok_or_else(|| TpmError::Identity {
        file: file.into(),
        reason: format!(
            "iak_idevid_template = detect: the certificate's key ({:?}, {} bits) is none of the templates H-1 (RSA 2048), H-2 (P-256), H-3 (P-384)",
            key.id(),
            key.bits()
        ),
    })
}

/// A certificate file, PEM or DER, read as a trusted file (root's, in a
/// directory only root can change, bounded in size).
fn read_certificate(path: &Path) -> Result<X509, TpmError> {
    let bad = |reason: String| TpmError::Identity {
        file: path.into(),
        reason,
    };
    let bytes = crate::secure_fs::read_trusted(path).map_err(|e| bad(e.to_string()))?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .map_err(|_| bad("not a PEM or DER certificate".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_the_tcg_ones() {
        assert_eq!(IdentityTemplate::parse("detect"), Ok(None));
        assert_eq!(IdentityTemplate::parse(""), Ok(None));
        assert_eq!(IdentityTemplate::parse("H-2"), Ok(Some(IdentityTemplate::H2)));
        assert!(IdentityTemplate::parse("H-9").is_err());
        let iak = template_public(Which::Iak, IdentityTemplate::H1).expect("iak");
        let attributes = iak.object_attributes();
        assert!(attributes.restricted() && attributes.sign_encrypt() && !attributes.decrypt());
        assert_eq!(iak.auth_policy().len(), 32);
        let idevid = template_public(Which::Idevid, IdentityTemplate::H3).expect("idevid");
        assert!(!idevid.object_attributes().restricted());
        assert_eq!(idevid.name_hashing_algorithm(), HashingAlgorithm::Sha384);
        assert_eq!(idevid.auth_policy().len(), 48);
    }
}
