//! `layouts`: a module whose state goes through the SDK's snapshot envelope
//! (written with the raw `Module` trait and the envelope's functions, as the
//! typed layer does), in layout 1 (`src/state.rs`) and, behind one cargo
//! feature each, versions that change it (`src/changes/`): renamed, retyped
//! and resized fields, a removed enum variant, a field added without a new
//! layout number, reordered fields, a migration that declares the old
//! layout wrongly — each must be refused before any instance moves — and
//! changes that must be read: an appended enum variant, a correct
//! migration to layout 2, a typed `counter` that migrates a raw snapshot.
//!
//! Methods: `get` (the state, as `{:?}`), `version`, and what the state
//! version adds (layout 1: `touch`, `end WINNER`).

use hotswap_module::__private::{encode_state, restore_state};
use hotswap_module::{Module, ModuleError, Previous, export_module};

mod common;

#[cfg_attr(feature = "renamed", path = "changes/renamed.rs")]
#[cfg_attr(feature = "retyped", path = "changes/retyped.rs")]
#[cfg_attr(feature = "resized", path = "changes/resized.rs")]
#[cfg_attr(feature = "variant-removed", path = "changes/variant_removed.rs")]
#[cfg_attr(feature = "field-added", path = "changes/field_added.rs")]
#[cfg_attr(feature = "reordered", path = "changes/reordered.rs")]
#[cfg_attr(feature = "bad-migrate", path = "changes/bad_migrate.rs")]
#[cfg_attr(feature = "good-migrate", path = "changes/good_migrate.rs")]
#[cfg_attr(feature = "variant-added", path = "changes/variant_added.rs")]
#[cfg_attr(feature = "from-counter", path = "changes/from_counter.rs")]
mod state;

#[derive(Debug)]
pub struct Layouts(state::State);

impl Module for Layouts {
    const NAME: &'static str = state::NAME;
    const VERSION: &'static str = state::VERSION;
    const LAYOUT: Option<u32> = Some(state::LAYOUT);

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        restore_state(previous, state::LAYOUT, state::migrate).map(Layouts)
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            "get" => Ok(format!("{:?}", self.0).into_bytes()),
            "version" => Ok(state::VERSION.as_bytes().to_vec()),
            other => {
                self.0.handle(other, std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8")?)
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        let mut bytes = Vec::new();
        encode_state(&self.0, state::LAYOUT, &mut bytes)?;
        Ok(bytes)
    }
}

export_module!(Layouts);
