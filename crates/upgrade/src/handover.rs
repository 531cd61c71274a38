//! The old process's side of an upgrade: start the new binary with the
//! listening sockets, freeze, send the state and the connections that move
//! with it, wait for READY, then commit — or roll back, with the reason.
//!
//! [`upgrade`] runs the protocol ([`crate::protocol`]); the host says what
//! freezing, the state and committing mean for it by implementing
//! [`Handover`]. Until the commit nothing is lost by failing: the new
//! process has served no one, so a binary that cannot start, a new process
//! that exits, is late (it is then killed) or rejects the state ends in
//! [`Handover::rolled_back`], and the host serves on as if nothing happened.
//! After the commit the new process owns the state and serves.
//!
//! The calls block: run them on a thread that may (tokio's
//! `spawn_blocking`, say).
//!
//! Guarantees, and the tests in `tests/handover.rs` (the new process is the
//! test binary re-run) and `tests/no_leaks.rs` that attack them:
//!
//! * The hooks run in order `spawned`, `freeze`, `send_state`,
//!   `before_commit`, `committed`; HELLO's pid and `takes` reach `freeze`
//!   intact and [`Upgraded::new_pid`] is the child's; a connection sent with
//!   the state keeps the bytes its client sent before the pass, one sent
//!   through [`AfterCommit`] arrives after COMMIT, dropping it ends the new
//!   side's arrivals, and a connection queued on a lent listener is accepted
//!   by the new process —
//!   `the_whole_path_moves_connections_before_and_after_the_commit`.
//! * A new process that exits before HELLO or in the middle of the state,
//!   says nothing past [`Options::ready_timeout`] (it is killed; the reason
//!   names the timeout and [`Options::timeout_setting`]) or REJECTs while a
//!   large state is still being sent (the reason is its words) ends in
//!   `Err`, [`Handover::rolled_back`] once with that reason, never
//!   `committed`, and the process no longer runs —
//!   `a_new_process_that_exits_before_hello_is_rolled_back`,
//!   `a_new_process_that_exits_in_the_middle_of_the_state_is_rolled_back`,
//!   `a_silent_new_process_is_killed_at_the_ready_timeout`,
//!   `a_reject_while_a_large_state_is_sent_gives_the_new_sides_words`.
//! * `freeze` or `before_commit` returning `Err` rolls back; the new
//!   process's `receive` or `ready` returns `Err`, so it never serves —
//!   `a_failing_freeze_rolls_back_and_the_new_process_never_serves`,
//!   `a_failing_before_commit_rolls_back_and_ready_returns_err`.
//! * [`Sender::send`] and [`AfterCommit::send`] refuse every protocol kind,
//!   with or without descriptors, as [`ErrorKind::InvalidInput`], and nothing
//!   of it reaches the new process —
//!   `a_host_may_not_send_a_protocol_kind_and_none_reaches_the_new_side`.
//! * No descriptor stays open in the old process after a failed or a
//!   committed upgrade —
//!   `an_upgrade_failed_or_committed_leaves_no_descriptor_open`.

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameError};
use crate::listen;
use crate::pass;
use crate::protocol::{
    COMMIT, CONTROL, FIRST_HOST_KIND, HELLO, MOVED_END, READY, REJECT, STATE_BEGIN, STATE_END,
    is_protocol_kind,
};

/// How long a failed send waits for the new process's REJECT reason.
const REASON_WAIT: Duration = Duration::from_secs(1);
/// How long a frame may take to reach a new process that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the host does at each step of [`upgrade`]. Every step runs on the
/// thread that called `upgrade`.
pub trait Handover {
    /// The new process started with this pid. Nothing is frozen yet.
    fn spawned(&mut self, _pid: u32) {}

    /// The new process said HELLO. Stop what must not run while the state
    /// leaves — accepting, calls that change the state, reading from the
    /// connections that move — by `deadline`. An `Err` ends the upgrade
    /// (then [`Handover::rolled_back`]).
    fn freeze(&mut self, hello: &Hello, deadline: Instant) -> Result<(), String>;

    /// Frozen: send the state and the connections that move with it, as
    /// frames of the host's kinds. An `Err` ends the upgrade.
    fn send_state(&mut self, out: &mut Sender<'_>) -> Result<(), String>;

    /// The new process is READY: the last moment to back out (an `Err`
    /// rolls back). From the moment this returns `Ok` the host must act as
    /// if the new process owns the state: it will, once COMMIT is sent.
    fn before_commit(&mut self, _new_pid: u32) -> Result<(), String> {
        Ok(())
    }

    /// COMMIT was sent: the new process serves and owns the state. What was
    /// sent with the state is the new process's now (drop this process's
    /// copies without closing them). `after` carries the connections that
    /// move from here on; dropping it tells the new process that none
    /// follow.
    fn committed(&mut self, after: AfterCommit);

    /// The upgrade failed before its commit, for `reason`; the new process
    /// was ended. Serve on: unfreeze, resume the connections.
    fn rolled_back(&mut self, _reason: &str) {}
}

/// The new process's HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub pid: u32,
    /// What the new process says it takes, in the host's own bytes (empty
    /// from a new process that says nothing, such as an earlier release).
    pub takes: Vec<u8>,
}

