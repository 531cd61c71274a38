//! A counter that keeps a scratch buffer in a `thread_local!` with a
//! destructor. glibc cannot unmap such a library on dlclose while a thread
//! that touched the thread-local is alive: the host must notice and report it.

use std::cell::RefCell;

use hotswap_module::{Module, ModuleError, Previous, export_module};

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub struct TlsCounter {
    total: u64,
}

impl Module for TlsCounter {
    const NAME: &'static str = "tls-counter";
    const VERSION: &'static str = "1.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let total = previous
            .and_then(|previous| previous.state().try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or_default();
        Ok(TlsCounter { total })
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            scratch.extend_from_slice(payload);
        });
        match method {
            "add" => {
                self.total += 1;
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

export_module!(TlsCounter);
