//! Every way a swap can fail leaves the old version serving with its state,
//! and the error says what was wrong.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::{Engine, EngineConfig, Fault, SwapError};
use hotswap_test_modules::{
    COUNTER_ABI_V1, COUNTER_INIT_FAILS, COUNTER_INIT_PANICS, COUNTER_PANIC_ABORT, COUNTER_V1, COUNTER_V2,
    COUNTER_WRONG_ABI, NOT_A_MODULE, TLS_COUNTER,
};

use crate::races::{hold_with_sleep, wait_until_the_swap_waits};
use crate::{call_text, engine_in};

/// An engine serving counter v1 with two started instances.
fn serving_v1(dir: &Path) -> Engine {
    let engine = engine_in(dir);
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");
    call_text(&engine, "bob", "add", "2");
    engine
}

/// The refusal left v1 serving both instances, state untouched and usable.
fn assert_still_serving_v1(engine: &Engine) {
    assert_eq!(call_text(engine, "alice", "version", ""), "1.0.0");
    assert_eq!(call_text(engine, "alice", "get", ""), "40");
    assert_eq!(call_text(engine, "bob", "add", "1"), "3");
    let status = engine.status();
    let counter = status.module("counter").unwrap();
    assert_eq!(counter.swaps, 0, "a refused swap is not counted as a swap");
    assert_eq!(counter.current.version, "1.0.0");
}

fn refuse(dir: &Path, path: impl AsRef<Path>) -> SwapError {
    let engine = serving_v1(dir);
    let error = engine.load("counter", path).expect_err("the swap must be refused");
    assert_still_serving_v1(&engine);
    error
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libnothing.so");
    let error = refuse(dir.path(), &missing);
    assert!(matches!(&error, SwapError::Unreadable { path, .. } if path == &missing), "{error:?}");
    assert!(error.to_string().contains("libnothing.so"), "{error}");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("libempty.so");
    std::fs::write(&empty, b"").unwrap();
    let error = refuse(dir.path(), &empty);
    assert!(matches!(error, SwapError::EmptyFile { .. }), "{error:?}");
    assert!(error.to_string().contains("still being written"), "{error}");
}

#[test]
fn file_that_is_not_elf() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("libtext.so");
    std::fs::write(&text, b"#!/bin/sh\necho not a library\n").unwrap();
    let error = refuse(dir.path(), &text);
    assert!(matches!(&error, SwapError::NotElf { found, .. } if found == b"#!/b"), "{error:?}");
    assert!(error.to_string().contains("7f, 45, 4c, 46"), "the message names what was expected: {error}");
}

/// A library cut short inside its loadable segments must be refused before
/// `dlopen`: the loader would map pages past the end of the file and the
/// process would die of SIGBUS on first touch.
#[test]
fn truncated_library() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(COUNTER_V2).unwrap();
    let loaded_end = end_of_loadable_segments(&full);
    for keep in [3, 64, 4096, loaded_end / 2, loaded_end - 1] {
        let truncated = dir.path().join(format!("libtruncated-{keep}.so"));
        std::fs::write(&truncated, &full[..keep]).unwrap();
        let error = refuse(dir.path(), &truncated);
        assert!(
            matches!(error, SwapError::NotElf { .. } | SwapError::InvalidElf { .. }),
            "{keep} of {} bytes: {error:?}",
            full.len()
        );
    }
    // Cutting only what the loader never maps (debug info at the end) is harmless.
    if loaded_end < full.len() {
        let trimmed = dir.path().join("libtrimmed.so");
        std::fs::write(&trimmed, &full[..loaded_end]).unwrap();
        let engine = engine_in(dir.path());
        engine.load("counter", &trimmed).unwrap();
    }
}

/// Where the last `PT_LOAD` segment's bytes end in an ELF file.
fn end_of_loadable_segments(elf: &[u8]) -> usize {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(elf).unwrap();
    let endian = header.endian().unwrap();
    let segments = header.program_headers(endian, elf).unwrap();
    segments
        .iter()
        .filter(|segment| segment.p_type(endian) == object::elf::PT_LOAD)
        .map(|segment| (segment.p_offset(endian) + segment.p_filesz(endian)) as usize)
        .max()
        .unwrap()
}

