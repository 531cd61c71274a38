//! `hotswap`: the daemon that hosts hotswap modules from a config file, and
//! the CLI that drives it.
//!
//! ```text
//! hotswap serve --config hotswap.toml      run the daemon
//! hotswap status                           what runs, with counters
//! hotswap load game [modules/libgame.so]   swap a module (default: its configured file)
//! hotswap load game PATH --dry-run         what that swap would do, changing nothing
//! hotswap rollback game                    swap back to the version before
//! hotswap call game hello [PAYLOAD|-] [--instance K]
//! hotswap snapshot                         save every module's state now
//! hotswap upgrade [--binary PATH]          replace the daemon process, keeping sockets and state
//! hotswap instances game                   list a module's instances
//! hotswap remove-instance game KEY         end one instance, dropping its state
//! ```
//!
//! See README.md for the guarantees and the config file.

mod admin;
mod api;
mod call_pool;
mod calls;
mod cli;
mod config;
mod connections;
mod daemon;
mod durable;
mod http;
mod lateness;
mod lifecycle;
mod metrics;
mod module_store;
mod partial_save;
mod policy;
mod public;
mod serve;
mod sockets;
mod state;
mod static_files;
mod timers;
mod upgrade;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hotswap",
    version,
    about = "Serve hotswap modules and swap them while they run.",
    after_help = "Example:\n  hotswap serve --config hotswap.toml\n  hotswap load ledger releases/libledger-2.so"
)]
struct Cli {
    /// The daemon's config file (for `serve`), or the one whose admin socket to use.
    #[arg(long, global = true, default_value = "hotswap.toml")]
    config: PathBuf,
    /// The client flags are accepted before the command too (`hotswap
    /// --json status`), as they always were; `serve` and `call` refuse the
    /// ones that would do nothing there.
    #[command(flatten)]
    before: ClientFlagsBefore,
    #[command(subcommand)]
    command: Command,
}

/// `--admin`, `--token-file` and `--json` given before the command.
#[derive(Debug, Args)]
struct ClientFlagsBefore {
    #[arg(long, hide = true)]
    admin: Option<String>,
    #[arg(long, hide = true)]
    token_file: Option<PathBuf>,
    #[arg(long, hide = true)]
    json: bool,
}

