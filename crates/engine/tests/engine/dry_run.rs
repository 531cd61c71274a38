//! A dry run tries a swap on copies of the live state and publishes nothing:
//! the report says what the swap would do, every instance stays on the
//! running version with its state, the tried version is unloaded, calls
//! never fail meanwhile, and it counts as the module's swap under way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig, Fault, SwapError, TrialOutcome};
use hotswap_test_modules::{COUNTER_INIT_FAILS, COUNTER_V1, COUNTER_V2};

use crate::races::{hold_with_sleep, wait_until_the_swap_waits};
use crate::{call_text, deploy, engine_in};

/// counter v1 with alice at 40 and bob at 2, and one instance that exists
/// but never started (a handle, no call).
fn serving_v1(dir: &Path) -> Arc<Engine> {
    let engine = Arc::new(engine_in(dir));
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");
    call_text(&engine, "bob", "add", "2");
    engine.instance("counter", "unstarted").unwrap();
    engine
}

/// Nothing moved: both instances on v1 with their totals, no swap counted,
/// no rollback target made.
fn assert_untouched(engine: &Engine) {
    for (key, total) in [("alice", "40"), ("bob", "2")] {
        assert_eq!(call_text(engine, key, "version", ""), "1.0.0", "{key}");
        assert_eq!(call_text(engine, key, "get", ""), total, "{key}");
    }
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!((counter.swaps, counter.current.version.as_str()), (0, "1.0.0"));
    assert_eq!(counter.rollback_version, None, "a dry run leaves no version to roll back to");
    assert_eq!(counter.swap_in_progress, None, "the dry run has ended");
}

/// The private files the engine still keeps: the running version's copy only.
fn private_copies(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for folder in std::fs::read_dir(dir.join("private")).unwrap().flatten() {
        for file in std::fs::read_dir(folder.path()).unwrap().flatten() {
            names.push(file.file_name().to_string_lossy().into_owned());
        }
    }
    names
}

/// Whether any file whose name contains `name` is mapped in this process.
fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().any(|line| line.contains(name))
}

#[test]
fn a_dry_run_of_a_good_swap_reports_every_live_instance_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    let v2 = deploy(COUNTER_V2, dir.path(), "libcounter_tried_good.so");

    let report = engine.dry_run("counter", &v2).unwrap();

    assert_eq!(
        (report.module.as_str(), report.running_version.as_str(), report.trial_version.as_str()),
        ("counter", "1.0.0", "2.0.0")
    );
    assert_eq!(report.file, v2);
    assert_eq!(report.layout_change(), "none declared", "the counters declare no layout");
    assert_eq!(report.fresh_start, None);
    let keys: Vec<&str> = report.instances.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["alice", "bob"], "live instances only, in key order");
    for instance in &report.instances {
        assert_eq!(instance.outcome, TrialOutcome::Migrated, "{}", instance.key);
        assert_eq!(instance.old_snapshot_bytes, 8, "v1 snapshots 8 bytes");
        assert_eq!(instance.new_snapshot_bytes, Some(16), "v2 snapshots 16 bytes");
    }
    assert_eq!((report.migrated, report.refused), (2, 0));
    assert_eq!((report.old_snapshot_bytes_total, report.new_snapshot_bytes_total), (16, 32));
    assert!(report.migrate_max <= report.migrate_total && report.migrate_total <= report.total);
    assert!(report.would_swap());
    let text = report.to_string();
    assert!(text.starts_with("dry run of counter 1.0.0 -> 2.0.0 from "), "{text}");
    assert!(text.contains("2 would migrate, 0 refused"), "{text}");
    assert!(text.ends_with("a swap would go through; nothing was changed"), "{text}");

    assert_untouched(&engine);
    assert_eq!(report.trial_code_unmapped, Some(true), "the tried version left memory");
    assert!(!mapped("libcounter_tried_good.so"), "no mapping of the tried file is left");
    assert_eq!(
        private_copies(dir.path()).len(),
        1,
        "only v1's copy is kept: {:?}",
        private_copies(dir.path())
    );
    // The dry run ended, so the swap it tried can be made, and goes as planned.
    let swapped = engine.load("counter", &v2).unwrap();
    assert_eq!(swapped.instances, report.migrated);
    assert_eq!(call_text(&engine, "alice", "get", ""), "40");
}

