//! Instances as a resource: the per-module limit on new ones, the list of
//! them, and snapshots that do not wait for a stuck one.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hotswap::{CallError, InstanceStatus};
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};

use crate::{call_text, engine_in};

/// Attack: a client inventing keys without end. Past the limit every new key
/// is refused with a reason that names the limit and the fix; instances that
/// exist keep answering, and removing one makes room again.
#[test]
fn max_instances_refuses_new_keys_and_existing_instances_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    engine.set_max_instances("counter", Some(2)).unwrap();
    call_text(&engine, "a", "add", "1");
    call_text(&engine, "b", "add", "2");

    let refused = engine.call("counter", "c", "add", b"3").unwrap_err();
    assert!(
        matches!(&refused, CallError::TooManyInstances { module, limit: 2 } if module == "counter"),
        "{refused:?}"
    );
    let message = refused.to_string();
    for words in
        ["limit of 2 instances", "max_instances", "existing instances keep working", "remove-instance"]
    {
        assert!(message.contains(words), "{message:?} should say {words:?}");
    }
    let by_handle = engine.instance("counter", "d").unwrap_err();
    assert!(matches!(by_handle, CallError::TooManyInstances { limit: 2, .. }), "{by_handle:?}");
    assert_eq!(call_text(&engine, "a", "add", "10"), "11", "existing instances keep working");
    assert_eq!(engine.instances("counter").unwrap().len(), 2, "the refused keys left nothing behind");

    assert!(engine.remove_instance("counter", "a").unwrap());
    assert_eq!(call_text(&engine, "c", "add", "3"), "3", "removing an instance makes room");
    engine.set_max_instances("counter", None).unwrap();
    assert_eq!(call_text(&engine, "e", "add", "5"), "5", "None lifts the limit");

    let unknown = engine.set_max_instances("nothing", Some(1)).unwrap_err();
    assert!(matches!(unknown, CallError::UnknownModule { .. }), "{unknown:?}");
}

/// Attack: many threads create new keys at the same moment, each racing the
/// others for the last free places. Exactly `limit` of them get one.
#[test]
fn max_instances_holds_against_concurrent_first_calls() {
    const THREADS: usize = 8;
    const KEYS_PER_THREAD: usize = 25;
    const LIMIT: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();
    engine.set_max_instances("counter", Some(LIMIT)).unwrap();
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (engine, start) = (engine.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut created = 0;
                for key in 0..KEYS_PER_THREAD {
                    match engine.call("counter", &format!("t{thread}-k{key}"), "add", b"1") {
                        Ok(_) => created += 1,
                        Err(CallError::TooManyInstances { .. }) => {}
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                created
            })
        })
        .collect();
    let created: usize = workers.into_iter().map(|worker| worker.join().unwrap()).sum();
    assert_eq!(created, LIMIT);
    assert_eq!(engine.instances("counter").unwrap().len(), LIMIT);
    assert_eq!(engine.status().module("counter").unwrap().instances, LIMIT);
}

/// Saved state is never refused for its size: adopting more instances than
/// the limit keeps every one of them; the limit only stops new keys.
#[test]
fn adopting_more_instances_than_max_instances_keeps_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let source = engine_in(&dir.path().join("source"));
    source.load("counter", COUNTER_V1).unwrap();
    for (key, amount) in [("a", "1"), ("b", "2"), ("c", "3")] {
        call_text(&source, key, "add", amount);
    }
    let saved = source.snapshot("counter").unwrap();

    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    engine.set_max_instances("counter", Some(1)).unwrap();
    assert_eq!(engine.adopt("counter", &saved).unwrap(), 3);
    assert_eq!(call_text(&engine, "c", "add", "1"), "4");
    let refused = engine.call("counter", "new", "add", b"1").unwrap_err();
    assert!(matches!(refused, CallError::TooManyInstances { limit: 1, .. }), "{refused:?}");
    // Removing one still leaves two, above the limit of one: still no room.
    engine.remove_instance("counter", "a").unwrap();
    assert!(engine.call("counter", "new", "add", b"1").is_err());
}

