//! `Engine::call` reaches the instance it names and no other: these tests
//! try to make it call the wrong one — one that was removed, one of a module
//! that was unloaded and loaded again, another engine's, and one it is
//! inside of already (a call made from a host callback during a call).
//! They were written for a per-thread memory of the last instance called
//! (tried in issue 8 and left out: it made calls to other instances slower,
//! BENCHMARKS.md), and guard any such shortcut.

use std::sync::{Arc, Mutex};

use hotswap::{CallError, Engine, EngineConfig};
use hotswap_test_modules::{COUNTER_HANDLE_PANICS, COUNTER_V1};

use super::call_text;

#[test]
fn a_call_after_unload_and_load_runs_on_the_new_load() {
    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(call_text(&engine, "k", "add", "5"), "5");
    engine.unload("counter").unwrap();
    assert!(matches!(engine.call("counter", "k", "get", b""), Err(CallError::UnknownModule { .. })));
    engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(call_text(&engine, "k", "get", ""), "0", "a fresh instance of the new load");
    assert_eq!(call_text(&engine, "k", "add", "2"), "2");
}

#[test]
fn a_call_after_remove_instance_starts_a_fresh_instance() {
    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(call_text(&engine, "k", "add", "5"), "5");
    assert!(engine.remove_instance("counter", "k").unwrap());
    assert_eq!(call_text(&engine, "k", "get", ""), "0");
    assert_eq!(engine.instances("counter").unwrap().len(), 1);
}

#[test]
fn calls_to_two_engines_from_one_thread_reach_each_engines_own_instance() {
    let one = Engine::new(EngineConfig::default());
    let other = Engine::new(EngineConfig::default());
    one.load("counter", COUNTER_V1).unwrap();
    other.load("counter", COUNTER_V1).unwrap();
    for round in 1..=3 {
        // Same module name, same key, same thread: only the engine differs.
        assert_eq!(call_text(&one, "k", "add", "10"), (10 * round).to_string());
        assert_eq!(call_text(&other, "k", "add", "1"), round.to_string());
    }
    // Calls alternate between the engines, so neither ever finds its own
    // instance remembered; a dropped engine's instance must not be found either.
    drop(one);
    let third = Engine::new(EngineConfig::default());
    third.load("counter", COUNTER_V1).unwrap();
    assert_eq!(call_text(&third, "k", "get", ""), "0");
}

#[test]
fn calls_alternating_between_keys_and_modules_reach_the_named_instance() {
    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", COUNTER_V1).unwrap();
    for round in 1..=3u64 {
        for (key, step) in [("a", 1u64), ("b", 100), ("a", 1)] {
            engine.call("counter", key, "add", step.to_string().as_bytes()).unwrap();
            // A module with the remembered key but another name is not the remembered one.
            let other = engine.call("counte", key, "get", b"");
            assert!(matches!(other, Err(CallError::UnknownModule { .. })), "{other:?}");
        }
        assert_eq!(call_text(&engine, "a", "get", ""), (2 * round).to_string());
        assert_eq!(call_text(&engine, "b", "get", ""), (100 * round).to_string());
    }
}

/// A tracing subscriber that, on the engine's "module panicked" warning,
/// calls the engine again from inside the call that panicked (the engine
/// logs it before the call returns): a host callback re-entering the engine.
struct CallsBackOnPanic {
    engine: Arc<Engine>,
    replies: Mutex<Vec<Result<String, String>>>,
}

impl tracing::Subscriber for CallsBackOnPanic {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let reply = self.engine.call("counter", "inner", "add", b"7");
            let reply = reply.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            self.replies.lock().unwrap().push(reply.map_err(|error| error.to_string()));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn an_engine_call_made_from_inside_a_call_on_the_same_thread_is_served() {
    let engine = Arc::new(Engine::new(EngineConfig::default()));
    engine.load("counter", COUNTER_HANDLE_PANICS).unwrap();
    let subscriber = Arc::new(CallsBackOnPanic { engine: engine.clone(), replies: Mutex::new(Vec::new()) });
    tracing::subscriber::with_default(subscriber.clone(), || {
        for _ in 0..2 {
            let outer = engine.call("counter", "outer", "panic", b"");
            assert!(matches!(outer, Err(CallError::Panicked { .. })), "{outer:?}");
        }
    });
    let replies = subscriber.replies.lock().unwrap().clone();
    assert_eq!(replies, [Ok("7".to_owned()), Ok("14".to_owned())]);
    // The outer thread goes on calling both instances normally.
    assert_eq!(String::from_utf8(engine.call("counter", "inner", "get", b"").unwrap()).unwrap(), "14");
}