/// Attack: a state the new version cannot read. The dry run names that
/// instance and the new version's words, the others still try, and nothing
/// moves.
#[test]
fn a_dry_run_names_each_refused_instance_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    call_text(&engine, "bob", "corrupt-snapshot", "");

    let report = engine.dry_run("counter", COUNTER_V2).unwrap();

    assert!(!report.would_swap());
    assert_eq!((report.migrated, report.refused), (1, 1));
    let refused: Vec<_> = report.refusals().collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].key, "bob");
    match &refused[0].outcome {
        TrialOutcome::MigrationFailed(Fault::Error(message)) => {
            assert!(message.contains("cannot migrate a 7-byte snapshot from counter 1.0.0"), "{message}")
        }
        other => panic!("expected bob's migration to be refused, got {other:?}"),
    }
    assert_eq!((refused[0].old_snapshot_bytes, refused[0].new_snapshot_bytes), (7, None));
    let text = report.to_string();
    assert!(text.contains("refused: instance 'bob': the new version's init returned an error: "), "{text}");
    assert!(text.ends_with("a swap would be refused; nothing was changed"), "{text}");

    call_text(&engine, "bob", "repair-snapshot", "");
    assert_untouched(&engine);
    assert_eq!(report.trial_code_unmapped, Some(true));
}

/// Attack: a version whose `init` always fails. The report says it cannot
/// start a fresh instance (as a swap would refuse it) and refuses every one.
#[test]
fn a_dry_run_of_a_version_that_cannot_start_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    let report = engine.dry_run("counter", COUNTER_INIT_FAILS).unwrap();
    assert_eq!(report.fresh_start, Some(Fault::Error("this version refuses to start".into())));
    assert_eq!((report.migrated, report.refused), (0, 2));
    assert!(report.refusals().all(|i| matches!(i.outcome, TrialOutcome::MigrationFailed(_))));
    let text = report.to_string();
    assert!(
        text.contains("cannot start a fresh instance: its init returned an error: this version"),
        "{text}"
    );
    assert_untouched(&engine);
}

/// A file the swap would refuse before touching an instance is refused the
/// same way, and an unloaded module has nothing to try.
#[test]
fn a_dry_run_refuses_what_a_swap_refuses_before_any_instance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    let error = engine.dry_run("counter", hotswap_test_modules::TLS_COUNTER).unwrap_err();
    assert!(matches!(error, SwapError::NameMismatch { .. }), "{error:?}");
    let error = engine.dry_run_checked("counter", COUNTER_V2, |_| Err("not signed".into())).unwrap_err();
    assert!(matches!(&error, SwapError::Rejected { reason, .. } if reason == "not signed"), "{error:?}");
    let error = engine.dry_run("nothing", COUNTER_V2).unwrap_err();
    assert!(matches!(error, SwapError::UnknownModule { .. }), "{error:?}");
    assert_untouched(&engine);
    assert_eq!(private_copies(dir.path()).len(), 1, "{:?}", private_copies(dir.path()));
}

