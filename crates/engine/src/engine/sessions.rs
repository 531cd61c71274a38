//! Sessions, for hosts with connected clients (the daemon's WebSockets):
//! a session joins an instance, sends it messages and leaves; an instance
//! ticks. Each runs like a call — it starts the instance if needed, holds
//! it for its whole duration, waits for a swap and runs on the new version —
//! and what the module pushes goes to [`EngineConfig::on_push`].
//!
//! The host owns the connections and which instance each belongs to; the
//! module keeps per-session data in its state, so sessions survive swaps
//! without the module doing anything.
//!
//! [`EngineConfig::on_push`]: crate::EngineConfig::on_push

use super::Engine;
use crate::code::Invocation;
use crate::error::CallError;

impl Engine {
    /// Session `session` joins instance `instance` of `module`; `request` is
    /// what the module's `on_join` sees (the daemon passes the query string
    /// of the WebSocket request). An error is the module's refusal: the host
    /// should close the session with it. A module without `on_join` accepts.
    pub fn session_join(
        &self,
        module: &str,
        instance: &str,
        session: u64,
        request: &[u8],
    ) -> Result<(), CallError> {
        self.invoke(module, instance, Invocation::Join { session, request }).map(drop)
    }

    /// A message from `session` to its instance, for the module's `on_message`.
    pub fn session_message(
        &self,
        module: &str,
        instance: &str,
        session: u64,
        message: &[u8],
    ) -> Result<(), CallError> {
        self.invoke(module, instance, Invocation::Message { session, message }).map(drop)
    }

    /// `session` left its instance; the module's `on_leave` runs. Call it
    /// once for every session whose join was accepted.
    pub fn session_leave(&self, module: &str, instance: &str, session: u64) -> Result<(), CallError> {
        self.invoke(module, instance, Invocation::Leave { session }).map(drop)
    }

    /// One tick of `instance`: the module's `on_tick`.
    pub fn tick(&self, module: &str, instance: &str) -> Result<(), CallError> {
        self.invoke(module, instance, Invocation::Tick).map(drop)
    }
}
