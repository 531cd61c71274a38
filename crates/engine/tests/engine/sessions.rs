//! Sessions through the engine: join (and its refusal), messages, leave and
//! ticks run like calls, and what modules push reaches the host's sink in
//! the order the instance ran — also when many threads drive one room at
//! once, and across a swap.

use std::sync::{Arc, Mutex};
use std::thread;

use hotswap::{CallError, Engine, EngineConfig, Push, PushSink};
use hotswap_test_modules::{COUNTER_V1, ROOM_BASE_DESCRIPTOR, ROOM_V1, ROOM_V2};

/// What the sink received: (module, instance, pushes of one call).
type Received = Arc<Mutex<Vec<(String, String, Vec<Push>)>>>;

fn engine_with_sink(dir: &std::path::Path) -> (Engine, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let config = EngineConfig {
        private_dir: Some(dir.to_owned()),
        on_push: Some(PushSink::new(move |module, instance, pushes| {
            sink.lock().unwrap().push((module.to_owned(), instance.to_owned(), pushes));
        })),
        ..EngineConfig::default()
    };
    (Engine::new(config), received)
}

/// Whether every delivery so far was empty (a join is delivered even then).
fn nothing_pushed(received: &Received) -> bool {
    received.lock().unwrap().iter().all(|(_, _, pushes)| pushes.is_empty())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn call(engine: &Engine, instance: &str, method: &str) -> String {
    text(&engine.call("room", instance, method, b"").unwrap())
}

#[test]
fn joins_messages_and_leaves_push_to_the_sink_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("room", ROOM_V1).unwrap();
    engine.session_join("room", "r1", 7, b"name=ana").unwrap();
    engine.session_join("room", "r1", 8, b"name=bo").unwrap();
    engine.session_message("room", "r1", 7, b"hi").unwrap();
    engine.session_message("room", "r1", 8, b"close-me").unwrap();
    engine.session_leave("room", "r1", 8).unwrap();
    assert_eq!(call(&engine, "r1", "sessions"), "[7]");

    let received = received.lock().unwrap();
    let all: Vec<&Push> = received.iter().flat_map(|(_, _, pushes)| pushes).collect();
    let broadcast = |text: &str| Push::Broadcast { bytes: text.as_bytes().to_vec() };
    assert_eq!(
        all,
        [
            &broadcast("joined 7"),
            &broadcast("joined 8"),
            &Push::Send { session: 7, bytes: b"ack 1".to_vec() },
            &broadcast("7:1:hi"),
            &Push::Close { session: 8, reason: "bye".into() },
            &broadcast("left 8"),
        ]
    );
    assert!(received.iter().all(|(module, instance, _)| module == "room" && instance == "r1"));
    assert_eq!(received.len(), 5, "one delivery per call that pushed");
}

/// A join reaches the sink even when `on_join` pushed nothing (here the
/// module has none), on the thread that joined: the moment a host makes the
/// session a member (`PushSink`'s docs). Other calls that push nothing do not.
#[test]
fn every_join_is_delivered_on_the_joining_thread_even_without_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Arc<Mutex<Vec<(thread::ThreadId, usize)>>> = Arc::default();
    let seen = threads.clone();
    let config = EngineConfig {
        private_dir: Some(dir.path().to_owned()),
        on_push: Some(PushSink::new(move |_, _, pushes| {
            seen.lock().unwrap().push((thread::current().id(), pushes.len()));
        })),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config);
    engine.load("counter", COUNTER_V1).unwrap();
    engine.call("counter", "c", "get", b"").unwrap();
    let joiner = thread::spawn(move || {
        engine.session_join("counter", "c", 1, b"").unwrap();
        thread::current().id()
    })
    .join()
    .unwrap();
    assert_eq!(*threads.lock().unwrap(), [(joiner, 0)], "one delivery: the join's, empty, on its thread");
}

#[test]
fn a_refused_join_is_the_modules_refusal_with_its_message_and_the_room_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("room", ROOM_V1).unwrap();
    let error = engine.session_join("room", "r1", 1, b"name=deny-me").unwrap_err();
    match &error {
        CallError::Refused { method, message, .. } => {
            assert_eq!(method, "on_join");
            assert!(message.contains("this room turns away \"name=deny-me\""), "{message}");
        }
        other => panic!("not a refusal: {other:?}"),
    }
    assert_eq!(call(&engine, "r1", "sessions"), "[]");
    assert!(nothing_pushed(&received), "a refused join pushed nothing");
}

