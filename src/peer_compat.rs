//! What the Keylime peers refuse of the agent's configured algorithms, said
//! once at start instead of as a failed `tenant -c add` later.
//!
//! Two kinds of refusal: the peers' default accept lists (every release),
//! which an operator widens in the tenant's config, and what a release
//! cannot do at all. The release is known from the registrar API version the
//! agent registered with (7.12 offers 2.3, 7.13 2.4, 7.14.3 2.6); the
//! verifier and tenant of a deployment are taken to be of the registrar's
//! release, which is why these are warnings and not errors.

use crate::algorithms::{HashAlg, SigningAlg};
use crate::api_version::ApiVersion;

/// The newest registrar API of Keylime 7.12, whose quote check reads only
/// the first half (`r`) of an ECDSA signature and so rejects every ECDSA
/// quote (fixed in 7.13.0).
const KEYLIME_7_12_API: ApiVersion = ApiVersion::new(2, 3);

/// Notes about the peers' default accept lists (`[tenant]
/// accept_tpm_*_algs`, which the tenant hands to the verifier), for the
/// configured algorithms; empty when the defaults accept them.
pub fn default_list_notes(hash: HashAlg, signing: SigningAlg) -> Vec<String> {
    let mut notes = Vec::new();
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
/// verify of this agent's quotes; `None` when nothing is known to fail.
pub fn release_refusal(registrar_api: ApiVersion, signing: SigningAlg) -> Option<String> {
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
        assert!(release_refusal(v(3), SigningAlg::EcDsa).is_some());
        assert!(release_refusal(v(1), SigningAlg::EcDsa).is_some());
        assert!(release_refusal(v(4), SigningAlg::EcDsa).is_none());
        assert!(release_refusal(v(6), SigningAlg::EcDsa).is_none());
        assert!(release_refusal(v(3), SigningAlg::RsaSsa).is_none());
    }

    #[test]
    fn default_lists_are_named_for_ecdsa_and_sha1() {
        assert!(default_list_notes(HashAlg::Sha256, SigningAlg::RsaSsa).is_empty());
        let notes = default_list_notes(HashAlg::Sha1, SigningAlg::EcDsa);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("accept_tpm_signing_algs"));
        assert!(notes[1].contains("accept_tpm_hash_algs"));
    }
}
