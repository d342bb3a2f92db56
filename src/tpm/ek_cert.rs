//! The EK certificate and its issuers' chain, as TPM makers leave them in
//! NV (TCG EK Credential Profile): the certificate at the index of its
//! template, and the chain as DER certificates laid end to end over the
//! indices 0x01c00100–0x01c001ff, read in index order.

use tss_esapi::abstraction::nv;
use tss_esapi::handles::{NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::Context;

use super::error::TpmError;
use super::keys::list_handles;

/// First NV index of the EK certificate chain.
pub const CHAIN_FIRST: u32 = 0x01c0_0100;
/// Last NV index of the EK certificate chain.
pub const CHAIN_LAST: u32 = 0x01c0_01ff;
/// At most this many certificates are taken from the chain.
const CHAIN_MAX_CERTIFICATES: usize = 16;

/// Reads the EK certificate from NV and re-encodes it as one PEM
/// certificate (some TPMs pad the NV area after the DER). `None` when the
/// index is not defined; the index is looked up first so that a TPM
/// without a certificate produces no TSS error output.
pub(super) fn read_ek_certificate(
    ctx: &mut Context,
    index: u32,
) -> Result<Option<String>, TpmError> {
    if !list_handles(ctx, index)?.contains(&index) {
        return Ok(None);
    }
    let der = read_index(ctx, index)?;
    let (cert, _) = first_certificate(&der).map_err(|e| {
        TpmError::Unexpected(format!(
            "NV index {index:#x} does not hold a DER certificate: {e}"
        ))
    })?;
    Ok(Some(pem(&cert)?))
}

/// The EK certificate's issuers from the chain indices, as PEM, in the
/// order the TPM keeps them; empty when no chain index is defined.
pub(super) fn read_ek_chain(ctx: &mut Context) -> Result<Vec<String>, TpmError> {
    let indices: Vec<u32> = list_handles(ctx, CHAIN_FIRST)?
        .into_iter()
        .filter(|h| (CHAIN_FIRST..=CHAIN_LAST).contains(h))
        .collect();
    let mut bytes = Vec::new();
    for index in indices {
        bytes.extend(read_index(ctx, index)?);
    }
    split_certificates(&bytes)?.iter().map(pem).collect()
}

fn read_index(ctx: &mut Context, index: u32) -> Result<Vec<u8>, TpmError> {
    let nv_index = NvIndexTpmHandle::new(index).map_err(TpmError::tss("EK certificate index"))?;
    // The ESYS reference is released by `read_full` itself (ESYS keeps one
    // reference per NV index), so it is not closed again here.
    let object: ObjectHandle = ctx
        .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(nv_index)))
        .map_err(TpmError::tss("opening an EK certificate index"))?;
    let read = ctx.execute_with_nullauth_session(|ctx| {
        nv::read_full(ctx, NvAuth::NvIndex(object.into()), nv_index)
    });
    Ok(read
        .map_err(TpmError::tss("reading an EK certificate index"))?
        .to_vec())
}

/// DER certificates laid end to end, stopping at padding (a byte other
/// than a SEQUENCE tag, as 0xff or 0x00 filling the rest of an index).
pub fn split_certificates(bytes: &[u8]) -> Result<Vec<openssl::x509::X509>, TpmError> {
    let mut certs = Vec::new();
    let mut rest = bytes;
    while rest.first() == Some(&0x30) && certs.len() < CHAIN_MAX_CERTIFICATES {
        let (cert, used) = first_certificate(rest).map_err(|e| {
            TpmError::Unexpected(format!(
                "the EK certificate chain in NV {CHAIN_FIRST:#x}–{CHAIN_LAST:#x} is not DER certificates: {e}"
            ))
        })?;
        certs.push(cert);
        rest = &rest[used..];
    }
    Ok(certs)
}

/// The certificate at the start of `der` and how many bytes it takes (its
/// DER length header says; anything after it is not looked at).
fn first_certificate(der: &[u8]) -> Result<(openssl::x509::X509, usize), String> {
    let length = der_length(der).ok_or("no DER SEQUENCE header")?;
    let body = der.get(..length).ok_or("truncated")?;
    openssl::x509::X509::from_der(body)
        .map(|cert| (cert, length))
        .map_err(|e| e.to_string())
}

/// The full length (header included) of the DER element at the start of
/// `der`, for a SEQUENCE with a definite length.
fn der_length(der: &[u8]) -> Option<usize> {
    if *der.first()? != 0x30 {
        return None;
    }
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let mut length = 0usize;
    for byte in der.get(2..2 + count)? {
        length = (length << 8) | usize::from(*byte);
    }
    Some(2 + count + length)
}

fn pem(cert: &openssl::x509::X509) -> Result<String, TpmError> {
    let pem = cert
        .to_pem()
        .map_err(|e| TpmError::Host(format!("EK certificate PEM: {e}")))?;
    String::from_utf8(pem).map_err(|_| TpmError::Host("EK certificate PEM is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> Vec<u8> {
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .expect("group"),
            )
            .expect("key"),
        )
        .expect("pkey");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        let mut b = openssl::x509::X509::builder().expect("builder");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let now = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let later = openssl::asn1::Asn1Time::days_from_now(30).expect("later");
        b.set_not_before(&now).expect("not before");
        b.set_not_after(&later).expect("not after");
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        b.build().to_der().expect("der")
    }

    #[test]
    fn splits_a_chain_and_stops_at_padding() {
        let (a, b) = (cert("intermediate"), cert("root"));
        let mut bytes = [a.clone(), b.clone()].concat();
        bytes.extend([0xff; 40]);
        let certs = split_certificates(&bytes).expect("split");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].to_der().expect("der"), a);
        assert_eq!(certs[1].to_der().expect("der"), b);
        assert!(split_certificates(&[0u8; 8]).expect("padding").is_empty());
    }

    #[test]
    fn a_truncated_certificate_is_an_error() {
        let a = cert("intermediate");
        assert!(split_certificates(&a[..a.len() - 1]).is_err());
        assert!(split_certificates(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_err());
    }
}
