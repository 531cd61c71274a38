//! A panic in module code becomes an error for that caller; nothing else stops.

use hotswap::CallError;
use hotswap_test_modules::COUNTER_HANDLE_PANICS;

use crate::engine_in;

#[test]
fn panic_in_handle_is_an_error_for_that_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_HANDLE_PANICS).unwrap();
    assert_eq!(engine.call("counter", "a", "add", b"5").unwrap(), b"5");
    assert_eq!(engine.call("counter", "b", "add", b"1").unwrap(), b"1");

    let error = engine.call("counter", "a", "panic", b"xyz").unwrap_err();
    match &error {
        CallError::Panicked { module, version, method, message } => {
            assert_eq!(
                (module.as_str(), version.as_str(), method.as_str()),
                ("counter", "1.1.0-panics", "panic")
            );
            assert!(
                message.starts_with("handle panicked on purpose with 3 payload bytes (at ")
                    && message.contains("counter-handle-panics/src/lib.rs:"),
                "the message says where the module panicked: {message}"
            );
        }
        other => panic!("expected a panic error, got {other:?}"),
    }

    // The instance that panicked and the others carry on.
    assert_eq!(engine.call("counter", "a", "add", b"1").unwrap(), b"6");
    assert_eq!(engine.call("counter", "b", "get", b"").unwrap(), b"1");
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!((counter.calls, counter.errors, counter.panics), (5, 0, 1));
}

#[test]
fn module_errors_reach_the_caller_with_the_module_message() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_HANDLE_PANICS).unwrap();
    let error = engine.call("counter", "a", "add", b"many").unwrap_err();
    assert!(matches!(&error, CallError::Refused { message, .. } if message == "bad number"), "{error:?}");
    assert_eq!(engine.status().module("counter").unwrap().errors, 1);
}

/// A panic must not keep its version in memory. The SDK's panic hook prints
/// no backtrace: resolving one would map the module file for good (this
/// suite runs with RUST_BACKTRACE=1, see .cargo/config.toml).
#[test]
fn a_version_that_panicked_is_still_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_HANDLE_PANICS).unwrap();
    let worker = std::thread::scope(|scope| {
        scope.spawn(|| engine.call("counter", "a", "panic", b"").unwrap_err()).join().unwrap()
    });
    assert!(matches!(worker, CallError::Panicked { .. }));
    let report = engine.load("counter", COUNTER_HANDLE_PANICS).unwrap();
    assert_eq!(report.old_code_unmapped, Some(true), "{report}");
}
