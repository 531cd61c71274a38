//! The call path: finding an instance, starting it on its first call, and
//! running one call while holding it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Engine, Instance, ModuleEntry, Slot};
use crate::code::{Effects, Invocation, ModuleState};
use crate::error::{CallError, Fault};
use crate::host::TimerRequests;
use crate::sync::MutexGuard;

/// A handle on one instance of a module, for hosts that call the same
/// instance again and again (a connection bound to a game room): it skips
/// the lookups [`Engine::call`] makes. It stays valid across swaps and
/// rollbacks. Made by [`Engine::instance`].
pub struct InstanceHandle {
    entry: Arc<ModuleEntry>,
    instance: Arc<Instance>,
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle").field("module", &self.module()).field("key", &self.key()).finish()
    }
}

impl InstanceHandle {
    /// Calls `method` on this instance, as [`Engine::call`] does. After the
    /// instance is removed it returns [`CallError::InstanceRemoved`]; after
    /// the module is unloaded, [`CallError::UnknownModule`].
    pub fn call(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        self.entry
            .call_instance(&self.instance, method, payload, None)
            .map(Option::unwrap_or_default)
            .map_err(|error| *error)
    }

    pub fn module(&self) -> &str {
        &self.entry.name
    }

    pub fn key(&self) -> &str {
        &self.instance.key
    }
}

impl Engine {
    /// Calls `method` on instance `instance` of `module`, starting the
    /// instance with `init(None)` if this is its first call.
    ///
    /// Calls to one instance are serialized; calls to different instances
    /// run in parallel. A call that arrives during a swap waits for it and
    /// runs on the new version.
    pub fn call(
        &self,
        module: &str,
        instance: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        self.invoke(module, instance, Invocation::Method { method, payload })
    }

