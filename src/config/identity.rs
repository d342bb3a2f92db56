//! The device identity keys (`enable_iak_idevid` and the `iak_*`/`idevid_*`
//! keys, as upstream names them): off by default.

use std::path::Path;

use super::error::ConfigError;
use super::raw::RawAgentSection;
use super::values::{self, InvalidValue, Parsed};
use crate::secret::Secret;
use crate::tpm::{DeviceIdentityConfig, IdentityKeyConfig, IdentityTemplate, TEMPLATE_ACCEPTED};

/// The IAK/IDevID settings, or `None` when `enable_iak_idevid` is off.
pub(super) fn device_identity(
    raw: &RawAgentSection,
    dir: &Path,
) -> Result<Option<DeviceIdentityConfig>, ConfigError> {
    if !raw.parse("enable_iak_idevid", "false", values::boolean)? {
        return Ok(None);
    }
    let key = |name: &str| -> Result<IdentityKeyConfig, ConfigError> {
        let cert_key = format!("{name}_cert");
        let default_file = format!("{name}-cert.crt");
        Ok(IdentityKeyConfig {
            handle: raw.parse(&format!("{name}_handle"), "", persistent_handle)?,
            password: Secret::new(raw.parse(&format!("{name}_password"), "", values::tpm_auth)?),
            cert: values::path_or_default(
                raw.get(&cert_key).unwrap_or("default"),
                dir,
                &default_file,
            ),
        })
    };
    Ok(Some(DeviceIdentityConfig {
        template: raw.parse("iak_idevid_template", "detect", |v| {
            IdentityTemplate::parse(v.trim()).map_err(|_| InvalidValue::new(TEMPLATE_ACCEPTED))
        })?,
        iak: key("iak")?,
        idevid: key("idevid")?,
    }))
}

/// A persistent handle (0x81000000–0x81ffffff), or empty to recreate the
/// key from its template.
fn persistent_handle(raw: &str) -> Parsed<Option<u32>> {
    let refused = || {
        InvalidValue::new(
            "empty (recreate from the template) or a persistent handle from 0x81000000 to 0x81ffffff",
        )
    };
    match raw.trim() {
        "" => Ok(None),
        "generate" => Err(refused()),
        other => values::ek_handle(other).map_err(|_| refused()),
    }
}
