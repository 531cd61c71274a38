//! Timers (`ctx.after`): kept by the engine with their instance, across
//! swaps and through snapshots, each run once, bounded per instance, and
//! refused where there is no call to keep them with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hotswap::{CallError, Engine, EngineConfig, SwapError, TimerWake};
use hotswap_test_modules::{TIMER, TIMER_V2};

fn engine_with(dir: &std::path::Path, config: EngineConfig) -> Engine {
    let engine = Engine::new(EngineConfig { private_dir: Some(dir.join("private")), ..config });
    engine.load("timer", TIMER).unwrap();
    engine
}

fn timer_engine(dir: &std::path::Path) -> Engine {
    engine_with(dir, EngineConfig::default())
}

fn call(engine: &Engine, instance: &str, method: &str, payload: &str) -> String {
    let reply = engine
        .call("timer", instance, method, payload.as_bytes())
        .unwrap_or_else(|error| panic!("{method} on {instance} failed: {error}"));
    String::from_utf8(reply).unwrap()
}

/// The tags `fire` recorded on `instance`, with the version that ran each.
fn fired(engine: &Engine, instance: &str) -> Vec<(String, String)> {
    call(engine, instance, "fired", "")
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            (parts[0].to_owned(), parts[2].to_owned())
        })
        .collect()
}

/// Takes and runs every timer due by `now`; returns how many ran.
fn run_due(engine: &Engine, now: SystemTime) -> usize {
    let due = engine.take_due_timers(now);
    for timer in &due {
        engine.run_timer(timer).unwrap().expect("the timer still exists");
    }
    due.len()
}

fn later(by: Duration) -> SystemTime {
    SystemTime::now() + by
}

#[test]
fn a_timer_is_kept_with_its_instance_comes_due_once_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    let before = SystemTime::now();
    call(&engine, "room", "remind", "0 a");
    assert_eq!(engine.pending_timers(), 1);
    let due = engine.next_timer_due().expect("a timer is pending");
    assert!(due >= before && due <= SystemTime::now(), "due at the call plus 0 ms");

    let taken = engine.take_due_timers(SystemTime::now());
    assert_eq!(taken.len(), 1);
    let timer = &taken[0];
    assert_eq!((timer.module.as_str(), timer.instance.as_str()), ("timer", "room"));
    assert_eq!((timer.method.as_str(), timer.payload.as_slice()), ("fire", &b"a"[..]));
    assert!(engine.take_due_timers(SystemTime::now()).is_empty(), "taken once");
    assert_eq!(engine.next_timer_due(), None);
    assert_eq!(engine.pending_timers(), 1, "still the instance's until it runs");

    assert_eq!(engine.run_timer(timer).unwrap(), Some(Vec::new()));
    assert_eq!(engine.run_timer(timer).unwrap(), None, "a timer runs once");
    assert_eq!(fired(&engine, "room"), [("a".to_owned(), "1.0.0".to_owned())]);
    assert_eq!(engine.pending_timers(), 0);
}

#[test]
fn timers_come_due_in_order_and_not_before_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "room", "remind", "60000 late");
    call(&engine, "room", "remind", "30000 early");
    assert!(engine.take_due_timers(SystemTime::now()).is_empty(), "none is due yet");
    let next = engine.next_timer_due().unwrap();
    assert!(next > later(Duration::from_secs(25)) && next < later(Duration::from_secs(31)), "{next:?}");

    let first = engine.take_due_timers(later(Duration::from_secs(45)));
    assert_eq!(first.iter().map(|t| t.payload.as_slice()).collect::<Vec<_>>(), [b"early"]);
    let second = engine.take_due_timers(later(Duration::from_secs(90)));
    assert_eq!(second.iter().map(|t| t.payload.as_slice()).collect::<Vec<_>>(), [b"late"]);
}

#[test]
fn a_swap_keeps_pending_timers_and_they_run_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "room", "remind", "0 across");
    engine.load("timer", TIMER_V2).unwrap();
    assert_eq!(engine.pending_timers(), 1);
    assert_eq!(run_due(&engine, SystemTime::now()), 1);
    assert_eq!(fired(&engine, "room"), [("across".to_owned(), "2.0.0".to_owned())]);

    // And a rollback keeps them the same way.
    call(&engine, "room", "remind", "0 back");
    engine.rollback("timer").unwrap();
    assert_eq!(run_due(&engine, SystemTime::now()), 1);
    assert_eq!(fired(&engine, "room").last().unwrap(), &("back".to_owned(), "1.0.0".to_owned()));
}

