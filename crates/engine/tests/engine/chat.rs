//! The chat room of `examples/chat`, written twice — on the raw `Module`
//! trait and with `#[hotswap_module::module]` — behaves the same through
//! the same calls and the same 1 → 2 swap. BENCHMARKS.md compares their
//! lines of plumbing; this test keeps that comparison honest (the two
//! versions do the same job).

use hotswap::{CallError, Engine};
use hotswap_test_modules::{CHAT_RAW_V1, CHAT_RAW_V2, CHAT_TYPED_V1, CHAT_TYPED_V2};
use serde_json::{Value, json};

use crate::engine_in;

/// The replies (or refusals) of one scripted session, as JSON values.
fn session(v1: &str, v2: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("chat", v1).unwrap();
    let mut replies = Vec::new();
    let mut call = |engine: &Engine, method: &str, payload: Value| {
        let payload = if payload.is_null() { Vec::new() } else { payload.to_string().into_bytes() };
        let reply = match engine.call("chat", "room-1", method, &payload) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("a JSON reply"),
            Err(CallError::Refused { .. }) => json!("refused"),
            Err(other) => panic!("{method}: {other}"),
        };
        replies.push(reply);
    };
    call(&engine, "post", json!({"author": "ana", "text": "hi"}));
    call(&engine, "post", json!({"author": "bo", "text": "hello ana"}));
    call(&engine, "post", json!({"author": "bo", "text": "  "}));
    call(&engine, "history", json!(1));
    call(&engine, "history", Value::Null);
    engine.load("chat", v2).expect("version 2 reads version 1's state");
    call(&engine, "react", json!(1));
    call(&engine, "react", json!(1));
    call(&engine, "react", json!(9));
    call(&engine, "post", json!({"author": "ana", "text": "2 now"}));
    call(&engine, "history", Value::Null);
    replies
}

#[test]
fn the_raw_and_the_typed_chat_room_answer_the_same_through_a_migration() {
    let raw = session(CHAT_RAW_V1, CHAT_RAW_V2);
    let typed = session(CHAT_TYPED_V1, CHAT_TYPED_V2);
    assert_eq!(raw, typed);
    assert_eq!(raw[2], json!("refused"), "an empty message is refused");
    assert_eq!(raw[7], json!("refused"), "a reaction to no message is refused");
    let history = raw.last().unwrap().as_array().unwrap();
    assert_eq!(history.len(), 3, "both messages of version 1 and one of version 2: {history:?}");
    assert_eq!(history[1]["reactions"], json!(2));
    assert_eq!(history[2]["id"], json!(2));
}
