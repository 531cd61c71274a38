//! Replacing the running `hotswap` binary: its sockets, its state and its
//! open connections move to a new process, and no request fails.
//!
//! `hotswap_upgrade` runs the protocol (`handover::upgrade` here,
//! `takeover::Takeover` in the new process); this file is what the daemon
//! does at each step ([`DaemonHandover`]) and the frames its state travels in.
//!
//! 1. The old process starts the new binary with its listening sockets (the
//!    same sockets: one accept queue) and a control socket, as inherited
//!    descriptors named in `LISTEN_FDNAMES`.
//! 2. The new process reads its config, loads its modules (a new binary may
//!    bring new module versions) and sends HELLO.
//! 3. The old process stops accepting, freezes calls (they wait; none runs),
//!    pauses every WebSocket session where it stands (`sockets/moving.rs`),
//!    and sends every module's snapshot, one frame per instance (its state
//!    and its pending timers, so no module's state is limited by the size
//!    of a frame), then the sessions with their sockets, then STATE_END.
//! 4. The new process starts every instance from it through
//!    `init(Some(previous))` and sends READY without accepting anything yet
//!    — or REJECT with the reason, and exits.
//! 5. On READY the old process commits: the point of no return. It records
//!    that it handed over (from then on it never writes state, and refuses
//!    every request that would change state, naming the new pid) and sends
//!    COMMIT. Only then does the new process start the moved sessions and
//!    accept connections.
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

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use hotswap_upgrade::handover::{self, AfterCommit, Handover, Hello};
use hotswap_upgrade::takeover::{Arrivals, Takeover};
use tokio::sync::RwLockWriteGuard;

use crate::api;
use crate::daemon::Daemon;
use crate::http::Listening;
use crate::sockets::moving::{self, PausedSessions};

pub mod connections;

// The protocol's own frames (HELLO, STATE_BEGIN, STATE_END, READY, REJECT,
// COMMIT, and MOVED_END after the connections) are `hotswap_upgrade`'s;
// these are the daemon's, which its state and connections travel in.

/// old -> new: one module's snapshot, encoded as the body of a state file
/// (from an old process of a release before [`INSTANCE`]).
pub const STATE: u16 = 2;
/// old -> new: one instance's state, encoded as the body of a state file
/// holding that one instance (so a module's state spans many frames).
pub const INSTANCE: u16 = 7;
/// old -> new, before the end of the state: WebSocket sessions that move
/// with their connections (`sockets/moving.rs` encodes them), their sockets
/// attached (SCM_RIGHTS). Sent only to a new process whose HELLO says it
/// takes them ([`TAKES_SESSIONS`]).
pub const SESSIONS: u16 = 9;
/// old -> new, after COMMIT: one keep-alive HTTP connection of the public
/// port, parked at a request boundary, its socket attached (payload:
/// `ParkedRecord::to_bytes`). Sent only to a new process whose HELLO says
/// it takes them ([`TAKES_CONNECTIONS`]); see `upgrade/connections.rs`.
pub const CONNECTIONS: u16 = 10;
/// What HELLO says the new process takes (one byte of flags after its
/// pid). An old process of an earlier release reads only the pid, or only
/// [`TAKES_SESSIONS`].
pub const TAKES_SESSIONS: u8 = 1;
/// HELLO flag: the new process takes the public port's open connections.
pub const TAKES_CONNECTIONS: u8 = 2;

/// What the old process's drain needs after the deadline to hand the last
/// parked connections over.
const MOVE_GRACE: Duration = Duration::from_secs(2);

