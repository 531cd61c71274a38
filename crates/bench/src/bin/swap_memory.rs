//! Does memory come back after many swaps? 1,000 swaps, RSS before and
//! after, and how many private copies of the module are still mapped.
//!
//! Run with `cargo run --release -p hotswap-bench --bin swap-memory [SWAPS]`
//! (default 1000).
//!
//! 1. `counter` v1 <-> v2 with four instances, a call to each after every swap.
//! 2. `tls-counter` (a `thread_local!` with a destructor), the same file
//!    loaded again and again, with the default `max_resident_retired` (8):
//!    glibc cannot unmap a version while a live thread holds its TLS
//!    destructor, so the cap is reached and further swaps are refused.
//! 3. `tls-counter` with the cap raised above the number of swaps, then the
//!    calling thread exits (glibc runs its TLS destructors) and one more
//!    swap follows.
//!
//! Each part uses its own engine with its own private folder, so the mapped
//! copies counted under that folder are that engine's.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hotswap::{Engine, EngineConfig, SwapError};
use hotswap_bench::{machine_description, mapped_files_under, rss_kib};
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2, TLS_COUNTER};

fn main() {
    let swaps: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("the argument is a number of swaps"),
        None => 1000,
    };
    println!("machine: {}", machine_description());
    counter(swaps);
    tls_default_cap(swaps);
    tls_raised_cap(swaps);
}

fn engine_in(dir: &Path, max_resident_retired: usize) -> Engine {
    Engine::new(EngineConfig {
        private_dir: Some(dir.to_owned()),
        max_resident_retired,
        ..EngineConfig::default()
    })
}

fn rss() -> String {
    rss_kib().map_or_else(|| "unknown".into(), |kib| format!("{kib} KiB"))
}

fn growth(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            format!(
                "{:+} KiB ({:+.2} MiB)",
                after as i64 - before as i64,
                (after as f64 - before as f64) / 1024.0
            )
        }
        _ => "unknown".into(),
    }
}

/// Retired copies mapped, retired copies reclaimed, as the engine reports them.
fn retired(engine: &Engine, module: &str) -> (usize, u64) {
    let status = engine.status();
    let module = status.module(module).expect("the module is loaded");
    (module.resident_retired.len(), module.reclaimed)
}

fn counter(swaps: usize) {
    println!(
        "\n== 1. counter v1 <-> v2, 4 instances, {swaps} swaps, a call to each instance after every swap"
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let engine = engine_in(dir.path(), EngineConfig::default().max_resident_retired);
    engine.load("counter", COUNTER_V1).expect("first load");
    let keys = ["a", "b", "c", "d"];
    let mut calls_each = 0u64;
    let mut swap_and_call = |file: &str| {
        engine.load("counter", file).expect("swap");
        for key in keys {
            engine.call("counter", key, "add", b"1").expect("call");
        }
        calls_each += 1;
    };
    // Warm up: first private folder, allocator arenas, the loader's caches.
    let files = [COUNTER_V2, COUNTER_V1].into_iter().cycle();
    for file in files.clone().take(20) {
        swap_and_call(file);
    }
    let before = rss_kib();
    println!("RSS after 20 warm-up swaps:   {}", rss());
    let started = Instant::now();
    for file in files.skip(20).take(swaps) {
        swap_and_call(file);
    }
    let took = started.elapsed();
    let after = rss_kib();
    println!("RSS after {swaps} more swaps:    {}", rss());
    println!("RSS growth:                   {}", growth(before, after));
    println!("{swaps} swaps took {took:?} ({:?} per swap incl. 4 calls)", took / swaps as u32);
    let (resident, reclaimed) = retired(&engine, "counter");
    println!(
        "private copies mapped: {} (the current version; retired copies still mapped: {resident}); \
         retired copies reclaimed: {reclaimed}",
        mapped_files_under(dir.path())
    );
    for key in keys {
        let total = engine.call("counter", key, "get", b"").expect("get");
        assert_eq!(total, calls_each.to_string().into_bytes(), "instance {key} kept its total");
    }
    println!("every instance kept its total ({calls_each}) across all swaps");
}

fn tls_default_cap(swaps: usize) {
    let cap = EngineConfig::default().max_resident_retired;
    println!(
        "\n== 2. tls-counter, default max_resident_retired = {cap}, {swaps} attempted swaps \
         (same file reloaded), calls on one worker thread"
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let engine = Arc::new(engine_in(dir.path(), cap));
    let worker = {
        let engine = engine.clone();
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            engine.load("tls-counter", TLS_COUNTER).expect("first load");
            engine.call("tls-counter", "k", "add", b"").expect("call");
            let (mut swapped, mut refused) = (0, 0);
            let mut first_refusal = None;
            for attempt in 1..=swaps {
                match engine.load("tls-counter", TLS_COUNTER) {
                    Ok(_) => swapped += 1,
                    Err(error @ SwapError::TooManyResident { .. }) => {
                        refused += 1;
                        first_refusal.get_or_insert((attempt, error.to_string()));
                    }
                    Err(other) => panic!("unexpected swap error: {other}"),
                }
                engine.call("tls-counter", "k", "add", b"").expect("calls keep working");
            }
            println!("swaps that succeeded: {swapped}; refused: {refused}");
            if let Some((attempt, message)) = first_refusal {
                println!("first refusal at attempt {attempt}: {message}");
            }
            let total = engine.call("tls-counter", "k", "get", b"").expect("get");
            println!("the instance still serves: total = {}", String::from_utf8_lossy(&total));
            let (resident, reclaimed) = retired(&engine, "tls-counter");
            println!(
                "while the worker lives: private copies mapped {}, retired still mapped {resident}, reclaimed {reclaimed}",
                mapped_files_under(&dir),
            );
        })
    };
    worker.join().expect("the worker thread");
    after_worker_exit(&engine, dir.path());
}

