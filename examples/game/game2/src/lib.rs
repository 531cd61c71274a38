//! `game` 1002, shown as "game2": the second version of the game demo's module.
//!
//! What changed since game1 (1001): players are records, kept in the order
//! they joined, and each has a level (1, then one more every 100 points).
//! The methods are the same: `hello`, `join` (a player name), `score`
//! (`NAME POINTS`) and `state`. `hits` still counts the `hello`s answered.
//!
//! The snapshot is JSON with a `layout` number. This version writes layout
//! 2: `players` is a list of `{name, score, level}` in join order. Its
//! `init` migrates game1's layout 1 (`players` is an object, name to score,
//! which has no join order: the players line up by name) and reads its own.

use std::collections::BTreeMap;

use hotswap_module::{Module, ModuleError, Previous, export_module};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The name `hello` shows. `Module::NAME` stays "game" in every version.
const DISPLAY_NAME: &str = "game2";
/// The snapshot layout this version writes.
const LAYOUT: u32 = 2;

#[derive(Debug)]
pub struct Game {
    /// The version and display name this state was taken over from ("0" and "" when fresh).
    old_version: String,
    old_name: String,
    hits: u64,
    /// In the order they joined.
    players: Vec<Player>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Player {
    name: String,
    score: u64,
    level: u64,
}

impl Player {
    fn new(name: String, score: u64) -> Player {
        Player { name, score, level: level_for(score) }
    }
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

impl Module for Game {
    const NAME: &'static str = "game";
    const VERSION: &'static str = "1002";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let Some(previous) = previous else {
            return Ok(Game {
                old_version: "0".into(),
                old_name: String::new(),
                hits: 0,
                players: Vec::new(),
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
            // The migration from game1: each name and score becomes a record.
            1 => serde_json::from_value::<BTreeMap<String, u64>>(saved.players)
                .map(|scores| scores.into_iter().map(|(name, score)| Player::new(name, score)).collect()),
            2 => serde_json::from_value(saved.players),
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
                if let Some(player) = self.players.iter().find(|player| player.name == payload) {
                    return Err(format!("{payload} has already joined ({} points)", player.score).into());
                }
                self.players.push(Player::new(payload.to_owned(), 0));
                format!("{payload} joined as player {}", self.players.len())
            }
            "score" => {
                let (name, points) = parse_score(payload)?;
                let player = self
                    .players
                    .iter_mut()
                    .find(|player| player.name == name)
                    .ok_or_else(|| no_player(name))?;
                let score = player.score.checked_add(points).ok_or("that score would be too large")?;
                let level = level_for(score);
                let level_up = if level > player.level { " (level up!)" } else { "" };
                (player.score, player.level) = (score, level);
                format!("{name} has {score} points, level {level}{level_up}")
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

/// Level 1 from 0 points, one more every 100 points.
fn level_for(score: u64) -> u64 {
    1 + score / 100
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
