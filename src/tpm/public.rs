//! TPM public areas in the encodings the peers want: TPM2B_PUBLIC bytes
//! (`ek_tpm`, `aik_tpm`) and PEM SubjectPublicKeyInfo (`hash_ek`).

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public as OpenSslPublic};
use openssl::rsa::Rsa;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::traits::Marshall;

use super::error::TpmError;

/// TPM2B_PUBLIC: big-endian u16 size, then the TPMT_PUBLIC, nothing after.
pub fn tpm2b_public(public: &Public) -> Result<Vec<u8>, TpmError> {
    PublicBuffer::try_from(public.clone())
        .and_then(|b| b.marshall())
        .map_err(TpmError::tss("marshalling a public area"))
}

/// The public key of an RSA or ECC public area as an OpenSSL key.
pub fn openssl_public_key(public: &Public) -> Result<PKey<OpenSslPublic>, TpmError> {
    let unsupported =
        || TpmError::Unexpected("public area is neither RSA nor NIST-curve ECC".into());
    let ssl = |e: openssl::error::ErrorStack| TpmError::Host(format!("public key conversion: {e}"));
    match public {
        Public::Rsa {
            parameters, unique, ..
        } => {
            // An exponent of 0 means the default, 65537 (TPM 2.0 Part 2, TPMS_RSA_PARMS).
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let n = BigNum::from_slice(unique.value()).map_err(ssl)?;
            let e = BigNum::from_u32(exponent).map_err(ssl)?;
            Rsa::from_public_components(n, e)
                .and_then(PKey::from_rsa)
                .map_err(ssl)
        }
        Public::Ecc {
            parameters, unique, ..
        } => {
            let nid = match parameters.ecc_curve() {
                EccCurve::NistP256 => Nid::X9_62_PRIME256V1,
                EccCurve::NistP384 => Nid::SECP384R1,
                EccCurve::NistP521 => Nid::SECP521R1,
                _ => return Err(unsupported()),
            };
            let group = EcGroup::from_curve_name(nid).map_err(ssl)?;
            let x = BigNum::from_slice(unique.x().value()).map_err(ssl)?;
            let y = BigNum::from_slice(unique.y().value()).map_err(ssl)?;
            EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .and_then(PKey::from_ec_key)
                .map_err(ssl)
        }
        _ => Err(unsupported()),
    }
}

/// The public key of a public area as PEM SubjectPublicKeyInfo.
pub fn public_key_pem(public: &Public) -> Result<String, TpmError> {
    let pem = openssl_public_key(public)?
        .public_key_to_pem()
        .map_err(|e| TpmError::Host(format!("PEM encoding: {e}")))?;
    String::from_utf8(pem).map_err(|_| TpmError::Host("PEM is not UTF-8".into()))
}
