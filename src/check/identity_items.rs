//! The identity items of the preflight beyond the EK certificate: the
//! issuers' chain in NV (`ek_chain`) and the device identity keys
//! (`iak`, `idevid`) checked against their certificates.

use openssl::x509::X509;

use super::report::Finding;
use crate::config::Config;
use crate::crypto::name_text;
use crate::tpm::{IdentityKey, TpmProbe, CHAIN_FIRST, CHAIN_LAST};

/// `ek_chain`: the EK certificate's issuers kept in NV, when there are any.
pub(super) fn ek_chain(probe: &TpmProbe) -> Option<Finding> {
    if probe.ek_chain_pem.is_empty() {
        return None;
    }
    let issuers: Vec<String> = probe
        .ek_chain_pem
        .iter()
        .map(|pem| match X509::from_pem(pem.as_bytes()) {
            Ok(cert) => format!(
                "{} (issued by {}, valid until {})",
                name_text(cert.subject_name()),
                name_text(cert.issuer_name()),
                cert.not_after()
            ),
            Err(e) => format!("unreadable: {e}"),
        })
        .collect();
    Some(Finding::ok(
        "ek_chain",
        format!(
            "{} issuer certificate(s) in NV {CHAIN_FIRST:#010x}–{CHAIN_LAST:#010x}, sent after the EK certificate: {}",
            issuers.len(),
            issuers.join("; ")
        ),
    ))
}

/// `iak` and `idevid`: each certificate with whether it matches its TPM
/// key, when `enable_iak_idevid` is on.
pub(super) fn device_identity(config: &Config, probe: &TpmProbe) -> Vec<Finding> {
    let (Some(identity), Some(found)) = (&config.device_identity, &probe.device) else {
        return Vec::new();
    };
    match found {
        Ok(keys) => vec![
            key_finding("iak", &keys.iak, keys.template.name()),
            key_finding("idevid", &keys.idevid, keys.template.name()),
        ],
        Err(e) => vec![Finding::fail(
            "iak_idevid",
            e.clone(),
            format!(
                "set iak_cert ({}) and idevid_cert ({}) to the maker's certificates of this TPM's keys, and iak_idevid_template or the handles to how the keys were made",
                identity.iak.cert.display(),
                identity.idevid.cert.display()
            ),
        )],
    }
}

fn key_finding(item: &'static str, key: &IdentityKey, template: &str) -> Finding {
    let detail = format!(
        "matches the TPM key (template {template}): {}, issued by {}, valid until {}",
        key.subject, key.issuer, key.not_after
    );
    let expired = openssl::asn1::Asn1Time::days_from_now(0)
        .ok()
        .zip(X509::from_pem(key.cert_pem.as_bytes()).ok())
        .is_some_and(|(now, cert)| cert.not_after() < now);
    if expired {
        Finding::warn(
            item,
            format!("{detail} (expired)"),
            "the registrar does not check validity, but a relying party may; ask the maker for a current certificate",
        )
    } else {
        Finding::ok(item, detail)
    }
}
