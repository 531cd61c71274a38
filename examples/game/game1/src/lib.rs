//! `game` 1001, shown as "game1": the first version of the game demo's module.
//!
//! State: the players who joined, their scores, and `hits`, how many times
//! `hello` was answered. `snapshot` writes all of it and `init` reads it
//! back, so it survives every swap and a restart of the daemon.
//!
//! | method | payload | reply |
//! |---|---|---|
//! | `hello` | none | who serves, and which version it took over from |
//! | `join` | a player name | the player joins with 0 points |
//! | `score` | `NAME POINTS` | adds the points to the player's score |
//! | `state` | none | the whole state, as JSON |
//!
//! The snapshot is JSON with a `layout` number. Layout 1 (this version)
//! keeps `players` as an object, name to score. Layout 2 (game2, version
//! 1002) keeps a list of player records in join order. This version reads
//! both, so a swap back from game2 keeps every player and score; the join
//! order and the levels are lost on the way back.

use std::collections::BTreeMap;

use hotswap_module::{Module, ModuleError, Previous, export_module};
use serde::Deserialize;
use serde_json::{Value, json};

/// The name `hello` shows. `Module::NAME` stays "game" in every version.
const DISPLAY_NAME: &str = "game1";
/// The snapshot layout this version writes.
const LAYOUT: u32 = 1;

#[derive(Debug)]
pub struct Game {
    /// The version and display name this state was taken over from ("0" and "" when fresh).
    old_version: String,
    old_name: String,
    hits: u64,
    /// Player name to score.
    players: BTreeMap<String, u64>,
}

/// A snapshot, from any version: how to read `players` depends on `layout`.
#[derive(Deserialize)]
struct Saved {
    layout: u32,
    name: String,
    old_version: String,
    old_name: String,
    hits: u64,
    players: Value,
}

/// A player in layout 2. The fields this version does not know are skipped.
#[derive(Deserialize)]
struct Record {
    name: String,
    score: u64,
}

impl Module for Game {
    const NAME: &'static str = "game";
    const VERSION: &'static str = "1001";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let Some(previous) = previous else {
            return Ok(Game {
                old_version: "0".into(),
                old_name: String::new(),
                hits: 0,
                players: BTreeMap::new(),
            });
        };
        let cannot_read = |why: String| {
            ModuleError::new(format!(
                "{DISPLAY_NAME} {} cannot read the {}-byte snapshot of {} {}: {why}",
                Self::VERSION,
                previous.state().len(),
                previous.name(),
                previous.version()
            ))
        };
        let saved: Saved =
            serde_json::from_slice(previous.state()).map_err(|err| cannot_read(err.to_string()))?;
        let layout = saved.layout;
        let players = match layout {
            1 => serde_json::from_value(saved.players),
            2 => serde_json::from_value::<Vec<Record>>(saved.players)
                .map(|records| records.into_iter().map(|record| (record.name, record.score)).collect()),
            other => return Err(cannot_read(format!("it knows layouts 1 and 2, not {other}"))),
        }
        .map_err(|err| cannot_read(format!("layout {layout}: {err}")))?;
        // After a restart the daemon hands a version its own state back:
        // it keeps the version it had taken over from.
        let (old_version, old_name) = if previous.version() == Self::VERSION {
            (saved.old_version, saved.old_name)
        } else {
            (previous.version().to_owned(), saved.name)
        };
        Ok(Game { old_version, old_name, hits: saved.hits, players })
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let payload = std::str::from_utf8(payload).map_err(|_| "the payload must be UTF-8 text")?.trim();
        // Each arm checks first, then changes: an error leaves the state as it was.
        let reply = match method {
            "hello" => {
                self.hits += 1;
                format!(
                    "hello test, this is hotswap test!, version={}, name={DISPLAY_NAME}, oldversion={}, oldName={}",
                    Self::VERSION,
                    self.old_version,
                    self.old_name
                )
            }
            "join" => {
                check_player_name(payload)?;
                if let Some(score) = self.players.get(payload) {
                    return Err(format!("{payload} has already joined ({score} points)").into());
                }
                self.players.insert(payload.to_owned(), 0);
                format!("{payload} joined; {} in the game", self.players.len())
            }
            "score" => {
                let (name, points) = parse_score(payload)?;
                let score = self.players.get_mut(name).ok_or_else(|| no_player(name))?;
                *score = score.checked_add(points).ok_or("that score would be too large")?;
                format!("{name} has {score} points")
            }
            "state" => serde_json::to_string_pretty(&self.to_json()).map_err(|err| err.to_string())?,
            other => {
                return Err(format!(
                    "{DISPLAY_NAME} has no method {other:?}: try hello, join, score or state"
                )
                .into());
            }
        };
        Ok(reply.into_bytes())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        serde_json::to_vec(&self.to_json()).map_err(|err| ModuleError::new(err.to_string()))
    }
}

impl Game {
    /// The snapshot, and what `state` shows.
    fn to_json(&self) -> Value {
        json!({
            "layout": LAYOUT,
            "version": Self::VERSION,
            "name": DISPLAY_NAME,
            "old_version": self.old_version,
            "old_name": self.old_name,
            "hits": self.hits,
            "players": self.players,
        })
    }
}

/// A player name is one word of 1 to 32 characters.
fn check_player_name(name: &str) -> Result<(), ModuleError> {
    if name.is_empty() || name.chars().count() > 32 || name.contains(char::is_whitespace) {
        return Err(format!("a player name is one word of 1 to 32 characters, got {name:?}").into());
    }
    Ok(())
}

/// `"alice 10"` gives `("alice", 10)`.
fn parse_score(payload: &str) -> Result<(&str, u64), ModuleError> {
    let mut words = payload.split_whitespace();
    let (Some(name), Some(points), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("score takes \"NAME POINTS\", like \"alice 10\", got {payload:?}").into());
    };
    let points =
        points.parse().map_err(|_| format!("points must be a whole number, 0 or more, got {points:?}"))?;
    Ok((name, points))
}

fn no_player(name: &str) -> ModuleError {
    format!("no player named {name:?}: join first").into()
}

export_module!(Game);