#[test]
fn library_without_a_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), NOT_A_MODULE);
    assert!(matches!(error, SwapError::NotAModule { .. }), "{error:?}");
    assert!(error.to_string().contains("export_module!"), "the message says how to fix it: {error}");
}

#[test]
fn wrong_abi_version_names_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), COUNTER_WRONG_ABI);
    let host_abi = hotswap_abi::ABI_VERSION;
    assert!(
        matches!(error, SwapError::AbiMismatch { module_abi, host_abi: host, .. }
            if module_abi == host_abi + 1 && host == host_abi),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&format!("module ABI {}", host_abi + 1)), "{message}");
    assert!(message.contains(&format!("host expects ABI {host_abi}")), "{message}");
}

/// A module built before this host's ABI (ABI 1, before the table of host
/// services) is refused by its header alone, and the message says what to
/// do: rebuild it with the SDK that matches this host, named by version.
#[test]
fn a_module_built_for_the_old_abi_is_refused_with_how_to_rebuild_it() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), COUNTER_ABI_V1);
    let host_abi = hotswap_abi::ABI_VERSION;
    assert!(
        matches!(error, SwapError::AbiMismatch { module_abi: 1, host_abi: host, .. } if host == host_abi),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&format!("was built for ABI 1, this host runs ABI {host_abi}: ")), "{message}");
    let sdk = format!("rebuild the module with hotswap-module {}", env!("CARGO_PKG_VERSION"));
    assert!(message.contains(&sdk), "{message}");
}

#[test]
fn module_built_with_panic_abort() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), COUNTER_PANIC_ABORT);
    assert!(
        matches!(&error, SwapError::PanicAbort { version, .. } if version == "9.0.0-panic-abort"),
        "{error:?}"
    );
    assert!(error.to_string().contains("panic = \"unwind\""), "the message says how to fix it: {error}");
}

#[test]
fn module_with_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), TLS_COUNTER);
    assert!(
        matches!(&error, SwapError::NameMismatch { expected, found, .. } if expected == "counter" && found == "tls-counter"),
        "{error:?}"
    );
}

#[test]
fn init_that_returns_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), COUNTER_INIT_FAILS);
    match &error {
        SwapError::InitFailed { version, fault: Fault::Error(message), .. } => {
            assert_eq!(version, "9.0.0-init-fails");
            assert_eq!(&**message, "this version refuses to start");
        }
        other => panic!("expected the trial start to fail, got {other:?}"),
    }
}

#[test]
fn init_that_panics_while_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let error = refuse(dir.path(), COUNTER_INIT_PANICS);
    match &error {
        SwapError::MigrationFailed { from_version, to_version, fault: Fault::Panic(message), .. } => {
            assert_eq!((from_version.as_str(), to_version.as_str()), ("1.0.0", "9.0.0-init-panics"));
            assert!(message.starts_with("migration from 1.0.0 exploded on purpose (at "), "{message}");
        }
        other => panic!("expected a migration panic, got {other:?}"),
    }
}