/// Limits of one [`upgrade`].
#[derive(Debug, Clone)]
pub struct Options {
    /// From the call to READY; the new process is killed when it passes.
    pub ready_timeout: Duration,
    /// Gives up at this instant instead (a host whose timeout started
    /// earlier, while it waited for its own work to finish).
    pub deadline: Option<Instant>,
    /// What a timeout message names as the setting to raise, e.g.
    /// `"upgrade.ready_timeout"`.
    pub timeout_setting: Option<String>,
}

impl Options {
    pub fn new(ready_timeout: Duration) -> Options {
        Options { ready_timeout, deadline: None, timeout_setting: None }
    }
}

/// A committed upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub new_pid: u32,
    /// From the start of the new process to its HELLO.
    pub startup: Duration,
    /// From the call to the commit.
    pub took: Duration,
}

/// Frames of the host's kinds to the new process, descriptors attached.
#[derive(Debug)]
pub struct Sender<'a> {
    channel: &'a mut pass::Channel,
}

impl Sender<'_> {
    /// Sends one frame of the host's `kind` with `fds`. A protocol kind is
    /// refused ([`ErrorKind::InvalidInput`]) before anything is sent.
    pub fn send(&mut self, kind: u16, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        send_host_frame(self.channel, kind, payload, fds)
    }
}

/// The control socket after the commit: the connections that move from now
/// on. Dropping it (or [`AfterCommit::finish`]) sends MOVED_END.
#[derive(Debug)]
pub struct AfterCommit {
    channel: Option<pass::Channel>,
}

impl AfterCommit {
    /// Sends one frame of the host's `kind` with `fds`, as [`Sender::send`].
    pub fn send(&mut self, kind: u16, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let channel = self.channel.as_mut().ok_or_else(|| io::Error::other("already finished"))?;
        send_host_frame(channel, kind, payload, fds)
    }

    /// Tells the new process that no more connections come.
    pub fn finish(mut self) -> io::Result<()> {
        self.end()
    }

    /// Bounds how long one send may wait for a new process that stopped
    /// reading (60 s unless set).
    pub fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match &self.channel {
            Some(channel) => channel.get_ref().set_write_timeout(Some(timeout)),
            None => Ok(()),
        }
    }

    fn end(&mut self) -> io::Result<()> {
        match self.channel.take() {
            Some(mut channel) => channel.write(MOVED_END, &[], &[]),
            None => Ok(()),
        }
    }
}

/// A control channel already past COMMIT: for a host that drives the
/// protocol's first steps itself, and for tests.
impl From<pass::Channel> for AfterCommit {
    fn from(channel: pass::Channel) -> Self {
        AfterCommit { channel: Some(channel) }
    }
}

impl Drop for AfterCommit {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

fn send_host_frame(
    channel: &mut pass::Channel,
    kind: u16,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if is_protocol_kind(kind) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("frame kind {kind} is the protocol's own; choose a kind from {FIRST_HOST_KIND} up"),
        ));
    }
    channel.write(kind, payload, fds)
}

