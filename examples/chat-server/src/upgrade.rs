//! `kill -USR2`: the old process's side of an upgrade to a new process of
//! the same binary, through `hotswap_upgrade::handover` (docs/upgrade.md,
//! "Embedding the upgrade"). The new process's side is takeover.rs.
//!
//! Freezing stops accepting, shuts the gate (no engine call runs from then
//! on) and parks every session between two messages. The state then leaves
//! as frames of this server's own kinds: a header, the module's snapshot,
//! one record per session with its socket attached. After the commit this
//! process drops its copies of the sockets (the connections stay open, held
//! by the new process) and exits; on any failure before it, every parked
//! session goes on here and accepting resumes.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap_upgrade::handover::{self, AfterCommit, Handover, Hello, Sender};
use hotswap_upgrade::protocol::FIRST_HOST_KIND;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{OwnedRwLockWriteGuard, oneshot};

use crate::session::{self, PARK_WAIT, Parked};
use crate::{Server, record};

/// The listening socket's name among the inherited ones.
pub const LISTENER: &str = "chat";
/// What a new process says in its HELLO that it takes: a binary of another
/// release that says otherwise gets nothing, and the upgrade is refused.
/// It names the record layout, so a new layout cannot go unsaid.
pub fn takes() -> Vec<u8> {
    format!("chat-server sessions, record layout {}", record::VERSION).into_bytes()
}

/// The frames of this server: its header (record layout, pid, next session id)…
pub const HEADER: u16 = FIRST_HOST_KIND;
/// …the module's snapshot (`ModuleSnapshot::to_bytes`)…
pub const MODULE_STATE: u16 = FIRST_HOST_KIND + 1;
/// …and one per session (`record.rs`), its socket attached.
pub const SESSION: u16 = FIRST_HOST_KIND + 2;
/// From the start of the new process to its READY.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an upgrade (blocking: call it from `spawn_blocking`) and prints its
/// outcome. `true`: the new process serves, this one should exit.
pub fn upgrade(server: Arc<Server>, listener: &TcpListener, runtime: Handle) -> bool {
    let mut command = Command::new(this_binary());
    command.args(std::env::args_os().skip(1));
    let mut old = OldSide { server, runtime, frozen: None, parked: Vec::new(), moved: 0, closed: 0 };
    let options = handover::Options::new(READY_TIMEOUT);
    match handover::upgrade(command, &[(LISTENER, listener.as_fd())], &mut old, &options) {
        Ok(upgraded) => {
            println!("upgraded to pid {} (moved {} sessions)", upgraded.new_pid, old.moved);
            if old.closed > 0 {
                println!("closed {} sessions that did not stop in time, with 1001", old.closed);
            }
            true
        }
        Err(reason) => {
            println!("upgrade refused: {}", reason.replace('\n', " "));
            false
        }
    }
}

/// The binary this process runs. After a new build was put at its path,
/// Linux names the one running "PATH (deleted)": the new one at PATH is
/// the one to start.
fn this_binary() -> PathBuf {
    let binary =
        std::env::current_exe().unwrap_or_else(|_| std::env::args_os().next().unwrap_or_default().into());
    match binary.to_str().and_then(|path| path.strip_suffix(" (deleted)")) {
        Some(path) => path.into(),
        None => binary,
    }
}

struct OldSide {
    server: Arc<Server>,
    runtime: Handle,
    /// Held from the freeze: no engine call runs.
    frozen: Option<OwnedRwLockWriteGuard<()>>,
    parked: Vec<Parked>,
    moved: usize,
    /// Sessions that closed rather than park in time.
    closed: usize,
}

impl Handover for OldSide {
    fn freeze(&mut self, hello: &Hello, deadline: Instant) -> Result<(), String> {
        if hello.takes != takes() {
            return Err(format!(
                "the new process takes {:?}, this one hands over {:?}: start a chat-server of this release",
                String::from_utf8_lossy(&hello.takes),
                String::from_utf8_lossy(&takes())
            ));
        }
        self.server.accepting.send_replace(false);
        let gate = self.server.gate.clone().write_owned();
        let gate = self.runtime.block_on(tokio::time::timeout_at(deadline.into(), gate));
        self.frozen = Some(gate.map_err(|_| "engine calls were still running at the upgrade's deadline")?);
        // Every session that joined is enlisted: ask each to park.
        let asks: Vec<_> = self.server.parking().drain().map(|(_, ask)| ask).collect();
        let answers: Vec<oneshot::Receiver<Parked>> = (asks.into_iter())
            .filter_map(|ask| {
                let (reply, answer) = oneshot::channel();
                ask.send(reply).ok().map(|()| answer)
            })
            .collect();
        let until = tokio::time::Instant::from_std(deadline.min(Instant::now() + PARK_WAIT + PARK_WAIT));
        self.runtime.block_on(async {
            for answer in answers {
                match tokio::time::timeout_at(until, answer).await {
                    Ok(Ok(parked)) => self.parked.push(parked),
                    _ => self.closed += 1,
                }
            }
        });
        Ok(())
    }

    fn send_state(&mut self, out: &mut Sender<'_>) -> Result<(), String> {
        let lost = |err: std::io::Error| format!("the control socket failed while sending the state: {err}");
        let mut header = vec![record::VERSION];
        header.extend_from_slice(&std::process::id().to_le_bytes());
        header.extend_from_slice(&self.server.next_id().to_le_bytes());
        out.send(HEADER, &header, &[]).map_err(lost)?;
        let snapshot = (self.server.engine.snapshot(&self.server.module))
            .map_err(|err| format!("cannot snapshot {}: {err}", self.server.module))?;
        out.send(MODULE_STATE, &snapshot.to_bytes(), &[]).map_err(lost)?;
        for session in &self.parked {
            let socket = session.socket.get_ref().get_ref().as_fd();
            out.send(SESSION, &record::encode(session), &[socket]).map_err(lost)?;
        }
        Ok(())
    }

    fn committed(&mut self, after: AfterCommit) {
        drop(after); // No connection moves after the commit.
        // The new process owns the sockets: ours close, the connections stay.
        self.moved = self.parked.len();
        self.parked.clear();
        // This process never runs another call: the gate stays shut until it exits.
        std::mem::forget(self.frozen.take());
    }

    fn rolled_back(&mut self, _reason: &str) {
        for session in self.parked.drain(..) {
            let park = session::enlist(&self.server, session.id);
            self.runtime.spawn(session::run(self.server.clone(), session, park));
        }
        self.frozen = None;
        self.server.accepting.send_replace(true);
    }
}
