//! Thin helpers over OpenSSL for the keyed hashes Keylime uses.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// Lower-case hex HMAC-SHA-384, the form of `auth_tag` and `/keys/verify`.
pub fn hmac_sha384_hex(key: &[u8], message: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha384(), &key)?;
    signer.update(message)?;
    Ok(hex::encode(signer.sign_to_vec()?))
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
}
