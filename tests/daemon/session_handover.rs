//! Attacks on issue 10's hand-over of WebSocket sessions in a process
//! upgrade: every joined session moves to the new process with its TCP
//! connection, so its client sees no close and no new join, keeps its
//! session id, and every message it sends before, during (the state frozen)
//! and after the upgrade runs exactly once, in order. Against the `room`
//! test module, with the clients of `session_traffic`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::session_traffic::{
    self, Joined, assert_all_open_none_closed, assert_rooms_account_for, sent_between,
};
use crate::upgrade::{assert_fds_back_to, open_fds, script, upgrade, upgrade_started};
use crate::ws_client::{Client, call, connect, joined_id, masked_text_frame, next_text, send, until};
use crate::{Daemon, Setup, modules, stderr};

/// `shutdown_timeout` is the old process's drain deadline: 60 s, so an old
/// process that waits for it rather than handing its sessions over is seen.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "60s"

[[module]]
name = "room"
path = "modules/libroom.so"

# Room for the backlog test's pushes to a client that does not read.
[[socket]]
path = "/ws"
module = "room"
queue = 4096
"#;

/// The new process of each upgrade waits this long before READY, the old
/// one frozen meanwhile: the clients' messages of that time wait for it.
const FROZEN_MS: &str = "300";

pub(crate) fn setup(extra: &str) -> Setup {
    let setup = Setup::new(&format!("{CONFIG}{extra}"));
    setup.install(modules::ROOM_V1, "libroom.so");
    setup
}

pub(crate) fn start_frozen_upgrades(setup: &Setup, pause_ms: &str) -> Daemon {
    setup
        .start_env(&[], &[("HOTSWAP_TEST_PAUSE_BEFORE_READY_MS", pause_ms)])
        .unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"))
}

/// Reads the next frame; a close or an error fails with what `who` saw.
fn expect_text(client: &mut Client, who: &str, daemon: &Daemon) -> String {
    loop {
        match client.read() {
            Ok(Message::Text(text)) => return text.as_str().to_owned(),
            Ok(Message::Close(frame)) => panic!("{who}: closed by the server: {frame:?}\n{}", daemon.log()),
            Ok(_) => continue,
            Err(err) => panic!("{who}: {err}\n{}", daemon.log()),
        }
    }
}

/// Reads until a text frame that `matches`, as `expect_text`.
fn expect_until(client: &mut Client, who: &str, daemon: &Daemon, matches: impl Fn(&str) -> bool) -> String {
    loop {
        let text = expect_text(client, who, daemon);
        if matches(&text) {
            return text;
        }
    }
}

/// Sends on a session that must still be open.
fn send_as(client: &mut Client, who: &str, text: &str) {
    client.send(Message::text(text)).unwrap_or_else(|err| panic!("{who}: sending {text:?}: {err}"));
}

