//! How long a dry run of a swap takes with many live instances, while calls
//! keep arriving, and what it costs those calls.
//!
//! Run with `cargo run --release -p hotswap-bench --bin dry-run [RUNS] [INSTANCES]`
//! (default 7 runs of 10,000 `blob` instances of 1 KiB each; one more run
//! first warms up and is not counted). Two threads call `noop` on the
//! instances in turn the whole time. For each run it prints the dry run's
//! time, the calls made during it, how many failed (must be 0) and the
//! longest single call during it; then the median dry-run time against the
//! target (under 1 s, met only if every run meets it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig};
use hotswap_bench::{Summary, machine_description};
use hotswap_test_modules::BLOB;

const STATE_BYTES: usize = 1024;
const CALLERS: usize = 2;
const TARGET: Duration = Duration::from_secs(1);

/// What the callers saw while a dry run was under way; reset before each run.
#[derive(Default)]
struct DuringDryRun {
    /// Set by the main thread just before the dry run and cleared after it.
    running: AtomicBool,
    calls: AtomicU64,
    failed: AtomicU64,
    longest_call_ns: AtomicU64,
}

impl DuringDryRun {
    fn reset(&self) {
        self.calls.store(0, Relaxed);
        self.failed.store(0, Relaxed);
        self.longest_call_ns.store(0, Relaxed);
    }
}

fn key(i: usize) -> String {
    format!("player-{i:05}")
}

/// Calls `noop` on every instance in turn until `stop`; counts the calls
/// that overlapped a dry run (started or ended while one ran).
fn caller(
    engine: Arc<Engine>,
    instances: usize,
    first: usize,
    during: Arc<DuringDryRun>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut failed_outside = 0;
    let mut i = first;
    while !stop.load(Relaxed) {
        let key = key(i % instances);
        i += CALLERS;
        let running_before = during.running.load(Relaxed);
        let started = Instant::now();
        let outcome = engine.call("blob", &key, "noop", b"");
        let took = started.elapsed();
        if running_before || during.running.load(Relaxed) {
            during.calls.fetch_add(1, Relaxed);
            during.longest_call_ns.fetch_max(took.as_nanos() as u64, Relaxed);
            if outcome.is_err() {
                during.failed.fetch_add(1, Relaxed);
            }
        } else if outcome.is_err() {
            failed_outside += 1;
        }
    }
    failed_outside
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(7, |arg| arg.parse().expect("RUNS is a number"));
    let instances: usize = args.next().map_or(10_000, |arg| arg.parse().expect("INSTANCES is a number"));
    assert!(runs >= 1 && instances >= 1);
    println!("machine: {}", machine_description());
    println!(
        "dry run of blob -> blob, {instances} live instances of {STATE_BYTES} bytes, {CALLERS} threads calling; \
         {runs} runs after one warm-up"
    );

    let engine = Arc::new(Engine::new(EngineConfig::default()));
    engine.load("blob", BLOB).expect("first load of blob");
    let size = STATE_BYTES.to_string();
    for i in 0..instances {
        engine.call("blob", &key(i), "resize", size.as_bytes()).expect("resize");
    }

    let during = Arc::new(DuringDryRun::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|first| {
            let (engine, during, stop) = (engine.clone(), during.clone(), stop.clone());
            std::thread::spawn(move || caller(engine, instances, first, during, stop))
        })
        .collect();

    let mut times = Vec::with_capacity(runs);
    let mut failed_during = 0;
    let mut longest_calls = Vec::with_capacity(runs);
    let mut longest_without_dry_run = Vec::with_capacity(runs);
    for run in 0..=runs {
        during.reset();
        during.running.store(true, Relaxed);
        let started = Instant::now();
        let report = engine.dry_run("blob", BLOB).expect("the dry run");
        let took = started.elapsed();
        during.running.store(false, Relaxed);
        assert_eq!((report.migrated, report.refused), (instances, 0), "{report}");
        assert_eq!(report.new_snapshot_bytes_total, (instances * STATE_BYTES) as u64);
        let (calls, failed) = (during.calls.load(Relaxed), during.failed.load(Relaxed));
        let longest = Duration::from_nanos(during.longest_call_ns.load(Relaxed));
        let label = if run == 0 { "warm-up".to_owned() } else { format!("run {run}") };
        println!(
            "  {label:<8} dry run {:>8.1} ms (migration {:.1} ms, longest hold of an instance {:.1} µs); \
             {calls} calls during it, {failed} failed, longest call {:.1} µs",
            took.as_secs_f64() * 1e3,
            report.migrate_total.as_secs_f64() * 1e3,
            report.hold_max.as_secs_f64() * 1e6,
            longest.as_secs_f64() * 1e6,
        );
        // The same window with no dry run: how long calls take here anyway
        // (two callers and this thread share the machine's cores).
        during.reset();
        during.running.store(true, Relaxed);
        std::thread::sleep(took);
        during.running.store(false, Relaxed);
        let longest_without = Duration::from_nanos(during.longest_call_ns.load(Relaxed));
        println!(
            "           the same time without a dry run: longest call {:.1} µs",
            longest_without.as_secs_f64() * 1e6
        );
        if run > 0 {
            times.push(took);
            failed_during += failed + during.failed.load(Relaxed);
            longest_calls.push(longest);
            longest_without_dry_run.push(longest_without);
        }
    }
    stop.store(true, Relaxed);
    let failed_outside: u64 = callers.into_iter().map(|caller| caller.join().expect("a caller")).sum();

    let slowest = *times.iter().max().expect("at least one run");
    let summary = Summary::of(&mut times);
    let longest_call = longest_calls.iter().max().expect("at least one run");
    println!(
        "dry-run time:          median {:.1} ms, max {:.1} ms",
        summary.median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    println!("failed calls:          {failed_during} during dry runs, {failed_outside} outside them");
    let longest_without = longest_without_dry_run.iter().max().expect("at least one run");
    println!(
        "longest call during:   {:.1} µs (in equal windows without a dry run: {:.1} µs)",
        longest_call.as_secs_f64() * 1e6,
        longest_without.as_secs_f64() * 1e6
    );
    let met = if slowest < TARGET { "met (every run)" } else { "NOT met" };
    println!("target under {TARGET:?}:   {met}");
    assert_eq!(failed_during + failed_outside, 0, "no call may fail");
}
