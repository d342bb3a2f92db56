//! The session messages of the push protocol: the proof-of-possession
//! request and challenge, the proof, and the bearer token with its expiry.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::error::{missing, ProtocolError};

/// `POST /v3.0/sessions`: ask for a proof-of-possession challenge.
pub fn session_request(agent_id: &str) -> Value {
    json!({"data": {"type": "session", "attributes": {
        "agent_id": agent_id,
        "authentication_supported": [
            {"authentication_class": "pop", "authentication_type": "tpm_pop"}
        ]
    }}})
}

/// The session id and the decoded challenge of a session answer.
pub fn session_challenge(answer: &Value) -> Result<(String, Vec<u8>), ProtocolError> {
    let id = answer
        .pointer("/data/id")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("data.id in the session answer"))?;
    let challenge = answer
        .pointer("/data/attributes/authentication_requested")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["authentication_type"] == "tpm_pop")
        .and_then(|a| a.pointer("/chosen_parameters/challenge"))
        .and_then(Value::as_str)
        .ok_or_else(|| missing("tpm_pop challenge in the session answer"))?;
    let challenge = B64
        .decode(challenge)
        .map_err(|e| ProtocolError(format!("session challenge is not base64: {e}")))?;
    Ok((id.to_string(), challenge))
}

/// `PATCH /v3.0/sessions/{id}`: the TPM2_Certify proof.
pub fn session_proof(agent_id: &str, session_id: &str, attest: &[u8], signature: &[u8]) -> Value {
    json!({"data": {"type": "session", "id": session_id, "attributes": {
        "agent_id": agent_id,
        "authentication_provided": [{
            "authentication_class": "pop",
            "authentication_type": "tpm_pop",
            "data": {"message": B64.encode(attest), "signature": B64.encode(signature)}
        }]
    }}})
}

/// The outcome of a proof: the bearer token and its expiry (RFC 3339), or
/// `None` when the verifier did not accept it.
pub fn session_token(answer: &Value) -> Option<(String, Option<String>)> {
    let attrs = answer.pointer("/data/attributes")?;
    if attrs["evaluation"] != "pass" {
        return None;
    }
    let token = attrs["token"].as_str()?.to_string();
    let expires = attrs["token_expires_at"].as_str().map(str::to_string);
    Some((token, expires))
}

/// Seconds from the Unix epoch of an RFC 3339 time such as
/// `2026-11-24T18:19:30.085554+00:00` (fractions dropped).
pub fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let (date, rest) = rfc3339.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let time_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(time_end);
    let time = time.split('.').next()?;
    let mut hms = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z.get(1..)?.split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Days from 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
