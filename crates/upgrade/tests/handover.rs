//! Attacks on the old process's side of an upgrade ([`handover::upgrade`])
//! across a real process boundary: the new process is this test binary,
//! re-run as the test `new_side` ([`common::new_side`]).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use hotswap_upgrade::frame::WITH_DESCRIPTORS;
use hotswap_upgrade::handover::Options;
use hotswap_upgrade::protocol::{COMMIT, HELLO, MOVED_END, READY, REJECT, STATE_BEGIN, STATE_END};

use common::new_side::{self, AFTER_THE_COMMIT, BEFORE_THE_PASS, REJECTION, TAKES};
use common::{PATIENCE, Recorder, Run};

#[test]
fn new_side() {
    new_side::run_if_asked();
}

/// A loopback connection whose client already sent `first`: the client and
/// the accepted end.
fn connection(listener: &TcpListener, first: &[u8]) -> (TcpStream, TcpStream) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(first).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    (client, accepted)
}

fn reply(mut client: TcpStream, run: &Run) -> String {
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap_or_else(|err| panic!("{err}\n{}\n{}", run.report, run.log));
    text
}

fn patient() -> Options {
    Options::new(PATIENCE)
}

#[test]
fn the_whole_path_moves_connections_before_and_after_the_commit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (first_client, first) = connection(&listener, BEFORE_THE_PASS);
    let (second_client, second) = connection(&listener, AFTER_THE_COMMIT);
    // Waits in the listener's queue, which the new process accepts from.
    let queued = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    queued.set_read_timeout(Some(PATIENCE)).unwrap();
    let big = vec![0xa5u8; 3 << 20];
    let mut host = Recorder::new(|out| {
        out.send(16, b"the state", &[first.as_fd()]).map_err(|err| err.to_string())?;
        out.send(17, &big, &[]).map_err(|err| err.to_string())
    });
    host.after = Box::new(|after| after.send(18, b"moved after", &[second.as_fd()]).unwrap());
    let run = common::upgrade("whole", &[("public", listener.as_fd())], &mut host, &patient());
    let upgraded = run.outcome.as_ref().unwrap_or_else(|err| panic!("{err}\n{}\n{}", run.report, run.log));
    let spawned = host.spawned.expect("spawned was called");
    assert_eq!(upgraded.new_pid, spawned, "Upgraded.new_pid is not the child's pid");
    assert!(upgraded.startup <= upgraded.took, "{upgraded:?}");
    let hello = host.hello.clone().expect("freeze saw HELLO");
    assert_eq!(hello.pid, spawned, "HELLO's pid");
    assert_eq!(hello.takes, TAKES, "HELLO's takes did not arrive intact");
    assert_eq!(host.steps(), ["spawned", "freeze", "send_state", "before_commit", "committed"]);
    assert_eq!(host.events[3], format!("before_commit {spawned}"));

    let expected = format!(
        "state kind 16 bytes 9 fds 1 the state\nstate kind 17 bytes {} fds 0\ncommitted\n\
         after kind 18 bytes 11 fds 1 moved after\narrivals ended\nlisteners [\"public\"]\n",
        big.len()
    );
    // The host's copies go: the new process owns the connections.
    drop(host);
    drop((first, second));
    let pid = spawned.to_string();
    let said = |what: &[u8]| format!("{pid} read: {}", String::from_utf8_lossy(what));
    assert_eq!(reply(first_client, &run), said(BEFORE_THE_PASS));
    assert_eq!(reply(second_client, &run), said(AFTER_THE_COMMIT));
    assert_eq!(reply(queued, &run), said(b"accepted"));
    assert_eq!(run.report, format!("{expected}done\n"), "stderr: {}", run.log);
    assert_eq!(common::reap(spawned), "exit status: 0", "{}", run.log);
}

/// A failed upgrade: `Err`, `rolled_back` once with that very reason,
/// `committed` never, and the new process no longer runs.
fn rolled_back(run: &Run, host: &Recorder<'_>) -> String {
    let reason = run.outcome.clone().map(|_| ()).expect_err("the upgrade must fail");
    assert_eq!(host.rollbacks(), [reason.as_str()], "events {:?}", host.events);
    assert!(!host.steps().contains(&"committed"), "events {:?}", host.events);
    let pid = host.spawned.expect("spawned was called");
    assert!(common::ended(pid), "pid {pid} still runs after: {reason}");
    assert!(reason.contains(&format!("the new process (pid {pid}) ended")), "{reason}");
    reason
}

