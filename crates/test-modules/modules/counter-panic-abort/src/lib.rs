//! A `counter` whose descriptor says it was built with `panic = "abort"`.
//!
//! Cargo applies one panic strategy to a whole build, so instead of a second
//! build with `-C panic=abort` this module builds its descriptor the way
//! `export_module!` does in such a build: with the unwind flag off. The host
//! must refuse it, since a panic in it would abort the host process.

use hotswap_module::__private::{abi, descriptor};
use hotswap_module::{Module, ModuleError, Previous};

#[derive(Debug)]
pub struct Counter;

impl Module for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "9.0.0-panic-abort";

    fn init(_previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        Ok(Counter)
    }

    fn handle(&mut self, _method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(Vec::new())
    }
}

static DESCRIPTOR: abi::ModuleDescriptor = descriptor::<Counter>(false);

/// The descriptor entry point, as `export_module!` writes it.
#[unsafe(no_mangle)]
pub extern "C" fn hotswap_module_descriptor() -> *const abi::DescriptorHeader {
    core::ptr::from_ref(&DESCRIPTOR).cast()
}
