//! A state layout change that the new version does not handle is refused
//! before any instance moves, naming the field — never misread. The corpus
//! is the `layouts` test module built once per change (hotswap-test-modules).

use std::path::Path;

use hotswap::{Engine, SwapError};
use hotswap_test_modules::{
    COUNTER_V1, LAYOUTS_BAD_MIGRATE, LAYOUTS_FIELD_ADDED, LAYOUTS_FROM_COUNTER, LAYOUTS_GOOD_MIGRATE,
    LAYOUTS_RENAMED, LAYOUTS_REORDERED, LAYOUTS_RESIZED, LAYOUTS_RETYPED, LAYOUTS_V1, LAYOUTS_VARIANT_ADDED,
    LAYOUTS_VARIANT_REMOVED,
};

use crate::engine_in;

const KEYS: [&str; 3] = ["north", "south", "west"];

fn call(engine: &Engine, key: &str, method: &str, payload: &str) -> String {
    let reply = engine
        .call("layouts", key, method, payload.as_bytes())
        .unwrap_or_else(|error| panic!("{method} on {key} failed: {error}"));
    String::from_utf8(reply).unwrap()
}

/// layouts 1.0.0 with three live instances, each in another state; the last
/// has `Phase::Ended` (the variant one change removes) in use.
fn serving_v1(dir: &Path) -> (Engine, Vec<String>) {
    let engine = engine_in(dir);
    engine.load("layouts", LAYOUTS_V1).unwrap();
    for (touches, key) in KEYS.iter().enumerate() {
        for _ in 0..=touches {
            call(&engine, key, "touch", "");
        }
    }
    call(&engine, "west", "end", "bob");
    let states = KEYS.iter().map(|key| call(&engine, key, "get", "")).collect();
    (engine, states)
}

/// Loads `path` over layouts 1.0.0 and expects a refusal that leaves every
/// instance on 1.0.0 with its state; returns the refusal's text.
fn refused(path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (engine, before) = serving_v1(dir.path());
    assert!(before[2].contains("Ended { winner: \"bob\" }"), "{}", before[2]);
    let error = engine.load("layouts", path).expect_err("a layout change the new version does not handle");
    assert!(matches!(error, SwapError::MigrationFailed { .. }), "{error:?}");
    let after: Vec<String> = KEYS.iter().map(|key| call(&engine, key, "get", "")).collect();
    assert_eq!(after, before, "every instance keeps its state");
    for key in KEYS {
        assert_eq!(call(&engine, key, "version", ""), "1.0.0");
    }
    // And each still works on the old version.
    call(&engine, "north", "touch", "");
    let status = engine.status();
    let layouts = status.module("layouts").unwrap();
    assert_eq!((layouts.swaps, layouts.current.version.as_str()), (0, "1.0.0"));
    error.to_string()
}

fn assert_names(text: &str, expected: &[&str]) {
    for part in expected {
        assert!(text.contains(part), "the refusal must say {part:?}: {text}");
    }
}

#[test]
fn a_renamed_field_is_refused_before_any_instance_moves() {
    let text = refused(LAYOUTS_RENAMED);
    assert_names(&text, &["field `State.count` is new and `State.calls` is gone", "set `layout = 2`"]);
}

#[test]
fn a_field_changed_from_u32_to_string_is_refused_before_any_instance_moves() {
    assert_names(&refused(LAYOUTS_RETYPED), &["field `State.calls` was u32, is now String"]);
}

#[test]
fn a_nested_struct_changed_to_one_of_the_same_size_is_refused_before_any_instance_moves() {
    assert_names(&refused(LAYOUTS_RESIZED), &["field `Pos.x` was u16, is now u8 (at `State.pos.x`)"]);
}

#[test]
fn an_enum_variant_in_use_removed_is_refused_before_any_instance_moves() {
    assert_names(&refused(LAYOUTS_VARIANT_REMOVED), &["enum `Phase` variant 2 `Ended` is gone"]);
}

#[test]
fn a_field_added_without_a_new_layout_number_is_refused_before_any_instance_moves() {
    let text = refused(LAYOUTS_FIELD_ADDED);
    assert_names(&text, &["field `State.score` is new", "set `layout = 2` and read layout 1 in `migrate`"]);
}

#[test]
fn reordered_fields_are_refused_before_any_instance_moves() {
    assert_names(&refused(LAYOUTS_REORDERED), &["field `State.name` is out of place"]);
}

#[test]
fn a_migration_that_declares_the_old_layout_wrongly_is_refused_before_any_instance_moves() {
    let text = refused(LAYOUTS_BAD_MIGRATE);
    assert_names(
        &text,
        &["field `StateV1.calls` was u32, is now u64", "declare the type that `migrate` decodes"],
    );
}

#[test]
fn a_correct_migration_to_a_new_layout_moves_every_instance_with_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, before) = serving_v1(dir.path());
    engine.load("layouts", LAYOUTS_GOOD_MIGRATE).unwrap();
    for (key, before) in KEYS.iter().zip(&before) {
        let after = call(&engine, key, "get", "");
        // Layout 2 is layout 1 plus a score of ten per call.
        let calls: u64 = before["State { calls: ".len()..].split(',').next().unwrap().parse().unwrap();
        assert_eq!(after, format!("{}, score: {} }}", before.trim_end_matches(" }"), calls * 10));
        assert_eq!(call(&engine, key, "version", ""), "2.0.0");
    }
}

#[test]
fn an_appended_enum_variant_reads_the_same_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, before) = serving_v1(dir.path());
    engine.load("layouts", LAYOUTS_VARIANT_ADDED).unwrap();
    let after: Vec<String> = KEYS.iter().map(|key| call(&engine, key, "get", "")).collect();
    assert_eq!(after, before);
    call(&engine, "west", "pause", "");
    assert!(call(&engine, "west", "get", "").contains("phase: Paused"));
}

#[test]
fn a_typed_module_migrates_the_raw_snapshot_of_a_raw_module() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    engine.call("counter", "alice", "add", b"40").unwrap();
    engine.load("counter", LAYOUTS_FROM_COUNTER).unwrap();
    assert_eq!(engine.call("counter", "alice", "get", b"").unwrap(), b"State { total: 40 }");
    assert_eq!(engine.call("counter", "alice", "version", b"").unwrap(), b"3.0.0");
}
