//! TPM algorithm choices the operator configures, parsed once from their
//! Keylime spelling and mapped to tss-esapi types and to the strings the
//! Keylime peers expect on the wire.

use std::fmt;
use std::str::FromStr;

use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::interface_types::algorithm::AsymmetricAlgorithm;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::Public;

/// The hash algorithm of the AK signatures and of the quoted PCR bank (`tpm_hash_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-1; accepted for old TPMs, rejected by the peers' default policy.
    Sha1,
    /// SHA-256, the default.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// The name Keylime uses on the wire (`hash_alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// The tss-esapi identifier.
    pub fn to_tpm(self) -> HashingAlgorithm {
        match self {
            Self::Sha1 => HashingAlgorithm::Sha1,
            Self::Sha256 => HashingAlgorithm::Sha256,
            Self::Sha384 => HashingAlgorithm::Sha384,
            Self::Sha512 => HashingAlgorithm::Sha512,
        }
    }

    /// The TPM_ALG_ID, as written in PCR selections.
    pub fn tpm_alg_id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
        }
    }

    /// The OpenSSL message digest.
    pub fn to_openssl(self) -> openssl::hash::MessageDigest {
        match self {
            Self::Sha1 => openssl::hash::MessageDigest::sha1(),
            Self::Sha256 => openssl::hash::MessageDigest::sha256(),
            Self::Sha384 => openssl::hash::MessageDigest::sha384(),
            Self::Sha512 => openssl::hash::MessageDigest::sha512(),
        }
    }
}

/// What `tpm_hash_alg` accepts, for error messages.
pub const HASH_ALG_ACCEPTED: &str = "one of sha256, sha384, sha512, sha1";

impl FromStr for HashAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            _ => Err(()),
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The EK key type (`tpm_encryption_alg`): the TCG EK Credential Profile
/// templates of the low range (RSA 2048, P-256: SHA-256 names) and of the
/// high range (RSA 3072, P-384: SHA-384 names, AES-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlg {
    /// RSA 2048, EK certificate at NV index 0x01c00002.
    Rsa2048,
    /// RSA 3072 (template H-3 of the high range), certificate at 0x01c0001c.
    Rsa3072,
    /// ECC NIST P-256, EK certificate at NV index 0x01c0000a.
    EccP256,
    /// ECC NIST P-384 (template H-4 of the high range), certificate at 0x01c00016.
    EccP384,
}

/// What `tpm_encryption_alg` accepts, for error messages.
pub const ENCRYPTION_ALG_ACCEPTED: &str = "one of rsa, rsa2048, rsa3072, ecc, ecc256, ecc384";

impl EncryptionAlg {
    /// The spelling of API versions before 2.5 (`rsa`, `ecc`): the family alone.
    pub fn legacy_name(self) -> &'static str {
        match self {
            Self::Rsa2048 | Self::Rsa3072 => "rsa",
            Self::EccP256 | Self::EccP384 => "ecc",
        }
    }

    /// The spelling of API version 2.5 and later, with the key size.
    pub fn sized_name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
            Self::EccP256 => "ecc256",
            Self::EccP384 => "ecc384",
        }
    }

    /// The spelling API `version` uses for `enc_alg` and `tpm_enc_alg`.
    pub fn wire_name(self, version: crate::api_version::ApiVersion) -> &'static str {
        if version.sizes_enc_alg() {
            self.sized_name()
        } else {
            self.legacy_name()
        }
    }

    /// Whether the template is one of the high range (SHA-384 name,
    /// PolicyOR authorization), which peers before 7.14 cannot name.
    pub fn is_high_range(self) -> bool {
        matches!(self, Self::Rsa3072 | Self::EccP384)
    }

    /// The tss-esapi identifier of the key family.
    pub fn to_tpm(self) -> AsymmetricAlgorithm {
        match self {
            Self::Rsa2048 | Self::Rsa3072 => AsymmetricAlgorithm::Rsa,
            Self::EccP256 | Self::EccP384 => AsymmetricAlgorithm::Ecc,
        }
    }

    /// The tss-esapi key type and size, which picks the EK template.
    pub fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::Rsa3072 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa3072),
            Self::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            Self::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }

    /// The type of a key's public area, when it is one of these (how a
    /// persistent EK is recognised).
    pub fn of_public(public: &Public) -> Option<Self> {
        match public {
            Public::Rsa { parameters, .. } => match parameters.key_bits() {
                RsaKeyBits::Rsa2048 => Some(Self::Rsa2048),
                RsaKeyBits::Rsa3072 => Some(Self::Rsa3072),
                _ => None,
            },
            Public::Ecc { parameters, .. } => match parameters.ecc_curve() {
                EccCurve::NistP256 => Some(Self::EccP256),
                EccCurve::NistP384 => Some(Self::EccP384),
                _ => None,
            },
            _ => None,
        }
    }

    /// The AK key for `signing` under an EK of this type: the EK's size when
    /// the families agree (an RSA 3072 AK under an RSA 3072 EK), else the
    /// family's low-range size.
    pub fn ak_key(self, signing: SigningAlg) -> AsymmetricAlgorithmSelection {
        match (signing, self) {
            (SigningAlg::RsaSsa, Self::Rsa3072) => Self::Rsa3072.selection(),
            (SigningAlg::RsaSsa, _) => Self::Rsa2048.selection(),
            (SigningAlg::EcDsa, Self::EccP384) => Self::EccP384.selection(),
            (SigningAlg::EcDsa, _) => Self::EccP256.selection(),
        }
    }

    /// The NV index of the EK certificate for this template (TCG EK Credential Profile).
    pub fn ek_certificate_nv_index(self) -> u32 {
        match self {
            Self::Rsa2048 => 0x01c0_0002,
            Self::Rsa3072 => 0x01c0_001c,
            Self::EccP256 => 0x01c0_000a,
            Self::EccP384 => 0x01c0_0016,
        }
    }
}

