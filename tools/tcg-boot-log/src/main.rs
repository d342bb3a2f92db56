//! `tcg_boot_log`: writes a TCG2 boot event log shaped like a UEFI Secure
//! Boot of shim, GRUB and Linux, and replays a log into a TPM's PCRs the
//! way firmware would have extended them. It gives the agent's tests (and
//! anyone trying measured boot on swtpm) a boot log whose events and PCRs
//! agree, which a software TPM otherwise lacks.
//!
//! ```text
//! tcg_boot_log write LOG --keys DIR [--banks sha256,sha1] [--secure-boot off]
//!                        [--kernel-version V] [--kernel-build N]
//! tcg_boot_log replay LOG [--tcti TCTI] [--withhold EVENT]
//! tcg_boot_log pcrs LOG
//! ```
//!
//! `write` and `pcrs` print the PCR values the log replays to, as JSON;
//! `replay` extends every event (but a withheld one) into the TPM and,
//! unless an event was withheld, checks that the PCRs then equal the log.

mod encode;
mod profile;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use keylime_agent::evidence::tcg::{bank_name, EventLog};

#[derive(Parser)]
#[command(about = "Write a UEFI Secure Boot event log, or replay one into a TPM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the log of a Secure Boot of shim, GRUB and a kernel.
    Write {
        /// Where to write the log.
        log: PathBuf,
        /// Directory of the Secure Boot certificates (made there if missing).
        #[arg(long)]
        keys: PathBuf,
        /// The banks, comma-separated (sha1, sha256, sha384, sha512).
        #[arg(long, default_value = "sha256")]
        banks: String,
        /// The SecureBoot variable: on or off.
        #[arg(long, default_value = "on")]
        secure_boot: String,
        /// The kernel version in paths and on the command line.
        #[arg(long)]
        kernel_version: Option<String>,
        /// Another build of the kernel (other bytes under the same names).
        #[arg(long, default_value_t = 1)]
        kernel_build: u32,
    },
    /// Extend every event of a log into the TPM's PCRs.
    Replay {
        /// The log.
        log: PathBuf,
        /// The TPM (a tss TCTI string); default: the TCTI variable.
        #[arg(long)]
        tcti: Option<String>,
        /// Leave this event (1 = the first after the Spec ID event) out.
        #[arg(long)]
        withhold: Option<usize>,
    },
    /// Print the PCR values a log replays to.
    Pcrs {
        /// The log.
        log: PathBuf,
    },
}

fn bank(name: &str) -> anyhow::Result<encode::Bank> {
    encode::Bank::from_name(name)
        .with_context(|| format!("unknown bank {name:?} (sha1, sha256, sha384, sha512)"))
}

/// `{"events": n, "pcrs": {"sha256": {"0": "hex", ...}, ...}}`.
fn summary(log: &EventLog) -> serde_json::Value {
    let mut pcrs = serde_json::Map::new();
    for (alg, _) in &log.banks {
        if let Some(values) = log.replay(*alg) {
            let bank: serde_json::Map<String, serde_json::Value> = values
                .into_iter()
                .map(|(pcr, v)| (pcr.to_string(), hex::encode(v).into()))
                .collect();
            pcrs.insert(bank_name(*alg), bank.into());
        }
    }
    serde_json::json!({ "events": log.events.len(), "pcrs": pcrs })
}

fn read_log(path: &PathBuf) -> anyhow::Result<EventLog> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    EventLog::parse(&bytes).with_context(|| format!("{} is not a TCG2 log", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Write {
            log,
            keys,
            banks,
            secure_boot,
            kernel_version,
            kernel_build,
        } => {
            let banks = banks
                .split(',')
                .map(|b| bank(b.trim()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let secure_boot = match secure_boot.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("--secure-boot {other:?}: on or off"),
            };
            let defaults = profile::Boot::default();
            let boot = profile::Boot {
                secure_boot,
                kernel_version: kernel_version.unwrap_or(defaults.kernel_version),
                kernel_build,
                kernel_args: defaults.kernel_args,
            };
            let keys = profile::Keys::in_dir(&keys)?;
            let bytes = profile::boot_log(&banks, &keys, &boot);
            std::fs::write(&log, &bytes).with_context(|| format!("writing {}", log.display()))?;
            println!("{}", summary(&EventLog::parse(&bytes)?));
        }
        Command::Replay {
            log,
            tcti,
            withhold,
        } => {
            let parsed = read_log(&log)?;
            let tcti = match tcti.or_else(|| std::env::var("TCTI").ok()) {
                Some(t) => t,
                None => bail!("no TPM: give --tcti or set TCTI"),
            };
            let extended = replay::replay(&parsed, &tcti, withhold)?;
            println!("replayed {extended} events of {}", log.display());
        }
        Command::Pcrs { log } => println!("{}", summary(&read_log(&log)?)),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcg_boot_log: {e:#}");
            ExitCode::FAILURE
        }
    }
}
