//! Device identity keys (TCG "TPM 2.0 Keys for Device Identity and
//! Attestation"): the IDevID, a signing key, and the IAK, a restricted
//! signing key, both primaries of the endorsement hierarchy that the maker
//! certified. They are either persistent (a handle and its password) or
//! recreated from their TCG template, which yields the same key on the
//! same TPM. At start each is checked against its certificate; at
//! registration the IAK certifies the AK (TPM2_Certify), which the
//! registrar verifies to bind the AK to the certified TPM.

use std::path::{Path, PathBuf};

use openssl::x509::X509;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::Auth;
use tss_esapi::Context;

use super::error::TpmError;
use super::public;
use crate::secret::Secret;

mod template;

pub use template::{template_public, IdentityTemplate, UnknownTemplate, Which, TEMPLATE_ACCEPTED};

/// One key's settings.
#[derive(Debug, Clone)]
pub struct IdentityKeyConfig {
    /// Persistent handle, or `None` to recreate the key from the template.
    pub handle: Option<u32>,
    /// The key's authorization value (for a persistent key).
    pub password: Secret<Vec<u8>>,
    /// The certificate file (PEM or DER).
    pub cert: PathBuf,
}

/// The device identity settings (`enable_iak_idevid = true`).
#[derive(Debug, Clone)]
pub struct DeviceIdentityConfig {
    /// The template, or `None` to pick it from the certificates' key type.
    pub template: Option<IdentityTemplate>,
    /// The IAK.
    pub iak: IdentityKeyConfig,
    /// The IDevID.
    pub idevid: IdentityKeyConfig,
}

/// One certified key as found at start.
#[derive(Debug, Clone)]
pub struct IdentityKey {
    /// The key as TPM2B_PUBLIC (`iak_tpm`, `idevid_tpm`).
    pub public: Vec<u8>,
    /// Its certificate as PEM (`iak_cert`, `idevid_cert`).
    pub cert_pem: String,
    /// Subject, issuer and expiry of the certificate, for `check` and `info`.
    pub subject: String,
    /// The certificate's issuer.
    pub issuer: String,
    /// The certificate's notAfter.
    pub not_after: String,
}

/// Both keys as found at start, and the template they were made with.
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    /// The template used (picked from the certificates when `detect`).
    pub template: IdentityTemplate,
    /// The IAK.
    pub iak: IdentityKey,
    /// The IDevID.
    pub idevid: IdentityKey,
}

/// Reads both certificates, finds both keys, and checks that each
/// certificate is for its TPM key; every object made is flushed again.
pub(super) fn load(
    ctx: &mut Context,
    config: &DeviceIdentityConfig,
) -> Result<DeviceKeys, TpmError> {
    let iak_cert = read_certificate(&config.iak.cert)?;
    let idevid_cert = read_certificate(&config.idevid.cert)?;
    let template = match config.template {
        Some(template) => template,
        None => detect(&config.iak.cert, &iak_cert)?,
    };
    let iak = found_key(ctx, Which::Iak, template, &config.iak, &iak_cert)?;
    let idevid = found_key(ctx, Which::Idevid, template, &config.idevid, &idevid_cert)?;
    Ok(DeviceKeys {
        template,
        iak,
        idevid,
    })
}

/// TPM2_Certify of `ak` by the IAK with `qualifying` data: the IAK is
/// opened (or recreated), used and released again.
pub(super) fn certify_ak(
    ctx: &mut Context,
    config: &DeviceIdentityConfig,
    template: IdentityTemplate,
    ak: KeyHandle,
    qualifying: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let (iak, persistent) = open_key(ctx, Which::Iak, template, &config.iak)?;
    let certified = super::quote::certify(ctx, ak, iak, qualifying);
    release(ctx, iak, persistent);
    certified
}

