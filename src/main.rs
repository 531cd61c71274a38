//! `hotswap`: the daemon that hosts hotswap modules from a config file, and
//! the CLI that drives it.
//!
//! ```text
//! hotswap serve --config hotswap.toml      run the daemon
//! hotswap status                           what runs, with counters
//! hotswap load game [modules/libgame.so]   swap a module (default: its configured file)
//! hotswap rollback game                    swap back to the version before
//! hotswap call game hello [PAYLOAD|-] [--instance K]
//! hotswap snapshot                         save every module's state now
//! hotswap upgrade [--binary PATH]          replace the daemon process, keeping sockets and state
//! ```
//!
//! See README.md for the guarantees and the config file.

mod admin;
mod api;
mod cli;
mod config;
mod daemon;
mod http;
mod metrics;
mod module_store;
mod policy;
mod public;
mod serve;
mod state;
mod upgrade;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "hotswap", version, about = "Serve hotswap modules and swap them while they run.")]
struct Cli {
    /// The daemon's config file (for `serve`), or the one whose admin socket to use.
    #[arg(long, global = true, default_value = "hotswap.toml")]
    config: PathBuf,
    /// Talk to this admin socket, or `http://HOST:PORT` for a TCP admin API.
    #[arg(long, global = true)]
    admin: Option<String>,
    /// File holding the bearer token of a TCP admin API (or set HOTSWAP_ADMIN_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the admin API's JSON instead of text for a person.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Move a state file that cannot be restored aside (never deleted) and start that module fresh.
        #[arg(long)]
        discard_corrupt_state: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: tracing::Level,
    },
    /// Show modules, versions, counters and the last swap.
    Status,
    /// Swap a module to a new file (default: the file in its config entry).
    Load { module: String, path: Option<PathBuf> },
    /// Swap a module back to the version it ran before.
    Rollback { module: String },
    /// Call a module method; the payload is an argument, or `-` for stdin.
    Call {
        module: String,
        method: String,
        payload: Option<String>,
        #[arg(long, default_value = "")]
        instance: String,
    },
    /// Write every module's state file now.
    Snapshot,
    /// Replace the daemon process with a new binary; its sockets and state move over.
    Upgrade {
        /// The new binary (default: the path the daemon was started from, read afresh).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Serve { discard_corrupt_state, log_format, log_level } => {
            init_logging(*log_format, *log_level);
            let options = serve::ServeOptions {
                config: cli.config.clone(),
                discard_corrupt_state: *discard_corrupt_state,
            };
            serve::run(&options).inspect_err(|error| tracing::error!("{error}"))
        }
        command => run_client(&cli, command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hotswap: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(cli: &Cli, command: &Command) -> Result<(), String> {
    let target = cli::target(&cli.config, cli.admin.as_deref(), cli.token_file.as_deref())?;
    match command {
        Command::Serve { .. } => unreachable!("handled in main"),
        Command::Status => cli::status(&target, cli.json),
        Command::Load { module, path } => cli::load(&target, cli.json, module, path.as_deref()),
        Command::Rollback { module } => cli::rollback(&target, cli.json, module),
        Command::Call { module, method, payload, instance } => {
            cli::call(&target, module, method, payload.as_deref(), instance)
        }
        Command::Snapshot => cli::snapshot(&target, cli.json),
        Command::Upgrade { binary } => cli::upgrade(&target, cli.json, binary.as_deref()),
    }
}

fn init_logging(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
