//! Run with: cargo run -p live-swap --release
//!
//! A game server keeps 16 rooms in a `counter` module. Four threads call
//! `add 1` on the rooms nonstop, like players scoring, while this program
//! swaps the module's code back and forth between 1.0.0 and 2.0.0 (2.0.0
//! has a different state layout, migrated both ways). Then it tries a broken
//! build, which the engine refuses while the running version keeps serving,
//! and rolls back.
//!
//! At the end it checks the two promises that matter: no call failed, and
//! the rooms' totals add up to exactly the number of successful adds, so no
//! state was lost in 22 swaps. It exits non-zero if either check fails.
//!
//! The modules come from `crates/test-modules/modules/`; `hotswap-test-modules`
//! builds them and gives their paths.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig, SwapReport};
use hotswap_test_modules::{COUNTER_INIT_FAILS, COUNTER_V1, COUNTER_V2};

const MODULE: &str = "counter";
const WORKERS: usize = 4;
const ROOMS: usize = 16;
/// Odd, so the last swap lands on 2.0.0 and the rollback goes back to 1.0.0.
const SWAPS: usize = 21;
/// Time between two steps: long enough to read along, and for the workers to
/// make plenty of calls on each version. The whole run takes about 10 s.
const STEP: Duration = Duration::from_millis(400);

/// What the worker threads share with the main thread.
struct Shared {
    engine: Engine,
    rooms: Vec<String>,
    tallies: Vec<Tally>,
    stop: AtomicBool,
    first_failure: Mutex<Option<String>>,
}