fn tls_raised_cap(swaps: usize) {
    let cap = swaps + 10;
    println!(
        "\n== 3. tls-counter, max_resident_retired raised to {cap}, {swaps} swaps (same file reloaded), \
         a call on the worker thread after every swap"
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let engine = Arc::new(engine_in(dir.path(), cap));
    let before = rss_kib();
    let worker = {
        let engine = engine.clone();
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            engine.load("tls-counter", TLS_COUNTER).expect("first load");
            engine.call("tls-counter", "k", "add", b"").expect("call");
            println!("RSS before: {}", rss());
            let started = Instant::now();
            let mut last = started;
            for swap in 1..=swaps {
                engine.load("tls-counter", TLS_COUNTER).expect("swap under the raised cap");
                engine.call("tls-counter", "k", "add", b"").expect("call");
                if swap % (swaps / 4).max(1) == 0 {
                    println!(
                        "  after {swap:>5} swaps: RSS {}, copies mapped {}, last {} swaps took {:?}",
                        rss(),
                        mapped_files_under(&dir),
                        (swaps / 4).max(1),
                        last.elapsed()
                    );
                    last = Instant::now();
                }
            }
            println!("{swaps} swaps took {:?}", started.elapsed());
            let (resident, reclaimed) = retired(&engine, "tls-counter");
            println!(
                "while the worker lives: RSS {}, private copies mapped {}, retired still mapped {resident}, reclaimed {reclaimed}",
                rss(),
                mapped_files_under(&dir),
            );
        })
    };
    worker.join().expect("the worker thread");
    println!("RSS growth while the worker lived: {}", growth(before, rss_kib()));
    after_worker_exit(&engine, dir.path());
    println!("RSS growth over the whole part: {}", growth(before, rss_kib()));
}

/// What is still mapped once the calling thread has exited, and after one more swap.
fn after_worker_exit(engine: &Engine, dir: &Path) {
    let (resident, reclaimed) = retired(engine, "tls-counter");
    println!(
        "after the worker thread exited (its TLS destructors ran): RSS {}, private copies mapped {}, \
         retired still mapped {resident}, reclaimed {reclaimed}",
        rss(),
        mapped_files_under(dir),
    );
    let outcome = engine.load("tls-counter", TLS_COUNTER);
    let (resident, reclaimed) = retired(engine, "tls-counter");
    println!(
        "one more swap from the main thread: {}; then RSS {}, private copies mapped {}, \
         retired still mapped {resident}, reclaimed {reclaimed}",
        match &outcome {
            Ok(report) => format!("ok (old code unmapped: {:?})", report.old_code_unmapped),
            Err(error) => format!("refused: {error}"),
        },
        rss(),
        mapped_files_under(dir),
    );
}
