//! The game demo over WebSocket sessions (`examples/game/arena.rs`), with
//! the shipped config: players move and score by messages, every tick shows
//! the board and the serving version, and a swap to a version with another
//! state layout keeps every connection, session id, position and ack.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::game::game_setup;
use crate::{Daemon, json as parse};

type Client = WebSocket<TcpStream>;

fn connect(daemon: &Daemon, query: &str) -> Client {
    let stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let url = format!("ws://{}/ws/game?{query}", daemon.public());
    match tungstenite::client(url.as_str(), stream) {
        Ok((client, _)) => client,
        Err(err) => panic!("joining with {query}: {err:?}\n{}", daemon.log()),
    }
}

/// The next JSON message; a close frame is `{"closed": code, "reason": ..}`.
fn next(client: &mut Client) -> Value {
    loop {
        match client.read().expect("a frame within 30 s") {
            Message::Text(text) => return parse(text.as_bytes()),
            Message::Close(Some(frame)) => {
                return json!({"closed": u16::from(frame.code), "reason": frame.reason.as_str()});
            }
            _ => continue,
        }
    }
}

fn until(client: &mut Client, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..10_000 {
        let message = next(client);
        assert!(message.get("closed").is_none(), "closed while waiting for {what}: {message}");
        if matches(&message) {
            return message;
        }
    }
    panic!("no {what} in 10,000 messages");
}

fn send(client: &mut Client, message: Value) {
    client.send(Message::text(message.to_string())).unwrap();
}

/// Sends `moves` steps right, numbered from `first`, and checks that every
/// one is acknowledged, in order (ticks may come in between).
fn move_and_check_acks(client: &mut Client, first: u64, moves: u64) {
    for seq in first..first + moves {
        send(client, json!({"type": "move", "dx": 1, "dy": 0, "seq": seq}));
    }
    for seq in first..first + moves {
        let ack = until(client, "an ack", |message| message["type"] == "ack");
        assert_eq!(ack["seq"], seq, "acks come in the order the moves were sent");
    }
}

fn player<'a>(tick: &'a Value, name: &str) -> &'a Value {
    let players = tick["players"].as_array().unwrap();
    players.iter().find(|player| player["name"] == name).unwrap_or_else(|| panic!("{name} in {tick}"))
}

#[test]
fn players_keep_their_connection_session_and_position_through_a_swap_with_a_layout_change() {
    let setup = game_setup();
    let daemon = setup.start();
    let mut ana = connect(&daemon, "instance=arena&name=ana");
    let welcome = next(&mut ana);
    assert_eq!((welcome["type"].as_str(), welcome["version"].as_str()), (Some("welcome"), Some("1001")));
    let ana_session = welcome["session"].clone();
    let mut bob = connect(&daemon, "instance=arena&name=bob");
    let bob_session = next(&mut bob)["session"].clone();

    move_and_check_acks(&mut ana, 1, 5);
    send(&mut ana, json!({"type": "score", "points": 7, "seq": 6}));
    assert_eq!(until(&mut ana, "the score's ack", |m| m["type"] == "ack")["seq"], 6);
    // Ticks already queued for bob may predate ana's score: wait for one after it.
    let tick = until(&mut bob, "a tick with ana's moves and score", |m| {
        m["type"] == "tick"
            && m["players"].as_array().is_some_and(|p| p.len() == 2)
            && player(m, "ana")["x"] != 0
            && player(m, "ana")["score"].as_u64().is_some_and(|score| score >= 7)
    });
    assert_eq!((tick["version"].as_str(), tick["served_by"].as_str()), (Some("1001"), Some("game1")));
    let ana_before = player(&tick, "ana").clone();
    assert_eq!(ana_before["session"], ana_session);

    let swapped = daemon.text("GET", "/load?name=game2", "");
    assert!(swapped.starts_with("swapped game 1001 -> 1002"), "{swapped}");

    // The same connections: the next version's ticks, the same sessions
    // and positions, and every move after the swap acknowledged in order.
    let tick = until(&mut ana, "a tick from game2", |m| m["type"] == "tick" && m["version"] == "1002");
    assert_eq!(tick["served_by"], "game2");
    let ana_after = player(&tick, "ana");
    assert_eq!(
        (&ana_after["session"], &ana_after["x"], &ana_after["y"]),
        (&ana_session, &ana_before["x"], &ana_before["y"])
    );
    assert_eq!(ana_after["score"], ana_before["score"], "{tick}");
    assert_eq!(ana_after["level"], 1, "game2 shows levels: {tick}");
    assert_eq!(player(&tick, "bob")["session"], bob_session);
    move_and_check_acks(&mut ana, 7, 5);
    until(&mut bob, "a tick from game2", |m| m["type"] == "tick" && m["version"] == "1002");

    // The arena is state like the rest: the HTTP routes see it.
    let state = parse(daemon.text("GET", "/state?instance=arena", "").as_bytes());
    assert_eq!(state["arena"]["sessions"][ana_session.to_string()]["acked"], 11, "{state}");

    // bob leaves: ana is told, and the arena forgets him.
    bob.close(None).unwrap();
    let left = until(&mut ana, "bob's leave", |m| m["type"] == "left");
    assert_eq!((&left["name"], &left["session"]), (&json!("bob"), &bob_session));
}

