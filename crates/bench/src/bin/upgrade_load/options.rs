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
        value.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{flag} takes a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => options.daemon = PathBuf::from(args.next().expect("--daemon takes a path")),
            "--nginx" => options.nginx = Some(PathBuf::from(args.next().expect("--nginx takes a path"))),
            "--plan" => {
                options.plan = match args.next().as_deref() {
                    Some("load") => Plan::Load,
                    Some("state") => Plan::State,
                    Some("steady") => Plan::Steady,
                    other => panic!("--plan takes load, state or steady, not {other:?}"),
                }
            }
            "--runs" => options.runs = number(args.next(), "--runs").max(1),
            "--duration" => options.duration = Duration::from_secs(number(args.next(), "--duration") as u64),
            "--keepalive" => options.keepalive = number(args.next(), "--keepalive"),
            "--per-request" => options.per_request = number(args.next(), "--per-request"),
            "--out" => options.out = PathBuf::from(args.next().expect("--out takes a folder")),
            other => panic!(
                "unknown argument {other:?}; usage: upgrade-load [--daemon PATH | --nginx PATH] [--plan load|state] \
                 [--runs N] [--duration S] [--keepalive N] [--per-request N] [--out DIR]"
            ),
        }
    }
    if options.duration.is_zero() {
        options.duration = Duration::from_secs(if options.plan == Plan::State { 20 } else { 24 });
    }
    options
}
