//! WebSocket sessions (`[[socket]]`), end to end with a blocking
//! tungstenite client on loopback, against the `room` test module (its
//! hooks: `crates/test-modules/modules/room`).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::ws_client::{
    Client, call, connect, joined_id, masked_text_frame, next_text, send, try_connect, try_connect_at, until,
};
use crate::{Daemon, Setup, modules};

const ROOM_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[[module]]
name = "room"
path = "modules/libroom.so"

[[socket]]
path = "/ws"
module = "room"
max_sessions = 8
queue = 16
tick = "20ms"

# Room for every push of the ordering test's burst (8 clients x 150 messages,
# each acked and broadcast to all eight): its clients read only after sending.
[[socket]]
path = "/order"
module = "room"
queue = 4096
tick = "20ms"

[[socket]]
path = "/lobby"
module = "room"
instance = "lobby"
tick = "20ms"
"#;

fn setup() -> Setup {
    let setup = Setup::new(ROOM_CONFIG);
    setup.install(modules::ROOM_V1, "libroom.so");
    setup
}

/// Reads until the close frame; returns its code and reason.
fn closed_with(client: &mut Client) -> (CloseCode, String) {
    let (_, code, reason) = texts_until_closed(client);
    (code, reason)
}

/// Reads until the close frame; returns the text frames before it, and
/// its code and reason.
fn texts_until_closed(client: &mut Client) -> (Vec<String>, CloseCode, String) {
    let mut texts = Vec::new();
    loop {
        match client.read() {
            Ok(Message::Text(text)) => texts.push(text.as_str().to_owned()),
            Ok(Message::Close(Some(frame))) => return (texts, frame.code, frame.reason.as_str().to_owned()),
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => continue,
            Err(err) => panic!("the connection ended without a close frame after {texts:?}: {err}"),
        }
    }
}

fn sessions_status(daemon: &Daemon) -> serde_json::Value {
    daemon.status()["sessions"].clone()
}

#[test]
fn a_message_reaches_the_module_and_its_pushes_come_back() {
    let setup = setup();
    let daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=a");
    let id = joined_id(&mut client);
    send(&mut client, "hello");
    assert_eq!(next_text(&mut client), "ack 1");
    assert_eq!(next_text(&mut client), format!("{id}:1:hello"));
    assert_eq!(call(&daemon, "sessions", "a"), format!("[{id}]"));
    let status = sessions_status(&daemon);
    assert_eq!(status["open"], 1, "{status}");
    assert_eq!(status["rooms"][0]["instance"], "a");
    // The module closes the session: 1000 with its reason, and on_leave ran.
    send(&mut client, "close-me");
    assert_eq!(closed_with(&mut client), (CloseCode::Normal, "bye".into()));
    daemon.wait_for_status("the session to end", |status| status["sessions"]["open"] == 0);
    assert_eq!(call(&daemon, "sessions", "a"), "[]", "on_leave ran");
    assert_eq!(sessions_status(&daemon)["closes"]["module"], 1);
}

/// Bytes the client sent right after its handshake, in the same packet,
/// reach the module: what hyper read past the request is not lost.
#[test]
fn a_message_sent_in_the_same_packet_as_the_handshake_is_not_lost() {
    use std::io::{Read, Write};
    let setup = setup();
    let daemon = setup.start();
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The upgrade request and a first masked text frame in one write: the
    // frame is read ahead with the request, before the session exists.
    let mut bytes = format!(
        "GET /ws?instance=eager HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        daemon.public()
    )
    .into_bytes();
    bytes.extend(masked_text_frame(b"early", [1, 2, 3, 4]));
    stream.write_all(&bytes).unwrap();
    // The 101, then whatever frames came with it.
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut client = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let id = joined_id(&mut client);
    assert_eq!(next_text(&mut client), "ack 1");
    assert_eq!(next_text(&mut client), format!("{id}:1:early"));
}