/// The main attack: 20 sessions in 4 rooms sending continuously, a window
/// of messages in flight each, through 3 back-to-back upgrades whose old
/// process stays frozen a while.
#[test]
fn sessions_keep_their_connection_id_and_every_message_through_three_upgrades() {
    const CLIENTS: usize = 20;
    const ROOMS: usize = 4;
    let setup = setup("");
    let mut daemon = start_frozen_upgrades(&setup, FROZEN_MS);
    let stop = Arc::new(AtomicBool::new(false));
    let running = session_traffic::start(session_traffic::join(&daemon, CLIENTS, ROOMS), &stop);
    std::thread::sleep(Duration::from_millis(300));
    let mut generations = vec![daemon.pid()];
    let mut windows = Vec::new();
    for _ in 0..3 {
        let began = Instant::now();
        generations.push(upgrade(&setup, &mut daemon));
        windows.push((began, Instant::now()));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = session_traffic::finish(running, &daemon);

    assert_eq!(daemon.status()["pid"], generations[3], "generations {generations:?}");
    for (n, (began, ended)) in windows.iter().enumerate() {
        let during = sent_between(&seen, *began, *ended);
        assert!(during > 0, "upgrade {n}: no message was sent while it ran, so none was attacked");
    }
    let after = sent_between(&seen, windows[2].1, Instant::now());
    assert!(after > 0, "no message after the last upgrade");
    assert_rooms_account_for(&daemon, &seen);
    assert_all_open_none_closed(&daemon, CLIENTS);
    let total: usize = seen.iter().map(|client| client.sent_at.len()).sum();
    eprintln!("{total} messages acked across {} processes", generations.len());
}

/// Pushes queued in the old process for a client that does not read go
/// out from the new process, in order, before what the new process pushes.
#[test]
fn pushes_queued_in_the_old_process_go_out_from_the_new_one_first_and_in_order() {
    let setup = setup("");
    let mut daemon = setup.start();
    let mut reader = connect(&daemon, "/ws?instance=backlog");
    let reader_id = joined_id(&mut reader);
    let mut stalled = connect(&daemon, "/ws?instance=backlog");
    let stalled_id = joined_id(&mut stalled);
    until(&mut reader, |text| text == format!("joined {stalled_id}"));
    // `stalled` reads no more: the broadcasts fill the socket buffers, then
    // its queue in the daemon. 100 queued pushes mean some were not written,
    // more than the writer takes in one batch (64).
    let body = "x".repeat(16 * 1024);
    let mut sent = 0;
    loop {
        sent += 1;
        send(&mut reader, &format!("{sent}:{body}"));
        until(&mut reader, |text| text.starts_with(&format!("{reader_id}:{sent}:")));
        if sent % 8 == 0 && daemon.status()["sessions"]["queue_depth_max"].as_u64().unwrap() >= 100 {
            break;
        }
        assert!(sent < 3000, "100 pushes never waited in the queue after {sent} messages");
    }
    // Twice: the second upgrade stops a writer that still sends the first
    // one's backlog to a client that does not read.
    upgrade(&setup, &mut daemon);
    upgrade(&setup, &mut daemon);
    // The new process pushes: from a method, then a message's broadcast.
    daemon.text("POST", "/call/room/announce?instance=backlog", "from the new process");
    send_as(&mut reader, "the reading client", "after the upgrade");
    let after = format!("{reader_id}:{}:after the upgrade", sent + 1);
    expect_until(&mut reader, "the reading client", &daemon, |text| text == after);

    let mut expected: Vec<String> = (1..=sent).map(|seq| format!("{reader_id}:{seq}:{seq}:")).collect();
    expected.extend(["from the new process".to_owned(), after]);
    for (n, want) in expected.iter().enumerate() {
        let got = expect_text(&mut stalled, &format!("the stalled client, frame {n}"), &daemon);
        let short = &got[..got.len().min(want.len())];
        assert_eq!(short, want, "the stalled client's frame {n} of {}", expected.len());
    }
    assert_eq!(call(&daemon, "sessions", "backlog"), format!("[{reader_id},{stalled_id}]"));
}

/// A client half way through a frame when its session moves sends the
/// rest to the new process: the message runs once, acked. Split in the
/// frame's header, and in its payload.
#[test]
fn a_frame_split_across_the_upgrade_runs_once() {
    let setup = setup("");
    let mut daemon = setup.start();
    let payload = b"a message whose frame is split across the move";
    let frame = masked_text_frame(payload, [7, 1, 9, 3]);
    let splits = [("in-header", 1), ("in-payload", 6 + payload.len() / 2)];
    let mut clients: Vec<(Client, u64, &str, usize)> = splits
        .iter()
        .map(|(instance, at)| {
            let mut client = connect(&daemon, &format!("/ws?instance={instance}"));
            let id = joined_id(&mut client);
            send(&mut client, "before");
            assert_eq!(next_text(&mut client), "ack 1");
            until(&mut client, |text| text == format!("{id}:1:before"));
            client.get_mut().write_all(&frame[..*at]).unwrap();
            (client, id, *instance, *at)
        })
        .collect();
    // Time for the daemon to read the halves before the move.
    std::thread::sleep(Duration::from_millis(200));
    upgrade(&setup, &mut daemon);
    let text = String::from_utf8_lossy(payload);
    for (client, id, instance, at) in &mut clients {
        let who = format!("the client split {instance}");
        client.get_mut().write_all(&frame[*at..]).unwrap_or_else(|err| panic!("{who}: the rest: {err}"));
        assert_eq!(expect_text(client, &who, &daemon), "ack 2", "{who}");
        assert_eq!(expect_text(client, &who, &daemon), format!("{id}:2:{text}"), "{who}");
        send_as(client, &who, "after");
        assert_eq!(expect_text(client, &who, &daemon), "ack 3", "{who}");
        assert_eq!(call(&daemon, "seq", instance), "3", "{who}: run once");
        assert_eq!(call(&daemon, "sessions", instance), format!("[{id}]"), "{who}");
    }
}

/// Upgrades that fail before the commit point (a binary that exits, a new
/// process late with READY while the old one is frozen) leave every
/// session open in the old process, its messages acked once.
#[test]
fn a_failed_upgrade_leaves_every_session_serving_in_the_old_process() {
    let setup = setup("\n[upgrade]\nready_timeout = \"1500ms\"\n");
    let exits = script(&setup, "exits.sh", "echo 'the new binary gives up' >&2\nexit 3");
    // Every new process waits 4 s before READY: the old one gives up at 1.5 s.
    let daemon = start_frozen_upgrades(&setup, "4000");
    let pid = daemon.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let running = session_traffic::start(session_traffic::join(&daemon, 8, 2), &stop);
    std::thread::sleep(Duration::from_millis(300));
    let mut windows = Vec::new();
    for (args, says) in [
        (vec!["upgrade", "--binary", exits.as_str()], "exited before it was ready"),
        (vec!["upgrade"], "was not ready within 1.5s"),
    ] {
        let began = Instant::now();
        let output = setup.cli(&args);
        windows.push((began, Instant::now()));
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
        assert_eq!(daemon.status()["pid"], pid, "the same process serves");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = session_traffic::finish(running, &daemon);
    let frozen = windows[1];
    assert!(sent_between(&seen, frozen.0, frozen.1) > 0, "no message sent while the old process was frozen");
    assert_rooms_account_for(&daemon, &seen);
    assert_all_open_none_closed(&daemon, 8);
}

/// Descriptors the new process may hold beyond the baseline. On main, with
/// clients that reconnect instead of moving, both counts were 18 once the
/// admin connections of the checks had closed (the loop below waits for
/// those). One more is allowed for a descriptor the runtime may open on
/// first use; a leak of one per room (2) or per moved session (10) shows.
const FD_MARGIN: usize = 1;

/// The old process exits once its sessions moved, well before its drain
/// deadline, and no descriptor of a moved session stays open in the new
/// process after its client closed.
#[test]
fn the_old_process_exits_once_sessions_moved_and_no_descriptor_leaks() {
    let setup = setup("");
    let mut daemon = setup.start();
    // The baseline is a process started by an upgrade too, before any client.
    upgrade(&setup, &mut daemon);
    let baseline_pid = daemon.pid();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = open_fds(baseline_pid);
    let mut sessions = session_traffic::join(&daemon, 10, 2);
    for Joined { client, id, .. } in &mut sessions {
        send(client, "before");
        until(client, |text| text.starts_with(&format!("{id}:")));
    }
    let old_pid = daemon.pid();
    let new_pid = upgrade_started(&setup, &daemon);
    // The drain deadline (shutdown_timeout) is 60 s.
    let gone = hotswap_test_support::process::wait_gone(old_pid, Duration::from_secs(20));
    assert!(gone.is_some(), "the old process {old_pid} still runs 20 s after the upgrade:\n{}", daemon.log());
    daemon.taken_over_by(new_pid);
    for Joined { client, id, number, .. } in &mut sessions {
        let who = format!("client {number} (session {id}) after the upgrade");
        send_as(client, &who, "after");
        expect_until(client, &who, &daemon, |text| text.starts_with(&format!("{id}:")));
    }
    for Joined { mut client, number, .. } in sessions {
        client.close(None).unwrap();
        loop {
            match client.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(err) => panic!("client {number}: closing: {err}"),
            }
        }
    }
    daemon.wait_for_status("every session to end", |status| status["sessions"]["open"] == 0);
    let before = format!("(+{FD_MARGIN}) in a process of an upgrade before any client ({baseline})");
    assert_fds_back_to(new_pid, baseline + FD_MARGIN, Duration::from_secs(10), &before);
}

#[test]
fn a_new_binary_that_takes_no_sessions_gets_none_and_they_close_with_1001() {
    let setup = setup("");
    // As a new process of an earlier release: its HELLO does not say it
    // takes sessions, so the old process must not send any.
    let mut daemon = setup
        .start_env(&[], &[("HOTSWAP_TEST_TAKE_NO_SESSIONS", "1")])
        .unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"));
    let mut client = connect(&daemon, "/ws?instance=fallback");
    joined_id(&mut client);
    send(&mut client, "before");
    until(&mut client, |text| text.starts_with("ack "));
    upgrade(&setup, &mut daemon);
    let closed = loop {
        match client.read() {
            Ok(Message::Close(frame)) => break frame.expect("a close frame with a code"),
            Ok(_) => continue,
            Err(err) => panic!("the connection ended without a close frame: {err}"),
        }
    };
    assert_eq!(u16::from(closed.code), 1001, "{closed:?}");
    // The state moved: a reconnected client goes on from it.
    let mut again = connect(&daemon, "/ws?instance=fallback");
    joined_id(&mut again);
    send(&mut again, "after");
    assert_eq!(until(&mut again, |text| text.starts_with("ack ")), "ack 2");
}

/// A new process whose config lowered `server.max_connections` below the
/// sessions that move takes as many as fit; the others are closed (no close
/// frame: the new process never spoke on them) and counted as refused.
#[test]
fn moved_sessions_count_against_the_new_processs_connection_cap() {
    let setup = setup("");
    let mut daemon = setup.start();
    let mut clients: Vec<Client> = (0..3).map(|_| connect(&daemon, "/ws?instance=capped")).collect();
    for client in &mut clients {
        joined_id(client);
    }
    setup.write_config(
        &CONFIG.replace("shutdown_timeout = \"60s\"", "shutdown_timeout = \"60s\"\nmax_connections = 2"),
    );
    upgrade(&setup, &mut daemon);
    let status = daemon.status();
    assert_eq!(status["sessions"]["open"], 2, "{status}");
    let metrics = String::from_utf8(daemon.admin("GET", "/metrics", b"").unwrap().1).unwrap();
    assert!(metrics.contains("hotswap_public_connections_refused_total 1"), "{metrics}");
    // The two that fit go on; the third's connection ended.
    let mut served = 0;
    for client in &mut clients {
        send(client, "still there?");
        loop {
            match client.read() {
                Ok(Message::Text(text)) if text.starts_with("ack ") => {
                    served += 1;
                    break;
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    assert_eq!(served, 2);
}
