//! Attacks on issue 10's hand-over of keep-alive HTTP connections in a
//! process upgrade: every open connection of the public port moves to the
//! new process with its socket and the bytes read ahead, so a client sending
//! requests one after another on one connection sees no close, every request
//! is answered exactly once, and the old process exits at once instead of
//! waiting out its drain deadline.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::upgrade::{assert_fds_back_to, open_fds, upgrade_started};
use crate::{COUNTER_CONFIG, Daemon, Setup, read_full, send};

/// A 60 s drain deadline: an old process that waits for it instead of
/// handing its connections over is seen.
fn setup() -> Setup {
    Setup::new(&COUNTER_CONFIG.replace("watch = true", "watch = false").replace("\"5s\"", "\"60s\""))
}

/// Generous for a loaded machine, far below the 60 s drain deadline.
const OLD_PROCESS_GONE_WITHIN: Duration = Duration::from_secs(15);

fn connect(daemon: &Daemon) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    BufReader::new(stream)
}

/// One add of 1 on `instance`; fails on anything but a keep-alive 200.
fn add(client: &mut BufReader<TcpStream>, who: &str, instance: &str, daemon: &Daemon) -> u32 {
    send(client.get_mut(), "POST", &format!("/call/counter/add?instance={instance}"), b"1", &[]);
    let response =
        read_full(client).unwrap_or_else(|err| panic!("{who}: no answer: {err}\n{}", daemon.log()));
    assert_eq!(response.status, 200, "{who}: {}", String::from_utf8_lossy(&response.body));
    assert_ne!(response.header("connection"), Some("close"), "{who}: the server closes the connection");
    response.header("hotswap-pid").and_then(|pid| pid.parse().ok()).expect("every answer names its pid")
}

/// Upgrades and waits for the old process to exit, well before its drain deadline.
fn upgrade_and_wait_for_the_old_one(setup: &Setup, daemon: &mut Daemon) -> u32 {
    let old_pid = daemon.pid();
    let new_pid = upgrade_started(setup, daemon);
    taken_over(daemon, old_pid, new_pid);
    new_pid
}

/// Waits for `old_pid` to exit, well before its 60 s drain deadline, then
/// points `daemon` at `new_pid`.
fn taken_over(daemon: &mut Daemon, old_pid: u32, new_pid: u32) {
    let gone = hotswap_test_support::process::wait_gone(old_pid, OLD_PROCESS_GONE_WITHIN);
    assert!(
        gone.is_some(),
        "the old process {old_pid} still runs {OLD_PROCESS_GONE_WITHIN:?} after the upgrade (drain deadline 60 s):\n{}",
        daemon.log()
    );
    daemon.taken_over_by(new_pid);
}

#[test]
fn keep_alive_connections_stay_open_through_five_upgrades_and_each_request_runs_once() {
    let setup = setup();
    let mut daemon = setup.start();
    const CLIENTS: usize = 6;
    let mut clients: Vec<BufReader<TcpStream>> = (0..CLIENTS).map(|_| connect(&daemon)).collect();
    let mut sent = [0u64; CLIENTS];
    for upgrade in 0..5 {
        for (number, client) in clients.iter_mut().enumerate() {
            let who = format!("client {number} before upgrade {upgrade}");
            assert_eq!(add(client, &who, &format!("room-{number}"), &daemon), daemon.pid(), "{who}");
            sent[number] += 1;
        }
        // Requests go on while the upgrade runs: each is answered, by
        // either process, on the same connection.
        let old_pid = daemon.pid();
        let new_pid = std::thread::scope(|scope| {
            let running = scope.spawn(|| upgrade_started(&setup, &daemon));
            let mut during = 0;
            while !running.is_finished() && during < 200 {
                for (number, client) in clients.iter_mut().enumerate() {
                    add(
                        client,
                        &format!("client {number} during upgrade {upgrade}"),
                        &format!("room-{number}"),
                        &daemon,
                    );
                    sent[number] += 1;
                }
                during += 1;
            }
            running.join().unwrap()
        });
        taken_over(&mut daemon, old_pid, new_pid);
        for (number, client) in clients.iter_mut().enumerate() {
            let who = format!("client {number} after upgrade {upgrade}");
            assert_eq!(add(client, &who, &format!("room-{number}"), &daemon), new_pid, "{who}");
            sent[number] += 1;
        }
    }
    for (number, sent) in sent.iter().enumerate() {
        let total = daemon.text("POST", &format!("/call/counter/get?instance=room-{number}"), "");
        assert_eq!(total, sent.to_string(), "room-{number}: every request ran exactly once");
    }
}

