//! The nested struct `Pos {x: u16, y: u16}` changed to `{x: u8, y: u8, z: u16}`, as many bytes in
//! memory, the layout number left at 1: must be refused.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::{Phase, no_migration, unknown};

pub const NAME: &str = "layouts";
pub const VERSION: &str = "1.1.0-resized";
pub const LAYOUT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub calls: u32,
    pub pos: SmallPos,
    pub phase: Phase,
    pub name: String,
    pub log: Vec<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename = "Pos")]
pub struct SmallPos {
    pub x: u8,
    pub y: u8,
    pub z: u16,
}

impl State {
    pub fn handle(&mut self, method: &str, _payload: &str) -> Result<Vec<u8>, ModuleError> {
        Err(unknown(method))
    }
}

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    Err(no_migration(VERSION, previous))
}