/// The list is sorted by key, names each instance's version (none before
/// its first call), counts calls across swaps, and does not wait for an
/// instance that is in a long call.
#[test]
fn instances_lists_keys_versions_and_counts_without_waiting_for_calls() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "zed", "add", "1");
    call_text(&engine, "alpha", "add", "1");
    assert!(engine.call("counter", "alpha", "no-such-method", b"").is_err());
    let _unstarted = engine.instance("counter", "middle").unwrap();
    engine.load("counter", COUNTER_V2).unwrap();
    call_text(&engine, "alpha", "add", "1");

    let list = engine.instances("counter").unwrap();
    let keys: Vec<&str> = list.iter().map(|instance| instance.key.as_str()).collect();
    assert_eq!(keys, ["alpha", "middle", "zed"]);
    let (alpha, middle, zed) = (&list[0], &list[1], &list[2]);
    assert_eq!(alpha.version.as_deref(), Some("2.0.0"));
    assert_eq!((alpha.calls, alpha.errors, alpha.panics), (3, 1, 0), "counts survive the swap");
    assert_eq!(middle.version, None, "created by a handle, not started");
    assert_eq!((zed.version.as_deref(), zed.calls), (Some("2.0.0"), 1));

    // A long call on "zed": the list still answers at once.
    let sleeper = spawn_sleep(&engine, "zed", 3_000);
    wait_for_calls(&engine, "zed", 2);
    let list = engine.instances("counter").unwrap();
    assert!(!sleeper.is_finished(), "the list was taken while the call ran");
    assert_eq!(list.len(), 3);
    sleeper.join().unwrap();

    let unknown = engine.instances("nothing").unwrap_err();
    assert!(matches!(unknown, CallError::UnknownModule { .. }), "{unknown:?}");
}

/// Attack: one instance is stuck in a call at shutdown. `snapshot_until`
/// returns by its deadline with every other instance saved and the stuck
/// one named, where `snapshot` would wait for it.
#[test]
fn snapshot_until_saves_every_other_instance_and_names_the_stuck_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine_in(dir.path()));
    engine.load("counter", COUNTER_V1).unwrap();
    for key in ["a", "b", "stuck", "z"] {
        call_text(&engine, key, "add", "7");
    }
    let sleeper = spawn_sleep(&engine, "stuck", 5_000);
    wait_for_calls(&engine, "stuck", 2);

    let partial = engine.snapshot_until("counter", Instant::now() + Duration::from_millis(300)).unwrap();
    assert!(!sleeper.is_finished(), "snapshot_until returned while the call was still stuck");
    assert_eq!(partial.busy, ["stuck"]);
    assert_eq!(partial.snapshot.version, "1.0.0");
    let keys: Vec<&str> = partial.snapshot.instances.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "z"]);
    assert!(partial.snapshot.instances.iter().all(|(_, bytes)| bytes == &7u64.to_le_bytes()));
    sleeper.join().unwrap();

    // With nothing busy it is the whole snapshot.
    let whole = engine.snapshot_until("counter", Instant::now() + Duration::from_secs(10)).unwrap();
    assert!(whole.busy.is_empty());
    assert_eq!(whole.snapshot, engine.snapshot("counter").unwrap());
}

fn spawn_sleep(engine: &Arc<hotswap::Engine>, key: &'static str, millis: u64) -> std::thread::JoinHandle<()> {
    let engine = engine.clone();
    std::thread::spawn(move || {
        engine.call("counter", key, "sleep", millis.to_string().as_bytes()).unwrap();
    })
}

/// Waits until instance `key` has counted `calls` calls: a call is counted
/// while it holds its instance, just before the module runs it.
fn wait_for_calls(engine: &hotswap::Engine, key: &str, calls: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = |list: Vec<InstanceStatus>| list.into_iter().find(|i| i.key == key).map_or(0, |i| i.calls);
    while counted(engine.instances("counter").unwrap()) < calls {
        assert!(Instant::now() < deadline, "instance {key} did not reach {calls} calls within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
