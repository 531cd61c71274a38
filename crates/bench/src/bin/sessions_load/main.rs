//! WebSocket sessions of the daemon under load, through module swaps.
//!
//! ```sh
//! cargo build --release -p hotswap-daemon
//! cargo run --release -p hotswap-bench --bin sessions-load -- [--runs 3] [--part broadcast|plain|ticks|upgrades|all]
//!     [--sessions 2000] [--rooms 200] [--rate 5] [--tick-rooms 1000] [--tick-ms 50]
//!     [--swaps 20] [--upgrades 10] [--duration 30] [--daemon PATH]
//!     [--nginx /usr/sbin/nginx [--nginx-shutdown-timeout SECONDS]]
//! ```
//!
//! Each run starts a fresh release daemon (`target/release/hotswap`) in a
//! private temporary folder with the `room` test module (`ROOM_V1`; raw
//! hooks: every message is acked `ack N` to its sender and broadcast
//! `SESSION:N:TEXT` to its room) behind `[[socket]] path = "/ws"`, and
//! swaps it v1 -> v2 -> v1 … through `POST /v1/modules/room/load`
//! (`--swaps`, the first 8 s into the load, then one every 0.75 s).
//!
//! - `broadcast`: `--sessions` clients in `--rooms` rooms
//!   (`?instance=room-K`, client i in room i mod R), tokio tasks on one
//!   worker per core, each sending `CLIENT:SEQ` `--rate` times a second for
//!   `--duration`. Every session must stay open, get one ack per message in
//!   order, and get every message of every member of its room exactly once
//!   and in each sender's order (checked by SEQ). Round trips (send -> own
//!   ack) are split into steady (more than 1.5 s from any swap) and during
//!   swaps (from a swap's request to 0.5 s after its answer). Before the
//!   load, the daemon's VmRSS with no session and with every session joined
//!   and idle gives the memory per idle session.
//! - `plain`: the same clients and checks against `room-server`, the room
//!   compiled into a plain tokio WebSocket server (no hotswap, no swaps:
//!   every round trip after the first second is steady), for what the
//!   hotswap layer costs. Build it too:
//!   `cargo build --release -p hotswap-bench --bin room-server`.
//! - `ticks`: one idle session in each of `--tick-rooms` rooms with
//!   `tick = --tick-ms`, the same swaps. Lateness p50/p99 are sampled from
//!   `GET /v1/status` (`sessions.ticks`, over the daemon's last 1024 ticks)
//!   every 250 ms; at the end, with all sessions closed, the rooms' own tick
//!   counts (method `ticks`) must add up to the daemon's `ran` (none missed
//!   or doubled); `skipped` is reported.
//! - `upgrades`: the load of `broadcast`, but `--upgrades` process upgrades
//!   (`POST /v1/upgrade` on the admin socket, whose path stays the same)
//!   instead of swaps, the first 8 s in, then one every 2 s (or once the
//!   one before is over: its old process gone). Each re-executes the
//!   daemon's own binary (checked in `/proc/NEW_PID/exe`). Sessions should
//!   move with their connections: every close frame or dropped connection a
//!   client sees is counted under the upgrade it followed; a closed session
//!   joins its room again and goes on (a daemon of before sessions moved
//!   closes them all with 1001), its messages unanswered at the close set
//!   aside and its checks of the room's broadcasts starting over (see
//!   `received.rs`). Per upgrade: the time from the request until the old
//!   process is gone from `/proc`, the answer's `took_ms` and `frozen_ms`;
//!   round trips during upgrades (a request to 0.5 s after its answer) vs
//!   steady.
//! - the anchor of `upgrades`, with `--nginx PATH` (Debian's nginx,
//!   `apt-get install -y nginx`; nothing else needs it): after each run of
//!   the daemon, the same clients and load through nginx proxying the
//!   WebSocket upgrade to `room-server`, with nginx's binary upgrade (USR2,
//!   WINCH, QUIT) at the same times, counted the same way (see `nginx.rs`):
//!   once with nginx's defaults (no `worker_shutdown_timeout`), and with
//!   `--nginx-shutdown-timeout S` once more with `worker_shutdown_timeout S`.

mod broadcast;
mod clients;
mod nginx;
mod plain;
mod received;
mod server;
mod tally;
mod ticks;
mod upgrades;

