//! Probes of races between the engine's operations (issue 7, items 5, 14
//! and 15), kept as regression tests. The loom models in
//! `src/engine/loom_tests.rs` check the same protocol exhaustively on a small scale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig, ModuleSnapshot, SwapError, SwapInProgress};
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};

use crate::call_text;

fn engine_with_timeout(dir: &std::path::Path, swap_timeout: Duration) -> Arc<Engine> {
    Arc::new(Engine::new(EngineConfig {
        private_dir: Some(dir.join("private")),
        swap_timeout,
        ..EngineConfig::default()
    }))
}

/// Starts a call of `sleep millis` on `key` and waits until it holds its
/// instance (its call is counted, which happens under the instance's lock).
pub(crate) fn hold_with_sleep(engine: &Arc<Engine>, key: &str, millis: u64) -> std::thread::JoinHandle<()> {
    let calls_before = calls_of(engine, key);
    let (engine_for_call, key_for_call) = (engine.clone(), key.to_owned());
    let sleeper = std::thread::spawn(move || {
        engine_for_call.call("counter", &key_for_call, "sleep", millis.to_string().as_bytes()).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls_of(engine, key) == calls_before {
        assert!(Instant::now() < deadline, "the sleep call on {key} did not start within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    sleeper
}

fn calls_of(engine: &Engine, key: &str) -> u64 {
    engine.instances("counter").unwrap().into_iter().find(|i| i.key == key).map_or(0, |i| i.calls)
}

/// Waits until the counter's status shows a swap waiting for the call of
/// an instance that `busy` accepts, and returns what the status showed.
pub(crate) fn wait_until_the_swap_waits(engine: &Engine, busy: impl Fn(&str) -> bool) -> SwapInProgress {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = engine.status();
        let shown = status.module("counter").and_then(|module| module.swap_in_progress.clone());
        if let Some(shown) = shown.filter(|shown| shown.waiting_for.as_deref().is_some_and(&busy)) {
            return shown;
        }
        assert!(Instant::now() < deadline, "no swap waited for a busy instance within 10 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// While a swap waits for a long call, the module's status names the
/// version it swaps to and the instance it waits for; once the swap ends it
/// shows no swap.
#[test]
fn status_shows_what_a_waiting_swap_waits_for_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_timeout(dir.path(), Duration::from_secs(30));
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "idle", "add", "1");
    assert_eq!(engine.status().module("counter").unwrap().swap_in_progress, None);
    let sleeper = hold_with_sleep(&engine, "busy", 2_000);
    let before = std::time::SystemTime::now();
    let swap = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2)
    });
    let shown = wait_until_the_swap_waits(&engine, |key| key == "busy");
    assert_eq!(shown.to_version, "2.0.0");
    assert!(shown.started >= before - Duration::from_secs(1), "{shown:?}");
    let text = shown.to_string();
    assert!(text.starts_with("swap to 2.0.0 under way for "), "{text}");
    assert!(text.ends_with(" s, waiting for instance 'busy'"), "{text}");
    assert!(!sleeper.is_finished(), "the status showed the wait while the long call ran");
    sleeper.join().unwrap();
    swap.join().unwrap().unwrap();
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.swap_in_progress, None, "a swap that ended is not shown");
    assert_eq!(counter.current.version, "2.0.0");
}

/// Item 15. `remove_instance` of an instance that never started, while a
/// swap waits for busy instances: removal must not take locks in the
/// opposite order to the swap, or the swap gives up at its deadline
/// "waiting for" the idle instance. Several rounds, since which instance a
/// swap reaches first depends on the map's random hash.
#[test]
fn remove_instance_during_a_swap_does_not_stall_the_swap() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_timeout(dir.path(), Duration::from_secs(4));
        engine.load("counter", COUNTER_V1).unwrap();
        let busy: Vec<_> = (0..6).map(|i| hold_with_sleep(&engine, &format!("busy-{i}"), 2_000)).collect();
        let idle = engine.instance("counter", "idle").unwrap();
        let swap = std::thread::spawn({
            let engine = engine.clone();
            move || engine.load("counter", COUNTER_V2)
        });
        wait_until_the_swap_waits(&engine, |key| key.starts_with("busy-"));
        assert!(engine.remove_instance("counter", "idle").unwrap());
        let swapped = swap.join().unwrap();
        assert!(swapped.is_ok(), "round {round}: {:?}", swapped.err().map(|error| error.to_string()));
        busy.into_iter().for_each(|sleeper| sleeper.join().unwrap());
        assert!(matches!(idle.call("get", b""), Err(hotswap::CallError::InstanceRemoved { .. })));
        assert_eq!(call_text(&engine, "busy-0", "version", ""), "2.0.0");
    }
}