impl FromStr for EncryptionAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "rsa" | "rsa2048" => Ok(Self::Rsa2048),
            "rsa3072" => Ok(Self::Rsa3072),
            "ecc" | "ecc256" => Ok(Self::EccP256),
            "ecc384" => Ok(Self::EccP384),
            _ => Err(()),
        }
    }
}

/// The AK signature scheme (`tpm_signing_alg`); it also decides the AK key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with an RSA-2048 AK (the peers' default).
    RsaSsa,
    /// ECDSA with a NIST P-256 AK.
    EcDsa,
}

/// What `tpm_signing_alg` accepts, for error messages.
pub const SIGNING_ALG_ACCEPTED: &str = "one of rsassa, ecdsa";

impl SigningAlg {
    /// The name Keylime uses on the wire (`sign_alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaSsa => "rsassa",
            Self::EcDsa => "ecdsa",
        }
    }

    /// The tss-esapi identifier.
    pub fn to_tpm(self) -> SignatureSchemeAlgorithm {
        match self {
            Self::RsaSsa => SignatureSchemeAlgorithm::RsaSsa,
            Self::EcDsa => SignatureSchemeAlgorithm::EcDsa,
        }
    }
}

impl FromStr for SigningAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "rsassa" => Ok(Self::RsaSsa),
            "ecdsa" => Ok(Self::EcDsa),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keylime_spellings() {
        assert_eq!("sha256".parse(), Ok(HashAlg::Sha256));
        assert_eq!("SHA256".parse::<HashAlg>(), Err(()));
        assert_eq!("rsa".parse(), Ok(EncryptionAlg::Rsa2048));
        assert_eq!("ecc256".parse(), Ok(EncryptionAlg::EccP256));
        assert_eq!("rsa3072".parse(), Ok(EncryptionAlg::Rsa3072));
        assert_eq!("ecc384".parse(), Ok(EncryptionAlg::EccP384));
        assert_eq!("rsa4096".parse::<EncryptionAlg>(), Err(()));
        assert_eq!("ecdsa".parse(), Ok(SigningAlg::EcDsa));
        assert_eq!("rsapss".parse::<SigningAlg>(), Err(()));
    }

    #[test]
    fn wire_names_follow_api_version_spelling() {
        assert_eq!(EncryptionAlg::Rsa2048.legacy_name(), "rsa");
        assert_eq!(EncryptionAlg::Rsa2048.sized_name(), "rsa2048");
        assert_eq!(EncryptionAlg::EccP256.sized_name(), "ecc256");
        let v = crate::api_version::ApiVersion::new;
        assert_eq!(EncryptionAlg::Rsa2048.wire_name(v(2, 4)), "rsa");
        assert_eq!(EncryptionAlg::EccP256.wire_name(v(2, 1)), "ecc");
        assert_eq!(EncryptionAlg::Rsa2048.wire_name(v(2, 5)), "rsa2048");
        assert_eq!(EncryptionAlg::EccP256.wire_name(v(2, 6)), "ecc256");
        assert_eq!(
            EncryptionAlg::EccP256.ek_certificate_nv_index(),
            0x01c0_000a
        );
        assert_eq!(EncryptionAlg::Rsa3072.wire_name(v(2, 6)), "rsa3072");
        assert_eq!(EncryptionAlg::Rsa3072.wire_name(v(2, 4)), "rsa");
        assert_eq!(EncryptionAlg::EccP384.wire_name(v(2, 5)), "ecc384");
        assert_eq!(EncryptionAlg::EccP384.wire_name(v(2, 3)), "ecc");
        assert_eq!(
            EncryptionAlg::Rsa3072.ek_certificate_nv_index(),
            0x01c0_001c
        );
        assert_eq!(
            EncryptionAlg::EccP384.ek_certificate_nv_index(),
            0x01c0_0016
        );
    }
}
