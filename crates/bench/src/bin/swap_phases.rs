//! Where the time of a swap goes: medians of every phase that
//! [`hotswap::SwapReport`] records, over many swaps.
//!
//! Run with `cargo run --release -p hotswap-bench --bin swap-phases [SWAPS]`
//! (default 300 swaps per scenario; 16 MiB swaps are capped at 60).
//!
//! Scenarios: counter v1 <-> v2 with no instances (the empty-state swap),
//! then one `blob` instance with 1 KiB, 1 MiB and 16 MiB of state.

use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig, SwapReport};
use hotswap_bench::{Summary, machine_description, size_label};
use hotswap_test_modules::{BLOB, COUNTER_V1, COUNTER_V2};

/// The phases of many swaps, one list per phase.
#[derive(Default)]
struct Phases {
    copy: Vec<Duration>,
    open_and_verify: Vec<Duration>,
    start_check: Vec<Duration>,
    wait_for_calls: Vec<Duration>,
    migrate_total: Vec<Duration>,
    pause: Vec<Duration>,
    total: Vec<Duration>,
    /// From the call to `load` until it returned (`total` plus closing the
    /// old version and checking that it left memory).
    load_returned: Vec<Duration>,
}

impl Phases {
    fn record(&mut self, report: &SwapReport, load_returned: Duration) {
        self.copy.push(report.copy);
        self.open_and_verify.push(report.open_and_verify);
        self.start_check.push(report.start_check);
        self.wait_for_calls.push(report.wait_for_calls);
        self.migrate_total.push(report.migrate_total);
        self.pause.push(report.pause);
        self.total.push(report.total);
        self.load_returned.push(load_returned);
    }

    fn print(mut self, title: &str) {
        println!("\n{title} ({} swaps), median (p10 – p90, min, max):", self.total.len());
        let rows: [(&str, &mut Vec<Duration>); 8] = [
            ("copy", &mut self.copy),
            ("open_and_verify", &mut self.open_and_verify),
            ("start_check", &mut self.start_check),
            ("wait_for_calls", &mut self.wait_for_calls),
            ("migrate_total", &mut self.migrate_total),
            ("pause", &mut self.pause),
            ("total (report)", &mut self.total),
            ("load() returned", &mut self.load_returned),
        ];
        for (name, samples) in rows {
            println!("  {name:<16} {}", Summary::of(samples));
        }
    }
}

fn swap(engine: &Engine, module: &str, file: &str, phases: &mut Phases) {
    let started = Instant::now();
    let report = engine.load(module, file).unwrap_or_else(|error| panic!("swap of {module}: {error}"));
    phases.record(&report, started.elapsed());
}

fn main() {
    let swaps: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("the argument is a number of swaps"),
        None => 300,
    };
    println!("machine: {}", machine_description());
    let file_size = |path: &str| std::fs::metadata(path).map_or(0, |m| m.len());
    println!(
        "module files: counter v1 {} bytes, counter v2 {} bytes, blob {} bytes",
        file_size(COUNTER_V1),
        file_size(COUNTER_V2),
        file_size(BLOB)
    );

    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", COUNTER_V1).expect("first load");
    let warm_up = swaps / 10;
    let mut phases = Phases::default();
    for (i, file) in [COUNTER_V2, COUNTER_V1].into_iter().cycle().take(warm_up + swaps).enumerate() {
        if i == warm_up {
            phases = Phases::default();
        }
        swap(&engine, "counter", file, &mut phases);
    }
    phases.print("counter v1 <-> v2, no instances");

    engine.load("blob", BLOB).expect("first load of blob");
    for size in [1 << 10, 1 << 20, 16 << 20] {
        engine.call("blob", "k", "resize", size.to_string().as_bytes()).expect("resize");
        let swaps = if size >= 16 << 20 { swaps.min(60) } else { swaps };
        let mut phases = Phases::default();
        for i in 0..warm_up.min(5) + swaps {
            if i == warm_up.min(5) {
                phases = Phases::default();
            }
            swap(&engine, "blob", BLOB, &mut phases);
        }
        phases.print(&format!("blob, one instance with {} of state", size_label(size)));
        let len = engine.call("blob", "k", "len", b"").expect("len");
        assert_eq!(len, size.to_string().into_bytes(), "the state survived every swap");
    }
}
