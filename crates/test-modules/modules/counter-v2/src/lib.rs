//! `counter` 2.0.0: the state layout changed — it now also counts the calls
//! that changed the total. Its snapshot is total then calls, 16 bytes. `init`
//! migrates a 1.x snapshot (8 bytes: the total) and refuses anything else.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Counter {
    total: u64,
    adds: u64,
}

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "2.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let Some(previous) = previous else { return Ok(Counter { total: 0, adds: 0 }) };
        let state = previous.state();
        let refuse = || {
            ModuleError::new(format!(
                "cannot migrate a {}-byte snapshot from {} {}: expected 8 bytes from 1.x or 16 from 2.x",
                state.len(),
                previous.name(),
                previous.version()
            ))
        };
        let word = |at: usize| u64::from_le_bytes(state[at..at + 8].try_into().expect("8 bytes"));
        match (previous.version().split('.').next(), state.len()) {
            (Some("1"), 8) => Ok(Counter { total: word(0), adds: 0 }),
            (Some("2"), 16) => Ok(Counter { total: word(0), adds: word(8) }),
            _ => Err(refuse()),
        }
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            "add" => {
                let amount: u64 = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or("add takes a decimal number")?;
                self.total += amount;
                self.adds += 1;
                Ok(self.total.to_string().into_bytes())
            }
            "get" => Ok(self.total.to_string().into_bytes()),
            "adds" => Ok(self.adds.to_string().into_bytes()),
            "version" => Ok(Self::VERSION.as_bytes().to_vec()),
            "noop" => Ok(Vec::new()),
            // Holds the instance for this many milliseconds: a slow call, for
            // tests of what waits for it and what must not.
            "sleep" => {
                let millis: u64 = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or("sleep takes a number of milliseconds")?;
                std::thread::sleep(std::time::Duration::from_millis(millis));
                Ok(Vec::new())
            }
            other => Err(ModuleError::new(format!("counter 2.0.0 has no method {other:?}"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        let mut bytes = self.total.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.adds.to_le_bytes());
        Ok(bytes)
    }
}

export_module!(Counter);
