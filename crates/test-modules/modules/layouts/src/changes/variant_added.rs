//! A variant appended to `Phase` at layout 1: old snapshots stay readable
//! (every old variant keeps its index), so the swap must succeed.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::{Pos, no_migration, unknown};

pub const NAME: &str = "layouts";
pub const VERSION: &str = "1.2.0";
pub const LAYOUT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub calls: u32,
    pub pos: Pos,
    pub phase: Phase,
    pub name: String,
    pub log: Vec<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Lobby,
    Playing(u32),
    Ended {
        winner: String,
    },
    Paused,
}

impl State {
    pub fn handle(&mut self, method: &str, _payload: &str) -> Result<Vec<u8>, ModuleError> {
        match method {
            "pause" => self.phase = Phase::Paused,
            other => return Err(unknown(other)),
        }
        Ok(Vec::new())
    }
}

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    Err(no_migration(VERSION, previous))
}
