//! A field `score` added and the layout number left at 1: must be refused, saying to set a new one.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::{Phase, Pos, no_migration, unknown};

pub const NAME: &str = "layouts";
pub const VERSION: &str = "1.1.0-field-added";
pub const LAYOUT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub calls: u32,
    pub pos: Pos,
    pub phase: Phase,
    pub name: String,
    pub log: Vec<u64>,
    pub score: u64,
}

impl State {
    pub fn handle(&mut self, method: &str, _payload: &str) -> Result<Vec<u8>, ModuleError> {
        Err(unknown(method))
    }
}

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    Err(no_migration(VERSION, previous))
}
