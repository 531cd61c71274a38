//! Helpers shared by hotswap's benchmarks and measurement programs.
//!
//! | target | what it measures | run with |
//! |---|---|---|
//! | `benches/call.rs` | one call: direct, raw fn pointer, the module's entry point, `Engine::call`, `InstanceHandle::call`, typed methods beside raw ones | `cargo bench -p hotswap-bench --bench call` |
//! | the repository's `benches/baseline` (a workspace of its own) | the same against hot-lib-reloader, in one run | `cargo bench --manifest-path benches/baseline/Cargo.toml` |
//! | `src/bin/call_instructions.rs` | many calls of one kind (`engine`, `keys`, `handle`, `handle-add`, `typed-balance`, `typed-deposit`), for instructions per call under callgrind | see its docs |
//! | `benches/swap.rs` | a swap with no instances; swap pause at 1 KiB, 1 MiB, 16 MiB of state | `cargo bench -p hotswap-bench --bench swap` |
//! | `benches/codec.rs` | the typed snapshot codec (postcard in the SDK's envelope) against serde_json at 1 MiB; the shape check per restore | `cargo bench -p hotswap-bench --bench codec` |
//! | `src/bin/dry_run.rs` | a dry run of 10,000 live 1 KiB instances while two threads keep calling | `cargo run --release -p hotswap-bench --bin dry-run` |
//! | `src/bin/swap_phases.rs` | the phases of [`hotswap::SwapReport`], medians over many swaps | `cargo run --release -p hotswap-bench --bin swap-phases` |
//! | `src/bin/swap_memory.rs` | RSS and mapped copies over 1,000 swaps, with and without thread-locals | `cargo run --release -p hotswap-bench --bin swap-memory` |
//! | `src/bin/watch_latency.rs` | the daemon: from a completed write of a watched module file to the new version serving | `cargo build --release -p hotswap-daemon`, then `cargo run --release -p hotswap-bench --bin watch-latency` |
//! | `scripts/http_load.sh` (+ `http_load.lua`, `src/bin/module_paths.rs`) | the daemon: requests/s through the HTTP front with wrk, steady and while swapping | `crates/bench/scripts/http_load.sh` |
//! | `src/bin/upgrade_load/` | the daemon: requests/s, failures by class, latency and serving pid per 100 ms while the process is upgraded and modules swapped; the frozen window against state size (`--plan state`); nginx's binary upgrade under the same load (`--nginx`) | `cargo build --release -p hotswap-daemon`, then `cargo run --release -p hotswap-bench --bin upgrade-load -- --runs 3` |
//! | `src/bin/sessions_load/` (+ `src/bin/room_server.rs`) | the daemon's WebSocket sessions: 2,000 sessions in 200 rooms through 20 swaps (none closed, lost, repeated or reordered; round trips), 1,000 rooms ticking (lateness, none missed or doubled), memory per idle session; the same load on the room in plain tokio (`--part plain`); through 10 process upgrades (`--part upgrades`), beside nginx's binary upgrade proxying the same sessions to `room-server` (`--nginx PATH`) | `cargo build --release -p hotswap-daemon`, then `cargo build --release -p hotswap-bench --bin sessions-load --bin room-server` and `target/release/sessions-load --runs 3` |
//! | `src/bin/upgrade_plot.rs` | the SVG timeline (`docs/upgrade-timeline.svg`) from `upgrade-load`'s CSV files | `cargo run --release -p hotswap-bench --bin upgrade-plot -- --run target/upgrade-load/run1` |
//! | `scripts/upgrade_load.sh` (+ `http_load.lua`) | the daemon: requests/s with wrk, steady and while upgrading about once a second | `crates/bench/scripts/upgrade_load.sh` |
//!
//! The results and the machine they were measured on are in `BENCHMARKS.md`
//! at the root of the repository.

pub mod nginx;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The daemon the measurement programs run unless told otherwise:
/// `target/release/hotswap` from the current folder, else next to this
/// workspace.
pub fn release_daemon() -> PathBuf {
    let here = PathBuf::from("target/release/hotswap");
    if here.is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/hotswap")
}

/// One line that says which machine the numbers come from: cores, CPU model,
/// kernel and the compiler.
pub fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown kernel".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "rustc (version unknown)".into());
    format!("{cores} cores ({cpu}), Linux {kernel}, {rustc}")
}

/// Order statistics of a set of timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub samples: usize,
    pub min: Duration,
    pub p10: Duration,
    pub median: Duration,
    pub p90: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Panics if there are none.
    pub fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "no samples to summarise");
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Summary {
            samples: samples.len(),
            min: samples[0],
            p10: at(0.1),
            median: at(0.5),
            p90: at(0.9),
            max: samples[samples.len() - 1],
        }
    }
}

impl fmt::Display for Summary {
    /// `median (p10–p90, min–max)` in microseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "{:>9.1} µs  (p10 {:.1} – p90 {:.1}, min {:.1}, max {:.1})",
            us(self.median),
            us(self.p10),
            us(self.p90),
            us(self.min),
            us(self.max)
        )
    }
}

/// This process's resident set size in KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many distinct files under `dir` are mapped into this process, counted
/// from `/proc/self/maps` (a file mapped as several segments counts once).
pub fn mapped_files_under(dir: &Path) -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let dir = dir.to_string_lossy();
    let mut files: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.find(dir.as_ref()).map(|at| &line[at..]))
        .map(|path| path.strip_suffix(" (deleted)").unwrap_or(path))
        .collect();
    files.sort_unstable();
    files.dedup();
    files.len()
}

/// A byte count for people: `1 KiB`, `16 MiB`.
pub fn size_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
