//! Run with: `cargo run -p chat-server -- MODULE FILE [PORT]`
//! e.g. `cargo build -p chat-room`, then `cargo run -p chat-server -- chat-room
//! target/debug/libchat_room.so 9001`, and connect browsers or `websocat` to
//! `ws://127.0.0.1:9001/kitchen?name=ann`, saying `{"text": "hi"}`.
//!
//! A WebSocket chat server in plain tokio that embeds the engine: the
//! engine's sessions API is all a host needs to put a module behind its own
//! WebSocket front (docs/README.md, "Sessions"), and `hotswap-upgrade` all
//! it needs to replace its own binary without closing a connection.
//!
//! Connect to `ws://127.0.0.1:PORT/ROOM?QUERY`: the path names the room (an
//! instance of the module, `lobby` if empty), the query is the join request
//! the module's `on_join` sees. Each text or binary message goes to its
//! `on_message`; what the module pushes comes back on the socket. Rooms with
//! sessions tick every second.
//!
//! What survives what:
//! * Overwrite FILE and send SIGHUP: the module's code is swapped. Every
//!   connection stays open, every room keeps its state.
//! * Put a new build at this binary's path and send SIGUSR2: a new process
//!   of it takes over (upgrade.rs, takeover.rs). It gets the listening
//!   socket, the rooms' state, and every session with its connection: same
//!   session id, same room, no `on_join`/`on_leave`, no close frame; bytes
//!   the client sent meanwhile (even half a frame) and pushes not yet
//!   written go on in order. The old process exits. If the new process
//!   fails before it commits, nothing moved: the old one serves on.
//!   What does not move: a connection still in its handshake or join (it
//!   ends with the old process), and a session that does not reach a
//!   message boundary within 2 s (closed with 1001).
//!
//! Prints `listening on ADDRESS`; `swapped ..` or `swap refused: ..` per
//! SIGHUP; `upgraded to pid N (moved K sessions)` or `upgrade refused: ..`
//! per SIGUSR2, and from the new process `took over from pid P: K sessions`,
//! all on stdout (its tests read them: tests/swap.rs, tests/upgrade.rs).

mod record;
mod rooms;
mod session;
mod takeover;
mod upgrade;
mod whole_frames;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hotswap::{Engine, EngineConfig, PushSink};
use hotswap_upgrade::listen;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{RwLock, watch};
use tokio::task::block_in_place;

use rooms::Rooms;
use session::ParkRequest;

const TICK: Duration = Duration::from_secs(1);
/// Room names come from clients: cap how many rooms they can start.
const MAX_ROOMS: usize = 1000;

struct Server {
    engine: Engine,
    module: String,
    file: std::path::PathBuf,
    rooms: Arc<Rooms>,
    /// Engine calls hold it for reading; an upgrade's freeze holds it for
    /// writing, so no call runs while the state leaves, nor after it left.
    gate: Arc<RwLock<()>>,
    /// The next session's id: ids are never reused, across upgrades too.
    next_id: AtomicU64,
    /// How to ask each joined session to park, by id.
    parking: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<ParkRequest>>>,
    /// Whether to accept connections (not while an upgrade is frozen).
    accepting: watch::Sender<bool>,
}

impl Server {
    fn parking(&self) -> MutexGuard<'_, HashMap<u64, tokio::sync::oneshot::Sender<ParkRequest>>> {
        self.parking.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    /// Ids go on from `next` (the old process's next id).
    fn continue_ids(&self, next: u64) {
        self.next_id.fetch_max(next, Ordering::SeqCst);
    }
}

/// Ticks every room with sessions.
async fn tick(server: Arc<Server>) {
    for room in server.rooms.busy() {
        let gate = server.gate.clone().read_owned().await;
        let ticked = block_in_place(|| server.engine.tick(&server.module, &room));
        drop(gate);
        ticked.unwrap_or_else(|failed| eprintln!("tick: {failed}"));
    }
}

/// Loads the module's file again: a swap, which the sessions do not notice.
async fn swap(server: Arc<Server>) {
    let gate = server.gate.clone().read_owned().await;
    match block_in_place(|| server.engine.load(&server.module, &server.file)) {
        Ok(report) => println!("swapped {report}"),
        Err(refused) => println!("swap refused: {refused}"),
    }
    drop(gate);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(module), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: chat-server MODULE FILE [PORT]".into());
    };
    let port: u16 = args.next().map_or(Ok(0), |port| port.parse())?;
    // Started by an upgrade: the listening socket and the control socket.
    let mut inherited = listen::take()?;
    let control = hotswap_upgrade::takeover::control(&mut inherited);
    let inherited = inherited.into_iter().find(|socket| socket.name == upgrade::LISTENER);

    let rooms = Arc::new(Rooms::default());
    let sink_rooms = rooms.clone();
    let on_push = Some(PushSink::new(move |_module, room, pushes| sink_rooms.deliver(room, pushes)));
    let engine = Engine::new(EngineConfig { on_push, ..EngineConfig::default() });
    println!("loaded {}", engine.load(&module, &file)?);
    engine.set_max_instances(&module, Some(MAX_ROOMS))?;
    let server = Arc::new(Server {
        engine,
        module,
        file: file.into(),
        rooms,
        gate: Arc::default(),
        next_id: AtomicU64::new(1),
        parking: Mutex::default(),
        accepting: watch::Sender::new(true),
    });
    if let Some(control) = control
        && let Err(reason) = block_in_place(|| takeover::take_over(&server, control))
    {
        eprintln!("not taking over: {reason}");
        std::process::exit(1);
    }

    let listener = match inherited {
        Some(socket) => {
            let listener = std::net::TcpListener::from(socket.fd);
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)?
        }
        None => TcpListener::bind(("127.0.0.1", port)).await?,
    };
    let listener = Arc::new(listener);
    println!("listening on {}", listener.local_addr()?);
    let mut hangups = signal(SignalKind::hangup())?;
    let mut upgrades = signal(SignalKind::user_defined2())?;
    let mut ticks = tokio::time::interval(TICK);
    let mut accepting = server.accepting.subscribe();
    let mut upgrading = None;
    loop {
        tokio::select! {
            accepted = listener.accept(), if *accepting.borrow() => match accepted {
                Ok((stream, _)) => {
                    let id = server.next_id.fetch_add(1, Ordering::SeqCst);
                    drop(tokio::spawn(session::serve(server.clone(), stream, id)));
                }
                // Out of descriptors, say: wait for some to be freed.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = accepting.changed() => {}
            _ = hangups.recv() => drop(tokio::spawn(swap(server.clone()))),
            _ = ticks.tick() => drop(tokio::spawn(tick(server.clone()))),
            _ = upgrades.recv() => match upgrading {
                Some(_) => println!("upgrade refused: an upgrade is already running"),
                None => {
                    let (server, listener, runtime) = (server.clone(), listener.clone(), tokio::runtime::Handle::current());
                    upgrading = Some(tokio::task::spawn_blocking(move || upgrade::upgrade(server, &listener, runtime)));
                }
            },
            finished = async { upgrading.as_mut().expect("guarded by the condition").await }, if upgrading.is_some() => {
                upgrading = None;
                if matches!(finished, Ok(true)) {
                    break; // The new process serves.
                }
            }
        }
    }
    // Not through the runtime's shutdown: tasks held at the gate never end.
    std::process::exit(0)
}