#[test]
fn first_load_whose_init_fails_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    let error = engine.load("counter", COUNTER_INIT_FAILS).unwrap_err();
    assert!(matches!(error, SwapError::InitFailed { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot start a fresh instance"), "{error}");
    assert!(engine.status().module("counter").is_none(), "nothing was loaded");
    assert!(matches!(engine.call("counter", "a", "get", b""), Err(hotswap::CallError::UnknownModule { .. })));
}

#[test]
fn snapshot_the_new_version_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let engine = serving_v1(dir.path());
    // bob's v1 state now snapshots as bytes v2's migration refuses.
    call_text(&engine, "bob", "corrupt-snapshot", "");
    let error = engine.load("counter", COUNTER_V2).unwrap_err();
    match &error {
        SwapError::MigrationFailed { instance, fault: Fault::Error(message), .. } => {
            assert_eq!(instance, "bob");
            assert!(message.contains("cannot migrate a 7-byte snapshot from counter 1.0.0"), "{message}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert!(error.to_string().contains("every instance stays on 1.0.0"), "{error}");
    // All or nothing: alice, whose state migrated fine, is still on v1 too.
    call_text(&engine, "bob", "repair-snapshot", "");
    assert_still_serving_v1(&engine);
    // Once the state is readable, the same swap goes through.
    engine.load("counter", COUNTER_V2).unwrap();
    assert_eq!(call_text(&engine, "alice", "get", ""), "40");
    assert_eq!(call_text(&engine, "bob", "get", ""), "3");
}

/// A swap whose deadline passes while an instance is in a long call gives
/// up, changes nothing, and its error names the instance and how long it
/// waited. How long that is depends on how long the copy and open took
/// before the wait (they count against the same deadline), so only its
/// bounds are checked: some wait, and no more than the whole load took.
#[test]
fn busy_instance_past_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        private_dir: Some(dir.path().join("private")),
        swap_timeout: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(config));
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");
    call_text(&engine, "bob", "add", "2");
    // Holds its instance from before the swap starts until well past its deadline.
    let sleeper = hold_with_sleep(&engine, "slow", 3_000);
    let load_started = Instant::now();
    let error = engine.load("counter", COUNTER_V2).unwrap_err();
    let load_took = load_started.elapsed();
    match &error {
        SwapError::Timeout { module, from_version, to_version, waiting_for, waited } => {
            assert_eq!(
                (module.as_str(), from_version.as_str(), to_version.as_str()),
                ("counter", "1.0.0", "2.0.0")
            );
            assert_eq!(waiting_for, "instance 'slow'");
            assert!(*waited > Duration::ZERO && *waited <= load_took, "waited {waited:?} of {load_took:?}");
            let text = error.to_string();
            assert!(
                text.contains(&format!("gave up after {waited:?} waiting for instance 'slow'")),
                "{text}"
            );
            assert!(text.contains("every instance stays on 1.0.0"), "{text}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!sleeper.is_finished(), "the swap gave up while the long call ran");
    // The other instances were released when the swap gave up.
    assert_still_serving_v1(&engine);
    assert_eq!(engine.status().module("counter").unwrap().swap_in_progress, None);
    sleeper.join().unwrap();
    assert_eq!(call_text(&engine, "slow", "version", ""), "1.0.0");
}

#[test]
fn second_swap_while_one_is_running_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(serving_v1(dir.path()));
    // A long call keeps the first swap waiting.
    let sleeper = hold_with_sleep(&engine, "alice", 1_500);
    let first = std::thread::spawn({
        let engine = engine.clone();
        move || engine.load("counter", COUNTER_V2)
    });
    wait_until_the_swap_waits(&engine, |key| key == "alice");
    for attempt in [engine.load("counter", COUNTER_V2), engine.rollback("counter")] {
        let error = attempt.unwrap_err();
        assert!(matches!(error, SwapError::SwapInProgress { .. }), "{error:?}");
        assert!(error.to_string().contains("already in progress"), "{error}");
    }
    assert!(matches!(engine.unload("counter"), Err(SwapError::SwapInProgress { .. })));
    sleeper.join().unwrap();
    first.join().unwrap().expect("the first swap completes once the call ends");
    assert_eq!(call_text(&engine, "alice", "get", ""), "40");
    assert_eq!(call_text(&engine, "alice", "version", ""), "2.0.0");
}

#[test]
fn rollback_and_unload_of_unknown_modules() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    assert!(matches!(engine.rollback("counter"), Err(SwapError::UnknownModule { .. })));
    assert!(matches!(engine.unload("counter"), Err(SwapError::UnknownModule { .. })));
    engine.load("counter", COUNTER_V1).unwrap();
    let error = engine.rollback("counter").unwrap_err();
    assert!(matches!(error, SwapError::NothingToRollBack { .. }), "{error:?}");
    assert!(matches!(engine.call("nope", "a", "get", b""), Err(hotswap::CallError::UnknownModule { .. })));
}