/// How long the old process waits for its sessions to pause for a move.
const PAUSE_WAIT: Duration = Duration::from_secs(2);

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
    let config = daemon.config();
    let mut command = std::process::Command::new(binary);
    command.args(&daemon.args);
    let sockets = daemon.handoff_sockets();
    let lent: Vec<(&str, std::os::fd::BorrowedFd<'_>)> =
        sockets.iter().map(|(name, fd)| (name.as_str(), fd.as_fd())).collect();
    let options = handover::Options {
        ready_timeout: config.upgrade_timeout,
        // From `started`, as the lifecycle's: waiting for a swap counts.
        deadline: Some(started + config.upgrade_timeout),
        timeout_setting: Some("upgrade.ready_timeout".into()),
    };
    let mut host = DaemonHandover {
        daemon,
        runtime,
        frozen: None,
        paused: None,
        takes: 0,
        frozen_since: None,
        frozen_for: Duration::ZERO,
        new_pid: 0,
    };
    let upgraded = handover::upgrade(command, &lent, &mut host, &options)?;
    let progress = daemon.progress().unwrap_or_else(|| api::Upgrade::new(binary, "draining"));
    Ok(api::Upgraded {
        old_pid: std::process::id(),
        new_pid: upgraded.new_pid,
        took_ms: started.elapsed().as_millis() as u64,
        startup_ms: upgraded.startup.as_millis() as u64,
        frozen_ms: host.frozen_for.as_millis() as u64,
        modules: progress.modules_sent,
        instances: progress.instances_sent,
        state_bytes: progress.bytes_sent,
    })
}

/// The daemon's part in [`handover::upgrade`].
struct DaemonHandover<'a> {
    daemon: &'a Arc<Daemon>,
    runtime: &'a tokio::runtime::Handle,
    /// Held from the freeze to the commit or the roll-back: no call runs.
    frozen: Option<RwLockWriteGuard<'a, ()>>,
    /// Sessions stopped for the move; they resume here if dropped unmoved.
    paused: Option<PausedSessions<'a>>,
    /// HELLO's flags: what the new process takes.
    takes: u8,
    /// When the freeze began, while it lasts.
    frozen_since: Option<Instant>,
    /// How long calls were held, once the freeze ended in a commit.
    frozen_for: Duration,
    /// The new process, once it is ready.
    new_pid: u32,
}

impl Handover for DaemonHandover<'_> {
    fn spawned(&mut self, pid: u32) {
        self.daemon.update_progress(|progress| {
            progress.phase = "waiting for ready".into();
            progress.new_pid = Some(pid);
        });
    }

    fn freeze(&mut self, hello: &Hello, deadline: Instant) -> Result<(), String> {
        let daemon = self.daemon;
        self.takes = hello.takes.first().copied().unwrap_or(0);
        // Freeze: no new connection here, no call running, then send the state.
        daemon.update_progress(|progress| progress.phase = "transferring state".into());
        let _ = daemon.listening.send(Listening::Pause);
        // Calls that do not end by the deadline (a stuck one) make the upgrade
        // give up: waiting on would hold every other call behind this freeze.
        let frozen = self.runtime.block_on(tokio::time::timeout_at(deadline.into(), daemon.gate.write()));
        let Ok(frozen) = frozen else {
            let running = daemon.calls.running_for(Duration::ZERO);
            let running: Vec<String> = running.iter().map(ToString::to_string).collect();
            return Err(format!(
                "calls still running at the deadline ({}); the state can only move between calls",
                running.join("; ")
            ));
        };
        self.frozen = Some(frozen);
        self.frozen_since = Some(Instant::now());
        // Nothing runs now: every serving session stops where it stands and
        // moves with the state (resumed here if the upgrade fails before its
        // commit). A new process of an earlier release takes none.
        if self.takes & TAKES_SESSIONS != 0 {
            self.paused = Some(self.runtime.block_on(daemon.sockets.moving.pause_all(PAUSE_WAIT)));
        }
        Ok(())
    }

    fn send_state(&mut self, out: &mut handover::Sender<'_>) -> Result<(), String> {
        send_state(self.daemon, out, self.paused.as_ref())
    }

    fn before_commit(&mut self, new_pid: u32) -> Result<(), String> {
        // From here this process never writes state again.
        self.new_pid = new_pid;
        self.daemon.lifecycle.hand_over(new_pid).map_err(|now| format!("the upgrade was abandoned: {now}"))
    }

    fn committed(&mut self, after: AfterCommit) {
        let daemon = self.daemon;
        // The new process has the moved sessions: they end here without a close.
        if let Some(paused) = self.paused.take() {
            paused.moved();
        }
        // The open connections of the public port move too, each at its next
        // request boundary (`Listening::HandOver` parks them). Without that,
        // they are forwarded and closed.
        if self.takes & TAKES_CONNECTIONS != 0 {
            let until = Instant::now() + daemon.config().shutdown_timeout + MOVE_GRACE;
            if let Err(err) = daemon.outgoing.start(after, until) {
                tracing::warn!("cannot move the open connections ({err}); they are forwarded and closed");
            }
        }
        // Requests still arriving here are forwarded to the new process.
        let _ = daemon.handed_over.set((daemon.forward_address(), self.new_pid));
        daemon.draining.store(true, SeqCst);
        self.frozen = None;
        self.frozen_for = self.frozen_since.take().map_or(Duration::ZERO, |since| since.elapsed());
        let _ = daemon.listening.send(Listening::HandOver);
    }

    fn rolled_back(&mut self, _reason: &str) {
        // Paused sessions resume, calls run again, connections are accepted.
        self.paused = None;
        self.frozen = None;
        self.frozen_since = None;
        let _ = self.daemon.listening.send(Listening::Accept);
    }
}

