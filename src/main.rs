//! The `keylime_agent` binary (pull model): parse arguments, then run the
//! agent until SIGINT or SIGTERM.

use std::process::ExitCode;

use keylime_agent::cli::{self, Args, Command};
use keylime_agent::config::Mode;

fn main() -> ExitCode {
    let args = Args::parse_with_about("A Keylime-compatible TPM 2.0 remote-attestation agent.");
    match args.command {
        Some(Command::Check { json }) => return cli::check(args.config, Mode::Pull, json),
        Some(Command::Info { json }) => return cli::info(args.config, Mode::Pull, json),
        None => {}
    }
    cli::run("keylime_agent", args.config, |config, shutdown| {
        Ok(keylime_agent::pull::run(config, shutdown))
    })
}
