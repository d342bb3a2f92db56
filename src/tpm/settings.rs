//! What the TPM owner is told (the TCTI, algorithms, EK handle, AK store)
//! and the public identity it holds once the keys are set up.

use std::path::PathBuf;

use super::device_id::{DeviceIdentityConfig, DeviceKeys};
use crate::algorithms::{EncryptionAlg, HashAlg, SigningAlg};

/// What the owner needs to open the TPM and set up the keys.
#[derive(Debug, Clone)]
pub struct TpmConfig {
    /// TCTI string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// AK signing hash.
    pub hash_alg: HashAlg,
    /// EK template.
    pub encryption_alg: EncryptionAlg,
    /// AK scheme.
    pub signing_alg: SigningAlg,
    /// Persistent EK handle, or `None` to create the EK.
    pub ek_handle: Option<u32>,
    /// Endorsement hierarchy authorization.
    pub owner_auth: crate::secret::Secret<Vec<u8>>,
    /// File that persists the AK between starts.
    pub ak_store: PathBuf,
    /// The IAK and IDevID, when `enable_iak_idevid` is on.
    pub device_identity: Option<DeviceIdentityConfig>,
}

/// The public identity of the TPM, fixed for the owner's lifetime.
#[derive(Debug, Clone)]
pub struct TpmKeys {
    /// EK as TPM2B_PUBLIC (`ek_tpm`).
    pub ek_public: Vec<u8>,
    /// EK public key as PEM SubjectPublicKeyInfo (`hash_ek`).
    pub ek_public_pem: String,
    /// The EK's type, read from its public area (a persistent EK may be of
    /// another type than `tpm_encryption_alg`).
    pub ek_alg: EncryptionAlg,
    /// EK certificate as PEM, the certificate alone (`ekcert`).
    pub ek_cert_pem: Option<String>,
    /// The EK certificate's issuers from NV (0x01c00100–0x01c001ff), PEM.
    pub ek_chain_pem: Vec<String>,
    /// The IAK and IDevID with their certificates, when configured.
    pub device: Option<DeviceKeys>,
    /// AK as TPM2B_PUBLIC (`aik_tpm`).
    pub ak_public: Vec<u8>,
    /// Whether the AK was reloaded from `agent_data_path` rather than created.
    pub ak_reused: bool,
    /// The AK's ESYS handle (informational, for `agent/info`).
    pub ak_handle: u32,
}