use std::path::PathBuf;
use std::time::Duration;

use hotswap_bench::{machine_description, release_daemon};

use crate::server::median;

#[derive(Debug)]
pub struct Options {
    pub daemon: PathBuf,
    pub runs: usize,
    pub part: String,
    pub sessions: usize,
    pub rooms: usize,
    pub rate_hz: f64,
    pub tick_rooms: usize,
    pub tick: Duration,
    pub swaps: usize,
    pub first_swap: Duration,
    pub swap_every: Duration,
    pub upgrades: usize,
    pub first_upgrade: Duration,
    pub upgrade_every: Duration,
    pub duration: Duration,
    /// The nginx binary of the `upgrades` anchor, if it runs.
    pub nginx: Option<PathBuf>,
    /// nginx's `worker_shutdown_timeout` of each run of the anchor (`None`:
    /// unset, nginx's default).
    pub nginx_shutdown_timeouts: Vec<Option<Duration>>,
}

impl Options {
    /// The load of `broadcast`, `plain` and `upgrades` (`reconnect`: a
    /// closed session joins again).
    pub fn rooms_load(&self, reconnect: bool) -> clients::Load {
        clients::Load {
            sessions: self.sessions,
            rooms: self.rooms,
            rate_hz: self.rate_hz,
            duration: self.duration,
            reconnect,
        }
    }
}

fn parse_args() -> Options {
    let mut options = Options {
        daemon: release_daemon(),
        runs: 3,
        part: "all".into(),
        sessions: 2000,
        rooms: 200,
        rate_hz: 5.0,
        tick_rooms: 1000,
        tick: Duration::from_millis(50),
        swaps: 20,
        first_swap: Duration::from_secs(8),
        swap_every: Duration::from_millis(750),
        upgrades: 10,
        first_upgrade: Duration::from_secs(8),
        upgrade_every: Duration::from_secs(2),
        duration: Duration::from_secs(30),
        nginx: None,
        nginx_shutdown_timeouts: vec![None],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<f64>().unwrap_or_else(|_| panic!("{flag}: {value:?} is not a number"));
        match flag.as_str() {
            "--daemon" => options.daemon = PathBuf::from(&value),
            "--runs" => options.runs = number() as usize,
            "--part" => options.part = value.clone(),
            "--sessions" => options.sessions = number() as usize,
            "--rooms" => options.rooms = number().max(1.0) as usize,
            "--rate" => options.rate_hz = number(),
            "--tick-rooms" => options.tick_rooms = number() as usize,
            "--tick-ms" => options.tick = Duration::from_millis(number() as u64),
            "--swaps" => options.swaps = number() as usize,
            "--upgrades" => options.upgrades = number() as usize,
            "--duration" => options.duration = Duration::from_secs_f64(number()),
            "--nginx" => options.nginx = Some(PathBuf::from(&value)),
            "--nginx-shutdown-timeout" => {
                options.nginx_shutdown_timeouts.push(Some(Duration::from_secs_f64(number())));
            }
            other => panic!("unknown option {other}\n{USAGE}"),
        }
    }
    if let Some(nginx) = &options.nginx {
        assert!(nginx.is_file(), "--nginx {}: no such file (apt-get install -y nginx)", nginx.display());
    }
    assert!(
        ["all", "broadcast", "plain", "ticks", "upgrades"].contains(&options.part.as_str()),
        "--part {}: expected broadcast, plain, ticks, upgrades or all",
        options.part
    );
    options
}

const USAGE: &str = "usage: sessions-load [--runs 3] [--part broadcast|plain|ticks|upgrades|all] \
[--sessions 2000] [--rooms 200] [--rate 5] [--tick-rooms 1000] [--tick-ms 50] [--swaps 20] [--upgrades 10] \
[--duration 30] [--daemon PATH] [--nginx PATH [--nginx-shutdown-timeout SECONDS]]

