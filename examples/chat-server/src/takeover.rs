//! The new process's side of an upgrade (the old one's is upgrade.rs),
//! through `hotswap_upgrade::takeover`: take the header, the module's state
//! and the sessions, register the sessions in their rooms, say READY, and
//! once committed start them where they stopped. Before READY this process
//! serves no one; if anything is wrong it says REJECT with the reason and
//! exits, and the old process serves on.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use hotswap::ModuleSnapshot;
use hotswap_upgrade::takeover::Takeover;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::rooms::QUEUE;
use crate::session::{self, MAX_MESSAGE, Parked};
use crate::upgrade::{HEADER, MODULE_STATE, SESSION, takes};
use crate::whole_frames::WholeFrames;
use crate::{Server, record};

/// A test hook, for tests/upgrade.rs only: when set, a new process rejects
/// the state with this reason, so a test can attack a failed upgrade.
pub const TEST_REJECT: &str = "CHAT_SERVER_TEST_REJECT_UPGRADE";

/// Takes over from the old process on `control` (blocking: call it from
/// `block_in_place`), and prints `took over from pid P: K sessions`. `Err`:
/// this process must exit without serving.
pub fn take_over(server: &Arc<Server>, control: OwnedFd) -> Result<(), String> {
    let mut taking = Takeover::hello(control, &takes())?;
    let taken = receive(server, &mut taking).and_then(|taken| match std::env::var(TEST_REJECT) {
        Ok(reason) => Err(format!("{reason} (test hook {TEST_REJECT})")),
        Err(_) => Ok(taken),
    });
    let (old_pid, sessions) = match taken {
        Ok(taken) => taken,
        Err(reason) => {
            taking.reject(&reason);
            return Err(reason);
        }
    };
    // Nothing is served before the commit: the old process still serves.
    let _arrivals = taking.ready()?;
    let count = sessions.len();
    for session in sessions {
        let park = session::enlist(server, session.id);
        tokio::spawn(session::run(server.clone(), session, park));
    }
    println!("took over from pid {old_pid}: {count} sessions");
    Ok(())
}

/// Everything the old process sends before READY: its pid and the sessions,
/// each registered in its room already (the module's state is adopted).
fn receive(server: &Server, taking: &mut Takeover) -> Result<(u32, Vec<Parked>), String> {
    let mut old_pid = None;
    let mut sessions = Vec::new();
    while let Some(received) = taking.receive()? {
        let (payload, fds) = (&received.frame.payload, received.fds);
        match received.frame.kind {
            HEADER => old_pid = Some(header(server, payload)?),
            MODULE_STATE => {
                let snapshot = ModuleSnapshot::from_bytes(payload)
                    .map_err(|err| format!("the module's state: {err}"))?;
                if snapshot.module != server.module {
                    return Err(format!(
                        "the state is of module {}, this process runs {}",
                        snapshot.module, server.module
                    ));
                }
                server
                    .engine
                    .adopt(&server.module, &snapshot)
                    .map_err(|err| format!("adopting the state: {err}"))?;
            }
            SESSION => {
                let [socket] = <[OwnedFd; 1]>::try_from(fds).map_err(|fds| {
                    format!("a session record came with {} sockets instead of 1", fds.len())
                })?;
                sessions.push(resume(server, record::decode(payload)?, socket)?);
            }
            kind => {
                return Err(format!("frame kind {kind} is not one of this server's ({HEADER} to {SESSION})"));
            }
        }
    }
    let old_pid = old_pid.ok_or("the old process sent no header")?;
    Ok((old_pid, sessions))
}

/// The header: record layout, the old process's pid, the next session id.
fn header(server: &Server, payload: &[u8]) -> Result<u32, String> {
    let Some((&[layout], rest)) = payload.split_first_chunk::<1>() else {
        return Err("an empty header".into());
    };
    if layout != record::VERSION || rest.len() != 12 {
        return Err(format!(
            "a header of layout {layout} and {} bytes; this build reads layout {} and 12 bytes",
            rest.len(),
            record::VERSION
        ));
    }
    let pid = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    server.continue_ids(u64::from_le_bytes(rest[4..].try_into().expect("8 bytes")));
    Ok(pid)
}

/// A moved session, its socket attached, registered in its room.
fn resume(server: &Server, record: record::Record, socket: OwnedFd) -> Result<Parked, String> {
    let socket = std::net::TcpStream::from(socket);
    let socket = socket.set_nonblocking(true).and_then(|()| TcpStream::from_std(socket));
    let socket = socket.map_err(|err| format!("session {}'s socket: {err}", record.id))?;
    let frames = WholeFrames::resume(socket, record.read_ahead, record.write_behind, MAX_MESSAGE);
    let socket = WebSocketStream::from_raw_socket(frames, Role::Server, Some(session::config()));
    let socket = Handle::current().block_on(socket);
    let (queue, incoming) = mpsc::channel(QUEUE);
    server.rooms.insert(&record.room, record.id, queue);
    let (id, room, outgoing, unrun) = (record.id, record.room, record.outgoing, record.unrun);
    Ok(Parked { id, room, socket, outgoing, queue: incoming, unrun })
}
