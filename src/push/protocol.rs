//! The push model's wire format (verifier API v3.0, JSON:API bodies): what
//! the agent sends and how it reads the answers. Pure functions, no I/O.
//! The session messages (proof of possession, token) are in `protocol/session.rs`;
//! here are the attestation messages (capabilities, the verifier's choice,
//! evidence) and the error answers.
//!
//! Only what the AK can do is offered: one hash bank (the AK's), one
//! signature scheme (RSASSA), the AK itself as the certification key. The
//! 7.14 verifier asks for PCRs in every bank it is offered but can check a
//! quote over one bank only, so offering more would break attestation.

mod error;
mod session;

pub use error::ProtocolError;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::algorithms::{HashAlg, SigningAlg};
use crate::attestation::{EvidenceOffer, EvidenceRequest, PushEvidence};
use error::missing;

/// The content type every v3.0 request carries.
pub const JSON_API: &str = "application/vnd.api+json";

/// The capabilities to send: the back end's offer and how this agent
/// names itself in it.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    /// What attestation can offer now.
    pub evidence: &'a EvidenceOffer,
    /// `certification_keys_server_identifier`.
    pub key_id: &'a str,
    /// `uefi_logs_evidence_version`.
    pub uefi_version: &'a str,
    /// Boot time, Unix seconds (constant for a boot).
    pub boot_time: u64,
}

/// `POST /v3.0/agents/{id}/attestations`: the capabilities.
pub fn capabilities(offer: &Offer<'_>) -> Value {
    let bank = offer.evidence.hash.as_str();
    let scheme = offer.evidence.signing.as_str();
    let mut items = vec![json!({
        "evidence_class": "certification",
        "evidence_type": "tpm_quote",
        "capabilities": {
            "component_version": "2.0",
            "hash_algorithms": [bank],
            "signature_schemes": [scheme],
            "available_subjects": {bank: (0..24).collect::<Vec<u8>>()},
            "certification_keys": [{
                "key_class": "asymmetric",
                "key_algorithm": "rsa",
                "key_size": 2048,
                "server_identifier": offer.key_id,
                "public": B64.encode(&offer.evidence.ak_public),
                "allowable_hash_algorithms": [bank],
                "allowable_signature_schemes": [scheme],
            }],
        },
    })];
    if offer.evidence.inventory.uefi_log {
        items.push(json!({
            "evidence_class": "log",
            "evidence_type": "uefi_log",
            "capabilities": {
                "evidence_version": offer.uefi_version,
                "entry_count": 0,
                "supports_partial_access": false,
                "appendable": false,
                "formats": ["application/octet-stream"],
            },
        }));
    }
    if let Some(entries) = offer.evidence.inventory.ima_entries {
        items.push(json!({
            "evidence_class": "log",
            "evidence_type": "ima_log",
            "capabilities": {
                "entry_count": entries,
                "supports_partial_access": true,
                "appendable": true,
                "formats": ["text/plain"],
            },
        }));
    }
    json!({"data": {"type": "attestation", "attributes": {
        "evidence_supported": items,
        "system_info": {"boot_time": offer.boot_time},
    }}})
}

/// One item the verifier asked for, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The quote.
    TpmQuote,
    /// IMA entries.
    ImaLog,
    /// The UEFI log.
    UefiLog,
}

/// What the verifier chose: the items in order and the evidence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The requested items, in the order the evidence must follow.
    pub items: Vec<Requested>,
    /// The back end's request.
    pub request: EvidenceRequest,
}