/// The calls one worker made so far. Aligned to a cache line so workers do
/// not slow each other down by writing their counters.
#[derive(Default)]
#[repr(align(64))]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    /// Successful and failed calls of all workers so far.
    fn calls(&self) -> (u64, u64) {
        self.tallies.iter().fold((0, 0), |(ok, failed), tally| {
            (ok + tally.ok.load(Relaxed), failed + tally.failed.load(Relaxed))
        })
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("live-swap: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs the demo; `Ok(false)` if a check failed.
fn run() -> Result<bool, Box<dyn Error>> {
    println!("hotswap live-swap: {ROOMS} game rooms in a `{MODULE}` module, {WORKERS} threads calling it");
    println!("nonstop while its code is swapped between 1.0.0 and 2.0.0 (a new state layout).");
    println!();

    let shared = &Shared {
        engine: Engine::new(EngineConfig::default()),
        rooms: (0..ROOMS).map(|room| format!("room-{room}")).collect(),
        tallies: (0..WORKERS).map(|_| Tally::default()).collect(),
        stop: AtomicBool::new(false),
        first_failure: Mutex::new(None),
    };
    let loaded = shared.engine.load(MODULE, COUNTER_V1)?;
    println!("  load      {MODULE} {} from {}", loaded.to_version, file_name(COUNTER_V1));

    let started = Instant::now();
    let script = thread::scope(|scope| {
        for me in 0..WORKERS {
            scope.spawn(move || worker(shared, me));
        }
        let result = swap_under_load(shared);
        // Stop the workers whatever happened; the scope waits for them.
        shared.stop.store(true, Relaxed);
        result
    });
    let ran_for = started.elapsed();
    let (refused_swaps, longest_pause) = script?;
    println!("  stopped   {WORKERS} workers after {:.1} s", ran_for.as_secs_f64());
    println!();

    // The workers have been joined: their tallies are final.
    let (ok, failed) = shared.calls();
    let mut rooms_total = 0;
    for room in &shared.rooms {
        let reply = shared.engine.call(MODULE, room, "get", b"")?;
        rooms_total += String::from_utf8_lossy(&reply).parse::<u64>()?;
    }
    let status = shared.engine.status();
    let counter = status.module(MODULE).ok_or("the counter module is gone")?;
    let calls_per_second = (ok + failed) as f64 / ran_for.as_secs_f64();
    let totals_match = rooms_total == ok;

    println!(
        "  calls made        {:>12}   ({:.2} million per second)",
        thousands(ok + failed),
        calls_per_second / 1e6
    );
    println!("  failed calls      {:>12}", thousands(failed));
    println!(
        "  sum of rooms      {:>12}   {} successful adds",
        thousands(rooms_total),
        if totals_match { "=" } else { "!=" }
    );
    println!(
        "  swaps             {:>12}   ({refused_swaps} refused), longest pause {}",
        counter.swaps,
        duration(longest_pause).trim_start()
    );
    println!(
        "  old code unloaded {:>12}   ({} still mapped)",
        format!("{} of {}", counter.reclaimed, counter.swaps),
        counter.resident_retired.len()
    );
    println!();

    if failed > 0 {
        let first = shared.first_failure.lock().unwrap().clone().unwrap_or_default();
        println!("FAILED: {failed} call(s) failed; the first: {first}");
        return Ok(false);
    }
    if !totals_match {
        println!(
            "FAILED: the rooms hold {rooms_total} but {ok} adds succeeded: state was lost or duplicated"
        );
        return Ok(false);
    }
    println!("OK: {} swaps under load, every call succeeded, every add is in a room's total.", counter.swaps);
    Ok(true)
}

/// One worker: adds 1 to a room, again and again, until told to stop.
fn worker(shared: &Shared, me: usize) {
    let tally = &shared.tallies[me];
    let (mut ok, mut failed) = (0, 0);
    // A tiny xorshift spreads the calls over the rooms, so workers sometimes
    // meet in the same room, as players do.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (me as u64 + 1);
    while !shared.stop.load(Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let room = &shared.rooms[(seed % ROOMS as u64) as usize];
        match shared.engine.call(MODULE, room, "add", b"1") {
            Ok(_) => ok += 1,
            Err(error) => {
                failed += 1;
                shared.first_failure.lock().unwrap().get_or_insert_with(|| error.to_string());
            }
        }
        tally.ok.store(ok, Relaxed);
        tally.failed.store(failed, Relaxed);
    }
}

/// The main thread's part while the workers run: the swaps, a broken build
/// and a rollback. Returns the number of refused swaps and the longest pause.
fn swap_under_load(shared: &Shared) -> Result<(usize, Duration), Box<dyn Error>> {
    let engine = &shared.engine;
    println!("  workers   {WORKERS} threads calling `add 1` on room-0 .. room-{}", ROOMS - 1);
    println!();
    println!("  pause: how long calls waited; total: from load() until calls run on the new version");
    println!();
    println!(
        "  {:<9} {:<8} {:<8} {:>5}   {:>8}   {:>8}   {:>12}",
        "", "from", "to", "rooms", "pause", "total", "calls served"
    );

    let mut longest_pause = Duration::ZERO;
    let mut calls_before = 0;
    let mut row = |label: &str, report: &SwapReport| {
        let (ok, failed) = shared.calls();
        longest_pause = longest_pause.max(report.pause);
        println!(
            "  {label:<9} {:<8} {:<8} {:>5}   {}   {}   {:>12}",
            report.from_version.as_deref().unwrap_or("-"),
            report.to_version,
            report.instances,
            duration(report.pause),
            duration(report.total),
            thousands(ok + failed - calls_before),
        );
        calls_before = ok + failed;
    };

    for (n, path) in [COUNTER_V2, COUNTER_V1].into_iter().cycle().take(SWAPS).enumerate() {
        thread::sleep(STEP);
        let report = engine.load(MODULE, path)?;
        row(&format!("swap {:>2}", n + 1), &report);
    }

    // A broken build: its `init` refuses to take over the state.
    thread::sleep(STEP);
    let serving = String::from_utf8(engine.call(MODULE, "room-0", "version", b"")?)?;
    println!();
    match engine.load(MODULE, COUNTER_INIT_FAILS) {
        Ok(report) => return Err(format!("the broken build was accepted: {report}").into()),
        Err(refused) => {
            println!("  refused   {}", file_name(COUNTER_INIT_FAILS));
            for line in wrap(&refused.to_string(), 78) {
                println!("            {line}");
            }
        }
    }
    let (ok_at_refusal, _) = shared.calls();
    thread::sleep(STEP);
    let still = String::from_utf8(engine.call(MODULE, "room-0", "version", b"")?)?;
    if still != serving {
        return Err(format!("after the refusal the rooms run {still}, not {serving}").into());
    }
    let (ok_now, failed_now) = shared.calls();
    println!(
        "  kept      {still} serving: {} adds since the refusal, {} failed",
        thousands(ok_now - ok_at_refusal),
        thousands(failed_now)
    );
    println!();

    let report = engine.rollback(MODULE)?;
    row("rollback", &report);
    thread::sleep(STEP);
    Ok((1, longest_pause))
}

/// `d` in µs below a millisecond, in ms above, right-aligned in 8 columns.
fn duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:>5} µs", d.as_micros())
    } else {
        format!("{:>5.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// `n` with thousands separators: 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The last part of a path, for short lines.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Splits `text` into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(74_667_958), "74,667,958");
    }

    #[test]
    fn durations_keep_their_width() {
        assert_eq!(duration(Duration::from_micros(5)), "    5 µs");
        assert_eq!(duration(Duration::from_micros(12_560)), "12.56 ms");
    }

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("a-very-long-word x", 4), ["a-very-long-word", "x"]);
    }
}
