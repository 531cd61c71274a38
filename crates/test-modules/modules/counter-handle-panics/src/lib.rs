//! A `counter` 1.x whose `panic` method panics; the host must turn that into
//! an error for that caller and carry on. Everything else works like 1.0.0.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Counter {
    total: u64,
}

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "1.1.0-panics";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let total = match previous {
            None => 0,
            Some(previous) => u64::from_le_bytes(
                previous
                    .state()
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("expected an 8-byte total")?,
            ),
        };
        Ok(Counter { total })
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            "panic" => panic!("handle panicked on purpose with {} payload bytes", payload.len()),
            "add" => {
                self.total += std::str::from_utf8(payload)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("bad number")?;
                Ok(self.total.to_string().into_bytes())
            }
            "get" => Ok(self.total.to_string().into_bytes()),
            other => Err(ModuleError::new(format!("no method {other:?}"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(self.total.to_le_bytes().to_vec())
    }
}

export_module!(Counter);
