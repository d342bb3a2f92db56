//! Unit tests of `protocol`.

use super::*;
use crate::attestation::{EvidenceInventory, EvidenceOffer};
use crate::tpm::QuoteParts;

#[test]
fn rfc3339_times() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        unix_seconds("2026-11-24T18:19:30.085554+00:00"),
        Some(1_795_544_370)
    );
    assert_eq!(
        unix_seconds("2026-11-24T19:19:30+01:00"),
        Some(1_795_544_370)
    );
    assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
    for bad in ["", "2026-11-24", "2026-13-01T00:00:00Z", "soon"] {
        assert_eq!(unix_seconds(bad), None, "{bad}");
    }
}

#[test]
fn session_answers() {
    let challenge = json!({"data": {"type": "session", "id": "29b5", "attributes": {
        "agent_id": "a", "authentication_requested": [{"authentication_class": "pop",
        "authentication_type": "tpm_pop", "chosen_parameters": {"challenge": "KiGffa6YscdMAzKkBYrZsQ=="}}]}}});
    let (id, bytes) = session_challenge(&challenge).expect("challenge");
    assert_eq!((id.as_str(), bytes.len()), ("29b5", 16));
    let pass = json!({"data": {"attributes": {"evaluation": "pass", "token": "29b5.xyz",
        "token_expires_at": "2026-11-24T18:19:30.085554+00:00"}}});
    assert_eq!(
        session_token(&pass),
        Some((
            "29b5.xyz".into(),
            Some("2026-11-24T18:19:30.085554+00:00".into())
        ))
    );
    let fail = json!({"data": {"attributes": {"evaluation": "fail", "token_expires_at": null}}});
    assert_eq!(session_token(&fail), None);
    let proof = session_proof("a", "29b5", b"attest", b"sig");
    assert_eq!(
        proof["data"]["attributes"]["authentication_provided"][0]["data"]["message"],
        B64.encode(b"attest")
    );
}

fn offer(inventory: EvidenceInventory) -> Value {
    let evidence = EvidenceOffer {
        hash: HashAlg::Sha256,
        signing: SigningAlg::RsaSsa,
        ak_public: b"ak".to_vec(),
        inventory,
    };
    capabilities(&Offer {
        evidence: &evidence,
        key_id: "ak",
        uefi_version: "2.1",
        boot_time: 1_700_000_000,
    })
}

#[test]
fn capabilities_offer_one_bank_and_the_logs_present() {
    let body = offer(EvidenceInventory {
        ima_entries: Some(8),
        uefi_log: false,
    });
    let items = body["data"]["attributes"]["evidence_supported"]
        .as_array()
        .expect("items");
    assert_eq!(items.len(), 2, "quote and IMA, no UEFI log: {body}");
    let quote = &items[0]["capabilities"];
    assert_eq!(quote["hash_algorithms"], json!(["sha256"]));
    assert_eq!(
        quote["available_subjects"]["sha256"]
            .as_array()
            .map(Vec::len),
        Some(24)
    );
    assert_eq!(
        quote["available_subjects"].as_object().map(|o| o.len()),
        Some(1)
    );
    assert_eq!(quote["certification_keys"][0]["public"], B64.encode(b"ak"));
    assert_eq!(items[1]["capabilities"]["entry_count"], 8);
    assert_eq!(
        body["data"]["attributes"]["system_info"]["boot_time"],
        1_700_000_000
    );
    let none = offer(EvidenceInventory {
        ima_entries: None,
        uefi_log: true,
    });
    let types: Vec<&str> = none["data"]["attributes"]["evidence_supported"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["evidence_type"].as_str())
        .collect();
    assert_eq!(types, ["tpm_quote", "uefi_log"]);
}

fn answer(subjects: Value, hash: &str) -> Value {
    json!({"data": {"type": "attestation", "attributes": {"stage": "awaiting_evidence",
        "evidence_requested": [
            {"evidence_class": "certification", "evidence_type": "tpm_quote", "chosen_parameters": {
                "challenge": "WBjsJZ3mzVyaXd5rEuSS4A==", "signature_scheme": "rsassa",
                "hash_algorithm": hash, "selected_subjects": subjects}},
            {"evidence_class": "log", "evidence_type": "ima_log",
             "chosen_parameters": {"starting_offset": 5, "format": "text/plain"}}]}}})
}

#[test]
fn chosen_parameters_become_one_request() {
    let chosen = chosen_parameters(
        &answer(json!({"sha256": [17, 10], "sha1": null}), "sha256"),
        HashAlg::Sha256,
        SigningAlg::RsaSsa,
    )
    .expect("chosen");
    assert_eq!(chosen.items, [Requested::TpmQuote, Requested::ImaLog]);
    assert_eq!(chosen.request.pcrs, [10, 17]);
    assert_eq!(chosen.request.ima_offset, Some(5));
    assert_eq!(chosen.request.challenge.len(), 16);
    assert!(!chosen.request.uefi_log);
    for (subjects, hash) in [
        (json!({"sha256": [10], "sha1": [10]}), "sha256"),
        (json!({"sha256": [10]}), "sha512"),
        (json!({"sha256": []}), "sha256"),
        (json!({"sha256": [24]}), "sha256"),
    ] {
        assert!(
            chosen_parameters(
                &answer(subjects.clone(), hash),
                HashAlg::Sha256,
                SigningAlg::RsaSsa
            )
            .is_err(),
            "{subjects} {hash}"
        );
    }
}

#[test]
fn evidence_follows_the_requested_order() {
    let evidence = PushEvidence {
        quote: QuoteParts {
            attest: b"a".to_vec(),
            signature: b"s".to_vec(),
            pcr_blob: b"p".to_vec(),
        },
        ima: Some("10 x ima-ng sha256:00 /a\n10 y ima-ng sha256:01 /b\n".into()),
        uefi: None,
    };
    let body = evidence_body(&evidence);
    let collected = &body["data"]["attributes"]["evidence_collected"];
    assert_eq!(collected[0]["evidence_type"], "ima_log");
    assert_eq!(collected[0]["data"]["entry_count"], 2);
    assert_eq!(collected[1]["data"]["subject_data"], B64.encode(b"p"));
    assert_eq!(
        seconds_to_next(&json!({"meta": {"seconds_to_next_attestation": 2}})),
        Some(2)
    );
    assert_eq!(
        error_detail(
            &json!({"errors": [{"status": "429", "code": "premature_attestation", "detail": "wait"}]})
        ),
        "premature_attestation: wait"
    );
}

fn evidence_body(e: &PushEvidence) -> Value {
    evidence(&[Requested::ImaLog, Requested::TpmQuote], e)
}
