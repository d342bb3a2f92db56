//! The registrar's challenge (a TPM2_MakeCredential output in the
//! tpm2-tools file layout) and its TPM2_ActivateCredential.

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};
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
    if ek_public.name_hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(TpmError::BadInput(
            "only EKs with the SHA-256 low-range TCG templates are supported for activation".into(),
        ));
    }
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(TpmError::tss("starting the EK policy session"))?
        .ok_or_else(|| TpmError::Unexpected("the TPM returned no policy session".into()))?;
    let mut outcome: Result<Zeroizing<Vec<u8>>, TpmError> = Err(TpmError::Stopped);
    let flushed =
        ctx.execute_with_temporary_object(SessionHandle::from(session).into(), |ctx, _| {
            outcome = run_activation(ctx, session, ak, ek, id_object, secret);
            Ok(())
        });
    flushed.map_err(TpmError::tss("flushing the EK policy session"))?;
    outcome
}

fn run_activation(
    ctx: &mut Context,
    session: AuthSession,
    ak: KeyHandle,
    ek: KeyHandle,
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