#[test]
fn snapshots_carry_timers_and_restore_and_adopt_bring_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "a", "remind", "60000 a-later");
    call(&engine, "b", "remind", "0 b-now");
    call(&engine, "b", "remind", "1000 b-soon");
    let saved = engine.snapshot("timer").unwrap();
    let listed: Vec<(&str, &str)> = saved
        .timers
        .iter()
        .map(|t| (t.instance.as_str(), std::str::from_utf8(&t.payload).unwrap()))
        .collect();
    assert_eq!(listed, [("a", "a-later"), ("b", "b-now"), ("b", "b-soon")], "by instance, then due");
    let due_of_a = saved.timers[0].due;

    // A new process (or a restart): the same due times, by the wall clock.
    let restored = Engine::new(EngineConfig {
        private_dir: Some(dir.path().join("restored")),
        ..EngineConfig::default()
    });
    restored.restore("timer", TIMER_V2, &saved).unwrap();
    assert_eq!(restored.pending_timers(), 3);
    assert_eq!(restored.snapshot("timer").unwrap().timers, saved.timers, "kept as they were");
    assert_eq!(run_due(&restored, later(Duration::from_secs(5))), 2);
    assert_eq!(fired(&restored, "b").len(), 2);
    assert_eq!(restored.next_timer_due(), Some(due_of_a));

    let adopting = Engine::new(EngineConfig {
        private_dir: Some(dir.path().join("adopting")),
        ..EngineConfig::default()
    });
    adopting.load("timer", TIMER).unwrap();
    assert_eq!(adopting.adopt("timer", &saved).unwrap(), 2);
    assert_eq!(adopting.snapshot("timer").unwrap().timers, saved.timers);
    assert_eq!(run_due(&adopting, later(Duration::from_secs(120))), 3);
}

#[test]
fn a_saved_timer_of_an_instance_the_state_does_not_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "a", "remind", "0 x");
    let mut saved = engine.snapshot("timer").unwrap();
    saved.timers[0].instance = "ghost".into();
    let other =
        Engine::new(EngineConfig { private_dir: Some(dir.path().join("o")), ..EngineConfig::default() });
    let error = other.restore("timer", TIMER, &saved).unwrap_err();
    assert!(matches!(&error, SwapError::TimerOfUnknownInstance { instance, .. } if instance == "ghost"));
    assert!(
        error.to_string().contains("'ghost'") && error.to_string().contains("nothing was loaded"),
        "{error}"
    );
    assert!(other.status().modules.is_empty());
}

/// The guarantee behind running timers with `run_timer`: every snapshot has
/// either a timer or what it did, never both and never neither, even while
/// timers are taken and run as the snapshots are taken.
#[test]
fn every_snapshot_has_each_timer_or_its_effect_exactly_once_while_timers_run() {
    const TIMERS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(timer_engine(dir.path()));
    for i in 0..TIMERS {
        call(&engine, &format!("room-{}", i % 4), "remind", &format!("0 t{i}"));
    }
    let done = Arc::new(AtomicBool::new(false));
    let runner = std::thread::spawn({
        let (engine, done) = (engine.clone(), done.clone());
        move || {
            // All taken at once, run one by one: snapshots land while
            // timers are taken and not run yet.
            for timer in engine.take_due_timers(SystemTime::now()) {
                std::thread::yield_now();
                engine.run_timer(&timer).unwrap().expect("each taken timer runs");
            }
            done.store(true, Ordering::SeqCst);
        }
    });
    let mut checked = 0;
    while !done.load(Ordering::SeqCst) || checked == 0 {
        let snapshot = engine.snapshot("timer").unwrap();
        let effects: usize = snapshot
            .instances
            .iter()
            .map(|(_, state)| std::str::from_utf8(state).unwrap().lines().count())
            .sum();
        assert_eq!(snapshot.timers.len() + effects, TIMERS, "after {checked} snapshots");
        checked += 1;
    }
    runner.join().unwrap();
    assert_eq!(engine.pending_timers(), 0);
}

