//! `keylime_agent info [--json]`: what an operator or an inventory system
//! wants to know about this machine and its agent. Read-only, like
//! `check`: the TPM is probed without changes, a generated id is read but
//! never created.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::x509::X509;
use serde_json::{json, Value};

use crate::config::Config;
use crate::config::Mode;
use crate::identity::{AgentIdSource, GENERATED_ID_FILE};
use crate::tpm::{self, ProbeError, StoredAkState, TpmProbe};

/// How long the TPM gets to answer.
const TPM_WITHIN: Duration = Duration::from_secs(10);

/// Everything `info` reports, as one JSON object.
pub fn collect(config: &Config, mode: Mode) -> Value {
    let probe = probe_tpm(config);
    let (id, id_source) = agent_id(config, probe.as_ref().ok());
    let endpoint = config.registrar_endpoint();
    json!({
        "agent": {
            "id": id,
            "id_source": id_source,
            "mode": match mode {
                Mode::Pull => "pull (keylime_agent)",
                Mode::Push => "push (keylime_push_model_agent)",
            },
            "version": env!("CARGO_PKG_VERSION"),
            "build": {
                "rustc": env!("BUILD_RUSTC_VERSION"),
                "date": env!("BUILD_DATE"),
                "git_revision": env!("BUILD_GIT_REVISION"),
            },
            "contact": match mode {
                Mode::Pull => json!(format!("{}:{}", config.contact_ip, config.contact_port)),
                Mode::Push => Value::Null,
            },
            "registrar": format!(
                "{}://{}:{}",
                if endpoint.tls.is_some() { "https" } else { "http" },
                endpoint.host,
                endpoint.port
            ),
        },
        "host": host(),
        "tpm": tpm_section(config, &probe),
    })
}

/// The report as lines of `section.key: value` for a terminal.
pub fn text(info: &Value) -> String {
    let mut out = String::new();
    flatten(&mut out, "", info);
    out
}

fn flatten(out: &mut String, prefix: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(out, &name, inner);
            }
        }
        Value::Array(items) => {
            let joined: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            let _ = writeln!(out, "{prefix}: {}", joined.join(", "));
        }
        Value::String(s) => {
            let _ = writeln!(out, "{prefix}: {s}");
        }
        other => {
            let _ = writeln!(out, "{prefix}: {other}");
        }
    }
}

fn probe_tpm(config: &Config) -> Result<TpmProbe, String> {
    tpm::probe_within(config.tpm_config(), TPM_WITHIN).map_err(|e| match e {
        ProbeError::NotStarted => "the TPM was reset and not started".into(),
        ProbeError::Tpm(e) => e.to_string(),
        ProbeError::NoAnswer(within) => format!("no answer within {} s", within.as_secs()),
    })
}

/// The id and how it is derived; a generated id is read, never made.
fn agent_id(config: &Config, probe: Option<&TpmProbe>) -> (Value, String) {
    match &config.agent_id {
        AgentIdSource::Explicit(id) => (json!(id), "the uuid key".into()),
        AgentIdSource::Generate => {
            let file = config.keylime_dir.join(GENERATED_ID_FILE);
            match std::fs::read_to_string(&file) {
                Ok(id) => (
                    json!(id.trim()),
                    format!("generated once, kept in {}", file.display()),
                ),
                Err(_) => (
                    Value::Null,
                    format!(
                        "uuid = \"generate\": made at the first start and kept in {}",
                        file.display()
                    ),
                ),
            }
        }
        source => {
            let how = match source {
                AgentIdSource::HashEk => "the SHA-256 of the EK public key (uuid = \"hash_ek\")",
                AgentIdSource::Dmidecode => "the SMBIOS system UUID (uuid = \"dmidecode\")",
                _ => "the host name (uuid = \"hostname\")",
            };
            let pem = probe.map(|p| p.ek_public_pem.as_str()).unwrap_or("");
            let id = source
                .resolve(&config.keylime_dir, pem)
                .ok()
                .filter(|_| !matches!(source, AgentIdSource::HashEk) || !pem.is_empty())
                .map_or(Value::Null, |id| json!(id.as_str()));
            (id, how.into())
        }
    }
}

