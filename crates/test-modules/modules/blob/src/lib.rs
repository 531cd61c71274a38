//! `blob` 1.0.0: a state that is just N bytes, so a benchmark can choose how
//! large the snapshot a swap moves is. The snapshot is the bytes; `init`
//! copies them from the previous version's snapshot, as a real module that
//! deserialises its state would at least have to.

use hotswap_module::{Module, ModuleError, Previous, export_module};

#[derive(Debug)]
pub struct Blob {
    bytes: Vec<u8>,
}

impl Module for Blob {
    const NAME: &'static str = "blob";
    const VERSION: &'static str = "1.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let bytes = previous.map(|previous| previous.state().to_vec()).unwrap_or_default();
        Ok(Blob { bytes })
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            // `resize` with a decimal N: the state becomes N bytes (a pattern,
            // not zeros, so every page is really written and resident).
            "resize" => {
                let len: usize = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or_else(|| {
                        ModuleError::new(format!(
                            "resize takes a decimal byte count, got {:?}",
                            String::from_utf8_lossy(payload)
                        ))
                    })?;
                self.bytes = pattern(len);
                Ok(Vec::new())
            }
            "len" => Ok(self.bytes.len().to_string().into_bytes()),
            "noop" => Ok(Vec::new()),
            other => Err(ModuleError::new(format!("blob 1.0.0 has no method {other:?}"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(self.bytes.clone())
    }
}

/// `len` bytes counting 0, 1, … 255, 0, 1, …: one period written byte by
/// byte, then doubled with memcpy, so gigabytes take a fraction of a second
/// even in a debug build (tests move states over 1 GiB).
fn pattern(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend((0..len.min(256)).map(|i| i as u8));
    while bytes.len() < len {
        // The prefix is a whole number of periods, so copying it continues the pattern.
        let more = (len - bytes.len()).min(bytes.len());
        bytes.extend_from_within(..more);
    }
    bytes
}

export_module!(Blob);