/// Item 14. `adopt` while a first call starts one of the adopted keys. Either
/// the call came first (adopt refuses with `AlreadyStarted`, and the call's
/// state stays) or adopt did (the call runs on the adopted state): an
/// update acknowledged to the caller is never lost, and no instance is
/// orphaned on the side.
#[test]
fn adopt_racing_first_calls_never_loses_an_acknowledged_update() {
    const SAVED: usize = 30_000;
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_timeout(dir.path(), Duration::from_secs(5));
        engine.load("counter", COUNTER_V1).unwrap();
        // Key "a" sorts first, so adopt reaches it first and works on the
        // other 29,999 afterwards: a long window for a first call on "a".
        let mut instances: Vec<(String, Vec<u8>)> =
            (0..SAVED).map(|i| (format!("k{i:05}"), 1000u64.to_le_bytes().to_vec())).collect();
        instances.insert(0, ("a".to_owned(), 100u64.to_le_bytes().to_vec()));
        let saved = ModuleSnapshot {
            module: "counter".into(),
            version: "1.0.0".into(),
            instances,
            timers: Vec::new(),
        };

        let acknowledged = Arc::new(AtomicU64::new(0));
        let adopt_done = Arc::new(AtomicBool::new(false));
        let caller = std::thread::spawn({
            let (engine, acknowledged, adopt_done) =
                (engine.clone(), acknowledged.clone(), adopt_done.clone());
            move || {
                // Let adopt begin, then call until it has returned.
                std::thread::sleep(Duration::from_millis(10 + 10 * round));
                loop {
                    let finished = adopt_done.load(Ordering::SeqCst);
                    engine.call("counter", "a", "add", b"1").unwrap();
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    if finished {
                        break;
                    }
                }
            }
        });
        let adopted = engine.adopt("counter", &saved);
        adopt_done.store(true, Ordering::SeqCst);
        caller.join().unwrap();
        let total: u64 = call_text(&engine, "a", "get", "").parse().unwrap();
        let acknowledged = acknowledged.load(Ordering::SeqCst);
        match adopted {
            Ok(count) => {
                assert_eq!(count, SAVED + 1);
                assert_eq!(total, 100 + acknowledged, "round {round}: adopted, then every acknowledged add");
            }
            Err(SwapError::AlreadyStarted { instance, .. }) => {
                assert_eq!(instance, "a");
                assert_eq!(total, acknowledged, "round {round}: refused, the fresh instance keeps its adds");
            }
            Err(other) => panic!("round {round}: {other}"),
        }
    }
}

/// Item 5. One instance is in a long call while a swap runs: the swap waits
/// for it without holding any other instance, so calls to the other
/// instances keep completing meanwhile; then the swap moves every instance.
#[test]
fn a_swap_waiting_for_a_long_call_holds_no_other_instance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_timeout(dir.path(), Duration::from_secs(30));
    engine.load("counter", COUNTER_V1).unwrap();
    let others: Vec<String> = (0..20).map(|i| format!("other-{i}")).collect();
    for key in &others {
        call_text(&engine, key, "add", "1");
    }
    let sleeper = hold_with_sleep(&engine, "slow", 4_000);
    let swap = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2)
    });
    wait_until_the_swap_waits(&engine, |key| key == "slow");
    for round in 0..5 {
        for key in &others {
            call_text(&engine, key, "add", "1");
        }
        assert!(
            !sleeper.is_finished(),
            "round {round}: the calls to other instances waited for the long call"
        );
    }
    assert!(!swap.is_finished(), "the swap waits for the long call");
    sleeper.join().unwrap();
    let report = swap.join().unwrap().unwrap();
    assert_eq!(report.instances, 21);
    for key in &others {
        assert_eq!(call_text(&engine, key, "get", ""), "6", "{key} kept every acknowledged add");
        assert_eq!(call_text(&engine, key, "version", ""), "2.0.0");
    }
}

/// Item 5. A swap whose deadline passes while one instance is in a long call
/// changes nothing: every instance stays on the old version with its state,
/// and the other instances served while the swap waited.
#[test]
fn a_swap_past_its_deadline_changes_nothing_and_others_kept_serving() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_timeout(dir.path(), Duration::from_millis(2_500));
    engine.load("counter", COUNTER_V1).unwrap();
    let others: Vec<String> = (0..20).map(|i| format!("other-{i}")).collect();
    for key in others.iter().map(String::as_str).chain(["a", "b", "c"]) {
        call_text(&engine, key, "add", "5");
    }
    let sleeper = hold_with_sleep(&engine, "slow", 5_000);
    let swap = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2)
    });
    wait_until_the_swap_waits(&engine, |key| key == "slow");
    for key in &others {
        call_text(&engine, key, "add", "1");
    }
    assert!(!swap.is_finished(), "the calls to other instances completed while the swap waited");
    let mut served_while_waiting = 0;
    while !swap.is_finished() {
        call_text(&engine, "a", "add", "1");
        served_while_waiting += 1;
    }
    let refused = swap.join().unwrap().unwrap_err();
    assert!(
        matches!(&refused, SwapError::Timeout { waiting_for, .. } if waiting_for == "instance 'slow'"),
        "{refused:?}"
    );
    assert!(served_while_waiting > 0);
    assert!(!sleeper.is_finished(), "the swap gave up before the long call ended");
    assert_eq!(call_text(&engine, "a", "get", ""), (5 + served_while_waiting).to_string());
    for key in ["a", "b", "c"] {
        assert_eq!(call_text(&engine, key, "version", ""), "1.0.0");
    }
    assert_eq!(call_text(&engine, "b", "get", ""), "5");
    sleeper.join().unwrap();
    assert_eq!(call_text(&engine, "slow", "version", ""), "1.0.0");
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.swaps, 0);
    assert_eq!(counter.swap_in_progress, None, "a swap that gave up is not shown");
}
