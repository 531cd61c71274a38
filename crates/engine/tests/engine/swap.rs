//! Loading, swapping with a migration, rollback and what status reports.

use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};

use crate::{call_text, deploy, engine_in};

#[test]
fn first_call_starts_an_instance_and_calls_are_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    let report = engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(report.from_version, None);
    assert_eq!(report.to_version, "1.0.0");

    assert_eq!(call_text(&engine, "alice", "add", "10"), "10");
    assert_eq!(call_text(&engine, "alice", "add", "5"), "15");
    assert_eq!(call_text(&engine, "bob", "add", "1"), "1");
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.instances, 2);
    assert_eq!(counter.calls, 3);
    assert_eq!((counter.errors, counter.panics), (0, 0));
    assert_eq!(counter.current.version, "1.0.0");
    assert!(counter.current.rustc_version.starts_with("rustc "), "{}", counter.current.rustc_version);
}

#[test]
fn swap_migrates_every_instance_to_the_new_layout() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    for (room, amount) in [("room-1", "7"), ("room-2", "11"), ("room-3", "13")] {
        call_text(&engine, room, "add", amount);
    }

    let report = engine.load("counter", COUNTER_V2).unwrap();
    assert_eq!(report.from_version.as_deref(), Some("1.0.0"));
    assert_eq!(report.to_version, "2.0.0");
    assert_eq!(report.instances, 3);
    assert_eq!(report.snapshot_bytes_total, 3 * 8, "three 8-byte v1 snapshots");
    assert!(report.pause <= report.total);
    assert_eq!(report.old_code_unmapped, Some(true), "counter v1 has no thread-locals");

    assert_eq!(call_text(&engine, "room-1", "version", ""), "2.0.0");
    assert_eq!(call_text(&engine, "room-1", "get", ""), "7");
    assert_eq!(call_text(&engine, "room-2", "add", "1"), "12");
    assert_eq!(call_text(&engine, "room-2", "adds", ""), "1", "v2's new field starts at zero");
    assert_eq!(call_text(&engine, "room-3", "get", ""), "13");

    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.swaps, 1);
    assert_eq!(counter.rollback_version.as_deref(), Some("1.0.0"));
    assert_eq!(counter.reclaimed, 1);
    assert!(counter.resident_retired.is_empty());
    assert_eq!(counter.last_swap.as_ref(), Some(&report));
}

#[test]
fn rollback_uses_the_private_copy_even_after_the_file_changed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    // One deployed path, overwritten by each new build, as a deploy script does.
    let deployed = deploy(COUNTER_V1, dir.path(), "libcounter.so");
    engine.load("counter", &deployed).unwrap();
    call_text(&engine, "a", "add", "3");
    deploy(COUNTER_V2, dir.path(), "libcounter.so");
    engine.load("counter", &deployed).unwrap();
    call_text(&engine, "a", "add", "4");
    assert_eq!(call_text(&engine, "a", "adds", ""), "1");

    let report = engine.rollback("counter").unwrap();
    assert_eq!((report.from_version.as_deref(), report.to_version.as_str()), (Some("2.0.0"), "1.0.0"));
    assert_eq!(report.file, deployed, "status names the file the version came from");
    assert_eq!(call_text(&engine, "a", "version", ""), "1.0.0");
    assert_eq!(call_text(&engine, "a", "get", ""), "7", "the state survives v1 -> v2 -> v1");

    // Rolling back again returns to 2.0.0: the rollback target is the version before.
    engine.rollback("counter").unwrap();
    assert_eq!(call_text(&engine, "a", "version", ""), "2.0.0");
    assert_eq!(call_text(&engine, "a", "get", ""), "7");
}

#[test]
fn reloading_the_same_file_is_a_real_swap() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "a", "add", "2");
    let report = engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(report.instances, 1);
    assert_eq!(report.old_code_unmapped, Some(true));
    assert_eq!(call_text(&engine, "a", "get", ""), "2");
}

