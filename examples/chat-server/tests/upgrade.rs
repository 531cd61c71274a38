//! `kill -USR2` upgrades the chat server to a new process of its binary
//! (src/upgrade.rs): every session moves with its connection, and the rooms
//! keep their state. A refused upgrade leaves everything in the old process.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, DEADLINE, Server};

/// Waits (bounded) until the clients have had `target` messages acked in all.
fn wait_for_acks(acked: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + DEADLINE;
    while acked.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "the clients got {} acks of {target}",
            acked.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A masked text frame, as a client sends it.
fn client_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    let length = u8::try_from(text.len()).ok().filter(|length| *length < 126).expect("a short text");
    let mut frame = vec![0x81, 0x80 | length];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().zip(mask.iter().cycle()).map(|(byte, mask)| byte ^ mask));
    frame
}

#[test]
fn twenty_sessions_talk_through_two_upgrades_and_a_swap_and_every_message_is_acked_once_in_order() {
    const CLIENTS: usize = 20;
    const ROOMS: usize = 4;
    const STEP: usize = 60;
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("libroom.so");
    std::fs::copy(hotswap_test_modules::ROOM_V1, &file).expect("copy ROOM_V1");
    let mut server = Server::start(&file);

    let clients: Vec<Client> =
        (0..CLIENTS).map(|c| Client::join(&server, &format!("r{}?name=x", c % ROOMS))).collect();
    let highest_id = clients.iter().map(|client| client.id).max().expect("clients");
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let talkers: Vec<_> = (clients.into_iter().enumerate())
        .map(|(c, mut client)| {
            let (acked, stop) = (acked.clone(), stop.clone());
            thread::spawn(move || {
                let mut acks = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    acks.push(client.say(&format!("c{c}-m{}", acks.len())));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                (client, acks)
            })
        })
        .collect();

    wait_for_acks(&acked, STEP);
    assert_eq!(server.upgrade(), CLIENTS, "sessions moved by the first upgrade");
    wait_for_acks(&acked, 2 * STEP);
    server.swap_to_v2(&file);
    wait_for_acks(&acked, 3 * STEP);
    assert_eq!(server.upgrade(), CLIENTS, "sessions moved by the second upgrade");
    wait_for_acks(&acked, 4 * STEP);
    stop.store(true, Ordering::SeqCst);

    let mut done: Vec<(Client, Vec<u64>)> =
        talkers.into_iter().map(|talker| talker.join().expect("client thread")).collect();
    for room in 0..ROOMS {
        // The room numbers its messages: its count moved with its state.
        let total: usize = (done.iter().skip(room).step_by(ROOMS)).map(|(_, acks)| acks.len()).sum();
        for (c, (client, acks)) in done.iter_mut().enumerate().skip(room).step_by(ROOMS) {
            client.read_through(total as u64);
            assert_eq!(
                client.room_seqs(),
                (1..=total as u64).collect::<Vec<_>>(),
                "client {c} saw room {room}'s messages out of order, twice or not at all"
            );
            let sent: Vec<String> = (0..acks.len()).map(|m| format!("c{c}-m{m}")).collect();
            let own = client.own();
            assert_eq!(
                own.iter().map(|(_, text)| *text).collect::<Vec<_>>(),
                sent,
                "client {c}'s own messages"
            );
            assert_eq!(own.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), *acks, "client {c}'s acks");
        }
    }
    // Still open, in the third process: a round trip each, and a leave that
    // the room announces under the id the session was given in the first.
    for (client, _) in &mut done {
        client.say("after");
    }
    let (mut leaving, _) = done.remove(ROOMS);
    leaving.socket.close(None).expect("close");
    let left = format!("left {}", leaving.id);
    let (neighbour, _) = &mut done[0];
    while common::next_text(&mut neighbour.socket) != left {}
    // Session ids are never reused: the next one moved too.
    let newcomer = Client::join(&server, "r0");
    assert!(newcomer.id > highest_id, "new session {} after {highest_id}", newcomer.id);
}

