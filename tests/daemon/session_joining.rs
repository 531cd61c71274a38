//! Attacks on what docs/upgrade.md guarantee 1 says of WebSocket sessions
//! still joining when an upgrade freezes the old process: they do not move,
//! they are closed with 1001 "going away" and counted in the old process's
//! `closes.going_away`. Every client must end in exactly one of two
//! outcomes: its session serves (its `on_join` ran once, its message runs
//! once), or it got 1001 and was counted — never a hang past a bounded
//! wait, never `on_join` twice, never a session served in neither process
//! without a close. Against the `room` test module, one client per room, so
//! the `joined ID` a client reads is its own join.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use crate::session_handover::{setup, start_frozen_upgrades};
use crate::upgrade::{upgrade, upgrade_started};
use crate::ws_client::{Client, call};
use crate::{Daemon, Setup};

/// Rounds of each attack: the race is run this many times.
const ROUNDS: usize = 5;
/// Reads on a client wait at most this long: a hang fails the test.
const READ_WAIT: Duration = Duration::from_secs(30);

/// Where one client's session ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It serves (in the process serving now): joined once, its message acked once.
    Served(u64),
    /// Closed with 1001; `joined` if its `on_join` ran (and said so) first.
    GoingAway { joined: Option<u64> },
}

/// A client whose handshake the test writes itself, in two halves.
struct HalfOpen {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl HalfOpen {
    /// Connects and sends the first half of the handshake for `path`.
    fn start(daemon: &Daemon, path: &str) -> HalfOpen {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .into_bytes();
        let mut stream = TcpStream::connect(daemon.public()).unwrap();
        stream.set_read_timeout(Some(READ_WAIT)).unwrap();
        let half = request.len() / 2;
        stream.write_all(&request[..half]).unwrap();
        HalfOpen { stream, rest: request[half..].to_vec() }
    }

    /// Sends the rest; returns the client once the 101 came, and the pid
    /// of the process that answered it.
    fn finish(mut self, who: &str, daemon: &Daemon) -> (Client, u32) {
        self.stream.write_all(&self.rest).unwrap();
        // Byte by byte, so no frame after the head is read here.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            match self.stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!(
                    "{who}: the handshake's answer broke off ({other:?}) after {head:?}\n{}",
                    daemon.log()
                ),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{who}: {head}");
        let pid = head
            .lines()
            .find_map(|line| line.strip_prefix("hotswap-pid: "))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("{who}: no hotswap-pid in {head}"));
        (WebSocket::from_raw_socket(self.stream, Role::Client, None), pid)
    }
}

/// An admin connection made before an upgrade: the frozen old process
/// accepts no new one, but answers on this one.
fn admin_connection(daemon: &Daemon) -> BufReader<UnixStream> {
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(READ_WAIT)).unwrap();
    BufReader::new(stream)
}

