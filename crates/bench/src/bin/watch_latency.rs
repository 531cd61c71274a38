//! How long the daemon takes from a completed write of a watched module file
//! to the new version answering calls.
//!
//! ```sh
//! cargo build --release -p hotswap-daemon
//! cargo run --release -p hotswap-bench --bin watch-latency -- [--daemon PATH] [--rounds N]
//! ```
//!
//! It builds nothing itself: it runs the `hotswap` binary given by `--daemon`
//! (default `target/release/hotswap`). In a private temporary folder (mode
//! 0700) it writes a config that watches `modules/libcounter.so` (counter
//! v1, mode 0644) and serves on `127.0.0.1:0`, starts the daemon, and reads
//! the public address from `GET /v1/status` on the admin socket. Then, N
//! rounds (default 100), each with two writes, the versions alternating
//! v2, v1, v2, ...:
//!
//! - **rename**: a copy staged beforehand in a sibling folder is renamed over
//!   the watched file; the clock starts when `rename` returns;
//! - **in place**: `std::fs::copy` over the watched file (truncate, write,
//!   close); the clock starts when the copy has returned (file closed).
//!
//! After each write, `POST /call/counter/version?instance=probe` is sent on
//! one keep-alive connection, back to back, until it answers with the new
//! version; the clock stops when that answer has arrived. The duration of one
//! poll is printed too: it is the resolution of the measurement. The daemon
//! is stopped with SIGTERM (by its pid) at the end.

use std::fs;
use std::io::BufReader;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotswap_bench::{machine_description, release_daemon};
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};
use hotswap_test_support::{Daemon, folder, http};

/// How long to wait for one swap to be seen.
const SWAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between writes, so each write finds the daemon idle (the swap that
/// the previous write started has returned and the watcher is waiting).
const SETTLE: Duration = Duration::from_millis(150);
/// Rounds before the measured ones (not recorded).
const WARM_UP: usize = 3;

const VERSIONS: [(&str, &str); 2] = [("2.0.0", COUNTER_V2), ("1.0.0", COUNTER_V1)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Rename,
    InPlace,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Rename => "rename (staged copy renamed over the file)",
            Mode::InPlace => "in place (std::fs::copy over the file)",
        }
    }
}