#[test]
fn frames_split_across_upgrades_are_answered_once() {
    let server_file = std::path::Path::new(hotswap_test_modules::ROOM_V1);
    let mut server = Server::start(server_file);
    let mut speaker = Client::join(&server, "split");
    let mut listener = Client::join(&server, "split");
    // One frame cut inside its header, the next inside its payload.
    for (cut, text) in [(1, "first half and rest"), (9, "second half and rest")] {
        let frame = client_text_frame(text);
        speaker.socket.get_mut().write_all(&frame[..cut]).expect("half a frame");
        assert_eq!(server.upgrade(), 2);
        speaker.socket.get_mut().write_all(&frame[cut..]).expect("the rest");
        speaker.read_ack();
    }
    speaker.say("whole");
    speaker.read_through(3);
    listener.read_through(3);
    let expected = vec![(1, "first half and rest"), (2, "second half and rest"), (3, "whole")];
    for client in [&speaker, &listener] {
        let heard: Vec<(u64, &str)> = (client.seen.iter().filter_map(|m| common::numbered(m)))
            .map(|(_, seq, text)| (seq, text))
            .collect();
        assert_eq!(heard, expected, "client {}", client.id);
    }
}

#[test]
fn a_refused_upgrade_leaves_every_session_serving_in_the_old_process() {
    let server_file = std::path::Path::new(hotswap_test_modules::ROOM_V1);
    let hook = [("CHAT_SERVER_TEST_REJECT_UPGRADE", "the test says no")];
    let server = Server::start_with(server_file, &hook);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::join(&server, "stay")).collect();
    let mut next = 1..;
    for client in &mut clients {
        assert_eq!(client.say("before"), next.next().expect("seq"));
    }
    let descriptors = server.open_descriptors();
    let frame = client_text_frame("across the refusal");
    clients[0].socket.get_mut().write_all(&frame[..4]).expect("half a frame");

    server.signal(libc::SIGUSR2);
    let refused = server.line_starting("upgrade");
    assert!(refused.starts_with("upgrade refused: ") && refused.contains("the test says no"), "{refused}");
    clients[0].socket.get_mut().write_all(&frame[4..]).expect("the rest");
    assert_eq!(clients[0].read_ack(), next.next().expect("seq"));
    for client in &mut clients {
        assert_eq!(client.say("after"), next.next().expect("seq"));
    }
    assert_eq!(server.open_descriptors(), descriptors, "descriptors of the old process after the refusal");
    // It accepts again.
    let mut newcomer = Client::join(&server, "stay");
    assert_eq!(newcomer.say("new"), next.next().expect("seq"));
}

#[test]
fn pushes_waiting_for_a_client_that_does_not_read_move_through_two_upgrades_in_order() {
    // 48 KiB broadcasts: the first 120 (5.8 MB) are more than the kernel's
    // buffers on both ends hold (4 MB at most for the server's by default),
    // so the session's writer is blocked inside a frame with pushes queued
    // behind it at each freeze; 240 in all stay under its queue of 256.
    const PHASES: [u64; 3] = [120, 60, 60];
    let text = "x".repeat(48 << 10);
    let server_file = std::path::Path::new(hotswap_test_modules::ROOM_V1);
    let mut server = Server::start(server_file);
    let mut talker = Client::join(&server, "backlog");
    let mut silent = Client::join(&server, "backlog");

    let mut sent = 0;
    for (phase, count) in PHASES.into_iter().enumerate() {
        if phase > 0 {
            assert_eq!(server.upgrade(), 2, "sessions moved by upgrade {phase}");
        }
        for _ in 0..count {
            sent += 1;
            assert_eq!(talker.say(&text), sent, "the room's number for the talker's message");
        }
    }
    // Only now does the silent client read: each broadcast once, in the
    // room's order (those from before the upgrades first), and no close.
    silent.read_through(sent);
    assert_eq!(silent.room_seqs(), (1..=sent).collect::<Vec<_>>(), "the silent client's broadcasts");
    assert_eq!(silent.seen.len() as u64, sent + 1, "`joined`, then the broadcasts and nothing else");
    assert_eq!(silent.say("awake"), sent + 1, "the silent client's session is still open");
}