/// Reads `evidence_requested` from a 201 answer to the capabilities. The
/// quote's hash and scheme must be the AK's: nothing else was offered.
pub fn chosen_parameters(
    answer: &Value,
    hash: HashAlg,
    signing: SigningAlg,
) -> Result<Chosen, ProtocolError> {
    let requested = answer
        .pointer("/data/attributes/evidence_requested")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("evidence_requested"))?;
    let mut items = Vec::with_capacity(requested.len());
    let mut request = EvidenceRequest {
        challenge: Vec::new(),
        pcrs: Vec::new(),
        ima_offset: None,
        uefi_log: false,
    };
    for item in requested {
        let params = &item["chosen_parameters"];
        match item["evidence_type"].as_str() {
            Some("tpm_quote") => {
                let challenge = params["challenge"]
                    .as_str()
                    .ok_or_else(|| missing("tpm_quote challenge"))?;
                request.challenge = B64
                    .decode(challenge)
                    .map_err(|e| ProtocolError(format!("challenge is not base64: {e}")))?;
                if params["hash_algorithm"] != hash.as_str()
                    || params["signature_scheme"] != signing.as_str()
                {
                    return Err(ProtocolError(format!(
                        "the verifier chose {} / {}, but only {} / {} were offered",
                        params["hash_algorithm"],
                        params["signature_scheme"],
                        hash,
                        signing.as_str()
                    )));
                }
                request.pcrs = selected_pcrs(&params["selected_subjects"], hash)?;
                items.push(Requested::TpmQuote);
            }
            Some("ima_log") => {
                let offset = params["starting_offset"]
                    .as_u64()
                    .ok_or_else(|| missing("ima_log starting_offset"))?;
                request.ima_offset = Some(offset);
                items.push(Requested::ImaLog);
            }
            Some("uefi_log") => {
                request.uefi_log = true;
                items.push(Requested::UefiLog);
            }
            other => {
                return Err(ProtocolError(format!(
                    "evidence {other:?} was asked for but never offered"
                )))
            }
        }
    }
    if !items.contains(&Requested::TpmQuote) {
        return Err(missing("tpm_quote in evidence_requested"));
    }
    Ok(Chosen { items, request })
}

fn selected_pcrs(subjects: &Value, hash: HashAlg) -> Result<Vec<u8>, ProtocolError> {
    let subjects = subjects
        .as_object()
        .ok_or_else(|| missing("selected_subjects"))?;
    for (bank, pcrs) in subjects {
        if bank != hash.as_str() && !pcrs.is_null() {
            return Err(ProtocolError(format!(
                "PCRs asked in the {bank} bank; only {hash} was offered"
            )));
        }
    }
    let mut pcrs: Vec<u8> = subjects
        .get(hash.as_str())
        .and_then(Value::as_array)
        .ok_or_else(|| missing("PCRs in the selected bank"))?
        .iter()
        .map(|p| {
            p.as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .filter(|p| *p < 24)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ProtocolError("a selected PCR is not a number from 0 to 23".into()))?;
    pcrs.sort_unstable();
    pcrs.dedup();
    if pcrs.is_empty() {
        return Err(missing("PCR in selected_subjects"));
    }
    Ok(pcrs)
}

/// `PATCH …/attestations/{index}`: the evidence, in the requested order.
pub fn evidence(items: &[Requested], evidence: &PushEvidence) -> Value {
    let collected: Vec<Value> = items
        .iter()
        .map(|item| match item {
            Requested::TpmQuote => json!({
                "evidence_class": "certification",
                "evidence_type": "tpm_quote",
                "data": {
                    "message": B64.encode(&evidence.quote.attest),
                    "signature": B64.encode(&evidence.quote.signature),
                    "subject_data": B64.encode(&evidence.quote.pcr_blob),
                },
            }),
            Requested::ImaLog => {
                let entries = evidence.ima.as_deref().unwrap_or_default();
                json!({
                    "evidence_class": "log",
                    "evidence_type": "ima_log",
                    "data": {
                        "entry_count": entries.matches('\n').count(),
                        "entries": entries,
                    },
                })
            }
            Requested::UefiLog => json!({
                "evidence_class": "log",
                "evidence_type": "uefi_log",
                "data": {"entries": evidence.uefi.as_deref().unwrap_or_default()},
            }),
        })
        .collect();
    json!({"data": {"type": "attestation", "attributes": {"evidence_collected": collected}}})
}

/// `meta.seconds_to_next_attestation` of a 202 answer.
pub fn seconds_to_next(answer: &Value) -> Option<u64> {
    answer
        .pointer("/meta/seconds_to_next_attestation")
        .and_then(Value::as_u64)
}

/// The `detail` (and `code`) of a JSON:API error answer, for messages.
pub fn error_detail(answer: &Value) -> String {
    let error = answer.pointer("/errors/0");
    // The verifier's text goes into log lines: escaped and cut.
    let field = |name: &str| {
        crate::untrusted::escape(error.and_then(|e| e[name].as_str()).unwrap_or_default())
    };
    match (field("code").as_str(), field("detail").as_str()) {
        ("", "") => String::new(),
        ("", detail) => detail.to_string(),
        (code, detail) => format!("{code}: {detail}"),
    }
}

pub use session::{session_challenge, session_proof, session_request, session_token, unix_seconds};

#[cfg(test)]
mod tests;