fn host() -> Value {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let boot = crate::evidence::boot_time(Path::new("/proc/stat")).ok();
    let uptime = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok());
    json!({
        "hostname": read("/proc/sys/kernel/hostname"),
        "os": os,
        "kernel": format!("{} {}", read("/proc/sys/kernel/osrelease"), read("/proc/sys/kernel/version")),
        "boot_time": boot.map(|b| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(b)).to_string()
        }),
        "boot_time_unix": boot,
        "uptime_seconds": uptime.map(|u| u.floor() as u64),
        "now": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
}

fn tpm_section(config: &Config, probe: &Result<TpmProbe, String>) -> Value {
    let ek_handle = match config.ek_handle {
        Some(handle) => format!("{handle:#010x} (persistent, from ek_handle)"),
        None => "transient, created at each start from the TCG default template".into(),
    };
    let mut section = json!({
        "tcti": config.tcti,
        "ek": {
            "algorithm": config.tpm_encryption_alg.sized_name(),
            "handle": ek_handle,
        },
        "ak": {
            "hash_alg": config.tpm_hash_alg.as_str(),
            "signing_alg": config.tpm_signing_alg.as_str(),
            "handle": "transient, loaded at start from the persisted blob",
            "store": config.agent_data_path.display().to_string(),
        },
    });
    match probe {
        Ok(p) => {
            section["manufacturer"] = json!(p.manufacturer.trim());
            section["vendor"] = json!(p.vendor.split_whitespace().collect::<Vec<_>>().join(" "));
            section["firmware_version"] = json!(p.firmware);
            section["pcr_banks"] = json!(p.pcr_banks);
            section["resource_manager"] = json!(p.resource_manager);
            if let Some(alg) = p.ek_alg {
                section["ek"]["algorithm"] = json!(alg.sized_name());
            }
            section["ek"]["chain"] = json!(p
                .ek_chain_pem
                .iter()
                .filter_map(|pem| X509::from_pem(pem.as_bytes()).ok())
                .map(|cert| json!({
                    "subject": crate::crypto::name_text(cert.subject_name()),
                    "issuer": crate::crypto::name_text(cert.issuer_name()),
                    "not_after": cert.not_after().to_string(),
                }))
                .collect::<Vec<_>>());
            if let Some(device) = &p.device {
                section["device_identity"] = device_identity(device);
            }
            section["ek"]["certificate"] = match &p.ek_cert_pem {
                Some(pem) => match X509::from_pem(pem.as_bytes()) {
                    Ok(cert) => json!({
                        "nv_index": format!("{:#010x}", p.ek_cert_index),
                        "issuer": crate::crypto::name_text(cert.issuer_name()),
                        "not_after": cert.not_after().to_string(),
                    }),
                    Err(e) => json!(format!("unreadable: {e}")),
                },
                None => json!(format!("none in NV {:#010x}", p.ek_cert_index)),
            };
            section["ak"]["state"] = json!(match &p.ak {
                StoredAkState::Loads => "persisted, loads".to_string(),
                StoredAkState::Missing => "not created yet".to_string(),
                StoredAkState::Foreign => "persisted for another EK or algorithm".to_string(),
                StoredAkState::DoesNotLoad(e) => format!("persisted, does not load: {e}"),
            });
        }
        Err(e) => section["error"] = json!(e),
    }
    section
}

/// The IAK and IDevID as the probe found them, or why they cannot be used.
fn device_identity(found: &Result<crate::tpm::DeviceKeys, String>) -> Value {
    let key = |k: &crate::tpm::IdentityKey| {
        json!({
            "subject": k.subject,
            "issuer": k.issuer,
            "not_after": k.not_after,
            "matches_tpm": true,
        })
    };
    match found {
        Ok(keys) => json!({
            "template": keys.template.name(),
            "iak": key(&keys.iak),
            "idevid": key(&keys.idevid),
        }),
        Err(e) => json!({ "error": e }),
    }
}