#[test]
fn a_request_split_across_the_upgrade_is_answered_once_by_the_new_process() {
    let setup = setup();
    let mut daemon = setup.start();
    let mut client = connect(&daemon);
    add(&mut client, "the first request", "split", &daemon);
    let request =
        b"POST /call/counter/add?instance=split HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n\r\n1";
    let (head, tail) = request.split_at(30);
    client.get_mut().write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let new_pid = upgrade_and_wait_for_the_old_one(&setup, &mut daemon);
    client.get_mut().write_all(tail).unwrap();
    let response = read_full(&mut client).unwrap_or_else(|err| panic!("no answer: {err}\n{}", daemon.log()));
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.body, b"2", "the request ran once, on the state that moved");
    assert_eq!(response.header("hotswap-pid"), Some(new_pid.to_string().as_str()));
    assert_ne!(response.header("connection"), Some("close"));
    assert_eq!(add(&mut client, "after the split request", "split", &daemon), new_pid);
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=split", ""), "3");
}

#[test]
fn moved_connections_leave_no_descriptor_behind() {
    let setup = setup();
    let mut daemon = setup.start();
    // The baseline is a process started by an upgrade too, before any client.
    upgrade_and_wait_for_the_old_one(&setup, &mut daemon);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = open_fds(daemon.pid());
    let mut clients: Vec<BufReader<TcpStream>> = (0..10).map(|_| connect(&daemon)).collect();
    for (number, client) in clients.iter_mut().enumerate() {
        add(client, &format!("client {number}"), "fds", &daemon);
    }
    let new_pid = upgrade_and_wait_for_the_old_one(&setup, &mut daemon);
    for (number, client) in clients.iter_mut().enumerate() {
        assert_eq!(add(client, &format!("client {number} after the upgrade"), "fds", &daemon), new_pid);
    }
    drop(clients);
    assert_fds_back_to(
        new_pid,
        baseline,
        Duration::from_secs(10),
        "in a process of an upgrade before any client",
    );
}

/// A connection inside a request at the hand-over (its body never ends)
/// cannot move: it is closed at the drain deadline, the old process says
/// so and exits then, and the other connections still move.
#[test]
fn a_connection_stuck_inside_a_request_is_closed_at_the_drain_deadline_and_the_rest_move() {
    let setup =
        Setup::new(&COUNTER_CONFIG.replace("watch = true", "watch = false").replace("\"5s\"", "\"2s\""));
    let mut daemon = setup.start();
    let old_pid = daemon.pid();
    let mut idle = connect(&daemon);
    add(&mut idle, "the idle client", "stuck", &daemon);
    let mut stuck = connect(&daemon);
    stuck
        .get_mut()
        .write_all(
            b"POST /call/counter/add?instance=stuck HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n1",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let new_pid = upgrade_started(&setup, &daemon);
    let gone = hotswap_test_support::process::wait_gone(old_pid, OLD_PROCESS_GONE_WITHIN);
    assert!(gone.is_some(), "the old process {old_pid} outlived its 2 s drain deadline:\n{}", daemon.log());
    let mut rest = Vec::new();
    let ended = std::io::Read::read_to_end(&mut stuck, &mut rest);
    assert!(
        ended.is_ok() && rest.is_empty(),
        "the stuck connection ends without an answer: {ended:?} {rest:?}"
    );
    assert!(
        daemon.log().contains("1 connection(s) did not reach a request boundary"),
        "the old process says what it closed:\n{}",
        daemon.log()
    );
    daemon.taken_over_by(new_pid);
    assert_eq!(add(&mut idle, "the idle client after the upgrade", "stuck", &daemon), new_pid);
    assert_eq!(
        daemon.text("POST", "/call/counter/get?instance=stuck", ""),
        "2",
        "the stuck request never ran"
    );
}

/// A new process of an earlier release (HELLO without flags) gets no
/// connections: what still reaches the old process is forwarded to it and
/// answered with `Connection: close`, so each client moves over on its next
/// request, as before issue 10.
#[test]
fn a_new_binary_that_takes_no_connections_gets_none_and_they_are_forwarded_then_closed() {
    let setup = setup();
    // HELLO without its flag byte: the stand-in for an earlier release.
    let mut daemon = setup
        .start_env(&[], &[("HOTSWAP_TEST_TAKE_NO_SESSIONS", "1")])
        .unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"));
    let old_pid = daemon.pid();
    let mut held = connect(&daemon);
    assert_eq!(add(&mut held, "before the upgrade", "fallback", &daemon), old_pid);
    let mut held_again = connect(&daemon);
    send(held_again.get_mut(), "GET", "/healthz", b"", &[]);
    assert_eq!(read_full(&mut held_again).unwrap().status, 200);
    let new_pid = upgrade_started(&setup, &daemon);

    send(held.get_mut(), "POST", "/call/counter/add?instance=fallback", b"1", &[]);
    let forwarded = read_full(&mut held).unwrap();
    assert_eq!(forwarded.status, 200);
    assert_eq!(forwarded.body, b"2", "the new process's state answered");
    assert_eq!(forwarded.header("hotswap-pid"), Some(new_pid.to_string().as_str()));
    assert_eq!(forwarded.header("connection"), Some("close"));
    send(held_again.get_mut(), "GET", "/healthz", b"", &[]);
    let health = read_full(&mut held_again).unwrap();
    assert_eq!(health.status, 503, "the old process is draining");
    assert_eq!(health.header("connection"), Some("close"));
    taken_over(&mut daemon, old_pid, new_pid);
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=fallback", ""), "2");
}
