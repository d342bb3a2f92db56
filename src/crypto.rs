//! Thin helpers over OpenSSL for the primitives Keylime uses: HMAC-SHA-384
//! (`auth_tag`, `keys/verify`), RSA-OAEP-SHA-1 (U and V), AES-GCM with a
//! 16-byte IV (payloads) and RSA-PSS-SHA-256 (revocation messages).

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::symm::Cipher;
use zeroize::Zeroizing;

/// IV length of Keylime payloads (not GCM's usual 12).
const PAYLOAD_IV_LEN: usize = 16;
/// GCM tag length.
const GCM_TAG_LEN: usize = 16;

/// Lower-case hex HMAC-SHA-384, the form of `auth_tag` and `/keys/verify`.
pub fn hmac_sha384_hex(key: &[u8], message: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha384(), &key)?;
    signer.update(message)?;
    Ok(hex::encode(signer.sign_to_vec()?))
}

/// Constant-time equality of two byte strings (false when lengths differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// RSA-OAEP decryption with SHA-1 and MGF1-SHA-1, empty label: how the
/// tenant and verifier encrypt U and V to the NK.
pub fn rsa_oaep_sha1_decrypt(
    key: &PKeyRef<Private>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
    let rsa = key.rsa()?;
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(rsa.size()).unwrap_or(0)]);
    let n = rsa.private_decrypt(ciphertext, &mut out, Padding::PKCS1_OAEP)?;
    out.truncate(n);
    Ok(out)
}

/// Decrypts a Keylime payload: `IV (16) ‖ ciphertext ‖ tag (16)`, AES-GCM
/// with key K (16 or 32 bytes), no AAD. `None` when it does not
/// authenticate or is malformed.
pub fn decrypt_payload(key: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = match key.len() {
        16 => Cipher::aes_128_gcm(),
        32 => Cipher::aes_256_gcm(),
        _ => return None,
    };
    if blob.len() < PAYLOAD_IV_LEN + GCM_TAG_LEN {
        return None;
    }
    let (iv, rest) = blob.split_at(PAYLOAD_IV_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
    openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], ciphertext, tag)
        .ok()
        .map(Zeroizing::new)
}

/// Verifies an RSA-PSS signature (SHA-256, MGF1-SHA-256, salt length
/// recovered from the signature, so the signer's maximum salt passes).
pub fn verify_rsa_pss_sha256<T: HasPublic>(
    key: &PKeyRef<T>,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let verify = || -> Result<bool, ErrorStack> {
        let mut verifier = Verifier::new(MessageDigest::sha256(), key)?;
        verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
        verifier.set_rsa_mgf1_md(MessageDigest::sha256())?;
        // -2: RSA_PSS_SALTLEN_AUTO, recover the salt length on verification.
        verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(-2))?;
        verifier.update(message)?;
        verifier.verify(signature)
    };
    verify().unwrap_or(false)
}

/// A certificate name as `CN=…, O=…`.
pub fn name_text(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §16.2: the activation known answer.
    #[test]
    fn activation_auth_tag_known_answer() {
        use base64::Engine;
        let challenge = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
        let key = base64::engine::general_purpose::STANDARD.encode(challenge);
        assert_eq!(key, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=");
        let tag =
            hmac_sha384_hex(key.as_bytes(), b"d432fbb3-d2f1-4a97-9ef7-75bd81c00000").expect("hmac");
        assert_eq!(
            tag,
            "99371ba1dbc4052a34e8eda70f0c10ec0701be7cdb3f7f99671aee66fa55624a49ccd038a7f9d8924aa3e95c14209853"
        );
    }

    fn k() -> Vec<u8> {
        hex::decode("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0")
            .expect("hex")
    }

    /// PROTOCOL.md §16.2: the ukey auth_tag and keys/verify known answers.
    #[test]
    fn ukey_auth_tag_and_verify_hmac_known_answers() {
        let tag = hmac_sha384_hex(&k(), b"d432fbb3-d2f1-4a97-9ef7-75bd81c00000").expect("hmac");
        assert_eq!(
            tag,
            "0b90fb78fc4e781c962c6e54a61cf07f0a680c8022ee741f78362e8d3cc7616984811c836cd999995f0b5b029bc481bf"
        );
        let verify = hmac_sha384_hex(&k(), b"1234567890ABCDEFHIJK").expect("hmac");
        assert_eq!(
            verify,
            "99483d8a907fc391737043086e2b92b7b18d55a37c7ab88eaa46c85c1a9a06f1260e8cb09e474cea529fe5d9db2e6407"
        );
    }

    /// PROTOCOL.md §16.2: the payload known answer (16-byte IV, "hello").
    #[test]
    fn payload_known_answer() {
        use base64::Engine;
        let blob = base64::engine::general_purpose::STANDARD
            .decode("AAECAwQFBgcICQoLDA0ODylCXAbDbBL41r3/DjsquxgEF8PdCw==")
            .expect("b64");
        assert_eq!(
            decrypt_payload(&k(), &blob).as_deref().map(Vec::as_slice),
            Some(&b"hello"[..])
        );
        let mut tampered = blob.clone();
        tampered[20] ^= 1;
        assert!(decrypt_payload(&k(), &tampered).is_none());
        assert!(decrypt_payload(&k()[..31], &blob).is_none());
        assert!(decrypt_payload(&k(), &blob[..20]).is_none());
    }

    #[test]
    fn oaep_round_trip_and_pss_verification() {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("pkey");
        let public =
            PKey::public_key_from_pem(&key.public_key_to_pem().expect("pem")).expect("public");
        let mut encrypter = openssl::encrypt::Encrypter::new(&public).expect("encrypter");
        encrypter
            .set_rsa_padding(Padding::PKCS1_OAEP)
            .expect("oaep");
        let mut ct = vec![0u8; encrypter.encrypt_len(b"u-half").expect("len")];
        let n = encrypter.encrypt(b"u-half", &mut ct).expect("encrypt");
        ct.truncate(n);
        assert_eq!(
            rsa_oaep_sha1_decrypt(&key, &ct)
                .expect("decrypt")
                .as_slice(),
            b"u-half"
        );
        // A changed ciphertext fails the OAEP check. (Not a truncated one:
        // when its first byte is zero, which happens, OpenSSL reads the
        // shorter input as the same number and decrypts it.)
        let mut tampered = ct.clone();
        tampered[ct.len() / 2] ^= 0x01;
        assert!(rsa_oaep_sha1_decrypt(&key, &tampered).is_err());

        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
        signer.set_rsa_padding(Padding::PKCS1_PSS).expect("pss");
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::MAXIMUM_LENGTH)
            .expect("salt");
        signer
            .update(b"{\"type\": \"revocation\"}")
            .expect("update");
        let sig = signer.sign_to_vec().expect("sign");
        assert!(verify_rsa_pss_sha256(
            &public,
            b"{\"type\": \"revocation\"}",
            &sig
        ));
        assert!(!verify_rsa_pss_sha256(
            &public,
            b"{\"type\": \"other\"}",
            &sig
        ));
        assert!(!verify_rsa_pss_sha256(&public, b"x", b""));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
