//! `keylime_agent check`: a preflight an operator runs before starting the
//! service. One finding per item, OK / WARN / FAIL with the reason and the
//! fix. It reads only: no TPM2_Startup, no key created or written, nothing
//! mounted, no file changed.

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::x509::X509;

use crate::config::Mode;
use crate::config::{Config, ConfigError, Loaded};
use crate::crypto::name_text;
use crate::evidence::tcg::{bank_name, EventLog};
use crate::http_client::{self, ServerTrust};
use crate::pull::payload::secure_dir;
use crate::registrar::RegistrarClient;

mod identity_items;
mod report;
mod tpm_items;

use report::ANSWER_WITHIN;
pub use report::{Finding, Report, Status};
use tpm_items::tpm_findings;

/// Checks everything the agent for `mode` needs, from `loaded` (the
/// config, or why it did not load).
pub async fn run(loaded: Result<Loaded, ConfigError>, files: &[String], mode: Mode) -> Report {
    let mut report = Report::default();
    let out = &mut report.findings;
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            out.push(Finding::fail(
                "config",
                e.to_string(),
                "correct the value named (keylime-agent.conf documents every key)",
            ));
            return report;
        }
    };
    let from = if files.is_empty() {
        "built-in defaults only (no config file found)".to_string()
    } else {
        format!("loaded from {}", files.join(", "))
    };
    out.push(Finding::ok("config", from));
    for warning in &loaded.warnings {
        out.push(Finding::warn(
            "config",
            warning.clone(),
            "remove or correct that key",
        ));
    }
    let config = loaded.config;
    tpm_findings(&config, out);
    out.push(registrar(&config).await);
    match mode {
        Mode::Pull => {
            if config.enable_agent_mtls {
                out.push(client_ca(&config.trusted_client_ca));
            } else {
                out.push(Finding::warn(
                    "trusted_client_ca",
                    "enable_agent_mtls = false: the API is plain HTTP and anyone may ask for quotes",
                    "set enable_agent_mtls = true",
                ));
            }
            out.push(secure_directory(&config));
        }
        Mode::Push => out.push(verifier(&config).await),
    }
    out.push(log_file(
        "ima_log",
        &config.ima_ml_path,
        "quotes go out without an IMA list; enable IMA (ima_policy=tcb) or correct ima_ml_path",
    ));
    out.push(uefi_log(&config));
    let root = nix::unistd::geteuid().is_root();
    let lowered = config.lowered_protection(mode == Mode::Pull, root);
    // An empty run_as that lowers protection is the run_as finding itself.
    if !lowered.iter().any(|l| l.key == "run_as") {
        out.push(run_as(&config));
    }
    for lowered in lowered {
        out.push(Finding::warn(lowered.key, lowered.what, lowered.fix));
    }
    report
}

async fn registrar(config: &Config) -> Finding {
    let endpoint = config.registrar_endpoint();
    let client = match RegistrarClient::new(&endpoint, config.registrar_retry.clone()) {
        Ok(client) => client,
        Err(e) => {
            return Finding::fail(
                "registrar",
                e.to_string(),
                "correct registrar_tls_ca_cert (the registrar's CA file)",
            )
        }
    };
    let base = client.base().to_string();
    match tokio::time::timeout(ANSWER_WITHIN, client.version()).await {
        Ok(Ok(version)) => Finding::ok("registrar", format!("{base} answers; API {version} will be used")),
        Ok(Err(e)) => Finding::fail(
            "registrar",
            format!("{base}: {e}"),
            "start the registrar, or correct registrar_ip / registrar_port (registrar_tls_port with TLS)",
        ),
        Err(_) => Finding::fail(
            "registrar",
            format!("{base}: no answer within {} s", ANSWER_WITHIN.as_secs()),
            "check that the registrar runs and that no firewall drops the connection",
        ),
    }
}

async fn verifier(config: &Config) -> Finding {
    let settings = match config.push_settings() {
        Ok(settings) => settings,
        Err(e) => return Finding::fail("verifier", e.to_string(), "set the push-model keys"),
    };
    let trust = ServerTrust {
        ca_file: settings.verifier_tls_ca_cert.clone(),
        ca_key: "verifier_tls_ca_cert",
    };
    let client = match http_client::build(Some(&trust), ANSWER_WITHIN) {
        Ok(client) => client,
        Err(e) => return Finding::fail("verifier", e.to_string(), "correct verifier_tls_ca_cert"),
    };
    let url = format!("{}/version", settings.verifier_url);
    let request = http_client::Outgoing::new(http_client::Method::GET, &url);
    match client.exchange(request, "verifier_url").await {
        Ok(answer) => Finding::ok(
            "verifier",
            format!(
                "{} answers (GET /version: {})",
                settings.verifier_url, answer.status
            ),
        ),
        Err(e) => Finding::fail(
            "verifier",
            e.to_string(),
            "start the verifier (in push mode), or correct verifier_url",
        ),
    }
}

