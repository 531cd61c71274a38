//! Finding the instance an [`Engine::call`] names, with a memory per thread
//! of the instance that thread called last.
//!
//! Looking an instance up by name costs more than the call itself: an
//! arc-swap guard on the module map, the module name's hash, the instance
//! key's keyed hash (SipHash, so clients cannot flood the map), a shard's
//! read lock and an `Arc` clone, about 50 ns of a ~85 ns call (BENCHMARKS.md,
//! "Issue 8: call cost"). A host often calls the same instance from the same
//! thread again (a connection's thread serving one room), so each thread
//! remembers the last instance it called: when the next call names the same
//! module and key in the same engine, and the module map has not changed
//! since, the call goes straight to that instance, with no hash, no lock and
//! no reference count touched.
//!
//! Nothing is trusted that could have changed:
//!
//! - the module map: every change bumps the engine's generation
//!   ([`Engine::publish_modules`]); a remembered instance is used only with
//!   the generation it was found under, so an unloaded or reloaded module is
//!   looked up again;
//! - the instance: a removed instance's slot is [`Slot::Removed`] for good,
//!   so a call on a remembered instance that was removed meanwhile returns
//!   [`CallError::InstanceRemoved`] and is looked up again, as any call that
//!   loses that race already is.
//!
//! The memory holds two `Arc`s, not a lock: a stuck call holds nothing here
//! that another call or a swap waits for. It keeps alive at most one
//! instance and one module entry per thread after they are removed; their
//! states are dropped by the removal itself (the slot is emptied), so
//! dropping the memory never runs module code.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Engine, Instance, ModuleEntry, ModuleMap};
use crate::error::CallError;

/// Which engine and which state of its module map a remembered instance
/// belongs to.
pub(super) struct MapGeneration {
    /// Unique per engine in this process (never reused, unlike an address).
    engine: u64,
    /// Bumped after every change of the module map.
    generation: AtomicU64,
}

impl MapGeneration {
    pub(super) fn new() -> MapGeneration {
        static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);
        MapGeneration { engine: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed), generation: AtomicU64::new(0) }
    }
}

/// The instance this thread called last through [`Engine::call`].
struct LastCall {
    engine: u64,
    /// The map generation read before the entry was looked up.
    generation: u64,
    entry: Arc<ModuleEntry>,
    instance: Arc<Instance>,
}

thread_local! {
    static LAST_CALL: RefCell<Option<LastCall>> = const { RefCell::new(None) };
}

impl Engine {
    /// Replaces the module map with `change` applied to a copy, then bumps
    /// the generation, so no thread goes on using a remembered instance of
    /// the old map.
    pub(super) fn publish_modules(&self, change: impl Fn(&mut ModuleMap)) {
        self.modules.rcu(|modules| {
            let mut modules = ModuleMap::clone(modules);
            change(&mut modules);
            modules
        });
        // Release: a thread that reads the new generation (Acquire) and then
        // loads the map sees this map or a later one.
        self.map_generation.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `call` on instance `key` of `module` (created if it does not
    /// exist), looking it up again whenever `call` finds it removed.
    pub(super) fn with_instance<R>(
        &self,
        module: &str,
        key: &str,
        call: impl Fn(&ModuleEntry, &Instance) -> Result<R, Box<CallError>>,
    ) -> Result<R, Box<CallError>> {
        let outcome = LAST_CALL.try_with(|last| match last.try_borrow_mut() {
            Ok(mut last) => Some(self.with_remembered_instance(&mut last, module, key, &call)),
            // Borrowed: an `Engine::call` made from inside a call on this
            // thread (from a host callback); it looks its instance up.
            Err(_) => None,
        });
        match outcome {
            Ok(Some(outcome)) => outcome,
            // Or the thread is exiting and its memory is gone.
            _ => self.with_looked_up_instance(module, key, &call, None),
        }
    }

    fn with_remembered_instance<R>(
        &self,
        last: &mut Option<LastCall>,
        module: &str,
        key: &str,
        call: &impl Fn(&ModuleEntry, &Instance) -> Result<R, Box<CallError>>,
    ) -> Result<R, Box<CallError>> {
        let generation = self.map_generation.generation.load(Ordering::Acquire);
        if let Some(last) = last.as_ref()
            && *last.instance.key == *key
            && last.engine == self.map_generation.engine
            && last.generation == generation
            && *last.entry.name == *module
        {
            match call(&last.entry, &last.instance) {
                // Removed since: look it up again.
                Err(error) if matches!(*error, CallError::InstanceRemoved { .. }) => {}
                outcome => return outcome,
            }
        }
        self.with_looked_up_instance(module, key, call, Some((last, generation)))
    }

    /// The lookup by name; with `remember`, the instance called is
    /// remembered under the generation read before the lookup.
    fn with_looked_up_instance<R>(
        &self,
        module: &str,
        key: &str,
        call: &impl Fn(&ModuleEntry, &Instance) -> Result<R, Box<CallError>>,
        remember: Option<(&mut Option<LastCall>, u64)>,
    ) -> Result<R, Box<CallError>> {
        let modules = self.modules.load();
        let entry = modules
            .get(module)
            .ok_or_else(|| Box::new(CallError::UnknownModule { module: module.into() }))?;
        let (instance, outcome) = loop {
            let instance = entry.instance(key)?;
            match call(entry, &instance) {
                // Removed between the lookup and the lock: look up again.
                Err(error) if matches!(*error, CallError::InstanceRemoved { .. }) => continue,
                outcome => break (instance, outcome),
            }
        };
        if let Some((last, generation)) = remember {
            let engine = self.map_generation.engine;
            match last {
                // The same module as last time: keep its entry (no reference count touched).
                Some(last) if last.engine == engine && Arc::ptr_eq(&last.entry, entry) => {
                    last.generation = generation;
                    last.instance = instance;
                }
                last => *last = Some(LastCall { engine, generation, entry: entry.clone(), instance }),
            }
        }
        outcome
    }
}
