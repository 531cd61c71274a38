//! A `counter` whose `init` panics: the host must refuse it and keep serving.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Counter;

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "9.0.0-init-panics";

    fn init(_previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        panic!("init exploded on purpose")
    }

    fn handle(&mut self, _method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }
}

export_module!(Counter);