/// The daemon frames the connection itself (`src/sockets/wire.rs`): a ping
/// gets its pong, and a client that breaks the protocol gets the close code
/// that says how, and the room serves on.
#[test]
fn pings_get_pongs_and_a_client_breaking_the_protocol_is_closed_with_its_code() {
    use std::io::Write as _;
    let setup = setup();
    let daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=p");
    joined_id(&mut client);
    client.send(Message::Ping(b"still there?"[..].into())).unwrap();
    loop {
        match client.read().expect("a frame") {
            Message::Pong(payload) => break assert_eq!(&payload[..], b"still there?"),
            Message::Text(_) => continue,
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    // One pong per ping: the frames after it carry none.
    for round in 0..3 {
        send(&mut client, &format!("after the ping {round}"));
        loop {
            match client.read().expect("a frame") {
                Message::Text(text) if text.ends_with(&format!(":after the ping {round}")) => break,
                Message::Text(_) => continue,
                other => panic!("a second pong or another frame: {other:?}"),
            }
        }
    }

    // A frame whose header alone says it is over server.max_body: 1009.
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    client.get_mut().write_all(&huge).unwrap();
    let (code, reason) = closed_with(&mut client);
    assert_eq!((code, reason.contains("server.max_body")), (CloseCode::Size, true), "{reason}");

    // An unmasked client frame: 1002.
    let mut unmasked = connect(&daemon, "/ws?instance=p");
    joined_id(&mut unmasked);
    unmasked.get_mut().write_all(b"\x81\x02hi").unwrap();
    let (code, reason) = closed_with(&mut unmasked);
    assert_eq!((code, reason.contains("not masked")), (CloseCode::Protocol, true), "{reason}");

    let status =
        daemon.wait_for_status("both closes counted", |status| status["sessions"]["closes"]["protocol"] == 2);
    assert_eq!(status["sessions"]["open"], 0, "{status}");
    let mut other = connect(&daemon, "/ws?instance=p");
    joined_id(&mut other);
    send(&mut other, "the room serves on");
    until(&mut other, |text| text.ends_with(":the room serves on"));
}

#[test]
fn a_join_refused_by_the_module_closes_1008_with_its_reason() {
    let setup = setup();
    let daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=a&who=deny-me");
    let (code, reason) = closed_with(&mut client);
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("this room turns away") && reason.contains("deny-me"), "{reason}");
    assert!(reason.len() <= 123);
    assert_eq!(call(&daemon, "sessions", "a"), "[]");
    daemon
        .wait_for_status("the refusal to be counted", |status| status["sessions"]["closes"]["refused"] == 1);
}

#[test]
fn pushes_from_on_join_reach_the_joiner_and_the_room_even_when_it_refuses() {
    let setup = setup();
    let daemon = setup.start();
    let mut member = connect(&daemon, "/ws?instance=door");
    let member_id = joined_id(&mut member);
    // Accepted: the joiner is in the room while on_join runs, so the
    // broadcast it makes reaches the joiner as well as the others.
    let mut joiner = connect(&daemon, "/ws?instance=door");
    let joiner_id: u64 = next_text(&mut joiner).trim_start_matches("joined ").parse().unwrap();
    assert!(joiner_id > member_id);
    assert_eq!(next_text(&mut member), format!("joined {joiner_id}"));
    // Refused: what on_join pushed before refusing reaches the room and,
    // in order, the refused session before its 1008 close.
    for attempt in 0..5 {
        let mut refused = connect(&daemon, "/ws?instance=door&who=deny-loud");
        let (texts, code, reason) = texts_until_closed(&mut refused);
        assert_eq!((code, reason.contains("this room turns away")), (CloseCode::Policy, true), "{reason}");
        let turned_away = next_text(&mut member);
        assert!(turned_away.starts_with("turned away "), "attempt {attempt}: {turned_away}");
        assert_eq!(next_text(&mut joiner), turned_away, "the room saw it");
        let pushed = ["sorry".to_owned(), turned_away];
        assert_eq!(texts, pushed, "attempt {attempt}: what the refused session read before its close");
    }
    assert_eq!(
        call(&daemon, "sessions", "door"),
        format!("[{member_id},{joiner_id}]"),
        "no refused one kept"
    );
}

#[test]
fn a_broadcast_reaches_every_session_of_the_instance_and_no_other() {
    let setup = setup();
    let daemon = setup.start();
    let mut first = connect(&daemon, "/lobby");
    let first_id = joined_id(&mut first);
    let mut second = connect(&daemon, "/lobby?instance=ignored");
    let second_id = joined_id(&mut second);
    let mut elsewhere = connect(&daemon, "/ws?instance=elsewhere");
    let elsewhere_id = joined_id(&mut elsewhere);
    send(&mut second, "to everyone");
    let expected = format!("{second_id}:1:to everyone");
    assert_eq!(until(&mut first, |text| text.contains("everyone")), expected);
    assert_eq!(until(&mut second, |text| text.contains("everyone")), expected);
    // The other instance got nothing in between: its next frame is its own echo.
    send(&mut elsewhere, "mine");
    assert_eq!(next_text(&mut elsewhere), "ack 1");
    assert_eq!(next_text(&mut elsewhere), format!("{elsewhere_id}:1:mine"));
    assert_eq!(call(&daemon, "sessions", "lobby"), format!("[{first_id},{second_id}]"));
}

/// A session at `path` of the daemon at `public`, for a client thread.
fn client_at(public: std::net::SocketAddr, path: &str) -> Client {
    try_connect_at(public, path).unwrap_or_else(|err| panic!("connecting to {path}: {err}"))
}

#[test]
fn messages_of_a_session_reach_the_module_in_order_through_ten_swaps() {
    let setup = setup();
    let v2 = setup.install(modules::ROOM_V2, "libroom-2.so");
    let v1 = setup.path("modules/libroom.so");
    let daemon = setup.start();
    // Enough sessions in one room that its messages run in batches (inbox.rs).
    const CLIENTS: usize = 8;
    const MESSAGES: usize = 150;
    let public = daemon.public();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = client_at(public, "/order?instance=order");
                // Send everything at once: the daemon must keep the order.
                for n in 0..MESSAGES {
                    send(&mut client, &format!("c{c}-{n}"));
                }
                let mut seen = Vec::new();
                while seen.len() < MESSAGES {
                    let text = next_text(&mut client);
                    // `ID:SEQ:BODY`, broadcast to the room: keep this client's own.
                    let body = text.splitn(3, ':').nth(2).unwrap_or_default();
                    if body.starts_with(&format!("c{c}-")) {
                        seen.push(body.to_owned());
                    }
                }
                // Kept open until the daemon's counts are checked.
                (seen, client)
            })
        })
        .collect();
    for swap in 0..10 {
        let file = if swap % 2 == 0 { &v2 } else { &v1 };
        let body = format!("{{\"path\": {:?}}}", file.to_str().unwrap());
        let (status, reply) = daemon.admin("POST", "/v1/modules/room/load", body.as_bytes()).unwrap();
        assert_eq!(status, 200, "swap {swap}: {}", String::from_utf8_lossy(&reply));
    }
    let mut open = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let (seen, client) = client.join().unwrap();
        open.push(client);
        let sent: Vec<String> = (0..MESSAGES).map(|n| format!("c{c}-{n}")).collect();
        assert_eq!(seen, sent, "client {c}: every message once, in order");
    }
    assert_eq!(call(&daemon, "seq", "order"), (CLIENTS * MESSAGES).to_string(), "none lost or run twice");
    let status = sessions_status(&daemon);
    assert_eq!(
        (&status["open"], &status["closes"]),
        (&CLIENTS.into(), &serde_json::json!({})),
        "none closed: {status}"
    );
}

