//! Which registrar API version to speak: the highest one the registrar
//! offers in its `/version` answer that `registrar_api_versions` allows.

use serde_json::Value;

use super::error::RegistrarError;
use crate::api_version::ApiVersion;

/// The highest version in a registrar's `/version` answer (`results` or the
/// bare object; `supported_versions` and `current_version`) that `allowed`
/// holds.
pub(super) fn choose_version(
    body: &Value,
    allowed: &[ApiVersion],
) -> Result<ApiVersion, RegistrarError> {
    let fields = body
        .get("results")
        .filter(|r| r.is_object())
        .unwrap_or(body);
    let offered: Vec<ApiVersion> = fields
        .get("supported_versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(fields.get("current_version"))
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    offered
        .iter()
        .copied()
        .filter(|v| allowed.contains(v))
        .max()
        .ok_or_else(|| {
            let mut shown: Vec<String> = offered.iter().map(ToString::to_string).collect();
            shown.sort();
            shown.dedup();
            no_common_version(&shown.join(", "), allowed)
        })
}

pub(super) fn no_common_version(offered: &str, allowed: &[ApiVersion]) -> RegistrarError {
    let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    RegistrarError::Protocol {
        op: "version",
        reason: format!(
            "the registrar offers API {offered}, registrar_api_versions allows {}: no version in common",
            allowed.join(", ")
        ),
    }
}