/// Upgrades to the program of `command` (its arguments and environment as
/// set): starts it with `listeners` (and the control socket, named
/// [`CONTROL`]) inherited as `LISTEN_FDS`, then drives [`Handover`]'s steps.
/// Returns once the new process serves, or why it does not (this process
/// serves on, `host.rolled_back` was called).
pub fn upgrade(
    mut command: Command,
    listeners: &[(&str, BorrowedFd<'_>)],
    host: &mut impl Handover,
    options: &Options,
) -> Result<Upgraded, String> {
    let started = Instant::now();
    let deadline = options.deadline.unwrap_or(started + options.ready_timeout);
    let mut child = Spawned { child: None };
    let outcome = drive(&mut command, listeners, host, options, deadline, &mut child);
    match outcome {
        Ok((control, new_pid, startup)) => {
            child.release();
            host.committed(AfterCommit { channel: Some(control) });
            Ok(Upgraded { new_pid, startup, took: started.elapsed() })
        }
        Err(reason) => {
            let reason = child.fail(&reason);
            host.rolled_back(&reason);
            Err(reason)
        }
    }
}

/// Everything up to and including COMMIT; the caller commits or rolls back.
fn drive(
    command: &mut Command,
    listeners: &[(&str, BorrowedFd<'_>)],
    host: &mut impl Handover,
    options: &Options,
    deadline: Instant,
    child: &mut Spawned,
) -> Result<(pass::Channel, u32, Duration), String> {
    check_runnable(Path::new(command.get_program()))?;
    let (control, theirs) =
        UnixStream::pair().map_err(|err| format!("cannot create the control socket: {err}"))?;
    let mut lent = listeners.to_vec();
    lent.push((CONTROL, theirs.as_fd()));
    let program = Path::new(command.get_program()).display().to_string();
    let spawned_at = Instant::now();
    child.child =
        Some(listen::spawn_with(command, &lent).map_err(|err| format!("cannot start {program}: {err}"))?);
    drop(lent);
    drop(theirs); // Our copy: now EOF on `control` means the child is gone.
    let new_pid = child.pid();
    host.spawned(new_pid);
    let mut channel = pass::Channel::from(control);

    let hello = match read_until(&mut channel, deadline, options)? {
        Frame { kind: HELLO, payload } if payload.len() >= 4 => Hello {
            pid: u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")),
            takes: payload[4..].to_vec(),
        },
        Frame { kind: HELLO, payload } => {
            return Err(format!("its HELLO carried {} bytes, not its pid (4 bytes)", payload.len()));
        }
        other => return Err(format!("it sent frame kind {} instead of HELLO", other.kind)),
    };
    let startup = spawned_at.elapsed();
    host.freeze(&hello, deadline)?;
    let sent = channel
        .get_ref()
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| channel.write(STATE_BEGIN, &[], &[]))
        .map_err(|err| format!("the control socket failed while sending the state: {err}"))
        .and_then(|()| host.send_state(&mut Sender { channel: &mut channel }))
        .and_then(|()| {
            channel
                .write(STATE_END, &[], &[])
                .map_err(|err| format!("the control socket failed while sending the state: {err}"))
        });
    let answer = match sent {
        Ok(()) => read_until(&mut channel, deadline, options)?,
        // A new process that refuses the state says REJECT and exits while
        // the rest is still being sent: its reason says more than our broken
        // pipe, and is already waiting to be read.
        Err(lost) => match read_until(&mut channel, deadline.min(Instant::now() + REASON_WAIT), options) {
            Ok(rejected @ Frame { kind: REJECT, .. }) => rejected,
            _ => return Err(lost),
        },
    };
    match answer {
        Frame { kind: READY, .. } => {}
        Frame { kind: REJECT, payload } => {
            return Err(format!("it could not take the state: {}", String::from_utf8_lossy(&payload)));
        }
        other => return Err(format!("it sent frame kind {} instead of READY", other.kind)),
    }
    host.before_commit(new_pid)?;
    channel
        .write(COMMIT, &[], &[])
        .map_err(|err| format!("the new process went away before the commit: {err}"))?;
    Ok((channel, new_pid, startup))
}

fn check_runnable(binary: &Path) -> Result<(), String> {
    // A bare name is looked up in PATH by the spawn, which says if it fails.
    if binary.components().count() < 2 {
        return Ok(());
    }
    let meta = std::fs::metadata(binary).map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("cannot run {}: it is not an executable file", binary.display()));
    }
    Ok(())
}

/// Reads one frame that carries no descriptors, giving up at `deadline`.
fn read_until(channel: &mut pass::Channel, deadline: Instant, options: &Options) -> Result<Frame, String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    channel.get_ref().set_read_timeout(Some(left)).map_err(|err| err.to_string())?;
    match channel.read() {
        Ok(pass::Received { frame, fds }) if fds.is_empty() => Ok(frame),
        Ok(received) => Err(format!(
            "the new process sent frame kind {} with {} descriptors",
            received.frame.kind,
            received.fds.len()
        )),
        Err(FrameError::Io(io)) if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            let timeout = options.ready_timeout;
            Err(match &options.timeout_setting {
                Some(setting) => format!("the new process was not ready within {timeout:?} ({setting})"),
                None => format!("the new process was not ready within {timeout:?}"),
            })
        }
        Err(FrameError::Closed) => Err("the new process exited before it was ready".to_owned()),
        Err(other) => Err(other.to_string()),
    }
}

/// The new process, killed and reaped unless released.
struct Spawned {
    child: Option<Child>,
}

impl Spawned {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Ends the new process (by its pid) and returns why the upgrade failed,
    /// with how the process ended.
    fn fail(&mut self, reason: &str) -> String {
        let Some(mut child) = self.child.take() else { return reason.to_owned() };
        // A process that is exiting by itself gets a moment to do so, so its
        // own exit status is reported rather than our SIGKILL.
        let exited = (0..50).find_map(|_| {
            let status = child.try_wait().ok().flatten();
            if status.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            status
        });
        let status = match exited {
            Some(status) => status,
            None => {
                let _ = child.kill();
                match child.wait() {
                    Ok(status) => status,
                    Err(err) => {
                        return format!("{reason} (and waiting for pid {} failed: {err})", child.id());
                    }
                }
            }
        };
        format!("{reason}; the new process (pid {}) ended: {status}", child.id())
    }

    /// The new process lives on: it is the server now.
    fn release(&mut self) {
        self.child = None;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.fail("abandoned");
        }
    }
}
