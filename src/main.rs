//! The `keylime_agent` binary (pull model): parse arguments, then run the
//! agent until SIGINT or SIGTERM.

use std::process::ExitCode;

use keylime_agent::agent::FrontEnd;
use keylime_agent::cli::{self, Args, Command};

fn main() -> ExitCode {
    let args = Args::parse_with_about("A Keylime-compatible TPM 2.0 remote-attestation agent.");
    match args.command {
        Some(Command::Check { json }) => return cli::check(args.config, FrontEnd::Pull, json),
        Some(Command::Info { json }) => return cli::info(args.config, FrontEnd::Pull, json),
        None => {}
    }
    cli::run("keylime_agent", args.config, |config, shutdown| {
        Ok(keylime_agent::agent::run(config, shutdown))
    })
}