#[test]
fn a_method_call_and_a_timer_push_to_the_sessions_of_their_instance() {
    let setup = setup();
    let daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=announced");
    joined_id(&mut client);
    let mut elsewhere = connect(&daemon, "/ws?instance=quiet");
    joined_id(&mut elsewhere);
    // From a method: the call's pushes go out once it returns.
    daemon.text("POST", "/call/room/announce?instance=announced", "from a method");
    assert_eq!(next_text(&mut client), "from a method");
    // From a timer the method set (`ctx.after`), run by the daemon's scheduler.
    daemon.text("POST", "/call/room/announce-later?instance=announced", "from a timer");
    assert_eq!(next_text(&mut client), "from a timer");
    // Neither reached a session of another instance.
    elsewhere.get_mut().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    match elsewhere.read() {
        Err(tungstenite::Error::Io(err)) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("another instance's session got {other:?}"),
    }
}

#[test]
fn a_message_that_fails_or_panics_closes_only_its_session_and_the_others_of_its_batch_run() {
    let setup = setup();
    let daemon = setup.start();
    const CLIENTS: usize = 6;
    const MESSAGES: usize = 100;
    // Clients 2 and 4 send a failing message halfway; the others' messages
    // share batches with it (all six send at once into one room).
    let poison = |c: usize| match c {
        2 => Some("fail-me"),
        4 => Some("panic-me"),
        _ => None,
    };
    let public = daemon.public();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = client_at(public, "/order?instance=batch");
                for n in 0..MESSAGES {
                    match poison(c) {
                        Some(text) if n == MESSAGES / 2 => send(&mut client, text),
                        _ => send(&mut client, &format!("c{c}-{n}")),
                    }
                }
                let mut acks = 0;
                loop {
                    match client.read() {
                        Ok(Message::Text(text)) if text.starts_with("ack ") => {
                            acks += 1;
                            if poison(c).is_none() && acks == MESSAGES {
                                return (acks, None);
                            }
                        }
                        Ok(Message::Close(frame)) => {
                            let frame = frame.expect("a close frame with a code");
                            return (acks, Some((frame.code, frame.reason.as_str().to_owned())));
                        }
                        Ok(_) => continue,
                        Err(err) => panic!("client {c}: {err} after {acks} acks"),
                    }
                }
            })
        })
        .collect();
    for (c, client) in clients.into_iter().enumerate() {
        let (acks, closed) = client.join().unwrap();
        match (poison(c), closed) {
            (None, None) => assert_eq!(acks, MESSAGES, "client {c}"),
            (Some("fail-me"), Some((code, reason))) => {
                assert_eq!((code, acks), (CloseCode::Policy, MESSAGES / 2), "client {c}: {reason}");
                assert!(reason.contains("refuses \"fail-me\""), "{reason}");
            }
            (Some(_), Some((code, reason))) => {
                assert_eq!((code, acks), (CloseCode::Error, MESSAGES / 2), "client {c}: {reason}");
                assert!(reason.contains("panicked"), "{reason}");
            }
            (expected, closed) => {
                panic!("client {c}: expected {expected:?}, got {closed:?} after {acks} acks")
            }
        }
    }
    // Nothing a failed session sent after its failing message ran.
    let ran = (CLIENTS - 2) * MESSAGES + 2 * (MESSAGES / 2);
    assert_eq!(call(&daemon, "seq", "batch"), ran.to_string());
}