#[test]
fn snapshot_returns_every_started_instance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V2).unwrap();
    call_text(&engine, "b", "add", "2");
    call_text(&engine, "a", "add", "1");
    let snapshot = engine.snapshot("counter").unwrap();
    assert_eq!(snapshot.version, "2.0.0");
    let keys: Vec<&str> = snapshot.instances.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    let mut expected_b = 2u64.to_le_bytes().to_vec();
    expected_b.extend_from_slice(&1u64.to_le_bytes());
    assert_eq!(snapshot.instances[1].1, expected_b);
}

#[test]
fn private_copies_are_removed_with_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    engine.load("counter", COUNTER_V2).unwrap();
    let private = dir.path().join("private");
    let copies = || walk_files(&private);
    assert_eq!(copies().len(), 2, "the current version and the rollback target: {:?}", copies());
    engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(copies().len(), 2, "older copies are deleted: {:?}", copies());
    drop(engine);
    assert!(copies().is_empty(), "{:?}", copies());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk_files(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn instance_handles_survive_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let room = engine.instance("counter", "room-1").unwrap();
    assert_eq!((room.module(), room.key()), ("counter", "room-1"));
    assert_eq!(room.call("add", b"5").unwrap(), b"5");
    engine.load("counter", COUNTER_V2).unwrap();
    assert_eq!(room.call("add", b"1").unwrap(), b"6");
    assert_eq!(room.call("version", b"").unwrap(), b"2.0.0");
    assert_eq!(call_text(&engine, "room-1", "get", ""), "6", "handle and engine.call reach one instance");
}

#[test]
fn removed_instances_restart_fresh_and_keep_module_totals() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let handle = engine.instance("counter", "room-1").unwrap();
    handle.call("add", b"5").unwrap();
    call_text(&engine, "room-2", "add", "1");

    assert!(engine.remove_instance("counter", "room-1").unwrap());
    assert!(!engine.remove_instance("counter", "room-1").unwrap(), "already gone");
    assert!(matches!(handle.call("get", b""), Err(hotswap::CallError::InstanceRemoved { .. })));
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!((counter.instances, counter.calls), (1, 2), "the removed instance's calls still count");

    assert_eq!(call_text(&engine, "room-1", "get", ""), "0", "the key starts a fresh instance");
    let report = engine.load("counter", COUNTER_V2).unwrap();
    assert_eq!(report.instances, 2);
}

#[test]
fn restore_starts_instances_from_a_saved_snapshot_and_migrates_it() {
    let dir = tempfile::tempdir().unwrap();
    let saved = {
        let old_process = engine_in(&dir.path().join("old"));
        old_process.load("counter", COUNTER_V1).unwrap();
        call_text(&old_process, "a", "add", "3");
        call_text(&old_process, "b", "add", "4");
        old_process.snapshot("counter").unwrap()
    };
    assert_eq!(saved.version, "1.0.0");

    // A new process, with a newer version of the module: the state migrates.
    let engine = engine_in(&dir.path().join("new"));
    let report = engine.restore("counter", COUNTER_V2, &saved).unwrap();
    assert_eq!((report.from_version.as_deref(), report.to_version.as_str()), (Some("1.0.0"), "2.0.0"));
    assert_eq!((report.instances, report.snapshot_bytes_total), (2, 16));
    assert_eq!(call_text(&engine, "a", "get", ""), "3");
    assert_eq!(call_text(&engine, "b", "add", "1"), "5");

    let error = engine.restore("counter", COUNTER_V2, &saved).unwrap_err();
    assert!(matches!(error, hotswap::SwapError::AlreadyLoaded { .. }), "{error:?}");

    let other = engine_in(&dir.path().join("other"));
    let ledger = hotswap::ModuleSnapshot { module: "ledger".into(), ..saved };
    let error = other.restore("counter", COUNTER_V2, &ledger).unwrap_err();
    assert!(matches!(error, hotswap::SwapError::SnapshotOfAnotherModule { .. }), "{error:?}");
}

