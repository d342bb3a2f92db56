//! Unit tests of `attestation`.

use super::*;

#[test]
fn nonce_forms() {
    assert!("Ai5M5SjYjnkyv4P7itH1".parse::<Nonce>().is_ok());
    for bad in ["", "abc-def", "nonce with space", "é", &"a".repeat(65)] {
        assert!(bad.parse::<Nonce>().is_err(), "{bad}");
    }
}

#[test]
fn mask_forms_and_pcr16_always_selected() {
    assert_eq!(
        "0x0".parse::<PcrMask>().map(PcrMask::with_data_pcr),
        Ok(vec![16])
    );
    assert_eq!(
        "0x408000".parse::<PcrMask>().map(PcrMask::with_data_pcr),
        Ok(vec![15, 16, 22])
    );
    assert_eq!(
        "400".parse::<PcrMask>().map(PcrMask::with_data_pcr),
        Ok(vec![10, 16])
    );
    assert!("0xFFFFFF".parse::<PcrMask>().is_ok());
    for bad in ["", "0x", "0x1000000", "zz", "-1", "0x 1", "0x0000000001"] {
        assert!(bad.parse::<PcrMask>().is_err(), "{bad}");
    }
}

/// What the agent extends PCR 16 with ([`nk_digest`]) gives the PCR value
/// the verifier simulates: the known answers of PROTOCOL.md §16.2 for a
/// fixed public key (a test vector), with and without the trailing newline.
#[test]
fn the_nk_digest_gives_the_known_pcr16_answers() {
    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw3owm7uitOaspMCDlhEv
bxNgGsxa1MpbHytT/Y9K0sdpTxgay571B8zvLOUbJHEJ0gt4NHY0+/NCzIAzT6kB
n7aL67BV8QiyKBcywlVGS9PqYGoB9uxozDap/O9Bc5WrQUCso4m4TxrW1QOOBkNX
x5OnresvsRv5O3m6BYZeUk2pJOyiBXM0HEkEC/Q/hxsfF1KfJG3JYOhpdF0E//dy
LHOtdW9FP8Dt3YZuchJmyhFDjMKuxF2Zt7YVk9Pg4ZvmJ64CmOtshUj9k+Ctj44Z
gMS/cIVmMrk7cdUBEBtq8x3g0cARZ5cUb4KB+dO0v/fvZkb4Qt5zwym1eUzmvVfD
6QIDAQAB
-----END PUBLIC KEY-----";
    // The TPM's part: PCR 16 reset to zeros, then extended with what the
    // agent gives it.
    let pcr16_after = |pem: &str| {
        let mut extended = vec![0u8; 32];
        extended.extend(nk_digest(HashAlg::Sha256, pem).expect("digest"));
        hex::encode(openssl::sha::sha256(&extended))
    };
    assert_eq!(
        pcr16_after(&format!("{KEY}\n")),
        "673dc6cdbd922d60b9ff47b0c35fa83b8868c4d475e430c187c12d7f082012ab"
    );
    assert_eq!(
        pcr16_after(KEY),
        "61adab44d76fff1eea19c6f438cd1ef4c08ea61c309f7603cb59e0a3268706bc"
    );
}