fn client_ca(files: &[std::path::PathBuf]) -> Finding {
    let fix = "point trusted_client_ca at the verifier's and tenant's CA (cv_ca/cacert.crt)";
    let mut summaries = Vec::new();
    for file in files {
        let pem = match std::fs::read(file) {
            Ok(pem) => pem,
            Err(e) => {
                return Finding::fail("trusted_client_ca", format!("{}: {e}", file.display()), fix)
            }
        };
        let certs = match X509::stack_from_pem(&pem) {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                return Finding::fail(
                    "trusted_client_ca",
                    format!("{}: no PEM certificate in it", file.display()),
                    fix,
                )
            }
            Err(e) => {
                return Finding::fail("trusted_client_ca", format!("{}: {e}", file.display()), fix)
            }
        };
        let Ok(now) = Asn1Time::days_from_now(0) else {
            continue;
        };
        for cert in &certs {
            let subject = name_text(cert.subject_name());
            if cert.not_after() < now {
                return Finding::fail(
                    "trusted_client_ca",
                    format!(
                        "{}: {subject} expired on {}",
                        file.display(),
                        cert.not_after()
                    ),
                    "renew the CA (keylime_ca) and point trusted_client_ca at the new one",
                );
            }
            if cert.not_before() > now {
                return Finding::fail(
                    "trusted_client_ca",
                    format!(
                        "{}: {subject} is valid only from {}",
                        file.display(),
                        cert.not_before()
                    ),
                    "check the machine's clock",
                );
            }
            summaries.push(format!("{subject} until {}", cert.not_after()));
        }
    }
    Finding::ok("trusted_client_ca", summaries.join("; "))
}

fn secure_directory(config: &Config) -> Finding {
    let dir = &config.payload.secure_dir;
    match secure_dir::is_tmpfs_mount(dir) {
        Ok(true) => Finding::ok("secure_dir", format!("{} is a mounted tmpfs", dir.display())),
        _ if secure_dir::may_mount() => Finding::ok(
            "secure_dir",
            format!(
                "{} is not mounted yet: the agent (root) mounts a {} tmpfs there at start",
                dir.display(),
                config.payload.secure_size
            ),
        ),
        _ => Finding::warn(
            "secure_dir",
            format!(
                "{} is not a tmpfs and the agent may not mount one (no CAP_SYS_ADMIN): K and payloads would be stored on disk",
                dir.display()
            ),
            "mount it first (var-lib-keylime-secure.mount) or start the agent as root",
        ),
    }
}

fn log_file(item: &'static str, path: &Path, missing_fix: &str) -> Finding {
    match std::fs::File::open(path) {
        Ok(mut file) => {
            let mut head = [0u8; 64];
            match std::io::Read::read(&mut file, &mut head) {
                Ok(_) => Finding::ok(item, format!("{} is readable", path.display())),
                Err(e) => Finding::fail(
                    item,
                    format!("{}: {e}", path.display()),
                    "start the agent as a user that can read it",
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::warn(
            item,
            format!("{} does not exist", path.display()),
            missing_fix,
        ),
        Err(e) => Finding::fail(
            item,
            format!("{}: {e}", path.display()),
            "start the agent as a user that can read it",
        ),
    }
}

/// The boot log: readable, a TCG2 log, with the quoted bank.
fn uefi_log(config: &Config) -> Finding {
    let path = &config.measuredboot_ml_path;
    let readable = log_file(
        "uefi_log",
        path,
        "quotes go out without a boot log; measured-boot policies need it (correct measuredboot_ml_path)",
    );
    if readable.status != Status::Ok {
        return readable;
    }
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| EventLog::parse(&bytes).map_err(|e| e.to_string()));
    let log = match parsed {
        Ok(log) => log,
        Err(e) => {
            return Finding::warn(
                "uefi_log",
                format!("{} is not a TCG2 event log: {e}", path.display()),
                "the agent will not send it; point measuredboot_ml_path at the firmware's binary_bios_measurements",
            )
        }
    };
    let banks: Vec<String> = log.banks.iter().map(|(alg, _)| bank_name(*alg)).collect();
    let pcrs: Vec<String> = (0..24)
        .filter(|p| log.covered_pcrs() & 1 << p != 0)
        .map(|p: u32| p.to_string())
        .collect();
    let summary = format!(
        "{}: TCG2 log, {} events, banks {}, PCRs {}",
        path.display(),
        log.events.len(),
        banks.join(", "),
        pcrs.join(",")
    );
    let quoted = config.tpm_hash_alg;
    if log.banks.iter().any(|(alg, _)| *alg == quoted.tpm_alg_id()) {
        Finding::ok("uefi_log", summary)
    } else {
        Finding::warn(
            "uefi_log",
            format!(
                "{summary}: no {} bank, which the agent quotes",
                quoted.as_str()
            ),
            "the agent will not send it; set tpm_hash_alg to a bank the log has",
        )
    }
}

fn run_as(config: &Config) -> Finding {
    let Some(run_as) = &config.run_as else {
        return Finding::ok(
            "run_as",
            format!(
                "not set: the agent keeps its user (uid {})",
                nix::unistd::geteuid()
            ),
        );
    };
    let fix = "create the account (useradd --system keylime) or correct run_as";
    match nix::unistd::User::from_name(&run_as.user) {
        Ok(Some(_)) => {}
        Ok(None) => return Finding::fail("run_as", format!("no user {:?}", run_as.user), fix),
        Err(e) => return Finding::fail("run_as", format!("{:?}: {e}", run_as.user), fix),
    }
    if let Some(group) = &run_as.group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(_)) => {}
            Ok(None) => return Finding::fail("run_as", format!("no group {group:?}"), fix),
            Err(e) => return Finding::fail("run_as", format!("{group:?}: {e}"), fix),
        }
    }
    let named = match &run_as.group {
        Some(g) => format!("{}:{g}", run_as.user),
        None => run_as.user.clone(),
    };
    Finding::ok("run_as", format!("{named} exists"))
}