/// A state of 64 MiB, more than the control socket buffers: the new process
/// cannot have taken it all when it stops reading after the first frame.
fn large_state(
    failure: &mut Option<String>,
) -> impl FnMut(&mut hotswap_upgrade::handover::Sender<'_>) -> Result<(), String> + '_ {
    let chunk = vec![7u8; 1 << 20];
    move |out| {
        for index in 0..64 {
            if let Err(err) = out.send(16, &chunk, &[]) {
                let told = format!("frame {index} of the state: {err}");
                *failure = Some(told.clone());
                return Err(told);
            }
        }
        Ok(())
    }
}

#[test]
fn a_new_process_that_exits_before_hello_is_rolled_back() {
    let mut host = Recorder::new(|_| panic!("no state is sent to a process that said no HELLO"));
    let run = common::upgrade("exit_before_hello", &[], &mut host, &patient());
    let reason = rolled_back(&run, &host);
    assert!(reason.contains("exited before it was ready"), "{reason}");
    assert!(reason.contains(&format!("exit status: {}", new_side::EXIT_BEFORE_HELLO)), "{reason}");
    assert_eq!(host.steps(), ["spawned", "rolled_back"]);
}

#[test]
fn a_new_process_that_exits_in_the_middle_of_the_state_is_rolled_back() {
    let mut failure = None;
    let mut host = Recorder::new(large_state(&mut failure));
    let run = common::upgrade("exit_mid_state", &[], &mut host, &patient());
    let reason = rolled_back(&run, &host);
    assert!(reason.contains(&format!("exit status: {}", new_side::EXIT_MID_STATE)), "{reason}");
    assert_eq!(host.steps(), ["spawned", "freeze", "send_state", "rolled_back"]);
    drop(host);
    let failure = failure.expect("a send of the state failed");
    assert!(reason.starts_with(&failure), "the reason is not the host's words: {reason}");
    assert_eq!(run.report, "first frame: Ok(Some(16))\n");
}

#[test]
fn a_silent_new_process_is_killed_at_the_ready_timeout() {
    for behaviour in ["silent_before_hello", "silent_after_state"] {
        let mut options = Options::new(Duration::from_secs(2));
        options.timeout_setting = Some("test.ready_timeout".to_owned());
        let mut host = Recorder::new(|out| out.send(16, b"small state", &[]).map_err(|err| err.to_string()));
        let run = common::upgrade(behaviour, &[], &mut host, &options);
        let reason = rolled_back(&run, &host);
        assert!(reason.contains("not ready within 2s (test.ready_timeout)"), "{behaviour}: {reason}");
        assert!(reason.contains("signal: 9"), "{behaviour}: not killed: {reason}");
        assert!(!run.report.contains("was not killed"), "{behaviour}: {}", run.report);
    }
}

#[test]
fn a_reject_while_a_large_state_is_sent_gives_the_new_sides_words() {
    let mut failure = None;
    let mut host = Recorder::new(large_state(&mut failure));
    let run = common::upgrade("reject_mid_state", &[], &mut host, &patient());
    let reason = rolled_back(&run, &host);
    assert!(reason.contains(&format!("it could not take the state: {REJECTION}")), "{reason}");
    assert!(reason.contains(&format!("exit status: {}", new_side::EXIT_REJECTED)), "{reason}");
    drop(host);
    assert!(failure.is_some(), "the whole state was sent to a process that stopped reading");
}

#[test]
fn a_failing_freeze_rolls_back_and_the_new_process_never_serves() {
    let mut host = Recorder::new(|_| panic!("no state is sent after a failed freeze"));
    host.fail_freeze = Some("the engine would not stop within its deadline".to_owned());
    let run = common::upgrade("expect_rollback", &[], &mut host, &patient());
    let reason = rolled_back(&run, &host);
    assert!(reason.starts_with("the engine would not stop within its deadline"), "{reason}");
    assert_eq!(host.steps(), ["spawned", "freeze", "rolled_back"]);
    assert!(run.report.starts_with("receive: Err("), "report {:?}\n{}", run.report, run.log);
}

#[test]
fn a_failing_before_commit_rolls_back_and_ready_returns_err() {
    let mut host = Recorder::new(|out| out.send(16, b"state", &[]).map_err(|err| err.to_string()));
    host.fail_before_commit = Some("the module swap began meanwhile".to_owned());
    let run = common::upgrade("expect_rollback", &[], &mut host, &patient());
    let reason = rolled_back(&run, &host);
    assert!(reason.starts_with("the module swap began meanwhile"), "{reason}");
    assert_eq!(host.steps(), ["spawned", "freeze", "send_state", "before_commit", "rolled_back"]);
    let expected = "state kind 16 bytes 5 fds 0 state\ntook the state\nready: Err(";
    assert!(run.report.starts_with(expected), "report {:?}\n{}", run.report, run.log);
}

const PROTOCOL_KINDS: [u16; 8] =
    [HELLO, STATE_END, READY, REJECT, STATE_BEGIN, COMMIT, MOVED_END, WITH_DESCRIPTORS];

/// Every protocol kind, with and without descriptors, is refused as
/// InvalidInput; `fds` rides along.
fn refuses_each(mut send: impl FnMut(u16, &[BorrowedFd<'_>]) -> std::io::Result<()>, fd: BorrowedFd<'_>) {
    for kind in PROTOCOL_KINDS {
        for fds in [&[][..], &[fd]] {
            let error = send(kind, fds).expect_err(&format!("kind {kind} with {} fds was sent", fds.len()));
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "kind {kind}: {error}");
            assert!(error.to_string().contains(&format!("frame kind {kind} ")), "kind {kind}: {error}");
        }
    }
}

#[test]
fn a_host_may_not_send_a_protocol_kind_and_none_reaches_the_new_side() {
    let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut host = Recorder::new(|out| {
        refuses_each(|kind, fds| out.send(kind, b"forged", fds), theirs.as_fd());
        out.send(16, b"after the refusals", &[]).map_err(|err| err.to_string())
    });
    host.after = Box::new(|after| {
        refuses_each(|kind, fds| after.send(kind, b"forged", fds), theirs.as_fd());
        after.send(17, b"after the commit", &[]).unwrap();
    });
    let run = common::upgrade("record_frames", &[], &mut host, &patient());
    let upgraded = run.outcome.as_ref().unwrap_or_else(|err| panic!("{err}\n{}", run.log));
    let expected = "state kind 16 bytes 18 fds 0 after the refusals\n\
                    after kind 17 bytes 16 fds 0 after the commit\ndone\n";
    assert_eq!(run.report, expected, "stderr: {}", run.log);
    assert_eq!(common::reap(upgraded.new_pid), "exit status: 0", "{}", run.log);
}
