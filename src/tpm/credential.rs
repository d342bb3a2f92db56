//! The registrar's challenge (a TPM2_MakeCredential output in the
//! tpm2-tools file layout) and its TPM2_ActivateCredential.

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{Digest, DigestList, EncryptedSecret, IdObject};
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::error::TpmError;

/// The operation name a failed TPM2_ActivateCredential carries in
/// [`TpmError::Tss`], so that callers can tell a rejected challenge.
pub const ACTIVATE_CREDENTIAL_OP: &str = "ActivateCredential";

/// Magic number that opens a tpm2-tools credential file.
const MAGIC: u32 = 0xBADC_C0DE;
/// The only file version there is.
const VERSION: u32 = 1;

/// A parsed challenge: the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET
/// contents (without their size prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// The credential (integrity HMAC and encrypted identity).
    pub id_object: Vec<u8>,
    /// The seed, encrypted to the EK.
    pub secret: Vec<u8>,
}

/// Splits the blob: `0xBADCC0DE`, version 1 (both u32 BE), then
/// TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET (u16 BE size + bytes each),
/// with nothing after.
pub fn parse_credential_blob(blob: &[u8]) -> Result<CredentialBlob, TpmError> {
    let bad = |why: &str| TpmError::BadInput(format!("malformed credential blob: {why}"));
    let header = blob
        .get(..8)
        .ok_or_else(|| bad("shorter than its header"))?;
    if header[..4] != MAGIC.to_be_bytes() {
        return Err(bad("wrong magic number"));
    }
    if header[4..] != VERSION.to_be_bytes() {
        return Err(bad("unknown version"));
    }
    let (id_object, rest) = take_sized(&blob[8..]).ok_or_else(|| bad("truncated credential"))?;
    let (secret, rest) = take_sized(rest).ok_or_else(|| bad("truncated secret"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    if id_object.is_empty() || secret.is_empty() {
        return Err(bad("empty credential or secret"));
    }
    Ok(CredentialBlob {
        id_object: id_object.to_vec(),
        secret: secret.to_vec(),
    })
}

fn take_sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let size = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let body = bytes.get(2..2 + size)?;
    Some((body, &bytes[2 + size..]))
}

/// TPM2_ActivateCredential(activate = AK, key = EK). The EK's policy is
/// PolicySecret(TPM_RH_ENDORSEMENT), satisfied in a policy session that is
/// flushed on every path.
pub(super) fn activate(
    ctx: &mut Context,
    ak: KeyHandle,
    ek: KeyHandle,
    blob: CredentialBlob,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let id_object = IdObject::try_from(blob.id_object)
        .map_err(|_| TpmError::BadInput("credential larger than a TPM2B_ID_OBJECT".into()))?;
    let secret = EncryptedSecret::try_from(blob.secret)
        .map_err(|_| TpmError::BadInput("secret larger than a TPM2B_ENCRYPTED_SECRET".into()))?;
    let (ek_public, _, _) = ctx
        .read_public(ek)
        .map_err(TpmError::tss("reading the EK public area"))?;
    let branches = ek_policy_branches(ek_public.name_hashing_algorithm())?;
    let symmetric = ek_public
        .symmetric_algorithm()
        .ok_or_else(|| TpmError::Unexpected("the EK has no symmetric algorithm".into()))?;
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            symmetric.into(),
            ek_public.name_hashing_algorithm(),
        )
        .map_err(TpmError::tss("starting the EK policy session"))?
        .ok_or_else(|| TpmError::Unexpected("the TPM returned no policy session".into()))?;
    let mut outcome: Result<Zeroizing<Vec<u8>>, TpmError> = Err(TpmError::Stopped);
    let flushed =
        ctx.execute_with_temporary_object(SessionHandle::from(session).into(), |ctx, _| {
            outcome = run_activation(ctx, session, &branches, (ak, ek), id_object, secret);
            Ok(())
        });
    flushed.map_err(TpmError::tss("flushing the EK policy session"))?;
    outcome
}

/// The PolicyOR branches of an EK's authorization policy, by its name
/// algorithm: none for the low-range templates (PolicySecret alone), and
/// PolicyA (PolicySecret of the endorsement hierarchy) with PolicyC (the
/// TCG's PolicyAuthorizeNV branch) for the SHA-384 high-range templates.
fn ek_policy_branches(name_alg: HashingAlgorithm) -> Result<Option<DigestList>, TpmError> {
    match name_alg {
        HashingAlgorithm::Sha256 => Ok(None),
        HashingAlgorithm::Sha384 => {
            let mut list = DigestList::new();
            let policy_c = hex::decode(POLICY_C_SHA384).unwrap_or_default();
            for digest in [policy_secret_endorsement_sha384(), policy_c] {
                let digest = Digest::try_from(digest).map_err(TpmError::tss("EK policy digest"))?;
                list.add(digest).map_err(TpmError::tss("EK policy list"))?;
            }
            Ok(Some(list))
        }
        other => Err(TpmError::BadInput(format!(
            "activation with an EK whose name algorithm is {other:?} is not supported (SHA-256 and SHA-384 are)"
        ))),
    }
}