#[test]
fn restore_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let saved = hotswap::ModuleSnapshot {
        module: "counter".into(),
        version: "1.0.0".into(),
        instances: vec![("good".into(), 7u64.to_le_bytes().to_vec()), ("torn".into(), vec![1, 2, 3])],
        timers: Vec::new(),
    };
    let engine = engine_in(dir.path());
    let error = engine.restore("counter", COUNTER_V2, &saved).unwrap_err();
    assert!(
        matches!(&error, hotswap::SwapError::RestoreFailed { instance, .. } if instance == "torn"),
        "{error:?}"
    );
    assert!(error.to_string().ends_with("nothing was loaded"), "{error}");
    assert!(engine.status().module("counter").is_none(), "nothing is loaded after a failed restore");
    assert!(walk_files(&dir.path().join("private")).is_empty(), "the refused copy is removed");
}

#[test]
fn calls_are_counted_by_the_version_that_served_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    for _ in 0..3 {
        call_text(&engine, "a", "add", "1");
    }
    assert!(engine.call("counter", "a", "no-such-method", b"").is_err());
    engine.load("counter", COUNTER_V2).unwrap();
    call_text(&engine, "a", "add", "1");
    call_text(&engine, "b", "add", "1");
    engine.rollback("counter").unwrap();
    call_text(&engine, "a", "get", "");

    let status = engine.status();
    let counter = status.module("counter").unwrap();
    let lines: Vec<(&str, u64, u64)> =
        counter.by_version.iter().map(|line| (line.version.as_str(), line.calls, line.errors)).collect();
    assert_eq!(lines, [("1.0.0", 5, 1), ("2.0.0", 2, 0)]);
    assert_eq!((counter.calls, counter.errors), (7, 1));
}

#[test]
fn load_checked_sees_the_private_copy_and_can_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "a", "add", "2");
    let private = dir.path().join("private");
    let seen = std::sync::Mutex::new(None);
    let error = engine
        .load_checked("counter", COUNTER_V2, |copy| {
            *seen.lock().unwrap() = Some(copy.to_owned());
            Err("sha256 is 00ff, the config expects abcd".into())
        })
        .unwrap_err();
    assert!(
        matches!(&error, hotswap::SwapError::Rejected { reason, .. } if reason.contains("expects abcd")),
        "{error:?}"
    );
    let seen = seen.into_inner().unwrap().expect("the check ran");
    assert!(seen.starts_with(&private), "the check gets the private copy, not {}", seen.display());
    assert!(!seen.exists(), "a rejected copy is removed");
    assert_eq!(call_text(&engine, "a", "version", ""), "1.0.0");
    assert_eq!(call_text(&engine, "a", "get", ""), "2");
    engine.load_checked("counter", COUNTER_V2, |_| Ok(())).unwrap();
    assert_eq!(call_text(&engine, "a", "version", ""), "2.0.0");
}

#[test]
fn adopt_starts_instances_on_a_loaded_module_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let saved = {
        let old_process = engine_in(&dir.path().join("old"));
        old_process.load("counter", COUNTER_V1).unwrap();
        call_text(&old_process, "a", "add", "3");
        call_text(&old_process, "b", "add", "4");
        old_process.snapshot("counter").unwrap()
    };
    // The new process loaded its (newer) module before the state arrived.
    let engine = engine_in(&dir.path().join("new"));
    engine.load("counter", COUNTER_V2).unwrap();
    call_text(&engine, "c", "add", "1");
    assert_eq!(engine.adopt("counter", &saved).unwrap(), 2);
    assert_eq!(call_text(&engine, "a", "get", ""), "3");
    assert_eq!(call_text(&engine, "b", "add", "1"), "5");

    // Again: "a" and "b" have started, so nothing is overwritten.
    let error = engine.adopt("counter", &saved).unwrap_err();
    assert!(matches!(error, hotswap::SwapError::AlreadyStarted { .. }), "{error:?}");
    assert_eq!(call_text(&engine, "a", "get", ""), "3");

    let torn = hotswap::ModuleSnapshot {
        module: "counter".into(),
        version: "1.0.0".into(),
        instances: vec![("d".into(), 1u64.to_le_bytes().to_vec()), ("e".into(), vec![9])],
        timers: Vec::new(),
    };
    assert!(matches!(engine.adopt("counter", &torn), Err(hotswap::SwapError::RestoreFailed { .. })));
    assert_eq!(call_text(&engine, "d", "get", ""), "0", "d was not started from the torn snapshot");
}
