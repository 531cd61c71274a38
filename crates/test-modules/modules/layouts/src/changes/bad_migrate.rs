//! Layout 2 (a field `score` added) with a migration that declares layout
//! 1 wrongly (`calls` as `u64`): `decode` must refuse it, naming the field.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::{Phase, Pos, unknown};

pub const NAME: &str = "layouts";
pub const VERSION: &str = "2.0.0-bad-migrate";
pub const LAYOUT: u32 = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub calls: u64,
    pub pos: Pos,
    pub phase: Phase,
    pub name: String,
    pub log: Vec<u64>,
    pub score: u64,
}

/// Layout 1 as this version wrongly remembers it: `calls` was a `u32`.
#[derive(Deserialize)]
struct StateV1 {
    calls: u64,
    pos: Pos,
    phase: Phase,
    name: String,
    log: Vec<u64>,
}

impl State {
    pub fn handle(&mut self, method: &str, _payload: &str) -> Result<Vec<u8>, ModuleError> {
        Err(unknown(method))
    }
}

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    let old: StateV1 = previous.decode().map_err(|error| ModuleError::new(error.to_string()))?;
    let StateV1 { calls, pos, phase, name, log } = old;
    Ok(State { calls, pos, phase, name, log, score: 0 })
}