#[test]
fn a_name_joining_again_takes_its_seat_back_and_the_old_session_cannot_move() {
    let setup = game_setup();
    let daemon = setup.start();
    let mut first = connect(&daemon, "instance=arena&name=ana");
    let first_session = next(&mut first)["session"].clone();
    move_and_check_acks(&mut first, 1, 3);
    let mut again = connect(&daemon, "instance=arena&name=ana");
    let again_session = next(&mut again)["session"].clone();
    assert_ne!(again_session, first_session);
    send(&mut first, json!({"type": "move", "dx": 1, "dy": 0, "seq": 4}));
    let closed = loop {
        let message = next(&mut first);
        if message.get("closed").is_some() {
            break message;
        }
        assert_eq!(message["type"], "tick", "no ack for the old session's move: {message}");
    };
    assert_eq!(closed["closed"], u16::from(CloseCode::Policy), "{closed}");
    assert!(closed["reason"].as_str().unwrap().contains("has not joined the arena"), "{closed}");
    // One seat, where the first session left it, with its acks.
    let tick = until(&mut again, "a tick", |m| m["type"] == "tick");
    assert_eq!(tick["players"].as_array().unwrap().len(), 1, "{tick}");
    assert_eq!((&player(&tick, "ana")["session"], &player(&tick, "ana")["x"]), (&again_session, &json!(4)));
    let state = parse(daemon.text("GET", "/state?instance=arena", "").as_bytes());
    assert_eq!(state["arena"]["sessions"][again_session.to_string()]["acked"], 3, "{state}");
}

#[test]
fn a_bad_name_and_a_bad_move_close_the_session_1008_with_the_reason() {
    let setup = game_setup();
    let daemon = setup.start();
    for (query, reason) in [
        ("instance=arena&name=two%20words", "a player name is one word"),
        ("instance=arena", "is not a JoinRequest"),
    ] {
        let mut refused = connect(&daemon, query);
        let closed = next(&mut refused);
        assert_eq!(closed["closed"], u16::from(CloseCode::Policy), "{query}: {closed}");
        assert!(closed["reason"].as_str().unwrap().contains(reason), "{query}: {closed}");
    }
    let mut ana = connect(&daemon, "instance=arena&name=ana");
    next(&mut ana);
    // A message the module refuses closes its session 1008 with the reason.
    send(&mut ana, json!({"type": "move", "dx": 5, "dy": 0, "seq": 1}));
    let closed = loop {
        let message = next(&mut ana);
        if message.get("closed").is_some() {
            break message;
        }
        assert_eq!(message["type"], "tick", "no ack for a refused move: {message}");
    };
    assert_eq!(closed["closed"], u16::from(CloseCode::Policy), "{closed}");
    assert!(closed["reason"].as_str().unwrap().contains("dx and dy in -1..=1, got dx=5"), "{closed}");
}
