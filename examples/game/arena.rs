//! The arena both game versions share (included by each with `#[path]`):
//! the players connected over WebSocket sessions, where they stand, and the
//! coin they run for. It is part of each version's state, so the sessions
//! and positions move through every swap with the scores.
//!
//! Messages a session sends (JSON), each with an optional `seq` the arena
//! acknowledges with `{"type": "ack", "seq": N}`, so a client can check
//! that none was lost:
//!
//! | message | what it does |
//! |---|---|
//! | `{"type": "move", "dx": 1, "dy": 0}` | one step (dx, dy in -1..=1) on the 16 x 12 board; the coin is worth 10 points |
//! | `{"type": "score", "points": 5}` | adds points, as `POST /score` does |
//! | `{"type": "ping"}` | nothing but the ack |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const WIDTH: i32 = 16;
pub const HEIGHT: i32 = 12;
/// What picking up the coin scores.
pub const COIN_POINTS: u64 = 10;

#[derive(Debug, Serialize, Deserialize)]
pub struct Arena {
    /// Session id → who plays in it and where.
    pub sessions: BTreeMap<u64, Avatar>,
    pub coin: Cell,
    /// Moves the coin somewhere new each time it is picked up.
    seed: u64,
    pub ticks: u64,
}

impl Default for Arena {
    fn default() -> Self {
        Arena { sessions: BTreeMap::new(), coin: Cell { x: WIDTH / 2, y: HEIGHT / 2 }, seed: 1, ticks: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub x: i32,
    pub y: i32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Avatar {
    pub name: String,
    pub at: Cell,
    /// Messages acknowledged so far in this session.
    pub acked: u64,
}

/// The query string of `GET /ws/game?instance=arena&name=ana`.
#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub name: String,
}

/// A message from a session.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Move { dx: i32, dy: i32, seq: Option<u64> },
    Score { points: u64, seq: Option<u64> },
    Ping { seq: Option<u64> },
}

impl Command {
    pub fn seq(&self) -> Option<u64> {
        match self {
            Command::Move { seq, .. } | Command::Score { seq, .. } | Command::Ping { seq } => *seq,
        }
    }
}

/// What the arena pushes besides the tick.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    /// To the session that joined: its id and who serves it.
    Welcome {
        session: u64,
        name: &'a str,
        version: &'a str,
        served_by: &'a str,
    },
    Ack {
        seq: u64,
    },
    Left {
        session: u64,
        name: &'a str,
    },
}

/// Every tick, to every session: who serves, and the whole board.
#[derive(Debug, Serialize)]
pub struct Tick<'a, P> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: &'a str,
    pub served_by: &'a str,
    pub tick: u64,
    pub coin: Cell,
    pub players: Vec<P>,
}

impl Arena {
    /// Seats a new session. A name already seated takes its seat and
    /// position back: a player who reconnects (from another tab, or after
    /// a process upgrade, whose sessions this process never had). The old
    /// session is not closed from here: after an upgrade its id may be
    /// reused by a session of this process that is joining right now; if
    /// it is still connected, its next move is refused as not joined.
    pub fn join(&mut self, session: u64, name: &str) {
        let old = self.sessions.iter().find(|(_, avatar)| avatar.name == name).map(|(old, _)| *old);
        let seat = old.and_then(|old| self.sessions.remove(&old));
        let at = seat.as_ref().map_or(Cell { x: (session % WIDTH as u64) as i32, y: 0 }, |seat| seat.at);
        let acked = seat.map_or(0, |seat| seat.acked);
        self.sessions.insert(session, Avatar { name: name.to_owned(), at, acked });
    }

    pub fn avatar(&mut self, session: u64) -> Result<&mut Avatar, String> {
        self.sessions.get_mut(&session).ok_or_else(|| {
            format!("session {session} has not joined the arena, or its name joined again elsewhere")
        })
    }

    /// Moves a session one step (clamped to the board); the points it won.
    pub fn step(&mut self, session: u64, dx: i32, dy: i32) -> Result<u64, String> {
        if !(-1..=1).contains(&dx) || !(-1..=1).contains(&dy) {
            return Err(format!("a move is one step: dx and dy in -1..=1, got dx={dx} dy={dy}"));
        }
        let coin = self.coin;
        let avatar = self.avatar(session)?;
        avatar.at =
            Cell { x: (avatar.at.x + dx).clamp(0, WIDTH - 1), y: (avatar.at.y + dy).clamp(0, HEIGHT - 1) };
        if avatar.at != coin {
            return Ok(0);
        }
        self.move_coin();
        Ok(COIN_POINTS)
    }

    fn move_coin(&mut self) {
        // A small linear congruential step: a fresh place each time, the
        // same in every version (the seed is state).
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let place = self.seed >> 33;
        self.coin =
            Cell { x: (place % WIDTH as u64) as i32, y: ((place / WIDTH as u64) % HEIGHT as u64) as i32 };
    }
}
