//! `keylime_agent check`: a preflight an operator runs before starting the
//! service. One finding per item, OK / WARN / FAIL with the reason and the
//! fix. It reads only: no TPM2_Startup, no key created or written, nothing
//! mounted, no file changed.

use std::path::Path;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::x509::X509;

use crate::agent::{registrar_endpoint, tpm_config, FrontEnd};
use crate::config::{Config, ConfigError, Loaded};
use crate::evidence::tcg::{bank_name, EventLog};
use crate::http_client::{self, ServerTrust};
use crate::payload::secure_dir;
use crate::registrar::RegistrarClient;
use crate::tpm::{self, ProbeError, StoredAkState, TpmProbe};

mod report;
pub use report::{Finding, Report, Status};

/// How long the TPM and each peer get to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Checks everything the agent for `front` needs, from `loaded` (the
/// config, or why it did not load).
pub async fn run(loaded: Result<Loaded, ConfigError>, files: &[String], front: FrontEnd) -> Report {
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
    match front {
        FrontEnd::Pull => {
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
        FrontEnd::Push => out.push(verifier(&config).await),
    }
    out.push(log_file(
        "ima_log",
        &config.ima_ml_path,
        "quotes go out without an IMA list; enable IMA (ima_policy=tcb) or correct ima_ml_path",
    ));
    out.push(uefi_log(&config));
    let root = nix::unistd::geteuid().is_root();
    let lowered = config.lowered_protection(front == FrontEnd::Pull, root);
    // An empty run_as that lowers protection is the run_as finding itself.
    if !lowered.iter().any(|l| l.key == "run_as") {
        out.push(run_as(&config));
    }
    for lowered in lowered {
        out.push(Finding::warn(lowered.key, lowered.what, lowered.fix));
    }
    report
}

/// `tpm`, `ek_certificate` and `ak`, from one read-only probe.
fn tpm_findings(config: &Config, out: &mut Vec<Finding>) {
    let tcti = config.tcti.clone();
    let tpm_fix =
        "check the tcti key (or the TCTI variable) and that the TPM, tpm2-abrmd or swtpm is there";
    let probe: TpmProbe = match tpm::probe_within(tpm_config(config), ANSWER_WITHIN) {
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

/// A certificate name as `CN=…, O=…`.
pub(crate) fn name_text(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect();
    parts.join(", ")
}

async fn registrar(config: &Config) -> Finding {
    let endpoint = registrar_endpoint(config);
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
    match client.get(&url).send().await {
        Ok(response) => Finding::ok(
            "verifier",
            format!(
                "{} answers (GET /version: {})",
                settings.verifier_url,
                response.status().as_u16()
            ),
        ),
        Err(e) => Finding::fail(
            "verifier",
            http_client::RequestFailure::classify(&e, &url, Some(&trust), "verifier_url")
                .to_string(),
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
