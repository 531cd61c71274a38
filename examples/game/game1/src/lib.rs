//! `game` 1001, shown as "game1": the first version of the game demo's module.
//!
//! State: the players who joined, their scores, and `hits`, how many times
//! `hello` was answered. The state is the `Game` struct; `#[module]`
//! snapshots it (layout 1) and restores it, so it survives every swap and a
//! restart of the daemon.
//!
//! | method | body (JSON) | reply (JSON) |
//! |---|---|---|
//! | `hello` | none | a string: who serves, and which version it took over from |
//! | `join` | `{"name": "alice"}` | `"alice joined; 1 in the game"`, with 0 points |
//! | `score` | `{"name": "alice", "points": 120}` | `{"name": "alice", "score": 120}` |
//! | `state` | none | the whole state |
//!
//! Layout 1 (this version) keeps `players` as a map, name to score. Layout
//! 2 (game2, version 1002) keeps a list of player records in join order.
//! `migrate` reads layout 2, so a swap back from game2 keeps every player
//! and score; the join order and the levels are lost on the way back.

use std::collections::BTreeMap;

use hotswap_module::{Context, Module, ModuleError, Previous, Session};
use serde::{Deserialize, Serialize};

#[path = "../../arena.rs"]
mod arena;
use arena::{Arena, Command, Event, JoinRequest, Tick};

/// The name `hello` shows. `Module::NAME` stays "game" in every version.
const DISPLAY_NAME: &str = "game1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Game {
    /// The version and display name this state was taken over from ("0" and "" when fresh).
    old_version: String,
    old_name: String,
    hits: u64,
    /// Player name to score.
    players: BTreeMap<String, u64>,
    /// Who plays over a WebSocket session, and where (`arena.rs`).
    arena: Arena,
}

impl Default for Game {
    fn default() -> Self {
        Game {
            old_version: "0".into(),
            old_name: String::new(),
            hits: 0,
            players: BTreeMap::new(),
            arena: Arena::default(),
        }
    }
}

/// The body of `join`.
#[derive(Debug, Deserialize)]
pub struct Join {
    name: String,
}

/// The body of `score`.
#[derive(Debug, Deserialize)]
pub struct Score {
    name: String,
    points: u64,
}

/// The reply of `score`.
#[derive(Debug, Serialize)]
pub struct Scored {
    name: String,
    score: u64,
}

/// The reply of `state`: which version serves, and its state.
#[derive(Debug, Serialize)]
pub struct State<'a> {
    version: &'static str,
    name: &'static str,
    #[serde(flatten)]
    game: &'a Game,
}

/// game2's state (layout 2), kept to read its snapshots on a swap back.
/// Each field is decoded, as the snapshot has it; game1 keeps the scores
/// and hits, not the levels or what game2 had taken over from.
#[derive(Deserialize)]
struct Layout2 {
    #[allow(dead_code)]
    old_version: String,
    #[allow(dead_code)]
    old_name: String,
    hits: u64,
    players: Vec<Layout2Player>,
    arena: Arena,
}

#[derive(Deserialize)]
struct Layout2Player {
    name: String,
    score: u64,
    #[allow(dead_code)]
    level: u64,
}

#[hotswap_module::module(name = "game", version = "1001", layout = 1)]
impl Game {
    /// Runs for a snapshot of another layout: game2's, on a swap back. A
    /// snapshot of layout 1 (a restart, an upgrade) comes back as it was,
    /// with the version it had taken over from.
    fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError> {
        match previous.layout() {
            Some(2) => {
                let newer: Layout2 = previous.decode()?;
                let players = newer.players.into_iter().map(|player| (player.name, player.score)).collect();
                Ok(Game {
                    old_version: previous.version().to_owned(),
                    old_name: "game2".into(),
                    hits: newer.hits,
                    players,
                    arena: newer.arena,
                })
            }
            Some(other) => Err(cannot_read(&previous, &format!("layout {other}"))),
            None => Err(cannot_read(&previous, "a snapshot without a layout (a raw module's)")),
        }
    }

    pub fn hello(&mut self) -> String {
        self.hits += 1;
        format!(
            "hello test, this is hotswap test!, version={}, name={DISPLAY_NAME}, oldversion={}, oldName={}",
            Self::VERSION,
            self.old_version,
            self.old_name
        )
    }