fn found_key(
    ctx: &mut Context,
    which: Which,
    template: IdentityTemplate,
    config: &IdentityKeyConfig,
    cert: &X509,
) -> Result<IdentityKey, TpmError> {
    let (handle, persistent) = open_key(ctx, which, template, config)?;
    let read = ctx
        .read_public(handle)
        .map_err(TpmError::tss("reading a device identity key"));
    release(ctx, handle, persistent);
    let (key_public, _, _) = read?;
    let tpm_key = public::openssl_public_key(&key_public)?;
    let cert_key = cert.public_key().map_err(|e| TpmError::Identity {
        file: config.cert.clone(),
        reason: format!("no usable public key: {e}"),
    })?;
    if !tpm_key.public_eq(&cert_key) {
        let source = match config.handle {
            Some(h) => format!("the persistent key at {h:#010x}"),
            None => format!("the key of template {}", template.name()),
        };
        return Err(TpmError::Identity {
            file: config.cert.clone(),
            reason: format!(
                "the {} certificate is for another key than {source} in this TPM (check iak_idevid_template and the {} handle)",
                which.name(),
                which.name()
            ),
        });
    }
    let pem = cert
        .to_pem()
        .map_err(|e| TpmError::Host(format!("certificate PEM: {e}")))?;
    Ok(IdentityKey {
        public: public::tpm2b_public(&key_public)?,
        cert_pem: String::from_utf8_lossy(&pem).into_owned(),
        subject: crate::crypto::name_text(cert.subject_name()),
        issuer: crate::crypto::name_text(cert.issuer_name()),
        not_after: cert.not_after().to_string(),
    })
}

/// The key's handle and whether it is persistent (else it was created
/// here and must be flushed).
fn open_key(
    ctx: &mut Context,
    which: Which,
    template: IdentityTemplate,
    config: &IdentityKeyConfig,
) -> Result<(KeyHandle, bool), TpmError> {
    let handle = match config.handle {
        Some(raw) => {
            let persistent =
                PersistentTpmHandle::new(raw).map_err(TpmError::tss("device identity handle"))?;
            let object = ctx
                .execute_without_session(|ctx| {
                    ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
                })
                .map_err(TpmError::tss("opening a persistent device identity key"))?;
            (KeyHandle::from(object), true)
        }
        None => {
            let created = ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.create_primary(
                        Hierarchy::Endorsement,
                        template_public(which, template)?,
                        None,
                        None,
                        None,
                        None,
                    )
                })
                .map_err(TpmError::tss("creating a device identity key"))?;
            (created.key_handle, false)
        }
    };
    if !config.password.is_empty() {
        let auth = Auth::try_from(config.password.to_vec());
        let set = auth.and_then(|auth| ctx.tr_set_auth(ObjectHandle::from(handle.0), auth));
        if let Err(e) = set {
            release(ctx, handle.0, handle.1);
            return Err(TpmError::tss("setting a device identity key's password")(e));
        }
    }
    Ok(handle)
}

fn release(ctx: &mut Context, handle: KeyHandle, persistent: bool) {
    let result = if persistent {
        ctx.tr_close(&mut handle.into())
    } else {
        ctx.flush_context(handle.into())
    };
    if let Err(e) = result {
        tracing::warn!("releasing a device identity key: {e}");
    }
}

/// The template of the IAK certificate's key type (`detect`).
fn detect(file: &Path, cert: &X509) -> Result<IdentityTemplate, TpmError> {
    let key = cert.public_key().map_err(|e| TpmError::Identity {
        file: file.into(),
        reason: format!("no usable public key: {e}"),
    })?;
    IdentityTemplate::of_key(&key).ok_or_else(|| TpmError::Identity {
        file: file.into(),
        reason: format!(
            "iak_idevid_template = detect: the certificate's key ({:?}, {} bits) is none of the templates H-1 (RSA 2048), H-2 (P-256), H-3 (P-384)",
            key.id(),
            key.bits()
        ),
    })
}

/// A certificate file, PEM or DER, read as a trusted file (root's, in a
/// directory only root can change, bounded in size).
fn read_certificate(path: &Path) -> Result<X509, TpmError> {
    let bad = |reason: String| TpmError::Identity {
        file: path.into(),
        reason,
    };
    let bytes = crate::secure_fs::read_trusted(path).map_err(|e| bad(e.to_string()))?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .map_err(|_| bad("not a PEM or DER certificate".into()))
}
