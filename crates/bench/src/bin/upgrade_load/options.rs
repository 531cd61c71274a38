//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use hotswap_bench::release_daemon;

/// Which events a run of the daemon goes through (see the crate's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Load,
    State,
    Steady,
}

#[derive(Debug)]
pub struct Options {
    pub daemon: PathBuf,
    pub nginx: Option<PathBuf>,
    pub plan: Plan,
    pub runs: usize,
    pub duration: Duration,
    pub keepalive: usize,
    pub per_request: usize,
    pub out: PathBuf,
}

pub fn parse_args() -> Options {
    let mut options = Options {
        daemon: release_daemon(),
        nginx: None,
        plan: Plan::Load,
        runs: 1,
        duration: Duration::ZERO,
        keepalive: 24,
        per_request: 8,
        out: PathBuf::from("target/upgrade-load"),
    };
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> usize {
        value.and_then(|n| n.parse().ok()).unwrap_or_else(|| refuse(&format!("{flag} takes a number")))
    };
    let path = |value: Option<String>, flag: &str| -> PathBuf {
        PathBuf::from(value.unwrap_or_else(|| refuse(&format!("{flag} takes a path"))))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => options.daemon = path(args.next(), "--daemon"),
            "--nginx" => options.nginx = Some(path(args.next(), "--nginx")),
            "--plan" => {
                options.plan = match args.next().as_deref() {
                    Some("load") => Plan::Load,
                    Some("state") => Plan::State,
                    Some("steady") => Plan::Steady,
                    other => refuse(&format!("--plan takes load, state or steady, not {other:?}")),
                }
            }
            "--runs" => options.runs = number(args.next(), "--runs").max(1),
            "--duration" => options.duration = Duration::from_secs(number(args.next(), "--duration") as u64),
            "--keepalive" => options.keepalive = number(args.next(), "--keepalive"),
            "--per-request" => options.per_request = number(args.next(), "--per-request"),
            "--out" => options.out = path(args.next(), "--out"),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => refuse(&format!("unknown argument {other:?}")),
        }
    }
    if options.duration.is_zero() {
        options.duration = Duration::from_secs(if options.plan == Plan::State { 20 } else { 24 });
    }
    options
}

const USAGE: &str = "usage: upgrade-load [--daemon PATH | --nginx PATH] [--plan load|state|steady] [--runs N] \
                     [--duration S] [--keepalive N] [--per-request N] [--out DIR]";

/// Says what was wrong with the arguments, and how to call it, then exits.
fn refuse(what: &str) -> ! {
    eprintln!("upgrade-load: {what}\n{USAGE}");
    std::process::exit(2);
}
