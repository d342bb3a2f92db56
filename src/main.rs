//! The `keylime_agent` binary (pull model): parse arguments, then run the
//! agent until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Keylime-compatible TPM 2.0 remote-attestation agent.
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
    keylime_agent::cli::run("keylime_agent", args.config, |config, shutdown| {
        Ok(keylime_agent::agent::run(config, shutdown))
    })
}
