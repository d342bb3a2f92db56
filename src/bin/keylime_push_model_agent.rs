//! The `keylime_push_model_agent` binary (push model, verifier API v3.0):
//! parse arguments, check the push settings, then attest until SIGINT or
//! SIGTERM.

use std::process::ExitCode;

use keylime_agent::cli::{self, Args, Command};
use keylime_agent::config::Mode;

fn main() -> ExitCode {
    let args = Args::parse_with_about(
        "A Keylime-compatible TPM 2.0 agent that attests itself to the verifier (push model); it opens no port.",
    );
    match args.command {
        Some(Command::Check { json }) => return cli::check(args.config, Mode::Push, json),
        Some(Command::Info { json }) => return cli::info(args.config, Mode::Push, json),
        None => {}
    }
    cli::run(
        "keylime_push_model_agent",
        args.config,
        |config, shutdown| {
            let settings = config.push_settings()?;
            Ok(keylime_agent::push::run(config, settings, shutdown))
        },
    )
}
