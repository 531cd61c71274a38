//! End-to-end tests of the `hotswap` binary: each test writes a config into
//! a private folder, starts the real daemon on loopback (port 0), talks to
//! it over HTTP, its admin socket and the CLI, and stops it by its pid.

mod admin;
mod browser;
mod cli;
mod connection_handover;
mod crash_after_commit;
mod dry_run;
mod game;
mod game_sessions;
mod handover;
mod http_front;
mod instances;
mod load;
mod policy;
mod public_limits;
mod reload;
mod restart;
mod saves;
mod session_handover;
mod session_joining;
mod session_traffic;
mod sockets;
mod state;
mod static_files;
mod stuck_calls;
mod swap_status;
mod timers;
mod typed_ledger;
mod upgrade;
mod upgrade_everything;
mod ws_client;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use hotswap_test_modules as modules;
// The daemon process, the raw HTTP/1.1 client and pid helpers live in
// crates/test-support, shared with the daemon benchmarks in crates/bench.
pub use hotswap_test_support::process::is_running;
pub use hotswap_test_support::{Daemon, Response};
use hotswap_test_support::{folder, http};

/// A config for tests: `{listen}` and `{modules}` are filled in by `Daemon`.
pub const COUNTER_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
max_body = "4KiB"
shutdown_timeout = "5s"

[[module]]
name = "counter"
path = "modules/libcounter.so"
watch = true

[[route]]
method = "GET"
path = "/total"
module = "counter"
call = "get"
instance = "lobby"
"#;

/// A test's private folder (mode 0700): config, module files, state, admin
/// socket, the daemon's log, laid out as `hotswap_test_support::folder` says.
#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A folder with `config` as hotswap.toml and counter v1 as modules/libcounter.so.
    pub fn new(config: &str) -> Setup {
        let setup = Setup { dir: folder::private_dir(".tmp") };
        std::fs::create_dir(setup.path("modules")).unwrap();
        setup.write_config(config);
        setup.install(modules::COUNTER_V1, "libcounter.so");
        setup
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config(&self) -> PathBuf {
        self.path(folder::CONFIG)
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config(), config).unwrap();
    }

    /// Copies a built module into modules/ (mode 0644), overwriting in place.
    pub fn install(&self, module: &str, name: &str) -> PathBuf {
        folder::install(module, self.path("modules").join(name))
    }

    /// Starts the daemon and waits until it answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&[]).unwrap_or_else(|output| panic!("the daemon did not start:\n{output}"))
    }

    /// Starts the daemon with extra `serve` arguments; `Err` holds its log
    /// if it exited instead of serving.
    pub fn start_with(&self, args: &[&str]) -> Result<Daemon, String> {
        self.start_env(args, &[])
    }

    /// `start_with`, with extra environment variables.
    pub fn start_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Daemon, String> {
        Daemon::start(env!("CARGO_BIN_EXE_hotswap"), self, args, env)
    }

    /// Runs the CLI against this setup's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hotswap"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// The folder, for `Daemon::start` and `Daemon::adopt`.
impl AsRef<Path> for Setup {
    fn as_ref(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes one HTTP/1.1 request (keep-alive unless a header says otherwise).
pub fn send(stream: &mut impl Write, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) {
    http::write_request(stream, method, path, body, headers).unwrap();
}

/// Reads one response (status and body).
pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    read_full(reader).map(|response| (response.status, response.body))
}

/// Reads one response with its headers; the error keeps the socket's kind
/// and says where the connection broke.
pub fn read_full(reader: &mut impl BufRead) -> std::io::Result<Response> {
    Ok(http::read_response(reader)?)
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Files in `dir` whose names start with `prefix`.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|name| name.starts_with(prefix));
    names.sort();
    names
}
