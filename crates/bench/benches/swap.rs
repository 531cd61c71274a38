//! What a swap costs.
//!
//! * `swap_empty/load`: `engine.load` of the other counter version (v1 and v2
//!   alternate) while the module has no instances, timed from the call until
//!   it returns, by which time calls run on the new version.
//! * `swap_pause/<size>`: [`hotswap::SwapReport::pause`] — how long calls to
//!   the instance waited — when one `blob` instance with a state of 1 KiB,
//!   1 MiB or 16 MiB is swapped (the same file loaded again: a new private
//!   copy, so a real swap with snapshot and init).
//! * `swap_total/<size>`: the same swaps, timed from the call to `load` until
//!   it returns.
//!
//! `src/bin/swap_phases.rs` prints the phases of these swaps (copy, open and
//! verify, migrate, ...). Run with `cargo bench -p hotswap-bench --bench swap`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use hotswap::{Engine, EngineConfig};
use hotswap_bench::size_label;
use hotswap_test_modules::{BLOB, COUNTER_V1, COUNTER_V2};

fn swap_empty(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", COUNTER_V1).expect("first load");
    let mut next = [COUNTER_V2, COUNTER_V1].into_iter().cycle();

    // Flat sampling: every sample is the same number of swaps, so the median
    // criterion reports is a median of per-swap times, not of a regression.
    let mut group = c.benchmark_group("swap_empty");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4));
    group.bench_function("load", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let file = next.next().expect("endless");
                let started = Instant::now();
                let report = engine.load("counter", file).expect("swap");
                spent += started.elapsed();
                assert_eq!(report.instances, 0);
            }
            spent
        })
    });
    group.finish();
}

const SIZES: [usize; 3] = [1 << 10, 1 << 20, 16 << 20];

/// Fewer, longer samples for the 16 MiB swaps (about 15 ms each), so the
/// whole suite stays within a few minutes.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, size: usize) {
    if size >= 16 << 20 {
        group.sample_size(15).measurement_time(Duration::from_secs(5));
    } else {
        group.sample_size(30).measurement_time(Duration::from_secs(3));
    }
}

fn swap_with_state(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default());
    engine.load("blob", BLOB).expect("first load");

    let mut group = c.benchmark_group("swap_pause");
    group.sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(300));
    for size in SIZES {
        configure(&mut group, size);
        engine.call("blob", "k", "resize", size.to_string().as_bytes()).expect("resize");
        group.bench_function(BenchmarkId::from_parameter(size_label(size)), |b| {
            b.iter_custom(|iters| {
                let mut paused = Duration::ZERO;
                for _ in 0..iters {
                    let report = engine.load("blob", BLOB).expect("swap");
                    assert_eq!(report.snapshot_bytes_max, size as u64);
                    paused += report.pause;
                }
                paused
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("swap_total");
    group.sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(300));
    for size in SIZES {
        configure(&mut group, size);
        engine.call("blob", "k", "resize", size.to_string().as_bytes()).expect("resize");
        group.bench_function(BenchmarkId::from_parameter(size_label(size)), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    engine.load("blob", BLOB).expect("swap");
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
    let len = engine.call("blob", "k", "len", b"").expect("len");
    assert_eq!(len, (16usize << 20).to_string().into_bytes(), "the state survived every swap");
}

criterion_group!(benches, swap_empty, swap_with_state);
criterion_main!(benches);
