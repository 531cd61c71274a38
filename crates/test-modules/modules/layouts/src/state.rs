//! Layout 1, as `common` declares it.

use hotswap_module::{ModuleError, Previous};

pub use crate::common::State;

pub const NAME: &str = "layouts";
pub const VERSION: &str = "1.0.0";
pub const LAYOUT: u32 = 1;

pub fn migrate(previous: Previous<'_>) -> Result<State, ModuleError> {
    Err(ModuleError::new(format!("layouts {VERSION} reads only layout 1, not {:?}", previous.layout())))
}