#[test]
fn a_client_that_does_not_read_is_closed_and_the_room_keeps_serving() {
    let setup = setup();
    let daemon = setup.start();
    let mut reader = connect(&daemon, "/ws?instance=slow");
    let reader_id = joined_id(&mut reader);
    let mut stalled = connect(&daemon, "/ws?instance=slow");
    // `stalled` never reads again. Every message is broadcast to it; its
    // queue (16) and the socket buffers fill, and the daemon closes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = "x".repeat(16 * 1024);
    let mut n = 0;
    loop {
        send(&mut reader, &body);
        n += 1;
        until(&mut reader, |text| text.starts_with(&format!("{reader_id}:")));
        if sessions_status(&daemon)["closes"]["too_slow"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled session was not closed after {n} messages");
    }
    // The room still serves the reader, and the stalled session left.
    send(&mut reader, "still here");
    until(&mut reader, |text| text.ends_with(":still here"));
    daemon.wait_for_status("the stalled session to leave", |status| status["sessions"]["open"] == 1);
    let status = sessions_status(&daemon);
    assert!(status["pushes_dropped"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["queue_depth_max"].as_u64().unwrap() >= 16, "{status}");
    assert_eq!(call(&daemon, "sessions", "slow"), format!("[{reader_id}]"), "on_leave ran for it");
    // What the stalled client finds when it reads at last: the close, with why.
    stalled.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reason = loop {
        match stalled.read() {
            Ok(Message::Close(Some(frame))) => break Some(frame),
            Ok(_) => continue,
            // The close frame may not fit behind the unread frames.
            Err(_) => break None,
        }
    };
    if let Some(frame) = reason {
        assert_eq!(frame.code, CloseCode::Policy);
        assert!(frame.reason.contains("too slow: 16 messages queued"), "{}", frame.reason);
    }
}

#[test]
fn sessions_past_max_sessions_are_refused_with_503() {
    let setup = setup();
    let daemon = setup.start();
    let mut open: Vec<Client> = (0..8).map(|_| connect(&daemon, "/ws?instance=full")).collect();
    match try_connect(&daemon, "/ws?instance=full") {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("8 sessions open (its max_sessions)"), "{body}");
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| "a session")),
    }
    // Another endpoint has its own limit.
    let _lobby = connect(&daemon, "/lobby");
    // One leaves: one more fits.
    open.pop().unwrap().close(None).unwrap();
    daemon.wait_for_status("a session to end", |status| status["sessions"]["open"] == 8);
    let _again = connect(&daemon, "/ws?instance=full");
}