/// PolicyC of the high-range EK templates for SHA-384, as the TCG EK
/// Credential Profile (2.5, B.6) publishes it; `tests::high_range_policy_or`
/// checks that PolicyOR(PolicyA, PolicyC) is the template's authPolicy.
const POLICY_C_SHA384: &str =
    "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165";

/// PolicyA for SHA-384: PolicySecret(TPM_RH_ENDORSEMENT) with an empty
/// policyRef, computed as TPM 2.0 Part 3 (23.4) defines the update:
/// H(H(zeros ‖ TPM_CC_PolicySecret ‖ name) ‖ policyRef).
fn policy_secret_endorsement_sha384() -> Vec<u8> {
    const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
    const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
    let mut first = vec![0u8; 48];
    first.extend(TPM_CC_POLICY_SECRET.to_be_bytes());
    first.extend(TPM_RH_ENDORSEMENT.to_be_bytes());
    let inner = openssl::sha::sha384(&first);
    openssl::sha::sha384(&inner).to_vec()
}

fn run_activation(
    ctx: &mut Context,
    session: AuthSession,
    branches: &Option<DigestList>,
    (ak, ek): (KeyHandle, KeyHandle),
    id_object: IdObject,
    secret: EncryptedSecret,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let policy =
        PolicySession::try_from(session).map_err(TpmError::tss("using the EK policy session"))?;
    ctx.execute_with_nullauth_session(|ctx| {
        ctx.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })
    .map_err(TpmError::tss("PolicySecret(endorsement)"))?;
    if let Some(branches) = branches {
        ctx.policy_or(policy, branches.clone())
            .map_err(TpmError::tss("PolicyOR(EK policy)"))?;
    }
    let digest = ctx
        .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
            ctx.activate_credential(ak, ek, id_object, secret)
        })
        .map_err(TpmError::tss(ACTIVATE_CREDENTIAL_OP))?;
    Ok(Zeroizing::new(digest.value().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(id: &[u8], secret: &[u8]) -> Vec<u8> {
        let mut b = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
        b.extend((id.len() as u16).to_be_bytes());
        b.extend(id);
        b.extend((secret.len() as u16).to_be_bytes());
        b.extend(secret);
        b
    }

    #[test]
    fn high_range_policy_or() {
        use tss_esapi::abstraction::ek::create_ek_public_from_default_template_2;
        use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
        use tss_esapi::interface_types::key_bits::RsaKeyBits;
        // PolicyOR: H(zeros ‖ TPM_CC_PolicyOR ‖ branch digests).
        let mut or = vec![0u8; 48];
        or.extend(0x0000_0171u32.to_be_bytes());
        or.extend(policy_secret_endorsement_sha384());
        or.extend(hex::decode(POLICY_C_SHA384).expect("hex"));
        let template = create_ek_public_from_default_template_2(
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa3072),
            None,
        )
        .expect("template");
        assert_eq!(
            template.auth_policy().value(),
            openssl::sha::sha384(&or).as_slice()
        );
        let branches = ek_policy_branches(HashingAlgorithm::Sha384)
            .expect("sha384")
            .expect("branches");
        assert_eq!(branches.len(), 2);
        assert!(ek_policy_branches(HashingAlgorithm::Sha256)
            .expect("sha256")
            .is_none());
    }

    #[test]
    fn parses_the_tpm2_tools_layout() {
        let parsed = parse_credential_blob(&blob(&[1, 2, 3], &[9; 256])).expect("parse");
        assert_eq!(parsed.id_object, vec![1, 2, 3]);
        assert_eq!(parsed.secret, vec![9; 256]);
    }

    #[test]
    fn rejects_every_malformed_form() {
        let good = blob(&[1, 2, 3], &[4, 5]);
        let mut wrong_magic = good.clone();
        wrong_magic[0] = 0;
        let mut wrong_version = good.clone();
        wrong_version[7] = 2;
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("header only", good[..8].to_vec()),
            ("magic", wrong_magic),
            ("version", wrong_version),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("trailing", trailing),
            ("empty parts", blob(&[], &[])),
        ];
        for (name, bytes) in cases {
            assert!(parse_credential_blob(&bytes).is_err(), "{name}");
        }
    }
}