The anchors of --part upgrades (each run after the daemon's, same load, same upgrade times):
  --nginx PATH                      nginx's binary upgrade (USR2, WINCH, QUIT) proxying the
                                    WebSockets to room-server, with nginx's defaults (no
                                    worker_shutdown_timeout); apt-get install -y nginx
  --nginx-shutdown-timeout SECONDS  and once more with worker_shutdown_timeout SECONDS
  --daemon PATH                     another hotswap binary (say the daemon before sessions moved)";

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let options = parse_args();
    assert!(
        options.daemon.is_file(),
        "no daemon binary at {}: run `cargo build --release -p hotswap-daemon` first, or pass --daemon PATH",
        options.daemon.display()
    );
    println!("machine: {}", machine_description());
    let (mut rtt_steady, mut rtt_swapping, mut per_session, mut broadcast_pass) = (vec![], vec![], vec![], 0);
    let (mut plain_steady, mut plain_per_session, mut plain_pass) = (vec![], vec![], 0);
    // Messages per second (sent, acked before the stop) and the server's
    // CPU µs per message, of each run.
    let (mut broadcast_rates, mut plain_rates) = (vec![], vec![]);
    let rates = |run: &broadcast::BroadcastRun| {
        let seconds = options.duration.as_secs_f64();
        (run.sent as f64 / seconds, run.acked_before_stop as f64 / seconds, run.server_cpu_us_per_message())
    };
    let (mut late_steady, mut late_swapping, mut tick_pass) = (vec![], vec![], 0);
    let mut upgrade_runs = vec![];
    let mut nginx_runs: Vec<Vec<upgrades::UpgradeRun>> =
        options.nginx_shutdown_timeouts.iter().map(|_| vec![]).collect();
    for n in 1..=options.runs {
        if options.part == "all" || options.part == "broadcast" {
            println!(
                "\n=== broadcast run {n}: {} sessions, {} rooms, {}/s each, {} swaps, {:?} (load average {}) ===",
                options.sessions,
                options.rooms,
                options.rate_hz,
                options.swaps,
                options.duration,
                load_average()
            );
            let run = broadcast::run(&options, false);
            broadcast::print(&run, &options);
            rtt_steady.push(run.steady);
            rtt_swapping.push(run.swapping);
            per_session.push(run.rss_per_session_kib(options.sessions));
            broadcast_rates.push(rates(&run));
            broadcast_pass += usize::from(run.passed());
        }
        if options.part == "all" || options.part == "plain" {
            println!(
                "\n=== plain run {n}: room-server (tokio, no hotswap), the same load, no swaps (load average {}) ===",
                load_average()
            );
            let run = broadcast::run(&options, true);
            broadcast::print(&run, &options);
            plain_steady.push(run.steady);
            plain_per_session.push(run.rss_per_session_kib(options.sessions));
            plain_rates.push(rates(&run));
            plain_pass += usize::from(run.passed());
        }
        if options.part == "all" || options.part == "ticks" {
            println!(
                "\n=== ticks run {n}: {} rooms at {:?}, {} swaps, {:?} (load average {}) ===",
                options.tick_rooms,
                options.tick,
                options.swaps,
                options.duration,
                load_average()
            );
            let run = ticks::run(&options);
            ticks::print(&run, &options);
            let medians = |s: &[(f64, f64)]| {
                (
                    median(&s.iter().map(|x| x.0).collect::<Vec<_>>()),
                    median(&s.iter().map(|x| x.1).collect::<Vec<_>>()),
                )
            };
            late_steady.push(medians(&run.steady));
            late_swapping.push(medians(&run.swapping));
            tick_pass += usize::from(run.passed());
        }
        if options.part == "all" || options.part == "upgrades" {
            println!(
                "\n=== upgrades run {n}: {} sessions, {} rooms, {}/s each, {} upgrades, {:?}, {} (load average {}) ===",
                options.sessions,
                options.rooms,
                options.rate_hz,
                options.upgrades,
                options.duration,
                options.daemon.display(),
                load_average()
            );
            let run = upgrades::run(&options);
            upgrades::print(&run, &options);
            upgrade_runs.push(run);
            if let Some(binary) = &options.nginx {
                for (runs, timeout) in nginx_runs.iter_mut().zip(&options.nginx_shutdown_timeouts) {
                    println!(
                        "\n=== upgrades run {n}, the anchor: {} ({}), {} (load average {}) ===",
                        nginx::name(*timeout),
                        binary.display(),
                        hotswap_bench::nginx::version(binary),
                        load_average()
                    );
                    let run = nginx::run(&options, binary, *timeout);
                    upgrades::print(&run, &options);
                    runs.push(run);
                }
            }
        }
    }
    println!("\n=== medians over {} run(s) ===", options.runs);
    let pick = |v: &[(f64, f64, f64, usize)], f: fn(&(f64, f64, f64, usize)) -> f64| {
        median(&v.iter().map(f).collect::<Vec<_>>())
    };
    let rate_medians = |v: &[(f64, f64, f64)]| {
        let of = |f: fn(&(f64, f64, f64)) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        (of(|r| r.0), of(|r| r.1), of(|r| r.2))
    };
    if !rtt_steady.is_empty() {
        let (sent, acked, cpu) = rate_medians(&broadcast_rates);
        println!(
            "broadcast: {broadcast_pass}/{} runs with 0 closed/lost/repeated/reordered; {sent:.0} sent/s, {acked:.0} acked/s, server CPU {cpu:.1} µs per message; round trip steady p50 {:.2} ms p99 {:.2} ms, during swaps p50 {:.2} ms p99 {:.2} ms; {:.1} KiB per idle session",
            rtt_steady.len(),
            pick(&rtt_steady, |r| r.0),
            pick(&rtt_steady, |r| r.1),
            pick(&rtt_swapping, |r| r.0),
            pick(&rtt_swapping, |r| r.1),
            median(&per_session)
        );
    }
    if !plain_steady.is_empty() {
        let (sent, acked, cpu) = rate_medians(&plain_rates);
        println!(
            "plain: {plain_pass}/{} runs with 0 closed/lost/repeated/reordered; {sent:.0} sent/s, {acked:.0} acked/s, server CPU {cpu:.1} µs per message; round trip p50 {:.2} ms p99 {:.2} ms (no swaps); {:.1} KiB per idle session",
            plain_steady.len(),
            pick(&plain_steady, |r| r.0),
            pick(&plain_steady, |r| r.1),
            median(&plain_per_session)
        );
    }
    if !upgrade_runs.is_empty() {
        upgrades_medians("upgrades", &upgrade_runs, &options);
    }
    for (runs, timeout) in nginx_runs.iter().zip(&options.nginx_shutdown_timeouts) {
        if !runs.is_empty() {
            upgrades_medians(&format!("upgrades, the anchor {}", nginx::name(*timeout)), runs, &options);
        }
    }
    if !late_steady.is_empty() {
        let pair = |v: &[(f64, f64)], i: usize| {
            median(&v.iter().map(|x| if i == 0 { x.0 } else { x.1 }).collect::<Vec<_>>())
        };
        println!(
            "ticks: {tick_pass}/{} runs with rooms' count == ran; lateness steady p50 {:.2} ms p99 {:.2} ms, during swaps p50 {:.2} ms p99 {:.2} ms",
            late_steady.len(),
            pair(&late_steady, 0),
            pair(&late_steady, 1),
            pair(&late_swapping, 0),
            pair(&late_swapping, 1)
        );
    }
}

fn upgrades_medians(label: &str, runs: &[upgrades::UpgradeRun], options: &Options) {
    let of = |f: &dyn Fn(&upgrades::UpgradeRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    println!(
        "{label}: {}/{} runs with 0 closed/lost/repeated/reordered; upgrades done {:.0}/{}; closes seen per upgrade {:.1}, reconnects per run {:.0}; old process gone {:.0} ms after the request, took_ms {:.0}, frozen_ms {}; round trip steady p50 {:.2} ms p99 {:.2} ms, during upgrades p50 {:.2} ms p99 {:.2} ms",
        runs.iter().filter(|r| r.passed()).count(),
        runs.len(),
        of(&|r| r.upgrades.iter().filter(|u| u.ok).count() as f64),
        options.upgrades,
        of(&|r| r.closes_per_upgrade()),
        of(&|r| r.sessions.reconnects as f64),
        of(&|r| r.medians_ms().0),
        of(&|r| r.medians_ms().1),
        upgrades::ms_text(of(&|r| r.medians_ms().2)),
        of(&|r| r.sessions.steady.0),
        of(&|r| r.sessions.steady.1),
        of(&|r| r.sessions.swapping.0),
        of(&|r| r.sessions.swapping.1)
    );
}
