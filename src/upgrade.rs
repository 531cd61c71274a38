//! Replacing the running `hotswap` binary: its sockets and its state move to
//! a new process, and no request fails.
//!
//! 1. The old process starts the new binary with its listening sockets (the
//!    same sockets: one accept queue) and a control socket, as inherited
//!    descriptors named in `LISTEN_FDNAMES`.
//! 2. The new process reads its config, loads its modules (a new binary may
//!    bring new module versions) and sends HELLO.
//! 3. The old process stops accepting, freezes calls (they wait; none runs),
//!    and sends every module's snapshot, then STATE_END.
//!    One frame per instance (its state and its pending timers), so no
//!    module's state is limited by the size of a frame.
//! 4. The new process starts every instance from it through
//!    `init(Some(previous))` and sends READY without accepting anything yet
//!    — or REJECT with the reason, and exits.
//! 5. On READY the old process commits: the point of no return. It records
//!    that it handed over (from then on it never writes state, and refuses
//!    every request that would change state, naming the new pid) and sends
//!    COMMIT. Only then does the new process accept connections.
//! 6. Calls on the old process's open connections (the frozen ones
//!    included) are forwarded to the new process: the state lives in one
//!    process only. Each keep-alive connection of the public port then
//!    parks at its request boundary and moves to the new process with its
//!    socket (`upgrade/connections.rs`; with a new process of an earlier
//!    release, each is answered with `Connection: close` instead). The old
//!    process exits once every connection moved or closed.
//!
//! Until the commit nothing is lost by failing, because the new process has
//! served no one: a binary that cannot start, a new process that exits,
//! stays silent past `upgrade.ready_timeout` (it is then killed) or rejects
//! the state leaves the old process unfrozen and accepting, as if nothing
//! happened, and the caller learns why. A new process whose control channel
//! closes before COMMIT exits without ever accepting.

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use hotswap_upgrade::frame::{self, FrameError};
use hotswap_upgrade::{listen, pass};

use crate::api;
use crate::daemon::Daemon;
use crate::http::Listening;
use crate::sockets::moving::{self, PausedSessions};

pub mod connections;

/// new -> old: modules loaded, ready for state (payload: pid).
pub const HELLO: u16 = 1;
/// old -> new: one module's snapshot, encoded as the body of a state file.
pub const STATE: u16 = 2;
/// old -> new: every module was sent.
pub const STATE_END: u16 = 3;
/// new -> old: serving (payload: pid).
pub const READY: u16 = 4;
/// new -> old: cannot take the state (payload: the reason).
pub const REJECT: u16 = 5;
/// old -> new: the first frame of the state, from an old process that
/// commits (payload: empty). An old process that sends none is of a
/// release before the commit existed; its new process accepts at READY.
pub const STATE_BEGIN: u16 = 6;
/// old -> new: one instance's state, encoded as the body of a state file
/// holding that one instance (so a module's state spans many frames).
pub const INSTANCE: u16 = 7;
/// old -> new: the hand-over is committed; start accepting.
pub const COMMIT: u16 = 8;
/// old -> new, before STATE_END: WebSocket sessions that move with their
/// connections (`sockets/moving.rs` encodes them), their sockets attached
/// (SCM_RIGHTS, `hotswap_upgrade::pass`). Sent only to a new process whose
/// HELLO says it takes them ([`TAKES_SESSIONS`]).
pub const SESSIONS: u16 = 9;
/// old -> new, after COMMIT: one keep-alive HTTP connection of the public
/// port, parked at a request boundary, its socket attached (payload:
/// `ParkedRecord::to_bytes`). Sent only to a new process whose HELLO says
/// it takes them ([`TAKES_CONNECTIONS`]); see `upgrade/connections.rs`.
pub const CONNECTIONS: u16 = 10;
/// old -> new: every connection parked and was sent, or closed.
pub const CONNECTIONS_END: u16 = 11;
/// HELLO's payload: the pid (4 bytes), then a byte of flags saying what
/// else the new process takes. An old process of an earlier release reads
/// only the kind, or only [`TAKES_SESSIONS`].
pub const TAKES_SESSIONS: u8 = 1;
/// HELLO flag: the new process takes the public port's open connections.
pub const TAKES_CONNECTIONS: u8 = 2;

/// What the old process's drain needs after the deadline to hand the last
/// parked connections over.
const MOVE_GRACE: Duration = Duration::from_secs(2);