/// Eight threads send into one room at once: the room numbers messages in
/// the order it runs them, and the sink must see those numbers in order —
/// pushes are delivered while the instance is still held.
#[test]
fn pushes_of_concurrent_callers_reach_the_sink_in_the_order_the_instance_ran_them() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("room", ROOM_V1).unwrap();
    let engine = Arc::new(engine);
    thread::scope(|scope| {
        for session in 0..8u64 {
            let engine = &engine;
            scope.spawn(move || {
                engine.session_join("room", "busy", session, b"").unwrap();
                for _ in 0..200 {
                    engine.session_message("room", "busy", session, b"m").unwrap();
                }
            });
        }
    });
    let received = received.lock().unwrap();
    let acks: Vec<u64> = received
        .iter()
        .flat_map(|(_, _, pushes)| pushes)
        .filter_map(|push| match push {
            Push::Send { bytes, .. } => Some(text(bytes).strip_prefix("ack ").unwrap().parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(acks, (1..=1600).collect::<Vec<u64>>(), "every message once, in the room's order");
}

#[test]
fn sessions_and_ticks_carry_on_across_a_swap_without_the_module_doing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("room", ROOM_V1).unwrap();
    engine.session_join("room", "r1", 1, b"").unwrap();
    engine.session_join("room", "r1", 2, b"").unwrap();
    engine.session_message("room", "r1", 1, b"before").unwrap();
    for _ in 0..3 {
        engine.tick("room", "r1").unwrap();
    }
    engine.load("room", ROOM_V2).unwrap();
    assert_eq!(call(&engine, "r1", "version"), "2.0.0");
    assert_eq!(call(&engine, "r1", "sessions"), "[1,2]", "the new version knows both sessions");
    engine.session_message("room", "r1", 2, b"after").unwrap();
    engine.tick("room", "r1").unwrap();
    assert_eq!(call(&engine, "r1", "ticks"), "4", "no tick lost or doubled by the swap");
    let last = received.lock().unwrap().last().unwrap().2.clone();
    assert_eq!(last[1], Push::Broadcast { bytes: b"2:2:after".to_vec() }, "the numbering goes on");
}

#[test]
fn a_module_that_keeps_the_default_hooks_accepts_joins_and_ignores_messages_and_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    engine.session_join("counter", "k", 1, b"").unwrap();
    engine.session_message("counter", "k", 1, b"add 5").unwrap();
    engine.tick("counter", "k").unwrap();
    engine.session_leave("counter", "k", 1).unwrap();
    assert_eq!(text(&engine.call("counter", "k", "get", b"").unwrap()), "0");
    assert!(nothing_pushed(&received));
}

#[test]
fn without_a_sink_pushes_are_dropped_and_calls_still_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::engine_in(dir.path());
    engine.load("room", ROOM_V1).unwrap();
    engine.session_join("room", "r1", 1, b"").unwrap();
    engine.session_message("room", "r1", 1, b"x").unwrap();
    assert_eq!(call(&engine, "r1", "seq"), "1");
}

/// The session hooks were appended to the descriptor: a module whose
/// descriptor ends before them (built before) loads, and the host reads no
/// hook from it — even where the bytes past its end hold some.
#[test]
fn a_descriptor_from_before_the_session_hooks_loads_and_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, received) = engine_with_sink(dir.path());
    engine.load("room", ROOM_BASE_DESCRIPTOR).unwrap();
    engine.session_join("room", "r1", 1, b"deny").expect("no on_join is called, so nothing refuses");
    engine.session_message("room", "r1", 1, b"hi").unwrap();
    assert_eq!(call(&engine, "r1", "seq"), "0", "no on_message ran");
    assert!(nothing_pushed(&received));
    // The same file with its full descriptor runs the hooks.
    engine.load("room", ROOM_V1).unwrap();
    assert!(engine.session_join("room", "r1", 2, b"deny").is_err());
}