    /// Runs `what` (a method or a session hook, sessions.rs) on instance
    /// `instance` of `module`, creating it if it does not exist and looking
    /// it up again if it is removed between the lookup and the lock.
    #[inline]
    pub(super) fn invoke(
        &self,
        module: &str,
        instance: &str,
        what: Invocation<'_>,
    ) -> Result<Vec<u8>, CallError> {
        let modules = self.modules.load();
        let entry = modules.get(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        loop {
            let found = entry.instance(instance)?;
            match entry.invoke_instance(&found, what, None) {
                // Removed between the lookup and the lock: look up again.
                Err(error) if matches!(*error, CallError::InstanceRemoved { .. }) => continue,
                outcome => return outcome.map(Option::unwrap_or_default).map_err(|error| *error),
            }
        }
    }

    /// A handle on instance `key` of `module` (created if it does not exist
    /// yet; started by its first call).
    pub fn instance(&self, module: &str, key: &str) -> Result<InstanceHandle, CallError> {
        let entry = self.entry(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        let instance = entry.instance(key)?;
        Ok(InstanceHandle { entry, instance })
    }
}

impl ModuleEntry {
    /// One call on `instance`; with `timer`, the call that timer makes, which
    /// is removed from the instance under the same lock (`Ok(None)` if the
    /// instance no longer holds it: nothing runs). The error is boxed: the
    /// call path hands its result through several functions, and a
    /// `CallError` by value (about 100 bytes) was copied at each one
    /// (BENCHMARKS.md, "Issue 8").
    #[inline]
    pub(super) fn call_instance(
        &self,
        instance: &Instance,
        method: &str,
        payload: &[u8],
        timer: Option<u64>,
    ) -> Result<Option<Vec<u8>>, Box<CallError>> {
        self.invoke_instance(instance, Invocation::Method { method, payload }, timer)
    }

    /// [`ModuleEntry::call_instance`] for any invocation: a method or a
    /// session hook. What it pushes goes to the host's sink while the
    /// instance is still held, so pushes keep the order the instance ran in.
    #[inline]
    pub(super) fn invoke_instance(
        &self,
        instance: &Instance,
        what: Invocation<'_>,
        timer: Option<u64>,
    ) -> Result<Option<Vec<u8>>, Box<CallError>> {
        // While a swap takes the module's instances, wait for it (hold.rs).
        let mut slot = self.gate.enter(instance, |slot| matches!(slot, Slot::Unstarted));
        if let Some(id) = timer
            && !(matches!(*slot, Slot::Live(_)) && self.timers.take_to_run(instance, id))
        {
            return Ok(None);
        }
        if !matches!(*slot, Slot::Live(_)) {
            slot = self.start(instance, slot)?;
        }
        let Slot::Live(live) = &mut *slot else { unreachable!("start returns a live slot") };
        bump(&instance.calls);
        let mut timers = TimerRequests::new(self.timers.limit, instance.timer_count.load(Relaxed));
        let mut pushes = Vec::new();
        let outcome = live.invoke(what, Effects { timers: &mut timers, pushes: &mut pushes });
        // Kept whatever the outcome, as the state is: a call that returns an
        // error or panics keeps what it changed, and the timers it set belong
        // with that state (a state that says "reminder set" without its timer
        // would be worse). A module that sets a timer and then panics over
        // and over is bounded by the instance's limit.
        if !timers.asked.is_empty() {
            self.timers.keep(&self.name, instance, timers.asked);
        }
        // Delivered like timers are kept: whatever the outcome. A join's,
        // even when empty: the host learns there when the session became a
        // member (`PushSink`).
        if (!pushes.is_empty() || matches!(what, Invocation::Join { .. }))
            && let Some(sink) = &self.pushes
        {
            sink.deliver(&self.name, &instance.key, pushes);
        }
        outcome.map(Some).map_err(|fault| call_failed(instance, live, what.name(), fault))
    }

    /// Starts `instance`, whose `slot` the gate let this call hold
    /// (`SwapGate::enter`), on the current version with `init(None)`.
    fn start<'a>(
        &self,
        instance: &'a Instance,
        mut slot: MutexGuard<'a, Slot>,
    ) -> Result<MutexGuard<'a, Slot>, CallError> {
        match &*slot {
            Slot::Live(_) => return Ok(slot),
            // After an unload every slot is removed and there is no current version.
            Slot::Removed if self.current.lock().is_none() => {
                return Err(CallError::UnknownModule { module: self.name.to_string() });
            }
            Slot::Removed => {
                return Err(CallError::InstanceRemoved {
                    module: self.name.to_string(),
                    instance: instance.key.to_string(),
                });
            }
            Slot::Unstarted => {}
        }
        // An unloaded module has no current version (and removed every slot).
        let code = self
            .current
            .lock()
            .clone()
            .ok_or_else(|| CallError::UnknownModule { module: self.name.to_string() })?;
        match code.init(&instance.key, None) {
            Ok(state) => {
                *instance.version.lock() = Some(code.info.version.clone());
                *slot = Slot::Live(state);
                Ok(slot)
            }
            Err(fault) => {
                bump(&instance.calls);
                bump(if fault.is_panic() { &instance.panics } else { &instance.errors });
                Err(CallError::InitFailed {
                    module: self.name.to_string(),
                    version: code.info.version.clone(),
                    instance: instance.key.to_string(),
                    fault,
                })
            }
        }
    }
}

/// The error for a call the module refused or panicked in; out of line, so
/// the call path stays small.
#[cold]
fn call_failed(instance: &Instance, live: &ModuleState, method: &str, fault: Fault) -> Box<CallError> {
    let info = &live.code().info;
    let (module, version, method) = (info.name.clone(), info.version.clone(), method.to_owned());
    Box::new(match fault {
        Fault::Error(message) => {
            bump(&instance.errors);
            CallError::Refused { module, version, method, message: message.into() }
        }
        Fault::Panic(message) => {
            bump(&instance.panics);
            tracing::warn!(%module, %version, %method, instance = %instance.key, "module panicked: {message}");
            CallError::Panicked { module, version, method, message: message.into() }
        }
    })
}

/// Counters are written only under their instance's lock, so a load and a
/// store is enough (no read-modify-write, which costs as much as the rest of
/// a call); readers only need a recent value.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}
