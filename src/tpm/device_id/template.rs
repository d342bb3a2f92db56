//! The TCG templates of the device identity keys ("TPM 2.0 Keys for Device
//! Identity and Attestation", 7.3.4): which ones there are, and the public
//! area each makes, so that a key the maker created from its template is
//! found again by creating it anew.

use openssl::pkey::{Id, PKey, Public as PublicKey};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SymmetricDefinitionObject,
};

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

/// A template name this agent does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTemplate;

/// What `iak_idevid_template` accepts, for error messages.
pub const TEMPLATE_ACCEPTED: &str = "one of detect, H-1, H-2, H-3";

impl IdentityTemplate {
    /// `H-1` … `H-3`; `None` for `detect` (and the empty default).
    pub fn parse(text: &str) -> Result<Option<Self>, UnknownTemplate> {
        match text {
            "" | "detect" | "default" => Ok(None),
            "H-1" => Ok(Some(Self::H1)),
            "H-2" => Ok(Some(Self::H2)),
            "H-3" => Ok(Some(Self::H3)),
            _ => Err(UnknownTemplate),
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
    pub(super) fn of_key(key: &PKey<PublicKey>) -> Option<Self> {
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
    pub(super) fn name(self) -> &'static str {
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
        hex::decode(hex).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_the_tcg_ones() {
        assert_eq!(IdentityTemplate::parse("detect"), Ok(None));
        assert_eq!(IdentityTemplate::parse(""), Ok(None));
        assert_eq!(
            IdentityTemplate::parse("H-2"),
            Ok(Some(IdentityTemplate::H2))
        );
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
