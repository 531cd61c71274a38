//! Run a module's methods and migrations inside a plain `cargo test` of the
//! module crate: no `.so`, no host.
//!
//! A [`Harness`] holds one instance's state and a [`Recorder`] standing in
//! for the host, and calls the module the way the host does
//! ([`Module::call`], [`Module::init`], [`Module::snapshot`], and the session
//! hooks: [`Harness::join`], [`Harness::message`], [`Harness::leave`],
//! [`Harness::tick`]), so a typed module's JSON decoding, refusals,
//! migrations and pushes ([`Harness::pushes`]) are what the test sees.
//!
//! ```
//! use hotswap_module::testing::Harness;
//! # use hotswap_module::ModuleError;
//! # #[derive(serde::Serialize, serde::Deserialize, Default)]
//! # pub struct Counter { total: u64 }
//! # #[hotswap_module::module(name = "counter", version = "1.0.0", layout = 1)]
//! # impl Counter {
//! #     pub fn add(&mut self, amount: u64) -> u64 { self.total += amount; self.total }
//! # }
//!
//! let mut counter = Harness::<Counter>::new()?;
//! assert_eq!(counter.call_json::<u64>("add", &5)?, 5);
//! assert_eq!(counter.call("add", b"2")?, b"7");
//! let error = counter.call("add", b"\"two\"").unwrap_err();
//! assert!(error.message().starts_with("add: the payload is not a u64"));
//!
//! // What the next version will be handed, and what it makes of it:
//! let again = Harness::<Counter>::from_snapshot("counter", "1.0.0", &counter.snapshot()?)?;
//! assert_eq!(again.state().total, 7);
//! # Ok::<(), ModuleError>(())
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, Module, ModuleError, Previous, Push, Recorder, Reply, Session};

/// One instance of module `T`, called without a host.
pub struct Harness<T: Module> {
    state: T,
    recorder: Recorder,
}

impl<T: Module> fmt::Debug for Harness<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("module", &T::NAME)
            .field("version", &T::VERSION)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl<T: Module> Harness<T> {
    /// A fresh instance (`init(None)`), on instance key `"test"`.
    pub fn new() -> Result<Self, ModuleError> {
        Ok(Self::around(T::init(None)?))
    }

    /// An instance started from a snapshot, as a swap, an upgrade or a
    /// restart would hand it over: `name` and `version` are those of the
    /// module that took it (say, bytes saved from a running server).
    pub fn from_snapshot(name: &str, version: &str, snapshot: &[u8]) -> Result<Self, ModuleError> {
        Ok(Self::around(T::init(Some(Previous::new(name, version, snapshot)))?))
    }

    /// An instance migrated from `old`, another module type's state (the
    /// previous version, declared in the test): `old`'s snapshot is handed
    /// to `T::init` as the host would hand it over at a swap.
    pub fn migrate_from<Old: Module>(old: &Old) -> Result<Self, ModuleError> {
        let snapshot = old.snapshot()?;
        Self::from_snapshot(Old::NAME, Old::VERSION, &snapshot)
    }

    /// A harness around a state made some other way.
    pub fn around(state: T) -> Self {
        Harness { state, recorder: Recorder::new("test") }
    }

    /// Calls `method` with `payload` and returns the reply bytes, or the
    /// refusal. What the method logs and schedules goes to [`Self::recorder`].
    pub fn call(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let mut bytes = Vec::new();
        let state = &mut self.state;
        Context::with_recorder(&mut self.recorder, |ctx| {
            Reply::with_buffer(&mut bytes, |reply| state.call(ctx, method, payload, reply))
        })?;
        Ok(bytes)
    }

    /// Calls a typed method with `argument` encoded as JSON and decodes its
    /// JSON reply as `R`.
    pub fn call_json<R: DeserializeOwned>(
        &mut self,
        method: &str,
        argument: &impl Serialize,
    ) -> Result<R, ModuleError> {
        let payload = serde_json::to_vec(argument)
            .map_err(|error| ModuleError::new(format!("the argument for {method} is not JSON: {error}")))?;
        let reply = self.call(method, &payload)?;
        serde_json::from_slice(&reply).map_err(|error| {
            ModuleError::new(format!(
                "the reply of {method} ({}) is not {}: {error}",
                String::from_utf8_lossy(&reply),
                std::any::type_name::<R>()
            ))
        })
    }

    /// Runs `on_join` for `session`, as a client connecting with the query
    /// string `request` (`b"name=ann"`) would: `Err` is the refusal the
    /// client would read.
    pub fn join(&mut self, session: Session, request: &[u8]) -> Result<(), ModuleError> {
        let state = &mut self.state;
        Context::with_recorder(&mut self.recorder, |ctx| state.on_join(ctx, session, request))
    }

    /// Runs `on_message` with `message` from `session`.
    pub fn message(&mut self, session: Session, message: &[u8]) -> Result<(), ModuleError> {
        let state = &mut self.state;
        Context::with_recorder(&mut self.recorder, |ctx| state.on_message(ctx, session, message))
    }

    /// Runs `on_message` with `message` encoded as JSON.
    pub fn message_json(&mut self, session: Session, message: &impl Serialize) -> Result<(), ModuleError> {
        let bytes = serde_json::to_vec(message)
            .map_err(|error| ModuleError::new(format!("the message is not JSON: {error}")))?;
        self.message(session, &bytes)
    }

    /// Runs `on_leave` for `session`, as its client going away would.
    pub fn leave(&mut self, session: Session) {
        let state = &mut self.state;
        Context::with_recorder(&mut self.recorder, |ctx| state.on_leave(ctx, session));
    }

    /// Runs `on_tick` once.
    pub fn tick(&mut self) -> Result<(), ModuleError> {
        let state = &mut self.state;
        Context::with_recorder(&mut self.recorder, |ctx| state.on_tick(ctx))
    }

    /// What the calls and hooks so far pushed (`ctx.send`, `ctx.broadcast`,
    /// `ctx.close`), in the order they pushed it.
    pub fn pushes(&self) -> &[Push] {
        &self.recorder.pushes
    }

    /// The pushes so far, leaving none: to look at what the next hook pushes.
    pub fn take_pushes(&mut self) -> Vec<Push> {
        std::mem::take(&mut self.recorder.pushes)
    }

    /// The log records and timers the calls so far asked for, and what
    /// `ctx.now()` and `ctx.instance()` answer.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// To set the clock or the instance key, or to clear what was recorded.
    pub fn recorder_mut(&mut self) -> &mut Recorder {
        &mut self.recorder
    }

    /// The instance's snapshot, as the host would take it.
    pub fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        self.state.snapshot()
    }

    pub fn state(&self) -> &T {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut T {
        &mut self.state
    }

    pub fn into_state(self) -> T {
        self.state
    }
}
