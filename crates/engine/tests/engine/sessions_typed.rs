//! A typed module's session hooks (`chat-room`, `#[module]` with `on_join`,
//! `on_message`, `on_leave`, `on_tick`) as a host sees them through the
//! engine's sessions API: refusals with their messages, and pushes reaching
//! the `on_push` sink in the order the module made them.

use std::sync::{Arc, Mutex};

use hotswap::{Engine, EngineConfig, Push, PushSink};
use hotswap_test_modules::CHAT_ROOM;
use serde_json::Value;

use crate::deploy;

type Pushed = Arc<Mutex<Vec<(String, String, Vec<Push>)>>>;

/// An engine with `chat-room` loaded and a sink that keeps every batch of
/// pushes with the module and instance it came from.
fn engine_with_sink(dir: &std::path::Path) -> (Engine, Pushed) {
    let pushed: Pushed = Arc::default();
    let sink = {
        let pushed = Arc::clone(&pushed);
        PushSink::new(move |module: &str, instance: &str, pushes: Vec<Push>| {
            pushed.lock().unwrap().push((module.to_owned(), instance.to_owned(), pushes));
        })
    };
    let engine = Engine::new(EngineConfig {
        private_dir: Some(dir.join("private")),
        on_push: Some(sink),
        ..EngineConfig::default()
    });
    engine.load("chat-room", CHAT_ROOM).unwrap();
    (engine, pushed)
}

/// The JSON events of the batches so far, with who each went to (`None`:
/// the whole instance), leaving none.
fn take_events(pushed: &Pushed) -> Vec<(Option<u64>, Value)> {
    let batches = std::mem::take(&mut *pushed.lock().unwrap());
    let mut events = Vec::new();
    for (module, _, pushes) in batches {
        assert_eq!(module, "chat-room");
        for push in pushes {
            events.push(match push {
                Push::Send { session, bytes } => (Some(session), serde_json::from_slice(&bytes).unwrap()),
                Push::Broadcast { bytes } => (None, serde_json::from_slice(&bytes).unwrap()),
                other => panic!("chat-room only sends and broadcasts, not {other:?}"),
            });
        }
    }
    events
}

#[test]
fn a_join_the_module_refuses_is_an_err_with_its_message_and_pushes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pushed) = engine_with_sink(dir.path());

    let error = engine.session_join("chat-room", "lobby", 1, b"instance=lobby").unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(
            "on_join: the request's query string \"instance=lobby\" is not a Join: missing field `name`"
        ),
        "{message}"
    );
    engine.session_join("chat-room", "lobby", 1, b"instance=lobby&name=ann").unwrap();
    let error = engine.session_join("chat-room", "lobby", 2, b"name=ann").unwrap_err();
    assert!(error.to_string().contains("the name \"ann\" is taken in this room"), "{error}");

    let events = take_events(&pushed);
    assert_eq!(events.len(), 2, "only ann's join pushed: {events:?}");
    assert_eq!(events[0].0, Some(1));
    assert_eq!(events[0].1["welcome"]["members"], serde_json::json!(["ann"]));
}

#[test]
fn a_message_that_does_not_decode_is_refused_naming_the_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pushed) = engine_with_sink(dir.path());
    engine.session_join("chat-room", "lobby", 1, b"name=ann").unwrap();
    take_events(&pushed);

    let error = engine.session_message("chat-room", "lobby", 1, br#"{"txt": "hi"}"#).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("on_message: the message is not a Say: missing field `text`")
            && message.contains("send JSON like {\"text\": ..}"),
        "{message}"
    );
    let error = engine.session_message("chat-room", "lobby", 1, b"\xff").unwrap_err();
    assert!(error.to_string().contains("on_message: the message is not a Say"), "{error}");
    assert!(take_events(&pushed).is_empty());
}

#[test]
fn pushes_reach_the_sink_in_the_order_the_instance_made_them_under_concurrent_senders() {
    const SENDERS: u64 = 4;
    const MESSAGES: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let (engine, pushed) = engine_with_sink(dir.path());
    for session in 1..=SENDERS {
        engine.session_join("chat-room", "lobby", session, format!("name=p{session}").as_bytes()).unwrap();
    }
    take_events(&pushed);

    // Every sender sends its messages at once with the others: the sink
    // must see the room's numbering (made under the instance's lock) in
    // order, and each sender's messages in the order it sent them.
    std::thread::scope(|scope| {
        for session in 1..=SENDERS {
            let engine = &engine;
            scope.spawn(move || {
                for i in 0..MESSAGES {
                    let message = format!(r#"{{"text": "{i}"}}"#);
                    engine.session_message("chat-room", "lobby", session, message.as_bytes()).unwrap();
                }
            });
        }
    });

    let events = take_events(&pushed);
    assert_eq!(events.len() as u64, SENDERS * MESSAGES);
    let mut next_from = vec![0u64; SENDERS as usize + 1];
    for (n, (to, event)) in (1..).zip(&events) {
        assert_eq!(*to, None, "a message is broadcast");
        let said = &event["said"];
        assert_eq!(said["n"], n, "the sink saw the room's pushes out of order: {events:?}");
        let session = said["session"].as_u64().unwrap();
        let text: u64 = said["text"].as_str().unwrap().parse().unwrap();
        assert_eq!(text, next_from[session as usize], "session {session}'s messages out of order");
        next_from[session as usize] += 1;
    }
}

#[test]
fn leaves_are_announced_ticks_counted_and_sessions_kept_through_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pushed) = engine_with_sink(dir.path());
    engine.session_join("chat-room", "lobby", 1, b"name=ann").unwrap();
    engine.session_join("chat-room", "lobby", 2, b"name=bo").unwrap();
    for _ in 0..3 {
        engine.tick("chat-room", "lobby").unwrap();
    }
    take_events(&pushed);

    // The room's members are state: a swap (here to another copy of the
    // same build) keeps them, with no session doing anything.
    let again = deploy(CHAT_ROOM, dir.path(), "chat-room-again.so");
    engine.load("chat-room", &again).unwrap();
    engine.session_message("chat-room", "lobby", 2, br#"{"text": "still here"}"#).unwrap();
    engine.session_leave("chat-room", "lobby", 1).unwrap();
    engine.tick("chat-room", "lobby").unwrap();

    let events = take_events(&pushed);
    assert_eq!(events[0].1["said"]["name"], "bo", "{events:?}");
    assert_eq!(events[1].1["left"]["name"], "ann", "{events:?}");
    assert_eq!(events.len(), 2, "{events:?}");
    let ticks = engine.call("chat-room", "lobby", "ticks", b"").unwrap();
    assert_eq!(ticks, b"4");
    let members = engine.call("chat-room", "lobby", "members", b"").unwrap();
    assert_eq!(members, br#"["bo"]"#);
}
