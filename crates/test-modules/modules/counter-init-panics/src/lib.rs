//! A `counter` whose `init` panics when it takes over a previous version's
//! state (a fresh start works): a swap to it must be refused, every instance
//! staying on the old version.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Counter;

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "9.0.0-init-panics";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        match previous {
            None => Ok(Counter),
            Some(previous) => panic!("migration from {} exploded on purpose", previous.version()),
        }
    }

    fn handle(&mut self, _method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }
}

export_module!(Counter);
