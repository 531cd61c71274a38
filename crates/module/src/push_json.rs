//! Pushes of JSON values: `ctx.send_json(session, &event)` and
//! `ctx.broadcast_json(&event)`, for typed modules whose clients read JSON.

use serde::Serialize;

use crate::{Context, ModuleError, Session};

impl Context {
    /// Pushes `value`, encoded as JSON, to `session` (see [`Context::send`]:
    /// refused where that is). Refused, with nothing pushed, when `value`
    /// cannot be encoded.
    pub fn send_json<T: Serialize + ?Sized>(
        &mut self,
        session: Session,
        value: &T,
    ) -> Result<(), ModuleError> {
        let bytes = to_json("send_json", value)?;
        self.send(session, bytes)
    }

    /// Pushes `value`, encoded as JSON, to every session of this instance
    /// (see [`Context::broadcast`]: refused where that is). Refused, with
    /// nothing pushed, when `value` cannot be encoded.
    pub fn broadcast_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ModuleError> {
        let bytes = to_json("broadcast_json", value)?;
        self.broadcast(bytes)
    }
}

fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>, ModuleError> {
    serde_json::to_vec(value).map_err(|error| {
        ModuleError::new(format!(
            "ctx.{what}: a {} cannot be written as JSON: {error}",
            crate::typed::short_type_name(std::any::type_name::<T>())
        ))
    })
}