/// Polls the upgrade's progress on `admin` (at most 20 s) until `check`
/// holds, then closes it (an admin connection left open would hold the old
/// process until its drain deadline).
fn wait_for_progress(
    mut admin: BufReader<UnixStream>,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = hotswap_test_support::http::exchange(&mut admin, "GET", "/v1/status", b"", &[])
            .unwrap_or_else(|err| panic!("waiting for {what}: {err}"));
        let status: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        if check(&status["upgrade"]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} not seen within 20 s: {status:#}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Notes a `joined ID`; a second one means `on_join` ran twice.
fn note_joined(joined: &mut Option<u64>, text: &str, who: &str) {
    if let Some(id) = text.strip_prefix("joined ") {
        assert!(joined.is_none(), "{who}: on_join ran twice ({joined:?}, then {text})");
        *joined = Some(id.parse().unwrap());
    }
}

/// What became of `client`, once every earlier process exited (so every
/// close one sent is here already): a close waiting to be read, or a
/// session that runs the message sent now, once.
fn settle(client: &mut Client, who: &str, daemon: &Daemon) -> Outcome {
    let mut joined = None;
    client.get_mut().set_nonblocking(true).unwrap();
    loop {
        match client.read() {
            Ok(Message::Text(text)) => note_joined(&mut joined, &text, who),
            Ok(Message::Close(frame)) => {
                let code = frame.map(|frame| u16::from(frame.code));
                assert_eq!(code, Some(1001), "{who}: closed, but not as going away\n{}", daemon.log());
                return Outcome::GoingAway { joined };
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(err)) if err.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(err) => panic!("{who}: the connection ended without a close frame: {err}\n{}", daemon.log()),
        }
    }
    client.get_mut().set_nonblocking(false).unwrap();
    client.send(Message::text("after")).unwrap_or_else(|err| panic!("{who}: sending: {err}"));
    loop {
        match client.read() {
            Ok(Message::Text(text)) if text.starts_with("ack ") => {
                assert_eq!(text.as_str(), "ack 1", "{who}: its one message");
                return Outcome::Served(joined.unwrap_or_else(|| panic!("{who}: acked, never joined")));
            }
            Ok(Message::Text(text)) => note_joined(&mut joined, &text, who),
            Ok(Message::Close(frame)) => {
                panic!("{who}: closed after every upgrade ended: {frame:?}\n{}", daemon.log())
            }
            Ok(_) => {}
            Err(err) => panic!("{who}: no outcome: {err}\n{}", daemon.log()),
        }
    }
}

/// Checks what the serving process's state says of the client of room
/// `instance`: a served one is there once and its message ran once. A
/// closed one's message never ran; a join it saw ran in the old process
/// before the freeze, so its id moved with the state (no `on_leave` runs
/// for it); with no `joined` seen, its join ran nowhere or its broadcast
/// was queued when it closed.
fn check_state(daemon: &Daemon, instance: &str, outcome: Outcome, who: &str) {
    let sessions: Vec<u64> = serde_json::from_str(&call(daemon, "sessions", instance)).unwrap();
    let seq = call(daemon, "seq", instance);
    match outcome {
        Outcome::Served(id) => assert_eq!((sessions, seq.as_str()), (vec![id], "1"), "{who}"),
        Outcome::GoingAway { joined } => {
            assert_eq!(seq, "0", "{who}: closed, yet a message of it ran");
            match joined {
                Some(id) => assert_eq!(sessions, [id], "{who}: joined before the freeze, so in the state"),
                None => assert!(sessions.len() <= 1, "{who}: {sessions:?}"),
            }
        }
    }
}

/// How the sessions of the process `pid` ended, as it logged on leaving.
fn closes_of(daemon: &Daemon, pid: u32) -> BTreeMap<String, u64> {
    let log = daemon.log();
    let marker = format!("(pid {pid}) closed, bye; sessions ended here: [");
    let line = log
        .lines()
        .find(|line| line.contains(&marker))
        .unwrap_or_else(|| panic!("no exit line of {pid}\n{log}"));
    let counts = line.split(&marker).nth(1).and_then(|rest| rest.split(']').next()).unwrap_or_default();
    counts
        .split_whitespace()
        .map(|pair| {
            let (why, count) = pair.split_once('=').expect("why=count");
            (why.to_owned(), count.parse().unwrap())
        })
        .collect()
}

/// Sends the first half of a handshake for room `instance`, upgrades, and
/// sends the rest once `frozen` holds of the upgrade's progress (polled on
/// an admin connection made before); checks the client ends in one of the
/// two outcomes, and that the old process counted it if it was closed.
fn handshake_during_upgrade(
    setup: &Setup,
    daemon: &mut Daemon,
    who: &str,
    instance: &str,
    frozen: impl Fn(&serde_json::Value) -> bool,
) -> Outcome {
    let half = HalfOpen::start(daemon, &format!("/ws?instance={instance}"));
    // Let the old process accept it and read the first half.
    std::thread::sleep(Duration::from_millis(200));
    let admin = admin_connection(daemon);
    let old_pid = daemon.pid();
    let (mut client, answered_by, new_pid) = std::thread::scope(|scope| {
        let upgrading = scope.spawn(|| upgrade_started(setup, daemon));
        wait_for_progress(admin, "the freeze", frozen);
        let (client, answered_by) = half.finish(who, daemon);
        assert!(!upgrading.is_finished(), "{who}: the upgrade ended before the handshake did");
        (client, answered_by, upgrading.join().unwrap())
    });
    daemon.taken_over_by(new_pid);
    assert_eq!(answered_by, old_pid, "{who}: the old process answered the handshake");
    let outcome = settle(&mut client, who, daemon);
    check_state(daemon, instance, outcome, who);
    let going_away = closes_of(daemon, old_pid).get("going_away").copied().unwrap_or(0);
    let closed = u64::from(matches!(outcome, Outcome::GoingAway { .. }));
    assert_eq!(going_away, closed, "{who}: {outcome:?}, the old process counted {going_away} going away");
    eprintln!("{who}: {outcome:?}");
    outcome
}

/// Case 1: a connection accepted before the upgrade, whose handshake is
/// complete only while the old process is frozen (its state sent, READY
/// held back 1.5 s by the new process): the old process answers 101, but
/// the join cannot run there any more.
#[test]
fn a_handshake_completed_during_the_freeze_is_closed_with_1001_and_counted_or_serves() {
    let setup = setup("");
    let mut daemon = start_frozen_upgrades(&setup, "1500");
    for round in 0..ROUNDS {
        handshake_during_upgrade(
            &setup,
            &mut daemon,
            &format!("round {round}"),
            &format!("half-{round}"),
            |up| up["phase"] == "transferring state" && up["modules_sent"].as_u64() >= Some(1),
        );
    }
}

/// Case 2: a handshake answered before the freeze took hold, its `on_join`
/// waiting: a slow call on another module holds the freeze off (it waits
/// for running calls), and the join queues behind the freeze.
#[test]
fn a_join_waiting_behind_the_freeze_is_closed_with_1001_and_counted_or_serves() {
    let setup = setup("\n[[module]]\nname = \"counter\"\npath = \"modules/libcounter.so\"\n");
    let mut daemon = setup.start();
    for round in 0..ROUNDS {
        let address = daemon.public();
        let slow = std::thread::spawn(move || {
            let stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(READ_WAIT)).unwrap();
            let path = "/call/counter/sleep?instance=slow";
            hotswap_test_support::http::exchange(&mut BufReader::new(stream), "POST", path, b"1500", &[])
        });
        std::thread::sleep(Duration::from_millis(200));
        let who = format!("round {round}");
        // The freeze began (no accept) but waits for the slow call: no state sent yet.
        handshake_during_upgrade(&setup, &mut daemon, &who, &format!("queued-{round}"), |up| {
            up["phase"] == "transferring state" && up["modules_sent"] == 0
        });
        let answer = slow.join().unwrap().unwrap_or_else(|err| panic!("{who}: the slow call: {err}"));
        assert_eq!(answer.status, 200, "{who}: the slow call");
    }
}

/// Case 2, by numbers: clients connect one after another on two threads
/// while upgrades run back to back (each frozen 100 ms), so joins land
/// before, during and after each freeze. Every client ends served or
/// closed with 1001, and the old processes counted every 1001.
#[test]
fn sessions_joining_through_back_to_back_upgrades_each_end_served_or_closed_with_1001() {
    const PER_THREAD: usize = 150;
    let setup = setup("");
    let mut daemon = start_frozen_upgrades(&setup, "100");
    let address = daemon.public();
    let done = AtomicBool::new(false);
    let mut old_pids = Vec::new();
    let clients: Vec<(Client, String)> = std::thread::scope(|scope| {
        let connectors: Vec<_> = (0..2)
            .map(|thread| {
                let done = &done;
                scope.spawn(move || {
                    let mut clients = Vec::new();
                    for n in 0..PER_THREAD {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        let instance = format!("busy-{thread}-{n}");
                        let stream = TcpStream::connect(address).unwrap();
                        stream.set_read_timeout(Some(READ_WAIT)).unwrap();
                        let url = format!("ws://{address}/ws?instance={instance}");
                        match tungstenite::client(url.as_str(), stream) {
                            Ok((client, _)) => clients.push((client, instance)),
                            Err(err) => panic!("{instance}: the handshake failed: {err:?}"),
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    clients
                })
            })
            .collect();
        for _ in 0..ROUNDS {
            old_pids.push(daemon.pid());
            upgrade(&setup, &mut daemon);
        }
        done.store(true, Ordering::Relaxed);
        connectors.into_iter().flat_map(|connector| connector.join().unwrap()).collect()
    });
    let (count, mut closed) = (clients.len(), 0);
    for (mut client, instance) in clients {
        let outcome = settle(&mut client, &instance, &daemon);
        check_state(&daemon, &instance, outcome, &instance);
        closed += u64::from(matches!(outcome, Outcome::GoingAway { .. }));
    }
    let mut going_away = 0;
    for pid in old_pids {
        let closes = closes_of(&daemon, pid);
        assert!(closes.keys().all(|why| why == "moved" || why == "going_away"), "pid {pid}: {closes:?}");
        going_away += closes.get("going_away").copied().unwrap_or(0);
    }
    assert_eq!(going_away, closed, "clients closed with 1001, and what the old processes counted");
    eprintln!(
        "{closed} of {count} clients joining through {ROUNDS} upgrades closed with 1001, the rest served"
    );
}
