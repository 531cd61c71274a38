//! Layout 2 (a field `score` added) with a correct migration from layout 1:
//! must be read, every instance keeping its values.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::{self, Phase, Pos, unknown};

pub const NAME: &str = "layouts";
pub const VERSION: &str = "2.0.0";
pub const LAYOUT: u32 = 2;

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
    match previous.layout() {
        Some(1) => {
            let old: common::State =
                previous.decode().map_err(|error| ModuleError::new(error.to_string()))?;
            let common::State { calls, pos, phase, name, log } = old;
            Ok(State { score: u64::from(calls) * 10, calls, pos, phase, name, log })
        }
        other => Err(ModuleError::new(format!("layouts {VERSION} reads layout 1 or 2, not {other:?}"))),
    }
}
