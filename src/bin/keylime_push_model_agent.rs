//! The `keylime_push_model_agent` binary (push model, verifier API v3.0):
//! parse arguments, check the push settings, then attest until SIGINT or
//! SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Keylime-compatible TPM 2.0 agent that attests itself to the verifier
/// (push model); it opens no port.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Read only this config file (as KEYLIME_AGENT_CONFIG does);
    /// KEYLIME_AGENT_* variables still override single keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    keylime_agent::cli::run(
        "keylime_push_model_agent",
        args.config,
        |config, shutdown| {
            let settings = config.push_settings()?;
            Ok(keylime_agent::push::run(config, settings, shutdown))
        },
    )
}
