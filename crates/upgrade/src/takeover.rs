//! The new process's side of an upgrade: say HELLO, take the state and the
//! connections that come with it, say READY (or REJECT), wait for the
//! commit, then take the connections that move after it.
//!
//! ```no_run
//! # fn adopt(_: hotswap_upgrade::pass::Received) -> Result<(), String> { Ok(()) }
//! use hotswap_upgrade::{listen, takeover};
//!
//! let mut inherited = listen::take().expect("inherited sockets");
//! if let Some(control) = takeover::control(&mut inherited) {
//!     let mut taking = takeover::Takeover::hello(control, &[]).expect("the old process is there");
//!     let taken = (|| {
//!         while let Some(received) = taking.receive()? {
//!             adopt(received)?; // the host's frames: its state, its connections
//!         }
//!         Ok::<(), String>(())
//!     })();
//!     if let Err(reason) = taken {
//!         taking.reject(&reason);
//!         std::process::exit(1);
//!     }
//!     // Serve nothing before `ready` returns: the old process still serves.
//!     let mut arriving = taking.ready().unwrap_or_else(|_| std::process::exit(1));
//!     // Committed: accept on the inherited listeners; connections keep arriving.
//!     while let Ok(Some(received)) = arriving.receive() {
//!         let _ = adopt(received);
//!     }
//! }
//! ```
//!
//! Every call blocks: run them where blocking is allowed.
//!
//! Guarantees, and the tests in `tests/takeover.rs` (the old process played
//! by hand over a socket pair) that attack them, beside the whole path in
//! `tests/handover.rs`:
//!
//! * A protocol frame out of place is refused with its kind named: any but
//!   STATE_BEGIN (first) and STATE_END during the state, any but MOVED_END
//!   after the commit — `a_protocol_frame_during_the_state_is_refused`,
//!   `a_protocol_frame_after_the_commit_is_refused`.
//! * [`Takeover::ready`] before [`Takeover::receive`] returned `None` is
//!   refused and sends nothing —
//!   `ready_before_the_whole_state_arrived_is_refused_and_not_sent`.
//! * From an old process of an earlier release (no STATE_BEGIN) `ready`
//!   returns at once and [`Arrivals`] yields nothing —
//!   `an_old_process_of_an_earlier_release_hands_over_at_ready`.
//! * An old process that goes away after READY is no commit: `ready`
//!   returns `Err` — `an_old_process_that_goes_away_after_ready_is_no_commit`.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use crate::frame::{self, FrameError};
use crate::listen::Inherited;
use crate::pass::{self, Received};
use crate::protocol::{
    COMMIT, CONTROL, HELLO, MOVED_END, READY, REJECT, STATE_BEGIN, STATE_END, is_protocol_kind,
};

/// Takes the control socket out of the inherited sockets: `Some` when this
/// process was started by an upgrade.
pub fn control(inherited: &mut Vec<Inherited>) -> Option<OwnedFd> {
    let at = inherited.iter().position(|socket| socket.name == CONTROL)?;
    Some(inherited.remove(at).fd)
}

/// The state arriving from the old process.
#[derive(Debug)]
pub struct Takeover {
    channel: pass::Channel,
    /// The old process commits (it sent STATE_BEGIN): wait for COMMIT after
    /// READY. One of an earlier release does not: READY hands over.
    commits: bool,
    /// A frame arrived: STATE_BEGIN is in place only as the first.
    started: bool,
    ended: bool,
}

impl Takeover {
    /// Says HELLO with this process's pid and `takes`: what it can take, in
    /// the host's own bytes (the old process's [`crate::handover::Hello`]).
    pub fn hello(control: OwnedFd, takes: &[u8]) -> Result<Takeover, String> {
        let mut control = UnixStream::from(control);
        let mut hello = std::process::id().to_le_bytes().to_vec();
        hello.extend_from_slice(takes);
        frame::write(&mut control, HELLO, &hello).map_err(|err| went_away(&err))?;
        Ok(Takeover { channel: pass::Channel::from(control), commits: false, started: false, ended: false })
    }

    /// The next frame of the host's kinds, with its descriptors; `None` once
    /// the whole state arrived.
    pub fn receive(&mut self) -> Result<Option<Received>, String> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let received = self.channel.read().map_err(|err| went_away(&err))?;
            let first = !std::mem::replace(&mut self.started, true);
            match received.frame.kind {
                STATE_BEGIN if first => self.commits = true,
                STATE_END => self.ended = true,
                kind if is_protocol_kind(kind) => {
                    return Err(format!("the old process sent frame kind {kind} during the state transfer"));
                }
                _ => return Ok(Some(received)),
            }
        }
    }

    /// Says REJECT with `reason`; the old process rolls back and serves on.
    /// Exit without serving.
    pub fn reject(self, reason: &str) {
        let mut control = self.channel.into_inner();
        let _ = frame::write(&mut control, REJECT, reason.as_bytes());
    }

    /// Says READY, then waits for the commit. `Ok`: this process serves from
    /// now on, and the connections that move after the commit arrive on
    /// what it returns. `Err`: the old process rolled back or went away, and
    /// serves on; exit without serving anyone.
    ///
    /// No deadline of its own: the old process has one, and kills this
    /// process when it passes.
    pub fn ready(mut self) -> Result<Arrivals, String> {
        if !self.ended {
            return Err("READY before the whole state arrived (read `receive` until it returns None)".into());
        }
        self.channel
            .write(READY, &std::process::id().to_le_bytes(), &[])
            .map_err(|err| format!("could not tell the old process that this one is ready: {err}"))?;
        if !self.commits {
            return Ok(Arrivals { channel: None });
        }
        match self.channel.read() {
            Ok(Received { frame: frame::Frame { kind: COMMIT, .. }, .. }) => {
                Ok(Arrivals { channel: Some(self.channel) })
            }
            Ok(other) => {
                Err(format!("the old process sent frame kind {} instead of COMMIT", other.frame.kind))
            }
            Err(err) => Err(format!("the old process did not commit the hand-over ({err}); it serves on")),
        }
    }
}

fn went_away(err: &dyn std::fmt::Display) -> String {
    format!("the old process went away during the upgrade: {err}")
}

/// The connections that move after the commit.
#[derive(Debug)]
pub struct Arrivals {
    channel: Option<pass::Channel>,
}

/// A control channel already past COMMIT: for a host that drives the
/// protocol's first steps itself, and for tests.
impl From<pass::Channel> for Arrivals {
    fn from(channel: pass::Channel) -> Self {
        Arrivals { channel: Some(channel) }
    }
}

impl Arrivals {
    /// The next frame of the host's kinds, with its descriptors; `None` once
    /// the old process sent all (or had none to send: it went away, or is of
    /// an earlier release).
    pub fn receive(&mut self) -> Result<Option<Received>, FrameError> {
        let Some(channel) = &mut self.channel else { return Ok(None) };
        let received = match channel.read() {
            Ok(received) => received,
            Err(FrameError::Closed) => {
                self.channel = None;
                return Ok(None);
            }
            Err(err) => {
                self.channel = None;
                return Err(err);
            }
        };
        match received.frame.kind {
            MOVED_END => {
                self.channel = None;
                Ok(None)
            }
            kind if is_protocol_kind(kind) => {
                self.channel = None;
                Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the old process sent frame kind {kind} after the commit, where only its host's come"
                    ),
                )))
            }
            _ => Ok(Some(received)),
        }
    }
}
