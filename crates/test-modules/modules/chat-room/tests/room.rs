//! The chat room run through the SDK's `Harness`, as its author would test
//! it: no `.so`, no host.

use chat_room::{Event, Room};
use hotswap_module::testing::Harness;
use hotswap_module::{ModuleError, Push, Session};

/// Who a push went to (`None`: the whole room) and the event it carries.
fn events(room: &mut Harness<Room>) -> Vec<(Option<u64>, Event)> {
    room.take_pushes()
        .into_iter()
        .map(|push| match push {
            Push::Send { session, bytes } => (Some(session.id()), serde_json::from_slice(&bytes).unwrap()),
            Push::Broadcast { bytes } => (None, serde_json::from_slice(&bytes).unwrap()),
            other => panic!("the room only sends and broadcasts, not {other:?}"),
        })
        .collect()
}

#[test]
fn a_message_is_broadcast_with_its_authors_session_and_name() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    let (ann, bo) = (Session::from_id(7), Session::from_id(9));
    room.join(ann, b"instance=lobby&name=ann")?;
    room.join(bo, b"name=bo")?;
    room.take_pushes();
    room.message(bo, br#"{"text": "hi ann"}"#)?;
    assert_eq!(
        events(&mut room),
        [(None, Event::Said { n: 1, session: 9, name: "bo".into(), text: "hi ann".into() })]
    );
    Ok(())
}

#[test]
fn a_join_is_welcomed_then_announced_in_that_order() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    room.join(Session::from_id(1), b"name=ann")?;
    room.join(Session::from_id(2), b"name=bo")?;
    let events = events(&mut room);
    assert_eq!(
        events[2..],
        [
            (Some(2), Event::Welcome { session: 2, members: vec!["ann".into(), "bo".into()] }),
            (None, Event::Joined { session: 2, name: "bo".into() }),
        ]
    );
    Ok(())
}

#[test]
fn a_join_without_a_name_or_with_a_taken_one_is_refused_with_the_reason() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    let error = room.join(Session::from_id(1), b"instance=lobby").unwrap_err();
    assert_eq!(
        error.message(),
        "on_join: the request's query string \"instance=lobby\" is not a Join: missing field `name`"
    );
    let error = room.join(Session::from_id(1), b"name=%20").unwrap_err();
    assert_eq!(error.message(), "a name is needed to join: connect with ?name=..");
    room.join(Session::from_id(1), b"name=ann")?;
    let error = room.join(Session::from_id(2), b"name=ann").unwrap_err();
    assert_eq!(error.message(), "the name \"ann\" is taken in this room");
    assert_eq!(room.state().members(), ["ann"]);
    Ok(())
}

#[test]
fn a_message_that_is_not_a_say_is_refused_naming_the_type_and_nothing_is_pushed() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    let ann = Session::from_id(1);
    room.join(ann, b"name=ann")?;
    room.take_pushes();
    let error = room.message(ann, br#"{"txt": "hi"}"#).unwrap_err();
    assert_eq!(
        error.message(),
        "on_message: the message is not a Say: missing field `text` at line 1 column 13; \
         send JSON like {\"text\": ..}"
    );
    let error = room.message(Session::from_id(2), br#"{"text": "hi"}"#).unwrap_err();
    assert_eq!(error.message(), "this session has not joined the room");
    assert!(room.pushes().is_empty(), "{:?}", room.pushes());
    Ok(())
}

#[test]
fn a_leave_is_announced_and_an_unknown_one_only_logged() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    room.join(Session::from_id(1), b"name=ann")?;
    room.take_pushes();
    room.leave(Session::from_id(1));
    assert_eq!(events(&mut room), [(None, Event::Left { session: 1, name: "ann".into() })]);
    room.leave(Session::from_id(1));
    assert!(room.pushes().is_empty());
    let warning = room.recorder().logs.last().expect("a warning");
    assert_eq!(warning.message, "on_leave: a session left that had not joined");
    Ok(())
}

#[test]
fn ticks_are_counted_and_the_hooks_are_not_methods() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    for _ in 0..3 {
        room.tick()?;
    }
    assert_eq!(room.call_json::<u64>("ticks", &())?, 3);
    for hook in ["on_join", "on_message", "on_leave", "on_tick"] {
        let error = room.call(hook, b"").unwrap_err();
        assert_eq!(
            error.message(),
            format!("chat-room has no method {hook:?}; its methods are ticks, members")
        );
    }
    Ok(())
}

#[test]
fn the_members_and_ticks_survive_a_snapshot() -> Result<(), ModuleError> {
    let mut room = Harness::<Room>::new()?;
    room.join(Session::from_id(4), b"name=ann")?;
    room.tick()?;
    let mut again = Harness::<Room>::from_snapshot("chat-room", "1.0.0", &room.snapshot()?)?;
    assert_eq!((again.state().members(), again.state().ticks()), (vec!["ann".to_owned()], 1));
    // The session is still known to the room after the swap.
    again.message(Session::from_id(4), br#"{"text": "still here"}"#)?;
    assert_eq!(events(&mut again).len(), 1);
    Ok(())
}