#[test]
fn an_instance_has_at_most_its_limit_of_timers_and_the_refusal_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        engine_with(dir.path(), EngineConfig { max_timers_per_instance: 3, ..EngineConfig::default() });
    for i in 0..3 {
        call(&engine, "room", "remind", &format!("0 t{i}"));
    }
    let error = engine.call("timer", "room", "remind", b"0 one-too-many").unwrap_err();
    let CallError::Refused { message, .. } = &error else { panic!("{error:?}") };
    assert!(
        message.contains("has 3 pending timers and may have at most 3")
            && message.contains("max_timers_per_instance")
            && message.contains("'room'"),
        "{message}"
    );
    assert_eq!(engine.pending_timers(), 3, "the refused one was not kept");
    call(&engine, "other-room", "remind", "0 elsewhere");

    // Once one has run, there is room again.
    let taken = engine.take_due_timers(SystemTime::now());
    engine.run_timer(taken.iter().find(|t| t.instance == "room").unwrap()).unwrap();
    call(&engine, "room", "remind", "0 fits-again");

    // Saved timers are never refused for the limit (as saved instances).
    let mut saved = engine.snapshot("timer").unwrap();
    let extra = saved.timers[0].clone();
    saved.timers.extend(std::iter::repeat_n(extra, 5));
    let restored = Engine::new(EngineConfig {
        private_dir: Some(dir.path().join("restored")),
        max_timers_per_instance: 3,
        ..EngineConfig::default()
    });
    restored.restore("timer", TIMER, &saved).unwrap();
    assert_eq!(restored.pending_timers(), saved.timers.len());
}

#[test]
fn a_timer_asked_for_in_init_or_snapshot_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "room", "remind", "60000 x");
    engine.snapshot("timer").unwrap();
    let refusals = call(&engine, "room", "refusals", "");
    let lines: Vec<&str> = refusals.lines().collect();
    assert!(
        lines[0].starts_with("init: refused: timers can only be set during a call, not in init"),
        "{refusals}"
    );
    assert!(
        lines[1].starts_with("snapshot: refused: timers can only be set during a call, not in snapshot"),
        "{refusals}"
    );
    assert_eq!(engine.pending_timers(), 1, "only the one set by the call");
}

#[test]
fn timers_set_by_a_call_that_fails_or_panics_are_kept_like_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    let error = engine.call("timer", "room", "remind_then_fail", b"0 after-error").unwrap_err();
    assert!(matches!(error, CallError::Refused { .. }), "{error:?}");
    let error = engine.call("timer", "room", "remind_then_panic", b"0 after-panic").unwrap_err();
    assert!(matches!(error, CallError::Panicked { .. }), "{error:?}");
    assert_eq!(engine.pending_timers(), 2);
    assert_eq!(run_due(&engine, SystemTime::now()), 2);
    let tags: Vec<String> = fired(&engine, "room").into_iter().map(|(tag, _)| tag).collect();
    assert_eq!(tags, ["after-error", "after-panic"]);
}

#[test]
fn removing_an_instance_or_unloading_drops_its_timers_and_a_taken_one_does_not_revive_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = timer_engine(dir.path());
    call(&engine, "gone", "remind", "0 never");
    call(&engine, "gone", "remind", "60000 never-either");
    let taken = engine.take_due_timers(SystemTime::now());
    assert!(engine.remove_instance("timer", "gone").unwrap());
    assert_eq!((engine.pending_timers(), engine.next_timer_due()), (0, None));
    assert_eq!(engine.run_timer(&taken[0]).unwrap(), None, "nothing runs");
    assert!(engine.instances("timer").unwrap().is_empty(), "and the instance is not started again");

    call(&engine, "room", "remind", "60000 dropped");
    engine.unload("timer").unwrap();
    assert_eq!((engine.pending_timers(), engine.next_timer_due()), (0, None));
}

#[test]
fn the_host_is_woken_only_when_a_timer_is_due_before_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let wake = TimerWake::new({
        let woken = woken.clone();
        move |due| woken.lock().unwrap().push(due)
    });
    let engine =
        engine_with(dir.path(), EngineConfig { on_earlier_timer: Some(wake), ..EngineConfig::default() });
    call(&engine, "room", "remind", "20000 first");
    call(&engine, "room", "remind", "40000 later-than-first");
    call(&engine, "other", "remind", "10000 earlier");
    let woken = woken.lock().unwrap().clone();
    assert_eq!(woken.len(), 2, "{woken:?}");
    assert!(woken[1] < woken[0]);
    assert_eq!(engine.next_timer_due(), Some(woken[1]));
}