#[test]
fn ticks_reach_instances_with_sessions_and_continue_across_a_swap_once() {
    let setup = setup();
    let v2 = setup.install(modules::ROOM_V2, "libroom-2.so");
    let daemon = setup.start();
    // An instance without sessions gets no ticks.
    assert_eq!(call(&daemon, "ticks", "quiet"), "0");
    let mut client = connect(&daemon, "/ws?instance=ticking");
    joined_id(&mut client);
    let ticks = |daemon: &Daemon| call(daemon, "ticks", "ticking").parse::<u64>().unwrap();
    let wait_ticks = |daemon: &Daemon, at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ticks(daemon) < at_least {
            assert!(Instant::now() < deadline, "fewer than {at_least} ticks in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_ticks(&daemon, 5);
    let body = format!("{{\"path\": {:?}}}", v2.to_str().unwrap());
    let (status, reply) = daemon.admin("POST", "/v1/modules/room/load", body.as_bytes()).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(call(&daemon, "version", "ticking"), "2.0.0");
    let before = ticks(&daemon);
    let started = Instant::now();
    wait_ticks(&daemon, before + 10);
    std::thread::sleep(Duration::from_millis(500));
    let (after, elapsed) = (ticks(&daemon), started.elapsed());
    // One tick per 20 ms at most (never doubled by the swap), however late.
    let most = elapsed.as_millis() as u64 / 20 + 2;
    assert!(after - before <= most, "{} ticks in {elapsed:?}: more than one per 20 ms", after - before);
    assert_eq!(call(&daemon, "ticks", "quiet"), "0", "still none without sessions");
    let status = sessions_status(&daemon);
    assert!(status["ticks"]["late_p99_ms"].is_number(), "{status}");
    let metrics = String::from_utf8(daemon.admin("GET", "/metrics", b"").unwrap().1).unwrap();
    assert!(metrics.contains("hotswap_tick_lateness_seconds{quantile=\"0.99\"}"), "{metrics}");
    assert!(metrics.contains("hotswap_sessions{module=\"room\",instance=\"ticking\"} 1"), "{metrics}");
}

#[test]
fn an_upgrade_moves_a_session_with_its_connection_and_the_state() {
    let setup = setup();
    let mut daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=kept");
    let id = joined_id(&mut client);
    send(&mut client, "before");
    until(&mut client, |text| text.ends_with(":before"));
    let old_pid = daemon.pid();
    crate::upgrade::upgrade(&setup, &mut daemon);
    assert_ne!(daemon.pid(), old_pid);
    // The same connection, the same session, now served by the new process.
    send(&mut client, "after");
    assert_eq!(next_text(&mut client), "ack 2");
    assert_eq!(next_text(&mut client), format!("{id}:2:after"));
    assert_eq!(call(&daemon, "sessions", "kept"), format!("[{id}]"), "no leave, no second join");
    let status = sessions_status(&daemon);
    assert_eq!(status["open"], 1, "{status}");
}

#[test]
fn ticks_go_on_in_the_new_process_after_an_upgrade_and_never_run_ahead_of_the_clock() {
    let setup = setup();
    let mut daemon = setup.start();
    let started = Instant::now();
    let mut client = connect(&daemon, "/ws?instance=upticks");
    joined_id(&mut client);
    let ticks = |daemon: &Daemon| call(daemon, "ticks", "upticks").parse::<u64>().unwrap();
    let wait_ticks = |daemon: &Daemon, at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ticks(daemon) < at_least {
            assert!(Instant::now() < deadline, "fewer than {at_least} ticks in 30 s\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_ticks(&daemon, 5);
    crate::upgrade::upgrade(&setup, &mut daemon);
    // The count moved with the state, and the session with its connection:
    // the new process ticks the instance, the old one no more.
    let moved = ticks(&daemon);
    assert!(moved >= 5, "the tick count did not move with the state: {moved}");
    wait_ticks(&daemon, moved + 10);
    send(&mut client, "still here");
    until(&mut client, |text| text.starts_with("ack "));
    std::thread::sleep(Duration::from_millis(300));
    let (total, elapsed) = (ticks(&daemon), started.elapsed());
    // One tick per 20 ms at most over both processes, however late: no
    // tick ran twice or in both.
    let most = elapsed.as_millis() as u64 / 20 + 2;
    assert!(total <= most, "{total} ticks in {elapsed:?}: more than one per 20 ms across the upgrade");
    assert!(sessions_status(&daemon)["ticks"]["ran"].as_u64().unwrap() >= 10, "counted by the new process");
}

#[test]
fn a_stop_closes_sessions_with_1001_and_runs_on_leave() {
    let setup = setup();
    let daemon = setup.start();
    let mut client = connect(&daemon, "/ws?instance=stopping");
    joined_id(&mut client);
    daemon.signal("TERM");
    let (code, _) = closed_with(&mut client);
    assert_eq!(code, CloseCode::Away);
    assert!(daemon.stop().success());
    // on_leave ran before the final save: the saved room has no session.
    let daemon = setup.start();
    assert_eq!(call(&daemon, "sessions", "stopping"), "[]");
}

#[test]
fn the_sessions_command_lists_a_modules_sessions_per_instance() {
    let setup = setup();
    let daemon = setup.start();
    let mut first = connect(&daemon, "/ws?instance=cli-a");
    joined_id(&mut first);
    let mut second = connect(&daemon, "/lobby");
    joined_id(&mut second);
    let output = setup.cli(&["sessions", "room"]);
    let text = crate::stdout(&output);
    assert!(output.status.success(), "{}", crate::stderr(&output));
    let line =
        |instance: &str| text.lines().find(|line| line.starts_with(instance)).map(str::split_whitespace);
    assert_eq!(line("cli-a").map(Iterator::collect::<Vec<_>>), Some(vec!["cli-a", "1"]), "{text}");
    assert_eq!(line("lobby").map(Iterator::collect::<Vec<_>>), Some(vec!["lobby", "1"]), "{text}");
    assert!(text.contains("2 open"), "{text}");
    assert!(text.contains("0 pushes dropped, 0 to closing sessions"), "{text}");
    let json = crate::json(&setup.cli(&["sessions", "room", "--json"]).stdout);
    assert_eq!(json["rooms"].as_array().map(Vec::len), Some(2), "{json}");
    let missing = setup.cli(&["sessions", "nope"]);
    assert!(!missing.status.success());
    assert!(crate::stderr(&missing).contains("module 'nope' is not loaded"), "{}", crate::stderr(&missing));
}
