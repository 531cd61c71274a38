//! TEMPORARY: stands in for `envelope.rs` (the envelope helper's, branch
//! `envelope`) until it lands, with exactly its interface:
//! `encode_state`, `restore_state`, `Previous::layout` and
//! `Previous::decode`. The lead drops this file and its `mod` line at the
//! merge. The format here is a marker, the layout and JSON: no shape check.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ModuleError, Previous};

const MARKER: &[u8; 8] = b"HSSTUB\x00\x01";

pub fn encode_state<T: Serialize + DeserializeOwned>(
    state: &T,
    layout: u32,
    into: &mut Vec<u8>,
) -> Result<(), ModuleError> {
    into.extend_from_slice(MARKER);
    into.extend_from_slice(&layout.to_le_bytes());
    serde_json::to_writer(into, state)?;
    Ok(())
}

pub fn restore_state<T: DeserializeOwned + Default>(
    previous: Option<Previous<'_>>,
    layout: u32,
    migrate: impl FnOnce(Previous<'_>) -> Result<T, ModuleError>,
) -> Result<T, ModuleError> {
    match previous {
        None => Ok(T::default()),
        Some(previous) if previous.layout() == Some(layout) => previous.decode(),
        Some(previous) => migrate(previous),
    }
}

impl<'a> Previous<'a> {
    /// The layout of the previous version's snapshot; `None` for a raw one.
    pub fn layout(&self) -> Option<u32> {
        let rest = self.state().strip_prefix(MARKER)?;
        Some(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?))
    }

    /// The previous version's state, decoded as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ModuleError> {
        let Some(payload) = self.state().strip_prefix(MARKER).and_then(|rest| rest.get(4..)) else {
            return Err(ModuleError::new(format!(
                "the snapshot of {} {} is raw (it has no envelope): read its bytes with `state()`",
                self.name(),
                self.version()
            )));
        };
        serde_json::from_slice(payload).map_err(|error| {
            ModuleError::new(format!(
                "cannot read the snapshot of {} {} as {}: {error}",
                self.name(),
                self.version(),
                std::any::type_name::<T>()
            ))
        })
    }
}
