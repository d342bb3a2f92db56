//! What both binaries do around the agent: logging, the config (a bad
//! value exits 2 with one line), the async runtime, and SIGINT/SIGTERM as
//! the one shutdown signal.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Mode;
use crate::config::{Config, ConfigError, ConfigSources, LogFormat};

/// The command line both binaries take.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Read only this config file (as KEYLIME_AGENT_CONFIG does);
    /// KEYLIME_AGENT_* variables still override single keys.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do instead of running the agent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands; without one the agent runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config, the TPM, the peers, the logs and the secure
    /// directory without changing anything; exit status 0 when nothing FAILs.
    Check {
        /// Print the findings as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show this machine, its TPM and the agent's identity and build,
    /// without changing anything.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

impl Args {
    /// Parses the process's arguments; `--help` shows `about`. Exits with
    /// clap's message on a bad argument.
    pub fn parse_with_about(about: &'static str) -> Self {
        let matches = Self::command().about(about).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `check [--json]`: prints the preflight report for `mode`; exit status 0
/// when nothing failed, 1 otherwise.
pub fn check(explicit: Option<PathBuf>, mode: Mode, as_json: bool) -> ExitCode {
    // The TSS libraries print their own errors to stderr; the report names
    // each problem itself.
    quiet_tss_logs();
    let sources = ConfigSources::from_process(explicit);
    let files: Vec<String> = sources
        .as_ref()
        .map(|s| {
            s.files
                .iter()
                .filter(|f| f.exists())
                .map(|f| f.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let loaded = sources.and_then(|s| Config::load(&s));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(crate::check::run(loaded, &files, mode));
    if as_json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    let code = if report.passed() { 0 } else { 1 };
    // A TPM probe that never answered may still hold its thread.
    std::process::exit(code)
}

/// `info [--json]`: prints what `info::collect` finds; exit status 2 when
/// the config does not load.
pub fn info(explicit: Option<PathBuf>, mode: Mode, as_json: bool) -> ExitCode {
    quiet_tss_logs();
    let loaded = match ConfigSources::from_process(explicit).and_then(|s| Config::load(&s)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = crate::info::collect(&loaded.config, mode);
    if as_json {
        println!("{report}");
    } else {
        print!("{}", crate::info::text(&report));
    }
    // A TPM probe that never answered may still hold its thread.
    std::process::exit(0)
}

/// The shutdown signal handed to the agent: resolves on SIGINT or SIGTERM.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sets up logging, loads the config (`explicit` = `--config`), lets
/// `start` check it and build the agent's future, and runs that future
/// until it ends. Exit codes: 0 after a clean stop, 1 when the agent
/// failed, 2 for a config problem.
pub fn run<F, Fut, E>(program: &str, explicit: Option<PathBuf>, start: F) -> ExitCode
where
    F: FnOnce(Config, Shutdown) -> Result<Fut, ConfigError>,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    crate::privileges::harden_process();
    crate::memory::one_arena();
    let loaded = match ConfigSources::from_process(explicit).and_then(|s| Config::load(&s)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(loaded.config.observe.log_format);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    // One thread runs the agent's own tasks (registration, the push
    // worker, signals, housekeeping): they wait on the network and the TPM
    // owner's thread, not on a CPU. The API server's workers have runtimes
    // of their own, and file reads go to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent = match start(loaded.config, Box::pin(shutdown_signal())) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(agent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logging to stderr in `format`, filtered by `RUST_LOG` (default: info,
/// with the libraries' chatter at warn).
fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,tss_esapi=warn,actix_server=warn,hyper_util=warn,hyper=warn",
        )
    });
    // actix-http logs every request it cannot parse as an ERROR; those are
    // the client's mistakes, answered with a 400 and not worth a line each
    // (a flood of them would drown the log). `RUST_LOG=actix_http=…` still
    // shows them.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("actix_http")) {
        if let Ok(quiet) = "actix_http::h1=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => {
            // Every line must be JSON: the TSS libraries' own stderr
            // messages are off (the agent's errors carry their codes), and
            // a panic is logged as a record.
            quiet_tss_logs();
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
            std::panic::set_hook(Box::new(|info| {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(location, "panic: {payload}");
            }));
        }
    }
}

/// Turns the TSS libraries' own stderr logging off unless `TSS2_LOG`
/// asks for it. Called before any other thread runs.
fn quiet_tss_logs() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