/// Which daemon a client command talks to.
#[derive(Debug, Args, Default)]
struct Target {
    /// Talk to this admin socket, or `http://HOST:PORT` for a TCP admin API
    /// (default: the admin socket named by --config).
    #[arg(long)]
    admin: Option<String>,
    /// File holding the bearer token of a TCP admin API (or set HOTSWAP_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// How a client command prints its outcome.
#[derive(Debug, Args, Default)]
struct Print {
    /// Print the admin API's JSON instead of text for a person (errors too, as {"error": ...}).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    #[command(after_help = "Example:\n  hotswap serve --config /etc/hotswap/hotswap.toml --log-format json")]
    Serve {
        /// Move a state file that cannot be restored aside (never deleted) and start that module fresh.
        #[arg(long)]
        discard_corrupt_state: bool,
        /// How log lines look on stderr: for a person, or one JSON object a line.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: tracing::Level,
    },
    /// Show modules, versions, counters and the last swap.
    #[command(after_help = "Example:\n  hotswap status --json")]
    Status {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// Swap a module to a new file (default: the file in its config entry).
    #[command(
        after_help = "Example:\n  hotswap load ledger releases/libledger-2.so --dry-run\n  hotswap load ledger releases/libledger-2.so"
    )]
    Load {
        /// The module's name, as in its `[[module]]` entry.
        module: String,
        /// The new module file (default: the `path` of its `[[module]]` entry).
        path: Option<PathBuf>,
        /// Only try it: the new version takes over copies of the live state and the
        /// report says what the swap would do; nothing changes.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// Swap a module back to the version it ran before.
    #[command(after_help = "Example:\n  hotswap rollback ledger")]
    Rollback {
        /// The module's name, as in its `[[module]]` entry.
        module: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// Call a module method and print the reply's bytes as they are.
    #[command(after_help = "Example:\n  hotswap call ledger deposit 10 --instance alice")]
    Call {
        /// The module's name.
        module: String,
        /// The method to call.
        method: String,
        /// The payload: the text given, or `-` to read it from stdin (default: empty).
        payload: Option<String>,
        /// The instance to call (default: the instance named `default`).
        #[arg(long)]
        instance: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Write every module's state file now.
    #[command(after_help = "Example:\n  hotswap snapshot")]
    Snapshot {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// Replace the daemon process with a new binary; its sockets and state move over.
    #[command(after_help = "Example:\n  hotswap upgrade --binary /usr/local/bin/hotswap-0.2")]
    Upgrade {
        /// The new binary (default: the path the daemon was started from, read afresh).
        #[arg(long)]
        binary: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// List a module's instances, with the version and calls of each.
    #[command(after_help = "Example:\n  hotswap instances ledger")]
    Instances {
        /// The module's name.
        module: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// Show a module's WebSocket sessions per instance, and the session counts.
    #[command(after_help = "Example:\n  hotswap sessions chat")]
    Sessions {
        /// The module's name.
        module: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
    /// End one instance of a module: its state is dropped (after its call in flight).
    #[command(after_help = "Example:\n  hotswap remove-instance ledger alice")]
    RemoveInstance {
        /// The module's name.
        module: String,
        /// The instance's key, as `hotswap instances` lists it.
        key: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        print: Print,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve { discard_corrupt_state, log_format, log_level } = &cli.command {
        if let Some(flag) = cli.before.flag_given() {
            eprintln!("hotswap: {flag} is for the commands that talk to a daemon; `serve` does not take it");
            return ExitCode::from(2);
        }
        init_logging(*log_format, *log_level);
        let options =
            serve::ServeOptions { config: cli.config.clone(), discard_corrupt_state: *discard_corrupt_state };
        // Logged, not printed as well: the log is where a service's errors go.
        return match serve::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    let json = cli.before.json || cli.command.print().is_some_and(|print| print.json);
    if json && matches!(cli.command, Command::Call { .. }) {
        eprintln!("hotswap: --json does nothing for `call`, which prints the reply's bytes as they are");
        return ExitCode::from(2);
    }
    match run_client(&cli, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error == cli::ALREADY_REPORTED => ExitCode::FAILURE,
        Err(error) if json => {
            let document = api::Error { error };
            println!("{}", serde_json::to_string_pretty(&document).expect("an error document serializes"));
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("hotswap: {error}");
            ExitCode::FAILURE
        }
    }
}

impl ClientFlagsBefore {
    /// The first client flag given, if any.
    fn flag_given(&self) -> Option<&'static str> {
        [
            ("--admin", self.admin.is_some()),
            ("--token-file", self.token_file.is_some()),
            ("--json", self.json),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

impl Command {
    fn target(&self) -> Option<&Target> {
        match self {
            Command::Serve { .. } => None,
            Command::Status { target, .. }
            | Command::Load { target, .. }
            | Command::Rollback { target, .. }
            | Command::Call { target, .. }
            | Command::Snapshot { target, .. }
            | Command::Upgrade { target, .. }
            | Command::Instances { target, .. }
            | Command::Sessions { target, .. }
            | Command::RemoveInstance { target, .. } => Some(target),
        }
    }

    fn print(&self) -> Option<&Print> {
        match self {
            Command::Serve { .. } | Command::Call { .. } => None,
            Command::Status { print, .. }
            | Command::Load { print, .. }
            | Command::Rollback { print, .. }
            | Command::Snapshot { print, .. }
            | Command::Upgrade { print, .. }
            | Command::Instances { print, .. }
            | Command::Sessions { print, .. }
            | Command::RemoveInstance { print, .. } => Some(print),
        }
    }
}

fn run_client(cli: &Cli, json: bool) -> Result<(), String> {
    let given = cli.command.target();
    let admin = given.and_then(|t| t.admin.as_deref()).or(cli.before.admin.as_deref());
    let token_file = given.and_then(|t| t.token_file.as_deref()).or(cli.before.token_file.as_deref());
    let target = cli::target(&cli.config, admin, token_file)?;
    match &cli.command {
        Command::Serve { .. } => unreachable!("handled in main"),
        Command::Status { .. } => cli::status(&target, json),
        Command::Load { module, path, dry_run, .. } => {
            cli::load(&target, json, module, path.as_deref(), *dry_run)
        }
        Command::Rollback { module, .. } => cli::rollback(&target, json, module),
        Command::Call { module, method, payload, instance, .. } => {
            cli::call(&target, module, method, payload.as_deref(), instance.as_deref())
        }
        Command::Snapshot { .. } => cli::snapshot(&target, json),
        Command::Upgrade { binary, .. } => cli::upgrade(&target, json, binary.as_deref()),
        Command::Instances { module, .. } => cli::instances(&target, json, module),
        Command::Sessions { module, .. } => cli::sessions(&target, json, module),
        Command::RemoveInstance { module, key, .. } => cli::remove_instance(&target, json, module, key),
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
