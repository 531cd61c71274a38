//! Calls never fail during swaps, and no acknowledged call is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hotswap::Engine;
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};

use crate::engine_in;

const THREADS: usize = 4;
const INSTANCES: usize = 16;
const SWAPS: usize = 200;

/// 4 threads call `add 1` on 16 instances without pause while 200 swaps
/// v1 -> v2 -> v1 ... run. Every call must succeed, and every instance's
/// total must equal the adds acknowledged to it.
#[test]
fn calls_never_fail_across_200_swaps_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Vec<AtomicU64>> = Arc::new((0..INSTANCES).map(|_| AtomicU64::new(0)).collect());
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (engine, stop, acknowledged) = (engine.clone(), stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut next = thread;
                // Bounded: stops when told, or after 60 s whatever happens.
                let give_up = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    let instance = next % INSTANCES;
                    next += 1;
                    match engine.call("counter", &format!("room-{instance}"), "add", b"1") {
                        Ok(_) => {
                            acknowledged[instance].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => failures.push(error.to_string()),
                    }
                }
                failures
            })
        })
        .collect();

    // Let every instance start before the first swap.
    wait_until(|| engine.status().module("counter").unwrap().instances == INSTANCES);
    let mut migrated = 0;
    for swap in 0..SWAPS {
        let file = if swap % 2 == 0 { COUNTER_V2 } else { COUNTER_V1 };
        let report = engine.load("counter", file).unwrap_or_else(|error| panic!("swap {swap}: {error}"));
        assert_eq!(report.old_code_unmapped, Some(true), "swap {swap}");
        migrated += report.instances;
    }
    let calls_during_swaps: u64 = acknowledged.iter().map(|count| count.load(Ordering::Relaxed)).sum();
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect();

    assert!(failures.is_empty(), "{} calls failed, first: {:?}", failures.len(), failures.first());
    assert_eq!(migrated, SWAPS * INSTANCES, "every swap moved all 16 instances");
    assert!(calls_during_swaps > SWAPS as u64, "the workers kept calling during the swaps");
    for (instance, acknowledged) in acknowledged.iter().enumerate() {
        let total = engine.call("counter", &format!("room-{instance}"), "get", b"").unwrap();
        assert_eq!(
            String::from_utf8(total).unwrap(),
            acknowledged.load(Ordering::Relaxed).to_string(),
            "room-{instance} lost or invented calls"
        );
    }
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.swaps, SWAPS as u64);
    assert_eq!(counter.reclaimed, SWAPS as u64, "every retired version left memory");
    assert!(counter.resident_retired.is_empty());
    assert_eq!(counter.errors + counter.panics, 0);
}

/// A call that arrives while a swap holds its instance waits and then runs
/// on the new version.
#[test]
fn calls_arriving_during_a_swap_wait_and_run_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();
    engine.call("counter", "a", "add", b"1").unwrap();

    // `sleep` holds instance "a" for 3 s; the swap queues for it.
    let sleeper = spawn_call(&engine, "a", "sleep", "3000");
    // A call is counted when it starts: the second call of "a" is the sleep.
    wait_until(|| engine.instances("counter").unwrap().iter().any(|i| i.key == "a" && i.calls == 2));
    let swap = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2).unwrap()
    });
    // Once the swap waits for "a", a call that arrives queues behind it and
    // must run on 2.0.0.
    crate::races::wait_until_the_swap_waits(&engine, |key| key == "a");
    assert!(!swap.is_finished(), "the swap waits for the sleeping call");
    let late = spawn_call(&engine, "a", "version", "");
    sleeper.join().unwrap();
    let report = swap.join().unwrap();
    assert_eq!(report.to_version, "2.0.0");
    assert_eq!(late.join().unwrap(), b"2.0.0");
    assert_eq!(engine.call("counter", "a", "get", b"").unwrap(), b"1");
}

fn spawn_call(
    engine: &Arc<Engine>,
    instance: &'static str,
    method: &'static str,
    payload: &'static str,
) -> std::thread::JoinHandle<Vec<u8>> {
    let engine = engine.clone();
    std::thread::spawn(move || engine.call("counter", instance, method, payload.as_bytes()).unwrap())
}

fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