/// How long the old process waits for its sessions to pause for a move.
const PAUSE_WAIT: Duration = Duration::from_secs(2);

/// How long a failed send waits for the new process's REJECT reason.
const REASON_WAIT: Duration = Duration::from_secs(1);

/// The name the control socket travels under in `LISTEN_FDNAMES`.
pub const CONTROL: &str = "control";

/// Why an upgrade did not happen. This process serves on either way.
#[derive(Debug)]
pub enum UpgradeError {
    /// Not now: another upgrade, a start, a shutdown, or operations that
    /// did not finish in time.
    Busy(String),
    /// The new process could not take over.
    Failed(String),
}

impl UpgradeError {
    pub fn http_status(&self) -> u16 {
        match self {
            UpgradeError::Busy(_) => 409,
            UpgradeError::Failed(_) => 422,
        }
    }
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::Busy(reason) | UpgradeError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Runs an upgrade to `binary` (blocking; from a blocking thread of the
/// daemon's runtime). Returns once the new process serves, or why not.
pub fn run(
    daemon: &Arc<Daemon>,
    runtime: &tokio::runtime::Handle,
    binary: &Path,
) -> Result<api::Upgraded, UpgradeError> {
    let started = Instant::now();
    // From here no swap or save starts, and the ones running end first.
    daemon.lifecycle.begin_upgrade(started + daemon.config().upgrade_timeout).map_err(UpgradeError::Busy)?;
    let _ = daemon.notifier.reloading();
    daemon.set_progress(api::Upgrade::new(binary, "spawning"));
    let outcome = hand_over(daemon, runtime, binary, started);
    match &outcome {
        Ok(done) => {
            let _ = daemon.notifier.handed_over(done.new_pid);
            daemon.update_progress(|progress| {
                progress.phase = "draining".into();
                progress.outcome = Some(format!("handed over to pid {}", done.new_pid));
            });
            tracing::info!(
                "upgraded to pid {} in {} ms (frozen {} ms); draining this process",
                done.new_pid,
                done.took_ms,
                done.frozen_ms
            );
            daemon.exit.notify_one();
        }
        Err(reason) => {
            let _ = daemon.notifier.ready();
            daemon.update_progress(|progress| {
                progress.phase = "failed".into();
                progress.outcome = Some(reason.clone());
            });
            tracing::error!("upgrade refused, this process serves on: {reason}");
            daemon.lifecycle.upgrade_failed();
        }
    }
    outcome.map_err(UpgradeError::Failed)
}

fn hand_over(
    daemon: &Arc<Daemon>,
    runtime: &tokio::runtime::Handle,
    binary: &Path,
    started: Instant,
) -> Result<api::Upgraded, String> {
    check_runnable(binary)?;
    let config = daemon.config();
    let deadline = started + config.upgrade_timeout;
    let (mut control, theirs) =
        UnixStream::pair().map_err(|err| format!("cannot create the control socket: {err}"))?;
    let mut command = std::process::Command::new(binary);
    command.args(&daemon.args);
    let sockets = daemon.handoff_sockets();
    let mut lent: Vec<(&str, std::os::fd::BorrowedFd<'_>)> =
        sockets.iter().map(|(name, fd)| (name.as_str(), fd.as_fd())).collect();
    lent.push((CONTROL, theirs.as_fd()));
    let child = listen::spawn_with(&mut command, &lent)
        .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
    drop(lent);
    drop(theirs); // Our copy: now EOF on `control` means the child is gone.
    let mut child = Spawned { child: Some(child) };
    let new_pid = child.pid();
    daemon.update_progress(|progress| {
        progress.phase = "waiting for ready".into();
        progress.new_pid = Some(new_pid);
    });

    let spawned_at = Instant::now();
    let takes = match read_until(&mut control, deadline, config.upgrade_timeout) {
        Ok(frame::Frame { kind: HELLO, payload }) => payload.get(4).copied().unwrap_or(0),
        Ok(other) => return Err(child.fail(&format!("it sent frame kind {} instead of HELLO", other.kind))),
        Err(reason) => return Err(child.fail(&reason)),
    };

    let startup_ms = spawned_at.elapsed().as_millis() as u64;
    // Freeze: no new connection here, no call running, then send the state.
    daemon.update_progress(|progress| progress.phase = "transferring state".into());
    let _ = daemon.listening.send(Listening::Pause);
    // Calls that do not end by the deadline (a stuck one) make the upgrade
    // give up: waiting on would hold every other call behind this freeze.
    let frozen = match runtime.block_on(tokio::time::timeout_at(deadline.into(), daemon.gate.write())) {
        Ok(frozen) => frozen,
        Err(_) => {
            let running = daemon.calls.running_for(Duration::ZERO);
            let running: Vec<String> = running.iter().map(ToString::to_string).collect();
            let reason = child.fail(&format!(
                "calls still running at the deadline ({}); the state can only move between calls",
                running.join("; ")
            ));
            let _ = daemon.listening.send(Listening::Accept);
            return Err(reason);
        }
    };
    let frozen_at = Instant::now();
    // Nothing runs now: every serving session stops where it stands and
    // moves with the state (resumed here if the upgrade fails before its
    // commit). A new process of an earlier release takes none.
    let paused =
        (takes & TAKES_SESSIONS != 0).then(|| runtime.block_on(daemon.sockets.moving.pause_all(PAUSE_WAIT)));
    let answer = match send_state(daemon, &mut control, paused.as_ref()) {
        Ok(()) => read_until(&mut control, deadline, config.upgrade_timeout),
        // A new process that refuses a module says REJECT and exits while
        // the rest is still being sent: its reason says more than our
        // broken pipe, and is already waiting to be read.
        Err(lost) => {
            match read_until(&mut control, deadline.min(Instant::now() + REASON_WAIT), REASON_WAIT) {
                Ok(rejected @ frame::Frame { kind: REJECT, .. }) => Ok(rejected),
                _ => Err(lost),
            }
        }
    };
    let refused = match answer {
        Ok(frame::Frame { kind: READY, .. }) => None,
        Ok(frame::Frame { kind: REJECT, payload }) => {
            Some(child.fail(&format!("it could not take the state: {}", String::from_utf8_lossy(&payload))))
        }
        Ok(other) => Some(child.fail(&format!("it sent frame kind {} instead of READY", other.kind))),
        Err(reason) => Some(child.fail(&reason)),
    };
    if let Some(reason) = refused {
        drop(frozen);
        let _ = daemon.listening.send(Listening::Accept);
        return Err(reason);
    }

    // The point of no return: once COMMIT is sent the new process serves and
    // owns the state, and this one never writes state again. If COMMIT cannot
    // be sent the new process is gone, and this one serves on.
    let committed = daemon
        .lifecycle
        .hand_over(new_pid)
        .map_err(|now| format!("the upgrade was abandoned: {now}"))
        .and_then(|()| {
            frame::write(&mut control, COMMIT, &[])
                .map_err(|err| format!("the new process went away before the commit: {err}"))
        });
    if let Err(reason) = committed {
        let reason = child.fail(&reason);
        drop(frozen);
        let _ = daemon.listening.send(Listening::Accept);
        return Err(reason);
    }
    // The new process has the moved sessions: they end here without a close.
    if let Some(paused) = paused {
        paused.moved();
    }
    // The open connections of the public port move too, each at its next
    // request boundary (`Listening::HandOver` parks them). Without that,
    // they are forwarded and closed.
    if takes & TAKES_CONNECTIONS != 0 {
        let until = Instant::now() + config.shutdown_timeout + MOVE_GRACE;
        if let Err(err) = daemon.outgoing.start(control, until) {
            tracing::warn!("cannot move the open connections ({err}); they are forwarded and closed");
        }
    }
    // Requests still arriving here are forwarded to the new process.
    let _ = daemon.handed_over.set((daemon.forward_address(), new_pid));
    daemon.draining.store(true, SeqCst);
    drop(frozen);
    let frozen_ms = frozen_at.elapsed().as_millis() as u64;
    let _ = daemon.listening.send(Listening::HandOver);
    child.release();
    let progress = daemon.progress().unwrap_or_else(|| api::Upgrade::new(binary, "draining"));
    Ok(api::Upgraded {
        old_pid: std::process::id(),
        new_pid,
        took_ms: started.elapsed().as_millis() as u64,
        startup_ms,
        frozen_ms,
        modules: progress.modules_sent,
        instances: progress.instances_sent,
        state_bytes: progress.bytes_sent,
    })
}

fn check_runnable(binary: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(binary).map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("cannot run {}: it is not an executable file", binary.display()));
    }
    Ok(())
}

/// Sends STATE_BEGIN, every instance's snapshot (one frame each), the
/// paused sessions with their sockets, then STATE_END.
fn send_state(
    daemon: &Daemon,
    control: &mut UnixStream,
    paused: Option<&PausedSessions<'_>>,
) -> Result<(), String> {
    let lost = |err: std::io::Error| format!("the control socket failed while sending the state: {err}");
    control.set_write_timeout(Some(Duration::from_secs(60))).map_err(lost)?;
    frame::write(control, STATE_BEGIN, &[]).map_err(lost)?;
    for module in daemon.engine.status().modules {
        let snapshot =
            daemon.engine.snapshot(&module.name).map_err(|err| format!("cannot snapshot: {err}"))?;
        let hotswap::ModuleSnapshot { module, version, instances, timers } = snapshot;
        let count = instances.len();
        let mut bytes = 0;
        // Sorted by instance, as the instances are: each frame takes its own.
        let mut timers = timers.into_iter().peekable();
        for (key, state) in instances {
            let mut its_timers = Vec::new();
            while let Some(timer) = timers.next_if(|timer| timer.instance <= key) {
                its_timers.push(timer);
            }
            let one = hotswap::ModuleSnapshot {
                module: module.clone(),
                version: version.clone(),
                instances: vec![(key, state)],
                timers: its_timers,
            };
            let encoded = one.to_bytes();
            frame::write(control, INSTANCE, &encoded).map_err(|err| {
                format!("cannot send instance '{}' of {module}: {}", one.instances[0].0, lost(err))
            })?;
            bytes += encoded.len() as u64;
        }
        daemon.update_progress(|progress| {
            progress.modules_sent += 1;
            progress.instances_sent += count;
            progress.bytes_sent += bytes;
        });
    }
    if let Some(paused) = paused {
        send_sessions(control, paused).map_err(lost)?;
    }
    frame::write(control, STATE_END, &[]).map_err(lost)
}

/// The paused sessions, as many SESSIONS frames as their sockets need.
fn send_sessions(control: &UnixStream, paused: &PausedSessions<'_>) -> std::io::Result<()> {
    let mut channel = pass::Channel::from(control.try_clone()?);
    for sessions in paused.sessions.chunks(pass::MAX_DESCRIPTORS) {
        let records: Vec<&moving::MovedSession> = sessions.iter().map(|paused| &paused.session).collect();
        let sockets: Vec<_> = sessions.iter().map(|paused| paused.socket.as_fd()).collect();
        channel.write(SESSIONS, &moving::encode(&records), &sockets)?;
    }
    Ok(())
}

/// Reads one frame, giving up at `deadline`.
fn read_until(
    control: &mut UnixStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<frame::Frame, String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    control.set_read_timeout(Some(left)).map_err(|err| err.to_string())?;
    frame::read(control).map_err(|err| match err {
        FrameError::Io(io) if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            format!("the new process was not ready within {timeout:?} (upgrade.ready_timeout)")
        }
        FrameError::Closed => "the new process exited before it was ready".to_owned(),
        other => other.to_string(),
    })
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

/// The control channel of a new process that took the state.
#[derive(Debug)]
pub struct Taken {
    control: UnixStream,
    /// WebSocket sessions moved here with their sockets, to start at the commit.
    pub sessions: moving::Adopted,
    /// The old process commits (it sent STATE_BEGIN): wait for COMMIT
    /// after READY before accepting. An old process of an earlier release
    /// does not; then READY is the hand-over.
    commits: bool,
}

/// In the new process: says HELLO, takes every module's state and starts
/// its instances. On error, says REJECT with the reason (and the caller
/// exits).
pub fn receive_state(daemon: &Daemon, control: OwnedFd) -> Result<Taken, String> {
    let mut control = UnixStream::from(control);
    let lost = |err: &dyn std::fmt::Display| format!("the old process went away during the upgrade: {err}");
    let mut hello = std::process::id().to_le_bytes().to_vec();
    // Tests stand in for a new binary of an earlier release, which takes
    // neither sessions nor connections.
    if std::env::var_os("HOTSWAP_TEST_TAKE_NO_SESSIONS").is_none() {
        hello.push(TAKES_SESSIONS | TAKES_CONNECTIONS);
    }
    frame::write(&mut control, HELLO, &hello).map_err(|err| lost(&err))?;
    // Reads take descriptors too: SESSIONS frames carry sockets.
    let mut channel = pass::Channel::from(control);
    let mut commits = false;
    let mut sessions = moving::Adopted::new();
    let taken = (|| -> Result<(usize, usize, u64), String> {
        let (mut modules, mut instances, mut bytes) = (0, 0, 0);
        // Instances arrive one frame each, grouped by module; a module is
        // adopted whole (all its instances or none) once its last one is here.
        let mut pending: Option<hotswap::ModuleSnapshot> = None;
        let mut adopt = |snapshot: hotswap::ModuleSnapshot| -> Result<(), String> {
            if daemon.config().module(&snapshot.module).is_none() {
                return Err(format!(
                    "module '{}' is not in the new config, so its state would be lost",
                    snapshot.module
                ));
            }
            instances += daemon.engine.adopt(&snapshot.module, &snapshot).map_err(|err| err.to_string())?;
            modules += 1;
            Ok(())
        };
        loop {
            let pass::Received { frame: received, fds } = channel.read().map_err(|err| lost(&err))?;
            bytes += received.payload.len() as u64;
            if received.kind == SESSIONS {
                sessions.extend(moving::adopt(&received.payload, fds)?);
                continue;
            }
            if !fds.is_empty() {
                return Err(format!(
                    "frame kind {} came with {} sockets it should not have",
                    received.kind,
                    fds.len()
                ));
            }
            match received.kind {
                STATE_BEGIN => commits = true,
                // A whole module in one frame, from an old process of an earlier release.
                STATE => adopt(decode(&received.payload)?)?,
                INSTANCE => {
                    let mut one = decode(&received.payload)?;
                    match &mut pending {
                        Some(module) if module.module == one.module => {
                            if module.version != one.version {
                                return Err(format!(
                                    "instances of {} arrived from versions {} and {}",
                                    one.module, module.version, one.version
                                ));
                            }
                            module.instances.append(&mut one.instances);
                            module.timers.append(&mut one.timers);
                        }
                        _ => {
                            if let Some(done) = pending.replace(one) {
                                adopt(done)?;
                            }
                        }
                    }
                }
                STATE_END => {
                    if let Some(done) = pending.take() {
                        adopt(done)?;
                    }
                    return Ok((modules, instances, bytes));
                }
                other => return Err(format!("unexpected frame kind {other} during the state transfer")),
            }
        }
    })();
    match taken {
        Ok((modules, instances, bytes)) => {
            let old_pid = std::os::unix::process::parent_id();
            tracing::info!("took over {instances} instance(s) of {modules} module(s) from pid {old_pid}");
            daemon.set_progress(api::Upgrade {
                phase: "done".into(),
                new_pid: Some(std::process::id()),
                modules_sent: modules,
                instances_sent: instances,
                bytes_sent: bytes,
                outcome: Some(format!("took over from pid {old_pid}")),
                ..api::Upgrade::new(&daemon.binary, "done")
            });
            Ok(Taken { control: channel.into_inner(), sessions, commits })
        }
        Err(reason) => {
            let mut control = channel.into_inner();
            let _ = frame::write(&mut control, REJECT, reason.as_bytes());
            Err(reason)
        }
    }
}

fn decode(payload: &[u8]) -> Result<hotswap::ModuleSnapshot, String> {
    hotswap::ModuleSnapshot::from_bytes(payload)
        .map_err(|reason| format!("a module's state arrived damaged: {reason}"))
}

/// In the new process, with the state adopted and nothing accepted yet:
/// says READY, then waits for the old process to commit. `Err` means the
/// old process serves on (it rolled back, or went away): this one must
/// exit without accepting. After a commit, returns the control socket:
/// the open connections come over it (`connections::receive_all`).
pub fn ready_then_commit(taken: Taken) -> Result<Option<UnixStream>, String> {
    let Taken { mut control, commits, .. } = taken;
    frame::write(&mut control, READY, &std::process::id().to_le_bytes())
        .map_err(|err| format!("could not tell the old process that this one is ready: {err}"))?;
    if !commits {
        return Ok(None);
    }
    // No deadline of our own: the old process has one, and kills this
    // process when it passes. Until COMMIT this process has served no one.
    // Read as the channel does: the frames after it carry sockets.
    let mut channel = pass::Channel::from(control);
    match channel.read() {
        Ok(pass::Received { frame: frame::Frame { kind: COMMIT, .. }, .. }) => Ok(Some(channel.into_inner())),
        Ok(other) => Err(format!("the old process sent frame kind {} instead of COMMIT", other.frame.kind)),
        Err(err) => Err(format!("the old process did not commit the hand-over ({err}); it serves on")),
    }
}
