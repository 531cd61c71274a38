//! Attacks on the new process's side of an upgrade ([`takeover`]), driven by
//! hand: the test plays the old process over a `UnixStream::pair` with
//! [`frame::write`].

use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use hotswap_upgrade::frame::{self, Frame, FrameError};
use hotswap_upgrade::protocol::{COMMIT, HELLO, MOVED_END, READY, REJECT, STATE_BEGIN, STATE_END};
use hotswap_upgrade::takeover::Takeover;

const PATIENCE: Duration = Duration::from_secs(60);

/// The old process's end and a new side that said HELLO on the other.
fn said_hello() -> (UnixStream, Takeover) {
    let (mut old, new) = UnixStream::pair().unwrap();
    old.set_read_timeout(Some(PATIENCE)).unwrap();
    let taking = Takeover::hello(OwnedFd::from(new), b"takes").unwrap();
    let hello = frame::read(&mut old).unwrap();
    assert_eq!(hello.kind, HELLO);
    assert_eq!(&hello.payload[4..], b"takes");
    (old, taking)
}

/// Nothing more was written to `old`'s peer: it reads no frame before the
/// new side is gone.
fn nothing_more(old: &mut UnixStream) {
    match frame::read(old) {
        Err(FrameError::Closed) => {}
        other => panic!("the new side wrote more: {other:?}"),
    }
}

#[test]
fn a_protocol_frame_during_the_state_is_refused() {
    for kind in [HELLO, STATE_BEGIN, READY, REJECT, COMMIT, MOVED_END] {
        let (mut old, mut taking) = said_hello();
        frame::write(&mut old, STATE_BEGIN, &[]).unwrap();
        frame::write(&mut old, 16, b"state").unwrap();
        if kind == STATE_BEGIN {
            // The first STATE_BEGIN is in place; a second is not.
            frame::write(&mut old, STATE_BEGIN, &[]).unwrap();
        } else {
            frame::write(&mut old, kind, &[]).unwrap();
        }
        // A new side that waits on instead of refusing reads the end.
        old.shutdown(Shutdown::Write).unwrap();
        let first = taking.receive().unwrap().expect("the host's frame");
        assert_eq!(first.frame, Frame { kind: 16, payload: b"state".to_vec() });
        let error = taking.receive().expect_err(&format!("kind {kind} during the state was taken"));
        assert!(error.contains(&format!("frame kind {kind} during the state transfer")), "{kind}: {error}");
        drop(taking);
        nothing_more(&mut old);
    }
}

#[test]
fn ready_before_the_whole_state_arrived_is_refused_and_not_sent() {
    let (mut old, mut taking) = said_hello();
    frame::write(&mut old, STATE_BEGIN, &[]).unwrap();
    frame::write(&mut old, 16, b"state").unwrap();
    assert!(taking.receive().unwrap().is_some());
    let error = taking.ready().map(|_| ()).expect_err("READY before receive returned None");
    assert!(error.contains("READY before the whole state arrived"), "{error}");
    nothing_more(&mut old);
}

#[test]
fn a_protocol_frame_after_the_commit_is_refused() {
    for kind in [HELLO, STATE_BEGIN, STATE_END, READY, REJECT, COMMIT] {
        let (mut old, mut taking) = said_hello();
        frame::write(&mut old, STATE_BEGIN, &[]).unwrap();
        frame::write(&mut old, STATE_END, &[]).unwrap();
        assert!(taking.receive().unwrap().is_none());
        frame::write(&mut old, COMMIT, &[]).unwrap();
        let mut arriving = taking.ready().unwrap();
        assert_eq!(frame::read(&mut old).unwrap().kind, READY);
        frame::write(&mut old, kind, &[]).unwrap();
        old.shutdown(Shutdown::Write).unwrap();
        match arriving.receive() {
            Err(error) => {
                let error = error.to_string();
                assert!(error.contains(&format!("frame kind {kind} after the commit")), "{kind}: {error}");
            }
            Ok(got) => panic!("kind {kind} after the commit was taken as {got:?}"),
        }
        assert!(arriving.receive().unwrap().is_none(), "Arrivals went on after a refused frame");
    }
}

#[test]
fn an_old_process_of_an_earlier_release_hands_over_at_ready() {
    let (mut old, mut taking) = said_hello();
    // No STATE_BEGIN: this old process does not commit.
    frame::write(&mut old, 16, b"state").unwrap();
    frame::write(&mut old, STATE_END, &[]).unwrap();
    // Waiting already when `ready` returns: it must not be taken.
    frame::write(&mut old, 17, b"late").unwrap();
    assert_eq!(taking.receive().unwrap().expect("the host's frame").frame.payload, b"state");
    assert!(taking.receive().unwrap().is_none());
    // `ready` must not wait for a COMMIT that never comes: run it where a
    // wait would show, and end the wait if it happens.
    let (done, returned) = mpsc::channel();
    let ready = std::thread::spawn(move || {
        let outcome = taking.ready().map(|mut arriving| arriving.receive().map(|next| next.is_none()));
        done.send(()).unwrap();
        outcome
    });
    let waited = returned.recv_timeout(PATIENCE);
    assert_eq!(frame::read(&mut old).unwrap().kind, READY);
    drop(old);
    let outcome = ready.join().unwrap();
    assert!(waited.is_ok(), "ready() waited for a COMMIT from an old process that sends none");
    assert!(outcome.unwrap().unwrap(), "Arrivals yielded a frame from an old process of an earlier release");
}

#[test]
fn an_old_process_that_goes_away_after_ready_is_no_commit() {
    let (mut old, mut taking) = said_hello();
    frame::write(&mut old, STATE_BEGIN, &[]).unwrap();
    frame::write(&mut old, STATE_END, &[]).unwrap();
    assert!(taking.receive().unwrap().is_none());
    let waiting = std::thread::spawn(move || taking.ready().map(|_| ()));
    assert_eq!(frame::read(&mut old).unwrap().kind, READY);
    drop(old);
    let error = waiting.join().unwrap().expect_err("no COMMIT came");
    assert!(error.contains("did not commit"), "{error}");
}
