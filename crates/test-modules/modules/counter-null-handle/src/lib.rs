//! A `counter` whose descriptor has no `handle` entry point (a null pointer),
//! as a hand-written or corrupted module could have. Everything else is a
//! working module, so the host's other checks (and its trial `init`) pass:
//! only the null entry point is wrong, and the host must refuse it at load
//! rather than call address 0 on the first call.

use hotswap_module::__private::abi::{DescriptorHeader, ModuleDescriptor};
use hotswap_module::__private::descriptor;
use hotswap_module::{Module, ModuleError, Previous};

#[derive(Debug)]
pub struct Counter;

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "1.1.0-null-handle";

    fn init(_previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        Ok(Counter)
    }

    fn handle(&mut self, _method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        Err("never reachable: the descriptor leaves handle out".into())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(0u64.to_le_bytes().to_vec())
    }
}

/// The SDK's descriptor for `Counter`, with `handle` left out.
static DESCRIPTOR: ModuleDescriptor = ModuleDescriptor { handle: None, ..descriptor::<Counter>(true) };

/// The descriptor entry point, as any hotswap module exports it.
#[unsafe(no_mangle)]
pub extern "C" fn hotswap_module_descriptor() -> *const DescriptorHeader {
    // The header is the first field of the #[repr(C)] descriptor.
    core::ptr::from_ref(&DESCRIPTOR).cast()
}
