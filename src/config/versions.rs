//! The API version lists: what the agent serves (`api_versions`) and what
//! it may use with the registrar (`registrar_api_versions`).

use super::values::{self, InvalidValue};
use crate::api_version::ApiVersion;

/// `default` (every supported version), `latest`, or a list of supported versions.
pub(super) fn api_versions(raw: &str) -> Result<Vec<ApiVersion>, InvalidValue> {
    let accepted = || {
        let all: Vec<String> = ApiVersion::SUPPORTED
            .iter()
            .map(ToString::to_string)
            .collect();
        InvalidValue::new(format!(
            "\"default\", \"latest\", or a list drawn from {}",
            all.join(", ")
        ))
    };
    match raw.trim() {
        "default" | "" => return Ok(ApiVersion::SUPPORTED.to_vec()),
        "latest" => return Ok(ApiVersion::SUPPORTED[ApiVersion::SUPPORTED.len() - 1..].to_vec()),
        _ => {}
    }
    let mut versions = values::list(raw)
        .iter()
        .map(|v| v.parse::<ApiVersion>().ok().filter(|v| v.is_supported()))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
        .ok_or_else(accepted)?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}

/// `default` (every registrar version the client knows), or a list of them.
/// Independent of `api_versions`: limiting what the agent serves must not
/// stop it from registering with an older or newer registrar.
pub(super) fn registrar_api_versions(raw: &str) -> Result<Vec<ApiVersion>, InvalidValue> {
    let known = crate::registrar::KNOWN_VERSIONS;
    if matches!(raw.trim(), "default" | "") {
        return Ok(known.to_vec());
    }
    let mut versions = values::list(raw)
        .iter()
        .map(|v| v.parse::<ApiVersion>().ok().filter(|v| known.contains(v)))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            let all: Vec<String> = known.iter().map(ToString::to_string).collect();
            InvalidValue::new(format!(
                "\"default\" or a list drawn from {}",
                all.join(", ")
            ))
        })?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}
