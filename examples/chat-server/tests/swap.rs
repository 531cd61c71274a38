//! The chat server end to end (the harness is tests/common): WebSocket
//! clients of the `room` test module, and a swap from ROOM_V1 to ROOM_V2 by
//! SIGHUP while they talk.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{Client, Server, next_text, numbered};
use tungstenite::Message;

#[test]
fn sessions_stay_open_and_in_order_through_a_swap_and_the_new_version_serves() {
    const CLIENTS: usize = 4;
    const PER_PHASE: usize = 25;
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("libroom.so");
    std::fs::copy(hotswap_test_modules::ROOM_V1, &file).expect("copy ROOM_V1");
    let server = Server::start(&file);
    assert!(server.loaded.starts_with("loaded room 1.0.0"), "{}", server.loaded);

    let clients: Vec<Client> = (0..CLIENTS).map(|_| Client::join(&server, "hall?name=x")).collect();
    // Each client talks in two phases; the swap happens during the first.
    let started = Arc::new(Barrier::new(CLIENTS + 1));
    let swapped = Arc::new(Barrier::new(CLIENTS + 1));
    let talkers: Vec<_> = (clients.into_iter().enumerate())
        .map(|(c, mut client)| {
            let (started, swapped) = (started.clone(), swapped.clone());
            thread::spawn(move || {
                started.wait();
                let mut acks = Vec::new();
                for phase in 0..2 {
                    acks.extend((0..PER_PHASE).map(|m| client.say(&format!("c{c}-p{phase}-m{m}"))));
                    if phase == 0 {
                        swapped.wait();
                    }
                }
                (client, acks)
            })
        })
        .collect();

    // Under way while the clients talk: a new build over the file, then SIGHUP.
    started.wait();
    server.swap_to_v2(&file);
    swapped.wait();

    let mut done: Vec<(Client, Vec<u64>)> =
        talkers.into_iter().map(|t| t.join().expect("client thread")).collect();
    let total = (CLIENTS * PER_PHASE * 2) as u64;
    for (c, (client, acks)) in done.iter_mut().enumerate() {
        client.read_through(total);
        // Every message of the room, once each, in the room's order.
        let numbers: Vec<&str> =
            client.seen.iter().filter_map(|m| numbered(m)).map(|(_, _, text)| text).collect();
        let seqs: Vec<u64> = client.seen.iter().filter_map(|m| numbered(m)).map(|(_, seq, _)| seq).collect();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "client {c} saw the room's messages out of order or not all"
        );
        // Its own, in the order it sent them, each acknowledged with its number.
        let own: Vec<(u64, &str)> = (client.seen.iter().filter_map(|m| numbered(m)))
            .filter(|(sender, _, _)| *sender == client.id)
            .map(|(_, seq, text)| (seq, text))
            .collect();
        let sent: Vec<String> =
            (0..2).flat_map(|p| (0..PER_PHASE).map(move |m| format!("c{c}-p{p}-m{m}"))).collect();
        assert_eq!(own.iter().map(|(_, text)| *text).collect::<Vec<_>>(), sent, "client {c}'s own messages");
        assert_eq!(own.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), *acks, "client {c}'s acks");
        assert_eq!(numbers.len() as u64, total);
    }
    // The sessions are still open, on 2.0.0: one more round trip each, and a leave others see.
    for (client, _) in &mut done {
        client.say("after");
    }
    let (mut leaving, _) = done.pop().expect("a client");
    leaving.socket.close(None).expect("close");
    let left = format!("left {}", leaving.id);
    for (client, _) in &mut done {
        while next_text(&mut client.socket) != left {}
    }
}

#[test]
fn a_refused_join_is_closed_with_1008_and_the_modules_reason() {
    let server = Server::start(std::path::Path::new(hotswap_test_modules::ROOM_V1));
    let mut socket = server.connect("hall?deny");
    match socket.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("this room turns away"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_and_does_not_stall_its_room() {
    const FLOOD: usize = 600;
    let server = Server::start(std::path::Path::new(hotswap_test_modules::ROOM_V1));
    let slow = Client::join(&server, "flood");
    let mut fast = Client::join(&server, "flood");
    // 600 messages of 60 KB to both: far past the slow client's queue (256)
    // plus what the kernel buffers on loopback. The fast one gets each ack.
    let big = "x".repeat(60 << 10);
    for _ in 0..FLOOD {
        fast.say(&big);
        fast.seen.retain(|message| message.starts_with("left "));
    }
    // The slow session is closed (its writer gives up) and leaves the room.
    let left = format!("left {}", slow.id);
    while !fast.seen.contains(&left) {
        let message = next_text(&mut fast.socket);
        fast.seen.push(message);
    }
    fast.say("still here");

    // The slow client gets part of the flood, then its session ends.
    let mut slow = slow.socket;
    let mut received = 0;
    let ended = loop {
        match slow.read() {
            Ok(Message::Text(_)) => received += 1,
            Ok(other) => break format!("{other:?}"),
            Err(error) => break error.to_string(),
        }
    };
    assert!(!ended.contains("timed out") && !ended.contains("would block"), "{ended}");
    assert!(received < FLOOD, "the slow client got all {received} messages: nothing was cut off");
}

#[test]
fn a_frame_over_the_message_limit_is_closed_with_1009() {
    let server = Server::start(std::path::Path::new(hotswap_test_modules::ROOM_V1));
    let mut client = Client::join(&server, "big");
    client.socket.send(Message::text("x".repeat(65 << 10))).expect("send");
    loop {
        match client.socket.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
                assert!(frame.reason.contains("over this server's limit"), "{}", frame.reason);
                break;
            }
            Ok(Message::Text(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