/// Sends every instance's snapshot (one frame each), then the paused
/// sessions with their sockets.
fn send_state(
    daemon: &Daemon,
    out: &mut handover::Sender<'_>,
    paused: Option<&PausedSessions<'_>>,
) -> Result<(), String> {
    let lost = |err: std::io::Error| format!("the control socket failed while sending the state: {err}");
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
            out.send(INSTANCE, &encoded, &[]).map_err(|err| {
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
        // As many SESSIONS frames as their sockets need.
        for sessions in paused.sessions.chunks(hotswap_upgrade::pass::MAX_DESCRIPTORS) {
            let records: Vec<&moving::MovedSession> = sessions.iter().map(|paused| &paused.session).collect();
            let sockets: Vec<_> = sessions.iter().map(|paused| paused.socket.as_fd()).collect();
            out.send(SESSIONS, &moving::encode(&records), &sockets).map_err(lost)?;
        }
    }
    Ok(())
}

/// The control channel of a new process that took the state.
#[derive(Debug)]
pub struct Taken {
    takeover: Takeover,
    /// WebSocket sessions moved here with their sockets, to start at the commit.
    pub sessions: moving::Adopted,
}

/// In the new process: says HELLO, takes every module's state and starts
/// its instances. On error, says REJECT with the reason (and the caller
/// exits).
pub fn receive_state(daemon: &Daemon, control: OwnedFd) -> Result<Taken, String> {
    // Tests stand in for a new binary of an earlier release, which takes
    // neither sessions nor connections.
    let takes: &[u8] = match std::env::var_os("HOTSWAP_TEST_TAKE_NO_SESSIONS") {
        Some(_) => &[],
        None => &[TAKES_SESSIONS | TAKES_CONNECTIONS],
    };
    let mut takeover = Takeover::hello(control, takes)?;
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
        while let Some(hotswap_upgrade::pass::Received { frame: received, fds }) = takeover.receive()? {
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
                other => return Err(format!("unexpected frame kind {other} during the state transfer")),
            }
        }
        if let Some(done) = pending.take() {
            adopt(done)?;
        }
        Ok((modules, instances, bytes))
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
            Ok(Taken { takeover, sessions })
        }
        Err(reason) => {
            takeover.reject(&reason);
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
/// exit without accepting. After a commit, returns where the open
/// connections arrive (`connections::receive_all`).
pub fn ready_then_commit(taken: Taken) -> Result<Arrivals, String> {
    taken.takeover.ready()
}