/// The measurements of one mode.
#[derive(Debug, Default)]
struct Results {
    /// From the completed write to the first answer with the new version.
    latency: Vec<Duration>,
    /// How long the write itself took (rename, or the whole copy).
    write_call: Vec<Duration>,
    /// Polls per write (including the one that saw the new version).
    polls: Vec<usize>,
    /// The engine's swap time (`last_swap.total_us` in the status).
    engine_total: Vec<Duration>,
    /// Writes whose new version was not seen within `SWAP_TIMEOUT`.
    timeouts: usize,
    /// Last swaps the status reported to another version than the one written.
    unexpected: usize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut daemon_bin = release_daemon();
    let mut rounds = 100usize;
    let mut verbose = false;
    let mut poll_gap = Duration::ZERO;
    let mut keep_dir = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => daemon_bin = PathBuf::from(args.next().expect("--daemon takes a path")),
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds takes a number"),
            "--verbose" => verbose = true,
            "--keep-dir" => keep_dir = true,
            "--poll-gap-us" => {
                let us = args.next().and_then(|n| n.parse().ok()).expect("--poll-gap-us takes a number");
                poll_gap = Duration::from_micros(us);
            }
            other => panic!(
                "unknown argument {other:?}; usage: watch-latency [--daemon PATH] [--rounds N] [--verbose]"
            ),
        }
    }
    assert!(
        daemon_bin.is_file(),
        "no daemon binary at {}: run `cargo build --release -p hotswap-daemon` first, or pass --daemon PATH",
        daemon_bin.display()
    );
    println!("machine: {}", machine_description());
    println!("daemon: {}", fs::canonicalize(&daemon_bin).unwrap_or(daemon_bin.clone()).display());
    let size = |path: &str| fs::metadata(path).map_or(0, |m| m.len());
    println!("module files: counter v1 {} bytes, counter v2 {} bytes", size(COUNTER_V1), size(COUNTER_V2));

    let mut dir = folder::private_dir("hotswap-watch-");
    dir.disable_cleanup(keep_dir);
    let root = dir.path();
    for sub in ["modules", "versions", "staging"] {
        folder::make_private(&root.join(sub));
    }
    // The sources of every write, mode 0644 (std::fs::copy gives its
    // destination the source's mode).
    let sources: Vec<(&str, PathBuf)> = VERSIONS
        .iter()
        .map(|(version, built)| {
            let source = root.join("versions").join(format!("counter-{version}.so"));
            folder::install(built, &source);
            (*version, source)
        })
        .collect();
    let watched = root.join("modules/libcounter.so");
    folder::install(COUNTER_V1, &watched);
    fs::write(
        root.join(folder::CONFIG),
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"hotswap.sock\"\n\n[state]\ndir = \"state\"\n\n\
         [[module]]\nname = \"counter\"\npath = \"modules/libcounter.so\"\nwatch = true\n",
    )
    .expect("write the config");

    let mut daemon = Daemon::start(&daemon_bin, root, &[], &[])
        .unwrap_or_else(|log| panic!("the daemon exited before serving:\n{log}"));
    let public_addr = daemon.public();
    println!("daemon pid {}, serving on {public_addr}, {rounds} rounds of 2 writes\n", daemon.pid());

    let probe = TcpStream::connect(public_addr).expect("connect to the public port");
    probe.set_nodelay(true).expect("nodelay");
    let mut probe = BufReader::new(probe);
    let mut results = [Results::default(), Results::default()];
    let mut poll_times: Vec<Duration> = Vec::new();
    let mut current = "1.0.0";
    let mut writes = 0usize;
    for round in 0..WARM_UP + rounds {
        for (slot, mode) in [Mode::Rename, Mode::InPlace].into_iter().enumerate() {
            let (version, source) = &sources[writes % 2];
            writes += 1;
            assert_eq!(probe_version(&mut probe).0, current, "the daemon serves the version last written");
            let staged = root.join("staging/libcounter.so");
            if mode == Mode::Rename {
                fs::copy(source, &staged).expect("stage the new version");
            }
            std::thread::sleep(SETTLE);
            let before_write = Instant::now();
            let written = match mode {
                Mode::Rename => {
                    fs::rename(&staged, &watched).expect("rename over the watched file");
                    Instant::now()
                }
                Mode::InPlace => {
                    fs::copy(source, &watched).expect("copy over the watched file");
                    Instant::now()
                }
            };
            let written_at = std::time::SystemTime::now();
            let write_call = written - before_write;
            let mut seen = None;
            let mut polls = Vec::new();
            while written.elapsed() < SWAP_TIMEOUT {
                let (answer, took) = probe_version(&mut probe);
                polls.push(took);
                if answer == *version {
                    seen = Some(written.elapsed());
                    break;
                }
                if !poll_gap.is_zero() {
                    std::thread::sleep(poll_gap);
                }
            }
            let measured = round >= WARM_UP;
            if measured {
                poll_times.extend_from_slice(&polls);
            }
            let Some(latency) = seen else {
                eprintln!("round {round}: {} not serving after {SWAP_TIMEOUT:?} ({:?})", version, mode);
                if measured {
                    results[slot].timeouts += 1;
                }
                // Wait for whatever the daemon does, then go on from what it serves.
                std::thread::sleep(Duration::from_secs(1));
                current = if probe_version(&mut probe).0 == "2.0.0" { "2.0.0" } else { "1.0.0" };
                continue;
            };
            current = version;
            // Let the swap finish (close the old version, record the hash),
            // then read its report.
            std::thread::sleep(SETTLE);
            if measured {
                let result = &mut results[slot];
                result.latency.push(latency);
                result.write_call.push(write_call);
                result.polls.push(polls.len());
                let status = daemon.status();
                let last = &status["modules"][0]["last_swap"];
                if last["to_version"] != *version {
                    result.unexpected += 1;
                }
                let engine_total = Duration::from_micros(last["total_us"].as_u64().unwrap_or(0));
                result.engine_total.push(engine_total);
                if verbose {
                    println!(
                        "{} round {round:>3} {:<8} -> {version}: {:>8.3} ms, {:>5} polls, longest poll {:.3} ms, engine swap {:.3} ms",
                        utc_time(written_at),
                        if mode == Mode::Rename { "rename" } else { "in place" },
                        latency.as_secs_f64() * 1e3,
                        polls.len(),
                        polls.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3,
                        engine_total.as_secs_f64() * 1e3
                    );
                }
            }
        }
    }

    let status = daemon.status();
    let module = &status["modules"][0];
    println!(
        "daemon status at the end: {} swaps, {} calls, {} errors, last error {}",
        module["swaps"], module["calls"], module["errors"], module["last_error"]
    );
    for (mode, mut result) in [Mode::Rename, Mode::InPlace].into_iter().zip(results) {
        println!("\n{} — {} writes, {} timeouts", mode.label(), result.latency.len(), result.timeouts);
        if !result.latency.is_empty() {
            println!("  write -> new version serving  {}", Stats::of(&mut result.latency));
            println!("  engine swap (status total)    {}", Stats::of(&mut result.engine_total));
            println!("  the write call itself         {}", Stats::of(&mut result.write_call));
            let polls = &mut result.polls;
            polls.sort_unstable();
            println!(
                "  polls per write               median {}, max {}",
                polls[polls.len() / 2],
                polls[polls.len() - 1]
            );
        }
        if result.unexpected > 0 {
            println!("  WARNING: {} last swaps in the status went to another version", result.unexpected);
        }
    }
    if !poll_times.is_empty() {
        println!("\npoll granularity (one POST /call/counter/version round trip, all polls)");
        println!("  {} polls                    {}", poll_times.len(), Stats::of(&mut poll_times));
    }

    let code = daemon.terminate(Duration::from_secs(10));
    println!("\ndaemon stopped with SIGTERM: {code}");
    if keep_dir {
        println!("kept {} (daemon log: daemon.log)", root.display());
    }
}

/// `HH:MM:SS.ffffff` (UTC), to match the daemon's log lines.
fn utc_time(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:06}", secs / 3600, secs / 60 % 60, secs % 60, since.subsec_micros())
}

/// Asks the probe instance for its version; returns the answer and how long it took.
fn probe_version(probe: &mut BufReader<TcpStream>) -> (String, Duration) {
    let started = Instant::now();
    let http::Response { status, body, .. } =
        http::exchange(probe, "POST", "/call/counter/version?instance=probe", b"", &[])
            .unwrap_or_else(|err| panic!("probe request: {err}"));
    let took = started.elapsed();
    assert_eq!(status, 200, "probe answered {status}: {}", String::from_utf8_lossy(&body));
    (String::from_utf8(body).expect("a version is text"), took)
}

/// Median, p90, min and max of a set of durations, in milliseconds.
struct Stats {
    min: Duration,
    median: Duration,
    p90: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        let summary = hotswap_bench::Summary::of(samples);
        Stats { min: summary.min, median: summary.median, p90: summary.p90, max: summary.max }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "median {:.3} ms, p90 {:.3} ms, max {:.3} ms (min {:.3} ms)",
            ms(self.median),
            ms(self.p90),
            ms(self.max),
            ms(self.min)
        )
    }
}