    // Each method checks first, then changes: a refusal leaves the state as it was.

    pub fn join(&mut self, join: Join) -> Result<String, String> {
        let name = join.name;
        check_player_name(&name)?;
        if let Some(score) = self.players.get(&name) {
            return Err(format!("{name} has already joined ({score} points)"));
        }
        self.players.insert(name.clone(), 0);
        Ok(format!("{name} joined; {} in the game", self.players.len()))
    }

    pub fn score(&mut self, score: Score) -> Result<Scored, String> {
        let Score { name, points } = score;
        let total = self.players.get_mut(&name).ok_or_else(|| no_player(&name))?;
        *total = total.checked_add(points).ok_or("that score would be too large")?;
        Ok(Scored { score: *total, name })
    }

    pub fn state(&self) -> State<'_> {
        State { version: Self::VERSION, name: DISPLAY_NAME, game: self }
    }

    // The session hooks: players over `GET /ws/game?instance=arena&name=ana`.

    /// Seats the player (who joins the game with 0 points if new) and
    /// welcomes the session with its id and the version serving it.
    fn on_join(&mut self, ctx: &mut Context, session: Session, join: JoinRequest) -> Result<(), ModuleError> {
        let name = join.name;
        check_player_name(&name)?;
        self.arena.join(session.id(), &name);
        self.players.entry(name.clone()).or_insert(0);
        let welcome = Event::Welcome {
            session: session.id(),
            name: &name,
            version: Self::VERSION,
            served_by: DISPLAY_NAME,
        };
        ctx.send_json(session, &welcome)
    }

    fn on_message(
        &mut self,
        ctx: &mut Context,
        session: Session,
        command: Command,
    ) -> Result<(), ModuleError> {
        let name = self.arena.avatar(session.id())?.name.clone();
        let points = match command {
            Command::Move { dx, dy, .. } => self.arena.step(session.id(), dx, dy)?,
            Command::Score { points, .. } => points,
            Command::Ping { .. } => 0,
        };
        if points > 0 {
            self.score(Score { name, points })?;
        }
        self.arena.avatar(session.id())?.acked += 1;
        match command.seq() {
            Some(seq) => ctx.send_json(session, &Event::Ack { seq }),
            None => Ok(()),
        }
    }

    fn on_leave(&mut self, ctx: &mut Context, session: Session) -> Result<(), ModuleError> {
        match self.arena.sessions.remove(&session.id()) {
            Some(avatar) => ctx.broadcast_json(&Event::Left { session: session.id(), name: &avatar.name }),
            None => Ok(()),
        }
    }

    /// Shows every session the board, the scores and who serves.
    fn on_tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.arena.ticks += 1;
        let players = self
            .arena
            .sessions
            .iter()
            .map(|(session, avatar)| PlayerView {
                session: *session,
                name: &avatar.name,
                x: avatar.at.x,
                y: avatar.at.y,
                score: self.players.get(&avatar.name).copied().unwrap_or(0),
            })
            .collect();
        ctx.broadcast_json(&Tick {
            kind: "tick",
            version: Self::VERSION,
            served_by: DISPLAY_NAME,
            tick: self.arena.ticks,
            coin: self.arena.coin,
            players,
        })
    }
}

/// One player on the board, in a tick.
#[derive(Debug, Serialize)]
struct PlayerView<'a> {
    session: u64,
    name: &'a str,
    x: i32,
    y: i32,
    score: u64,
}

/// The refusal of a snapshot `migrate` does not know.
fn cannot_read(previous: &Previous<'_>, what: &str) -> ModuleError {
    ModuleError::new(format!(
        "{DISPLAY_NAME} {} reads layouts 1 and 2, not {what} from {} {}",
        <Game as Module>::VERSION,
        previous.name(),
        previous.version()
    ))
}

/// A player name is one word of 1 to 32 characters.
fn check_player_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 32 || name.contains(char::is_whitespace) {
        return Err(format!("a player name is one word of 1 to 32 characters, got {name:?}"));
    }
    Ok(())
}

fn no_player(name: &str) -> String {
    format!("no player named {name:?}: join first")
}
