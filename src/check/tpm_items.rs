//! The TPM's items of the preflight: `tpm`, `ek_certificate` and `ak`,
//! from one read-only probe.

use openssl::asn1::Asn1Time;
use openssl::x509::X509;

use super::report::{Finding, ANSWER_WITHIN};
use crate::config::Config;
use crate::crypto::name_text;
use crate::tpm::{self, ProbeError, StoredAkState, TpmProbe};

/// `tpm`, `ek_certificate` and `ak`, from one read-only probe.
pub(super) fn tpm_findings(config: &Config, out: &mut Vec<Finding>) {
    let tcti = config.tcti.clone();
    let tpm_fix =
        "check the tcti key (or the TCTI variable) and that the TPM, tpm2-abrmd or swtpm is there";
    let probe: TpmProbe = match tpm::probe_within(config.tpm_config(), ANSWER_WITHIN) {
        Ok(probe) => probe,
        Err(ProbeError::NotStarted) => {
            out.push(Finding::warn(
                "tpm",
                format!("{tcti}: the TPM answers but was reset and not started"),
                "nothing to do: the agent sends TPM2_Startup(CLEAR) at start",
            ));
            return;
        }
        Err(ProbeError::Tpm(e)) => {
            out.push(Finding::fail("tpm", format!("{tcti}: {e}"), tpm_fix));
            return;
        }
        Err(ProbeError::NoAnswer(within)) => {
            out.push(Finding::fail(
                "tpm",
                format!(
                    "{tcti}: no answer within {} s (is another process holding the TPM, e.g. a running agent on swtpm?)",
                    within.as_secs()
                ),
                tpm_fix,
            ));
            return;
        }
    };
    out.push(Finding::ok(
        "tpm",
        format!(
            "{tcti}: manufacturer {:?} ({}), firmware {}, PCR banks {}{}",
            probe.manufacturer.trim(),
            probe.vendor.trim(),
            probe.firmware,
            probe.pcr_banks.join(", "),
            if probe.resource_manager {
                ", through a resource manager"
            } else {
                ", no resource manager"
            }
        ),
    ));
    out.push(ek_certificate(&probe));
    out.extend(super::identity_items::ek_chain(&probe));
    out.extend(super::identity_items::device_identity(config, &probe));
    let store = config.agent_data_path.display();
    out.push(match probe.ak {
        StoredAkState::Loads => Finding::ok("ak", format!("the persisted AK in {store} loads")),
        StoredAkState::Missing => Finding::ok(
            "ak",
            format!("no AK persisted in {store} yet: the agent creates one at its first start"),
        ),
        StoredAkState::Foreign => Finding::warn(
            "ak",
            format!("the AK in {store} was made for another EK or other algorithms"),
            "the agent makes a new AK; a registrar that knows this id refuses it until the agent is deleted there",
        ),
        StoredAkState::DoesNotLoad(e) => Finding::warn(
            "ak",
            format!("the AK in {store} no longer loads: {e}"),
            "the agent makes a new AK; a registrar that knows this id refuses it until the agent is deleted there",
        ),
    });
}

fn ek_certificate(probe: &TpmProbe) -> Finding {
    let index = probe.ek_cert_index;
    let Some(pem) = &probe.ek_cert_pem else {
        return Finding::warn(
            "ek_certificate",
            format!("no EK certificate in NV index {index:#010x}"),
            "tenants with require_ek_cert = True refuse this agent; provision the certificate (swtpm_setup --create-ek-cert) or accept agents without one",
        );
    };
    match X509::from_pem(pem.as_bytes()) {
        Ok(cert) => {
            let issuer = name_text(cert.issuer_name());
            let expired = Asn1Time::days_from_now(0)
                .map(|now| cert.not_after() < now)
                .unwrap_or(false);
            let detail = format!(
                "NV {index:#010x}: issued by {issuer}, valid until {}",
                cert.not_after()
            );
            if expired {
                Finding::warn(
                    "ek_certificate",
                    format!("{detail} (expired)"),
                    "tenants that check validity refuse it; ask the TPM vendor for a current certificate",
                )
            } else {
                Finding::ok("ek_certificate", detail)
            }
        }
        Err(e) => Finding::fail(
            "ek_certificate",
            format!("NV {index:#010x}: {e}"),
            "the NV index does not hold a certificate",
        ),
    }
}
