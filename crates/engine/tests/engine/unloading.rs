//! Old code leaves memory; when it cannot (thread-local destructors), the
//! engine says so and caps how many such versions stay mapped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use hotswap::{CallError, Engine, EngineConfig, SwapError};
use hotswap_test_modules::{COUNTER_V1, TLS_COUNTER};

use crate::{call_text, engine_in};

/// A thread that stays alive and calls `tls-counter` when asked, so the
/// module's thread-local (and its destructor) lives on that thread.
struct Caller {
    requests: mpsc::Sender<mpsc::Sender<String>>,
    thread: JoinHandle<()>,
}

impl Caller {
    fn start(engine: std::sync::Arc<Engine>) -> Caller {
        let (requests, incoming) = mpsc::channel::<mpsc::Sender<String>>();
        let thread = std::thread::spawn(move || {
            for reply in incoming {
                let total = engine.call("tls-counter", "a", "add", b"x").unwrap();
                reply.send(String::from_utf8(total).unwrap()).unwrap();
            }
        });
        Caller { requests, thread }
    }

    fn add(&self) -> String {
        let (reply, answer) = mpsc::channel();
        self.requests.send(reply).unwrap();
        answer.recv().unwrap()
    }

    /// Ends the thread, which runs its thread-local destructors.
    fn exit(self) {
        drop(self.requests);
        self.thread.join().unwrap();
    }
}

#[test]
fn thread_local_destructors_keep_old_code_mapped_until_their_thread_exits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = std::sync::Arc::new(engine_in(dir.path()));
    engine.load("tls-counter", TLS_COUNTER).unwrap();
    let caller = Caller::start(engine.clone());
    assert_eq!(caller.add(), "1");

    let report = engine.load("tls-counter", TLS_COUNTER).unwrap();
    assert_eq!(report.old_code_unmapped, Some(false), "glibc keeps a library with pending TLS destructors");
    let status = engine.status();
    let module = status.module("tls-counter").unwrap();
    assert_eq!(module.resident_retired.len(), 1);
    assert_eq!(module.resident_retired[0].version, "1.0.0");
    assert_eq!(caller.add(), "2", "the state moved to the new copy");

    caller.exit();
    // The next close in this namespace lets the loader drop the old copy, and
    // the engine notices on its next look.
    engine.load("tls-counter", TLS_COUNTER).unwrap();
    let status = engine.status();
    let module = status.module("tls-counter").unwrap();
    assert!(
        module.resident_retired.is_empty(),
        "after its thread exited, the first copy should leave memory: {:?}",
        module.resident_retired
    );
    assert!(module.reclaimed >= 1);
}

#[test]
fn resident_retired_versions_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        private_dir: Some(dir.path().join("private")),
        max_resident_retired: 2,
        ..EngineConfig::default()
    };
    let engine = std::sync::Arc::new(Engine::new(config));
    engine.load("tls-counter", TLS_COUNTER).unwrap();
    let caller = Caller::start(engine.clone());
    for expected in ["1", "2"] {
        assert_eq!(caller.add(), expected);
        engine.load("tls-counter", TLS_COUNTER).unwrap();
    }
    assert_eq!(caller.add(), "3");
    let error = engine.load("tls-counter", TLS_COUNTER).unwrap_err();
    assert!(matches!(error, SwapError::TooManyResident { resident: 2, limit: 2, .. }), "{error:?}");
    assert!(error.to_string().contains("max_resident_retired"), "{error}");
    assert_eq!(caller.add(), "4", "the refused swap left the module serving");

    // Once the thread that held the thread-locals exits, the loader can drop
    // the old copies, and the next swap goes through.
    caller.exit();
    let report = engine.load("tls-counter", TLS_COUNTER).unwrap();
    assert_eq!(report.instances, 1);
    let status = engine.status();
    let module = status.module("tls-counter").unwrap();
    assert!(module.resident_retired.len() <= 1, "{:?}", module.resident_retired);
    assert_eq!(engine.call("tls-counter", "a", "get", b"").unwrap(), b"4");
}

#[test]
fn unload_removes_the_module_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "a", "add", "9");
    let handle = engine.instance("counter", "a").unwrap();
    engine.unload("counter").unwrap();
    assert!(matches!(handle.call("get", b""), Err(CallError::UnknownModule { .. })));
    assert!(engine.status().module("counter").is_none());
    assert!(matches!(engine.call("counter", "a", "get", b""), Err(CallError::UnknownModule { .. })));
    engine.load("counter", COUNTER_V1).unwrap();
    assert_eq!(call_text(&engine, "a", "get", ""), "0", "a reload after unload starts fresh");
}
