//! The parts of layout 1 that most changed versions keep as they are.

// Each version of the state uses a different part of this file.
#![allow(dead_code)]

use hotswap_module::ModuleError;
use serde::{Deserialize, Serialize};

/// The state of layout 1: a `u32`, a nested struct of two `u16`, an enum
/// in use, a string and a sequence.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub calls: u32,
    pub pos: Pos,
    pub phase: Phase,
    pub name: String,
    pub log: Vec<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pos {
    pub x: u16,
    pub y: u16,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Lobby,
    Playing(u32),
    Ended {
        winner: String,
    },
}

impl State {
    /// `touch` changes every field; `end WINNER` puts the last variant of
    /// `Phase` in use.
    pub fn handle(&mut self, method: &str, payload: &str) -> Result<Vec<u8>, ModuleError> {
        match method {
            "touch" => {
                self.calls += 1;
                self.pos.x += 1;
                self.pos.y += 2;
                self.phase = Phase::Playing(self.calls);
                self.name = format!("room-{}", self.calls);
                self.log.push(u64::from(self.calls) * 1000);
            }
            "end" => self.phase = Phase::Ended { winner: payload.to_owned() },
            other => return Err(unknown(other)),
        }
        Ok(Vec::new())
    }
}

pub fn unknown(method: &str) -> ModuleError {
    ModuleError::new(format!("layouts has no method {method:?}"))
}

/// The migration of a version that keeps layout 1: it has none, so a
/// snapshot of another layout (or a raw one) is refused.
pub fn no_migration(version: &str, previous: hotswap_module::Previous<'_>) -> ModuleError {
    ModuleError::new(format!(
        "layouts {version} keeps layout 1 and cannot read layout {:?} from {} {}",
        previous.layout(),
        previous.name(),
        previous.version()
    ))
}
