//! The new process's parts, played by this test binary re-run with
//! [`super::NEW_SIDE`] naming one. Each writes what it saw, one line at a
//! time, to the inherited report socket; the test reads it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use hotswap_upgrade::listen;
use hotswap_upgrade::pass::Received;
use hotswap_upgrade::takeover::{self, Takeover};

use super::{NEW_SIDE, PATIENCE, REPORT};

/// What the whole-path new process says it takes: bytes of every value.
pub const TAKES: &[u8] = b"kinds 16-17\0\xff\x00\x01end";
/// What the client of the connection that moves with the state sent first.
pub const BEFORE_THE_PASS: &[u8] = b"sent before the pass";
/// What the client of the connection that moves after the commit sent.
pub const AFTER_THE_COMMIT: &[u8] = b"sent before the commit, moved after it";
/// The new process's words when it refuses the state.
pub const REJECTION: &str = "state of format 9 is newer than this build reads (1 to 3)";
/// Exit codes that say which behaviour exited where.
pub const EXIT_BEFORE_HELLO: i32 = 3;
pub const EXIT_MID_STATE: i32 = 4;
pub const EXIT_REJECTED: i32 = 5;

/// Plays the part [`NEW_SIDE`] names, if any, then exits; without it
/// returns at once (the test run in the old process).
pub fn run_if_asked() {
    let Ok(behaviour) = std::env::var(NEW_SIDE) else { return };
    let mut inherited = listen::take().expect("inherited sockets");
    let control = takeover::control(&mut inherited).expect("a control socket");
    let at = inherited.iter().position(|socket| socket.name == REPORT).expect("a report socket");
    let mut report = Report(UnixStream::from(inherited.remove(at).fd));
    let listeners: Vec<(String, OwnedFd)> =
        inherited.into_iter().map(|socket| (socket.name, socket.fd)).collect();
    match behaviour.as_str() {
        "exit_before_hello" => std::process::exit(EXIT_BEFORE_HELLO),
        "silent_before_hello" => report.wait_for_the_end(),
        "whole" => whole(control, listeners, &mut report),
        "exit_mid_state" => {
            let mut taking = Takeover::hello(control, b"").unwrap();
            let first = taking.receive();
            report.line(&format!("first frame: {:?}", first.map(|r| r.map(|r| r.frame.kind))));
            std::process::exit(EXIT_MID_STATE);
        }
        "silent_after_state" => {
            let mut taking = Takeover::hello(control, b"").unwrap();
            while taking.receive().unwrap().is_some() {}
            report.line("took the state, says nothing");
            report.wait_for_the_end();
        }
        "reject_mid_state" => {
            let mut taking = Takeover::hello(control, b"").unwrap();
            let first = taking.receive().unwrap().expect("a first frame");
            report.line(&format!("first frame kind {}", first.frame.kind));
            taking.reject(REJECTION);
            std::process::exit(EXIT_REJECTED);
        }
        "reject_at_end" => {
            let mut taking = Takeover::hello(control, b"").unwrap();
            while taking.receive().unwrap().is_some() {}
            taking.reject(REJECTION);
            std::process::exit(EXIT_REJECTED);
        }
        "expect_rollback" => expect_rollback(control, &mut report),
        "record_frames" => record_frames(control, &mut report),
        other => panic!("{NEW_SIDE}={other} is no behaviour of this test"),
    }
}

/// Writes lines to the test. Closed when the process exits.
struct Report(UnixStream);

impl Report {
    fn line(&mut self, text: &str) {
        self.0.write_all(format!("{text}\n").as_bytes()).expect("the test reads the report");
    }

    /// Blocks until the test drops its end: a process that says nothing,
    /// which the old process must kill long before.
    fn wait_for_the_end(&mut self) -> ! {
        let _ = self.0.read(&mut [0u8; 1]);
        self.line("was not killed");
        std::process::exit(9)
    }
}

/// The whole path: the state's connection, READY, COMMIT, the connection
/// after it, MOVED_END, then the inherited listener serves.
fn whole(control: OwnedFd, listeners: Vec<(String, OwnedFd)>, report: &mut Report) {
    let mut taking = Takeover::hello(control, TAKES).unwrap();
    let mut moved = Vec::new();
    while let Some(received) = taking.receive().unwrap() {
        report.line(&describe("state", &received));
        moved.extend(adopt(received));
    }
    // Read before READY: the bytes were the client's before the pass.
    let mut first = moved.pop().expect("a connection with the state");
    let mut unread = vec![0u8; BEFORE_THE_PASS.len()];
    first.read_exact(&mut unread).unwrap();
    let mut arriving = taking.ready().unwrap();
    report.line("committed");
    while let Some(received) = arriving.receive().unwrap() {
        report.line(&describe("after", &received));
        moved.extend(adopt(received));
    }
    report.line("arrivals ended");
    answer(&mut first, &unread);
    let mut second = moved.pop().expect("a connection after the commit");
    let mut unread = vec![0u8; AFTER_THE_COMMIT.len()];
    second.read_exact(&mut unread).unwrap();
    answer(&mut second, &unread);
    let names: Vec<&str> = listeners.iter().map(|(name, _)| name.as_str()).collect();
    report.line(&format!("listeners {names:?}"));
    let (_, public) = listeners.into_iter().find(|(name, _)| name == "public").expect("the public listener");
    let (mut third, _) = TcpListener::from(public).accept().unwrap();
    answer(&mut third, b"accepted");
    report.line("done");
}

fn describe(stage: &str, received: &Received) -> String {
    let payload = &received.frame.payload;
    let shown =
        if payload.len() <= 64 { String::from_utf8_lossy(payload).into_owned() } else { String::new() };
    format!("{stage} kind {} bytes {} fds {} {shown}", received.frame.kind, payload.len(), received.fds.len())
        .trim_end()
        .to_owned()
}

fn adopt(received: Received) -> Vec<TcpStream> {
    received
        .fds
        .into_iter()
        .map(|fd| {
            let stream = TcpStream::from(fd);
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            stream
        })
        .collect()
}

fn answer(stream: &mut TcpStream, read: &[u8]) {
    let reply = format!("{} read: {}", std::process::id(), String::from_utf8_lossy(read));
    stream.write_all(reply.as_bytes()).unwrap();
}

/// Takes what comes and says how the takeover ended: the old process rolls
/// back, so `receive` or `ready` must return `Err`.
fn expect_rollback(control: OwnedFd, report: &mut Report) {
    let mut taking = Takeover::hello(control, b"").unwrap();
    loop {
        match taking.receive() {
            Ok(Some(received)) => report.line(&describe("state", &received)),
            Ok(None) => break,
            Err(err) => return report.line(&format!("receive: Err({err})")),
        }
    }
    report.line("took the state");
    match taking.ready() {
        Ok(_) => report.line("ready: Ok (would serve)"),
        Err(err) => report.line(&format!("ready: Err({err})")),
    }
}

/// Says which frames arrived, before and after the commit.
fn record_frames(control: OwnedFd, report: &mut Report) {
    let mut taking = Takeover::hello(control, b"").unwrap();
    while let Some(received) = taking.receive().unwrap() {
        report.line(&describe("state", &received));
    }
    let mut arriving = taking.ready().unwrap();
    loop {
        match arriving.receive() {
            Ok(Some(received)) => report.line(&describe("after", &received)),
            Ok(None) => break,
            Err(err) => return report.line(&format!("after: Err({err})")),
        }
    }
    report.line("done");
}