/// Attack: calls on every instance, nonstop, while dry runs keep trying the
/// swap. No call fails, no update is lost, and every dry run sees every
/// instance on the running version.
#[test]
fn calls_never_fail_during_dry_runs() {
    const ROOMS: usize = 64;
    const DRY_RUNS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();
    for room in 0..ROOMS {
        call_text(&engine, &format!("room-{room}"), "add", "0");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|caller| {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = vec![0u64; ROOMS];
                let give_up = Instant::now() + Duration::from_secs(120);
                let mut n = caller;
                while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    let room = n % ROOMS;
                    n += 1;
                    match engine.call("counter", &format!("room-{room}"), "add", b"1") {
                        Ok(_) => acknowledged[room] += 1,
                        Err(error) => panic!("a call failed during a dry run: {error}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    for _ in 0..DRY_RUNS {
        let report = engine.dry_run("counter", COUNTER_V2).unwrap();
        assert_eq!((report.migrated, report.refused), (ROOMS, 0), "{report}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = vec![0u64; ROOMS];
    for caller in callers {
        for (room, count) in caller.join().expect("no call failed").into_iter().enumerate() {
            acknowledged[room] += count;
        }
    }
    assert!(acknowledged.iter().sum::<u64>() > 0, "the callers called");
    for (room, count) in acknowledged.iter().enumerate() {
        let key = format!("room-{room}");
        assert_eq!(call_text(&engine, &key, "get", ""), count.to_string(), "{key}");
        assert_eq!(call_text(&engine, &key, "version", ""), "1.0.0", "{key}");
    }
}

/// While a dry run waits for one busy instance, it holds no other: their
/// calls answer before the busy call ends.
#[test]
fn a_dry_run_waiting_for_a_busy_instance_holds_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    // "aaa" sorts first, so the dry run waits for it before trying the others.
    let sleeper = hold_with_sleep(&engine, "aaa", 2_000);
    let dry_run = std::thread::spawn({
        let engine = engine.clone();
        move || engine.dry_run("counter", COUNTER_V2)
    });
    let shown = wait_until_the_swap_waits(&engine, |key| key == "aaa");
    assert!(shown.dry_run, "status says it is a dry run: {shown}");
    assert!(shown.to_string().starts_with("dry run of a swap to 2.0.0 under way"), "{shown}");
    assert_eq!(call_text(&engine, "alice", "add", "1"), "41");
    assert_eq!(call_text(&engine, "bob", "get", ""), "2");
    assert!(!sleeper.is_finished(), "the other calls answered while the dry run waited for 'aaa'");
    sleeper.join().unwrap();
    let report = dry_run.join().unwrap().unwrap();
    assert_eq!((report.migrated, report.refused), (3, 0), "{report}");
}

/// An instance busy past the swap deadline is reported busy (a swap would
/// give up on it); the dry run goes on with the others.
#[test]
fn an_instance_busy_past_the_deadline_is_reported_busy() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        private_dir: Some(dir.path().join("private")),
        swap_timeout: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(config));
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");
    let sleeper = hold_with_sleep(&engine, "slow", 3_000);
    let report = engine.dry_run("counter", COUNTER_V2).unwrap();
    let slow = report.instances.iter().find(|i| i.key == "slow").unwrap();
    assert!(matches!(slow.outcome, TrialOutcome::Busy { waited } if waited >= Duration::from_millis(100)));
    assert_eq!((report.migrated, report.refused), (1, 1));
    assert!(!sleeper.is_finished(), "the dry run did not wait for the long call");
    sleeper.join().unwrap();
}

/// Guarantee 3 holds for dry runs: a load, rollback or unload during a dry
/// run is refused at once, and so is a dry run during a swap.
#[test]
fn a_swap_during_a_dry_run_and_a_dry_run_during_a_swap_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    let sleeper = hold_with_sleep(&engine, "alice", 1_500);
    let dry_run = std::thread::spawn({
        let engine = engine.clone();
        move || engine.dry_run("counter", COUNTER_V2)
    });
    wait_until_the_swap_waits(&engine, |key| key == "alice");
    for refused in [engine.load("counter", COUNTER_V2), engine.rollback("counter")] {
        assert!(matches!(refused, Err(SwapError::SwapInProgress { .. })), "{refused:?}");
    }
    assert!(matches!(engine.unload("counter"), Err(SwapError::SwapInProgress { .. })));
    assert!(matches!(engine.dry_run("counter", COUNTER_V2), Err(SwapError::SwapInProgress { .. })));
    sleeper.join().unwrap();
    assert!(dry_run.join().unwrap().unwrap().would_swap());

    // The other way round: a swap waiting for a long call.
    let sleeper = hold_with_sleep(&engine, "alice", 1_500);
    let swap = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2)
    });
    let shown = wait_until_the_swap_waits(&engine, |key| key == "alice");
    assert!(!shown.dry_run);
    let refused = engine.dry_run("counter", COUNTER_V2);
    assert!(matches!(refused, Err(SwapError::SwapInProgress { .. })), "{refused:?}");
    sleeper.join().unwrap();
    swap.join().unwrap().unwrap();
    assert_eq!(call_text(&engine, "alice", "version", ""), "2.0.0");
}
