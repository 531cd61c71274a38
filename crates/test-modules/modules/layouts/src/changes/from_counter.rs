//! A typed `counter` (layout 1) that takes over from the raw `counter`
//! 1.x, whose snapshot has no envelope: 8 bytes, the total.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

use crate::common::unknown;

pub const NAME: &str = "counter";
pub const VERSION: &str = "3.0.0";
pub const LAYOUT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub total: u64,
}

impl State {
    pub fn handle(&mut self, method: &str, _payload: &str) -> Result<Vec<u8>, ModuleError> {
        Err(unknown(method))
    }
}

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    match previous.layout() {
        None => {
            let total = previous.state().try_into().map_err(|_| {
                ModuleError::new(format!(
                    "counter {VERSION} reads a raw snapshot of 8 bytes, not {}",
                    previous.state().len()
                ))
            })?;
            Ok(State { total: u64::from_le_bytes(total) })
        }
        Some(other) => Err(ModuleError::new(format!("counter {VERSION} cannot read layout {other}"))),
    }
}
