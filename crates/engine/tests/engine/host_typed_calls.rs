//! The `serde` feature: typed calls encode the argument and decode the
//! reply as JSON and say which side failed; the reports hosts store or
//! print survive a JSON round trip.

use std::collections::HashMap;

use hotswap::{CallError, DryRunReport, EngineStatus, ModuleSnapshot, SwapReport, TypedCallError};
use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};
use serde::{Deserialize, Serialize};

use crate::{call_text, engine_in};

/// A value the counter's `echo` method sends back as it came: JSON in, JSON out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Move {
    player: String,
    x: i32,
    y: i32,
    note: Option<String>,
}

#[test]
fn a_typed_call_sends_json_and_decodes_the_json_reply() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let sent = Move { player: "ada".into(), x: -3, y: 7, note: Some("ünïcode \"quoted\"".into()) };
    let back: Move = engine.call_typed("counter", "alice", "echo", &sent).unwrap();
    assert_eq!(back, sent);
    // A number is JSON too: `add` reads it and answers the new total.
    let total: u64 = engine.call_typed("counter", "alice", "add", &40u64).unwrap();
    assert_eq!(total, 40);
    // An empty reply reads as `null`.
    let (): () = engine.call_typed("counter", "alice", "noop", &()).unwrap();
    let nothing: Option<u64> = engine.call_typed("counter", "alice", "noop", &()).unwrap();
    assert_eq!(nothing, None);

    let handle = engine.instance("counter", "alice").unwrap();
    let total: u64 = handle.call_typed("add", &2u64).unwrap();
    assert_eq!(total, 42);
    let back: Move = handle.call_typed("echo", &sent).unwrap();
    assert_eq!(back, sent);
}

/// Attack: a reply that is not JSON of the type asked for. The error names
/// the method, the type and the reply; the call's effect stands.
#[test]
fn a_reply_that_does_not_decode_names_the_method_the_type_and_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let error = engine.call_typed::<_, u64>("counter", "alice", "version", &()).unwrap_err();
    match &error {
        TypedCallError::DecodeReply { module, method, type_name, reply, .. } => {
            assert_eq!((module.as_str(), method.as_str(), *type_name), ("counter", "version", "u64"));
            assert_eq!(reply, "1.0.0");
        }
        other => panic!("expected a reply that does not decode, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.starts_with("the reply of 'counter' method 'version' is not JSON of u64: "), "{text}");
    assert!(text.ends_with("the reply was \"1.0.0\""), "{text}");

    let error = engine.call_typed::<_, String>("counter", "alice", "add", &5u64).unwrap_err();
    assert!(
        matches!(error, TypedCallError::DecodeReply { type_name: "alloc::string::String", .. }),
        "{error:?}"
    );
    assert_eq!(
        call_text(&engine, "alice", "get", ""),
        "5",
        "the call was made; only its reply did not decode"
    );

    // A long reply is quoted only in part.
    let long = "x".repeat(5_000);
    let error = engine.call_typed::<_, u64>("counter", "alice", "echo", &long).unwrap_err();
    let TypedCallError::DecodeReply { reply, .. } = &error else { panic!("{error:?}") };
    assert!(reply.len() < 300 && reply.ends_with('…'), "{reply}");
}

/// Attack: an argument JSON cannot express (a map whose keys are not
/// strings). The error names the method and the type, and no call is made.
#[test]
fn an_argument_that_does_not_encode_is_refused_before_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let unencodable: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let error = engine.call_typed::<_, u64>("counter", "alice", "add", &unencodable).unwrap_err();
    match &error {
        TypedCallError::EncodeArgument { method, type_name, .. } => {
            assert_eq!(method, "add");
            assert!(type_name.contains("HashMap<(u8, u8), u8"), "{type_name}");
        }
        other => panic!("expected an argument that does not encode, got {other:?}"),
    }
    assert!(
        error.to_string().starts_with("cannot encode the argument of 'counter' method 'add' ("),
        "{error}"
    );
    let handle = engine.instance("counter", "alice").unwrap();
    let error = handle.call_typed::<_, u64>("add", &unencodable).unwrap_err();
    assert!(matches!(error, TypedCallError::EncodeArgument { .. }), "{error:?}");
    assert_eq!(engine.instances("counter").unwrap()[0].calls, 0, "no call reached the module");
}

/// A refusal or an unknown module is the untyped call's error, unchanged.
#[test]
fn a_failed_call_is_the_call_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    let error = engine.call_typed::<_, u64>("counter", "alice", "add", &"not a number").unwrap_err();
    assert!(
        matches!(&error, TypedCallError::Call(CallError::Refused { method, .. }) if method == "add"),
        "{error:?}"
    );
    assert!(error.to_string().contains("expected a decimal number"), "{error}");
    let error = engine.call_typed::<_, u64>("nothing", "alice", "get", &()).unwrap_err();
    assert!(matches!(error, TypedCallError::Call(CallError::UnknownModule { .. })), "{error:?}");
}

/// What a host stores or prints comes back from JSON equal (or, for the
/// status, with the same content).
#[test]
fn reports_status_and_snapshots_survive_a_json_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");
    call_text(&engine, "bob", "corrupt-snapshot", "");
    let dry_run = engine.dry_run("counter", COUNTER_V2).unwrap();
    assert_eq!(dry_run.refused, 1, "the report carries a refusal too");
    let back: DryRunReport = serde_json::from_str(&serde_json::to_string(&dry_run).unwrap()).unwrap();
    assert_eq!(back, dry_run);
    call_text(&engine, "bob", "repair-snapshot", "");

    let swap = engine.load("counter", COUNTER_V2).unwrap();
    let back: SwapReport = serde_json::from_str(&serde_json::to_string(&swap).unwrap()).unwrap();
    assert_eq!(back, swap);

    let snapshot = engine.snapshot("counter").unwrap();
    let back: ModuleSnapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot).unwrap()).unwrap();
    assert_eq!(back, snapshot);

    let status = engine.status();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["modules"][0]["current"]["version"], "2.0.0");
    assert_eq!(json["modules"][0]["last_swap"]["from_version"], "1.0.0");
    let back: EngineStatus = serde_json::from_value(json).unwrap();
    let counter = back.module("counter").unwrap();
    assert_eq!(counter.current, status.modules[0].current);
    assert_eq!((counter.instances, counter.calls, counter.swaps), (2, 3, 1));
}
