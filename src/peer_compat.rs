//! What the Keylime peers refuse of the agent's configured algorithms, said
//! once at start instead of as a failed `tenant -c add` later.
//!
//! Two kinds of refusal: the peers' default accept lists (every release),
//! which an operator widens in the tenant's config, and what a release
//! cannot do at all. The release is known from the registrar API version the
//! agent registered with (7.12 offers 2.3, 7.13 2.4, 7.14.3 2.6); the
//! verifier and tenant of a deployment are taken to be of the registrar's
//! release, which is why these are warnings and not errors.

use crate::algorithms::{EncryptionAlg, HashAlg, SigningAlg};
use crate::api_version::ApiVersion;

/// The newest registrar API of Keylime 7.12, whose quote check reads only
/// the first half (`r`) of an ECDSA signature and so rejects every ECDSA
/// quote (fixed in 7.13.0).
const KEYLIME_7_12_API: ApiVersion = ApiVersion::new(2, 3);

/// The first registrar API that names EK sizes (`rsa3072`, `ecc384`):
/// Keylime 7.14. Older peers know `rsa` and `ecc` only.
const SIZED_ENC_ALG_API: ApiVersion = ApiVersion::new(2, 5);

/// Notes about the peers' default accept lists (`[tenant]
/// accept_tpm_*_algs`, which the tenant hands to the verifier), for the
/// algorithms in use (hash, EK type, signing); empty when the defaults
/// accept them.
pub fn default_list_notes(
    (hash, ek, signing): (HashAlg, EncryptionAlg, SigningAlg),
) -> Vec<String> {
    let mut notes = Vec::new();
    if ek.is_high_range() {
        notes.push(format!(
            "the EK is {0}: the Keylime 7.14 tenant and verifier accept it only when the tenant's \
             accept_tpm_encryption_algs lists {0} (the default is ecc, rsa)",
            ek.sized_name()
        ));
    }
    if signing == SigningAlg::EcDsa {
        notes.push(
            "tpm_signing_alg = ecdsa: the Keylime tenant accepts ECDSA quotes only when its \
             accept_tpm_signing_algs lists ecdsa (the default is ecschnorr, rsassa)"
                .to_string(),
        );
    }
    if hash == HashAlg::Sha1 {
        notes.push(
            "tpm_hash_alg = sha1: the Keylime tenant accepts SHA-1 quotes only when its \
             accept_tpm_hash_algs lists sha1 (the default is sha512, sha384, sha256)"
                .to_string(),
        );
    }
    notes
}

/// What the release behind a registrar speaking `registrar_api` cannot
/// verify of this agent's EK type and quotes; empty when nothing is known
/// to fail.
pub fn release_refusals(
    registrar_api: ApiVersion,
    (ek, signing): (EncryptionAlg, SigningAlg),
) -> Vec<String> {
    let mut refusals = Vec::new();
    if ek.is_high_range() && registrar_api < SIZED_ENC_ALG_API {
        refusals.push(format!(
            "the EK is {}: the registrar speaks API {registrar_api}, i.e. Keylime 7.13 or older, \
             whose tenant and verifier know only \"rsa\" and \"ecc\" EKs; the agent names it \"{}\" to them \
             (Keylime 7.14 names its size)",
            ek.sized_name(),
            ek.legacy_name()
        ));
    }
    refusals.extend(ecdsa_refusal(registrar_api, signing));
    refusals
}

fn ecdsa_refusal(registrar_api: ApiVersion, signing: SigningAlg) -> Option<String> {
    (signing == SigningAlg::EcDsa && registrar_api <= KEYLIME_7_12_API).then(|| {
        format!(
            "tpm_signing_alg = ecdsa: the registrar speaks API {registrar_api}, i.e. Keylime 7.12 or older, \
             whose tenant and verifier cannot verify ECDSA quotes (every quote fails with \
             \"PCR #16 was not included\"); use tpm_signing_alg = rsassa with an RSA AK, \
             or Keylime 7.13 or newer"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_is_refused_by_7_12_only() {
        let v = |m| ApiVersion::new(2, m);
        let rsa = EncryptionAlg::Rsa2048;
        assert_eq!(release_refusals(v(3), (rsa, SigningAlg::EcDsa)).len(), 1);
        assert_eq!(release_refusals(v(1), (rsa, SigningAlg::EcDsa)).len(), 1);
        assert!(release_refusals(v(4), (rsa, SigningAlg::EcDsa)).is_empty());
        assert!(release_refusals(v(6), (rsa, SigningAlg::EcDsa)).is_empty());
        assert!(release_refusals(v(3), (rsa, SigningAlg::RsaSsa)).is_empty());
    }

    #[test]
    fn high_range_eks_are_unnamed_before_7_14() {
        let v = |m| ApiVersion::new(2, m);
        let rsassa = SigningAlg::RsaSsa;
        let said = release_refusals(v(4), (EncryptionAlg::Rsa3072, rsassa));
        assert_eq!(said.len(), 1);
        assert!(said[0].contains("rsa3072") && said[0].contains("\"rsa\""));
        assert_eq!(
            release_refusals(v(3), (EncryptionAlg::EccP384, rsassa)).len(),
            1
        );
        assert!(release_refusals(v(5), (EncryptionAlg::EccP384, rsassa)).is_empty());
        assert!(release_refusals(v(4), (EncryptionAlg::EccP256, rsassa)).is_empty());
    }

    #[test]
    fn default_lists_are_named_for_ecdsa_sha1_and_high_range_eks() {
        let rsa = EncryptionAlg::Rsa2048;
        assert!(default_list_notes((HashAlg::Sha256, rsa, SigningAlg::RsaSsa)).is_empty());
        let notes = default_list_notes((HashAlg::Sha1, rsa, SigningAlg::EcDsa));
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("accept_tpm_signing_algs"));
        assert!(notes[1].contains("accept_tpm_hash_algs"));
        let notes =
            default_list_notes((HashAlg::Sha256, EncryptionAlg::EccP384, SigningAlg::RsaSsa));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("accept_tpm_encryption_algs lists ecc384"));
    }
}
