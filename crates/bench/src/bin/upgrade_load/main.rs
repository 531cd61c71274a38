//! Load on the daemon's HTTP front while the whole process is replaced
//! (`POST /v1/upgrade`) and modules are swapped, with every request's outcome
//! recorded per 100 ms.
//!
//! ```sh
//! cargo build --release -p hotswap-daemon
//! cargo run --release -p hotswap-bench --bin upgrade-load -- [--runs 3] [--plan load|state] [--daemon PATH]
//! cargo run --release -p hotswap-bench --bin upgrade-load -- --nginx /usr/sbin/nginx   # the comparison
//! ```
//!
//! It builds nothing itself. For each run it makes a private temporary folder
//! (mode 0700; module files 0644), writes a config (counter v1 at
//! `modules/libcounter.so`, `watch = false`; with `--plan state` also the
//! `blob` module), starts `hotswap serve` (default `target/release/hotswap`)
//! and reads the public address from `GET /v1/status` on the admin socket.
//!
//! Clients (threads, blocking sockets, 5 s timeouts) call
//! `POST /call/counter/add?instance=room-N` (body `1`, 16 rooms) for the whole
//! run: `--keepalive` of them (default 24) on keep-alive connections (a
//! response with `Connection: close` makes the client reconnect for its next
//! request), `--per-request` (default 8) on a new connection per request
//! (sent with `Connection: close`). A failed request is classed as refused
//! (connect refused), reset (`ECONNRESET`/`EPIPE`), eof (the connection ended
//! before the whole response), timeout, non-2xx or other, and listed with its
//! time, thread and the pid that served that connection last.
//!
//! Meanwhile one thread runs the plan's events at fixed times, each waiting
//! for the one before:
//!
//! - `--plan load` (default, `--duration 24`): 10 upgrades at 4.0, 5.5, …,
//!   17.5 s, and after each two swaps of counter (to v2 at +0.6 s, to v1 at
//!   +0.9 s) through `POST /v1/modules/counter/load`;
//! - `--plan state` (`--duration 20`): the blob instance `big` is resized to
//!   1 MiB at 1 s, 5 upgrades at 2.0, 3.5, …, 8.0 s; resized to 64 MiB at
//!   9.5 s, 5 upgrades at 10.5, …, 16.5 s; the answers' `frozen_ms` and
//!   `took_ms` are printed per size;
//! - `--plan steady`: no event at all, the control for the load plan;
//! - `--nginx PATH`: the same clients against nginx (`return 200`, a private
//!   prefix and config in a temporary folder, 127.0.0.1 only, 2 workers,
//!   `daemon on` as nginx's default, a `hotswap-pid` header set to the
//!   worker's pid), with nginx's binary upgrade at each upgrade time of the
//!   load plan (no swaps): `kill -USR2` the master, wait for the new master
//!   (its pid file) and its workers, `kill -WINCH` and `kill -QUIT` the old
//!   master, wait for it to exit. The master that serves at the end gets
//!   `kill -QUIT` (by the pid in its pid file, checked against the ones seen).
//!
//! Each upgrade spawns the same binary again (the daemon re-executes the
//! binary it was started from). Per run it writes to `--out` (default
//! `target/upgrade-load`) `<name>-buckets.csv` (per 100 ms: responses,
//! failures by class, latency p50/p99/max, which pids served, keep-alive
//! connections the server closed by how),
//! `<name>-events.csv`, `<name>-failures.csv` and the daemon's log, and
//! prints a summary: requests/s in the 1 s windows around the upgrades
//! (trigger ± 0.5 s) against the steady windows (buckets at least 1 s from
//! any event, after a 1 s warm-up), failures, the upgrades' `took_ms`,
//! `startup_ms` and the rest, and the keep-alive connections the server
//! closed ([`closes`]: said `Connection: close`, ended between requests, ended
//! mid-answer; in the upgrades' windows and steady). At the end the rooms'
//! totals must add up to the acknowledged adds. Every process it started is
//! stopped by its pid: the daemon that serves at the end (`GET /v1/status`)
//! with SIGTERM, after checking that every replaced one has exited.
//!
//! The parts: [`options`] (the command line), [`plan`] (what happens when),
//! [`load`] (the client threads), [`hotswap`] and [`nginx`] (the server under
//! test, its upgrades and its processes), [`report`], [`closes`] and [`csv`]
//! (the figures). The HTTP client and the daemon process come from
//! `hotswap-test-support`, shared with the end-to-end tests.

mod closes;
mod csv;
mod hotswap;
mod load;
mod nginx;
mod options;
mod plan;
mod report;

use std::fs;

use hotswap_bench::machine_description;

use crate::load::ROOMS;
use crate::options::{Plan, parse_args};

fn main() {
    let options = parse_args();
    if options.nginx.is_none() {
        assert!(
            options.daemon.is_file(),
            "no daemon binary at {}: run `cargo build --release -p hotswap-daemon` first, or pass --daemon PATH",
            options.daemon.display()
        );
    }
    fs::create_dir_all(&options.out).expect("create the output folder");
    println!("machine: {}", machine_description());
    match &options.nginx {
        Some(nginx) => {
            println!("target: nginx {} ({})", nginx.display(), hotswap_bench::nginx::version(nginx))
        }
        None => println!(
            "target: hotswap {}",
            fs::canonicalize(&options.daemon).unwrap_or(options.daemon.clone()).display()
        ),
    }
    println!(
        "load: {} keep-alive + {} connection-per-request clients, POST /call/counter/add?instance=room-0..{}, {:?} per run, plan {:?}, {} run(s)",
        options.keepalive,
        options.per_request,
        ROOMS - 1,
        options.duration,
        options.plan,
        options.runs
    );
    let mut summaries = Vec::new();
    for run in 1..=options.runs {
        let name = match (&options.nginx, options.plan) {
            (Some(_), _) => format!("nginx-run{run}"),
            (None, Plan::Load) => format!("run{run}"),
            (None, Plan::State) => format!("state-run{run}"),
            (None, Plan::Steady) => format!("steady-run{run}"),
        };
        println!("\n=== {name} ===");
        let summary = match &options.nginx {
            Some(nginx) => nginx::run(&options, nginx, &name),
            None => hotswap::run(&options, &name),
        };
        summaries.push(summary);
    }
    if summaries.len() > 1 {
        report::print_medians(&summaries);
    }
}
