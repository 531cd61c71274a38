//! `counter` 1.0.0: a running total. Its snapshot is the total as 8
//! little-endian bytes. It also reads 2.x snapshots, so a swap back from 2.0.0
//! (a rollback) keeps the total.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Counter {
    total: u64,
    /// Set by the `corrupt-snapshot` method: the next snapshots are garbage,
    /// so tests can show a swap refused by the new version's migration.
    corrupt_snapshots: bool,
}

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "1.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let total = match previous {
            None => 0,
            Some(previous) if previous.version().starts_with("2.") => {
                // 2.x layout: total, then the call count this version drops.
                let total = previous.state().get(..8).ok_or_else(|| bad_snapshot(&previous))?;
                u64::from_le_bytes(total.try_into().expect("8 bytes"))
            }
            Some(previous) => {
                let total: [u8; 8] = previous.state().try_into().map_err(|_| bad_snapshot(&previous))?;
                u64::from_le_bytes(total)
            }
        };
        Ok(Counter { total, corrupt_snapshots: false })
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            "add" => {
                self.total += parse_number(payload)?;
                Ok(self.total.to_string().into_bytes())
            }
            "get" => Ok(self.total.to_string().into_bytes()),
            "version" => Ok(Self::VERSION.as_bytes().to_vec()),
            "noop" => Ok(Vec::new()),
            "echo" => Ok(payload.to_vec()),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(parse_number(payload)?));
                Ok(Vec::new())
            }
            "corrupt-snapshot" => {
                self.corrupt_snapshots = true;
                Ok(Vec::new())
            }
            "repair-snapshot" => {
                self.corrupt_snapshots = false;
                Ok(Vec::new())
            }
            other => Err(ModuleError::new(format!("counter 1.0.0 has no method {other:?}"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        if self.corrupt_snapshots {
            return Ok(b"garbage".to_vec());
        }
        Ok(self.total.to_le_bytes().to_vec())
    }
}

fn parse_number(payload: &[u8]) -> Result<u64, ModuleError> {
    std::str::from_utf8(payload).ok().and_then(|text| text.trim().parse().ok()).ok_or_else(|| {
        ModuleError::new(format!("expected a decimal number, got {:?}", String::from_utf8_lossy(payload)))
    })
}

fn bad_snapshot(previous: &Previous<'_>) -> ModuleError {
    ModuleError::new(format!(
        "cannot read a {}-byte snapshot from {} {}",
        previous.state().len(),
        previous.name(),
        previous.version()
    ))
}

export_module!(Counter);
