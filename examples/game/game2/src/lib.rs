//! `game` 1002, shown as "game2": the second version of the game demo's module.
//!
//! What changed since game1 (1001): players are records, kept in the order
//! they joined, and each has a level (1, then one more every 100 points).
//! The methods are the same: `hello`, `join` (`{"name": "alice"}`), `score`
//! (`{"name": "alice", "points": 120}`, which now replies the level too)
//! and `state`. `hits` still counts the `hello`s answered.
//!
//! The state changed shape, so it has a new layout number, 2, and
//! `migrate` reads game1's layout 1 (`players` is a map, name to score,
//! which has no join order: the players line up by name).

use std::collections::BTreeMap;

use hotswap_module::{Context, Module, ModuleError, Previous, Session};
use serde::{Deserialize, Serialize};

#[path = "../../arena.rs"]
mod arena;
use arena::{Arena, Command, Event, JoinRequest, Tick};

/// The name `hello` shows. `Module::NAME` stays "game" in every version.
const DISPLAY_NAME: &str = "game2";

#[derive(Debug, Serialize, Deserialize)]
pub struct Game {
    /// The version and display name this state was taken over from ("0" and "" when fresh).
    old_version: String,
    old_name: String,
    hits: u64,
    /// In the order they joined.
    players: Vec<Player>,
    /// Who plays over a WebSocket session, and where (`arena.rs`).
    arena: Arena,
}

impl Default for Game {
    fn default() -> Self {
        Game {
            old_version: "0".into(),
            old_name: String::new(),
            hits: 0,
            players: Vec::new(),
            arena: Arena::default(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Player {
    name: String,
    score: u64,
    level: u64,
}

impl Player {
    fn new(name: String, score: u64) -> Player {
        Player { name, score, level: level_for(score) }
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
    level: u64,
    level_up: bool,
}

/// The reply of `state`: which version serves, and its state.
#[derive(Debug, Serialize)]
pub struct State<'a> {
    version: &'static str,
    name: &'static str,
    #[serde(flatten)]
    game: &'a Game,
}

/// game1's state (layout 1), kept to read its snapshots. Each field is
/// decoded, as the snapshot has it; what game1 had taken over from is not kept.
#[derive(Deserialize)]
struct Layout1 {
    #[allow(dead_code)]
    old_version: String,
    #[allow(dead_code)]
    old_name: String,
    hits: u64,
    players: BTreeMap<String, u64>,
    arena: Arena,
}

#[hotswap_module::module(name = "game", version = "1002", layout = 2)]
impl Game {
    /// The migration from game1: each name and score becomes a record. A
    /// snapshot of layout 2 (a restart, an upgrade) comes back as it was,
    /// with the version it had taken over from.
    fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError> {
        match previous.layout() {
            Some(1) => {
                let older: Layout1 = previous.decode()?;
                let players = older.players.into_iter().map(|(name, score)| Player::new(name, score));
                Ok(Game {
                    old_version: previous.version().to_owned(),
                    old_name: "game1".into(),
                    hits: older.hits,
                    players: players.collect(),
                    arena: older.arena,
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
        if let Some(player) = self.players.iter().find(|player| player.name == name) {
            return Err(format!("{name} has already joined ({} points)", player.score));
        }
        self.players.push(Player::new(name.clone(), 0));
        Ok(format!("{name} joined as player {}", self.players.len()))
    }

    pub fn score(&mut self, score: Score) -> Result<Scored, String> {
        let Score { name, points } = score;
        let player =
            self.players.iter_mut().find(|player| player.name == name).ok_or_else(|| no_player(&name))?;
        let total = player.score.checked_add(points).ok_or("that score would be too large")?;
        let level = level_for(total);
        let level_up = level > player.level;
        (player.score, player.level) = (total, level);
        Ok(Scored { name, score: total, level, level_up })
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
        if !self.players.iter().any(|player| player.name == name) {
            self.players.push(Player::new(name.clone(), 0));
        }
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

    /// Shows every session the board, the scores and levels, and who serves.
    fn on_tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        self.arena.ticks += 1;
        let players = self
            .arena
            .sessions
            .iter()
            .map(|(session, avatar)| {
                let player = self.players.iter().find(|player| player.name == avatar.name);
                PlayerView {
                    session: *session,
                    name: &avatar.name,
                    x: avatar.at.x,
                    y: avatar.at.y,
                    score: player.map_or(0, |player| player.score),
                    level: player.map_or(1, |player| player.level),
                }
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

/// One player on the board, in a tick: game2 shows the level too.
#[derive(Debug, Serialize)]
struct PlayerView<'a> {
    session: u64,
    name: &'a str,
    x: i32,
    y: i32,
    score: u64,
    level: u64,
}

/// Level 1 from 0 points, one more every 100 points.
fn level_for(score: u64) -> u64 {
    1 + score / 100
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
