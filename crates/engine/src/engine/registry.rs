//! The instances of a module as a resource (creating one within the
//! module's limit, listing and removing them) and what status reports.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::retire::refresh_resident;
use super::timers::{Attached, SavedTimers};
use super::{Engine, Instance, ModuleEntry, Slot};
use crate::code::ModuleState;
use crate::error::CallError;
use crate::maps;
use crate::status::{EngineStatus, InstanceStatus, ModuleStatus, VersionCalls};

impl Engine {
    /// Caps how many instances of `module` calls and [`Engine::instance`]
    /// may create (`None`: no limit, the default). One more is refused with
    /// [`CallError::TooManyInstances`]; instances that exist keep working,
    /// even if there are more than `limit` (a lowered limit, or a restored or
    /// adopted state: saved state is never refused for its size).
    pub fn set_max_instances(&self, module: &str, limit: Option<usize>) -> Result<(), CallError> {
        let entry = self.entry(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        entry.max_instances.store(limit.unwrap_or(usize::MAX), Relaxed);
        Ok(())
    }

    /// Every instance of `module`, sorted by key, with the version it runs on
    /// and its counts. Does not wait for running calls.
    pub fn instances(&self, module: &str) -> Result<Vec<InstanceStatus>, CallError> {
        let entry = self.entry(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        let mut list: Vec<InstanceStatus> = entry
            .instances_now()
            .iter()
            .map(|instance| {
                let [calls, errors, panics] = instance.counts();
                InstanceStatus {
                    key: instance.key.to_string(),
                    version: instance.version.lock().clone(),
                    calls,
                    errors,
                    panics,
                }
            })
            .collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(list)
    }

    /// Ends instance `key` of `module`: waits for its current call and drops
    /// its state. Returns whether it existed. A later call with the same key
    /// starts a fresh instance.
    pub fn remove_instance(&self, module: &str, key: &str) -> Result<bool, CallError> {
        let entry = self.entry(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        let Some(instance) = entry.remove(key) else { return Ok(false) };
        let removed = {
            // The slot first, then `current` (a leaf lock): the order a swap
            // and a first call use. The other order made a swap wait for this
            // instance until its deadline (issue 7, item 15).
            let mut slot = instance.slot.lock();
            let version = match &*slot {
                Slot::Live(live) => live.code().info.version.clone(),
                _ => entry.current.lock().as_ref().map(|code| code.info.version.clone()).unwrap_or_default(),
            };
            entry.books.lock().take_counts(&version, &instance);
            entry.timers.drop_all(&instance);
            *instance.version.lock() = None;
            std::mem::replace(&mut *slot, Slot::Removed)
        };
        drop(removed);
        Ok(true)
    }

    /// The state of every loaded module. Also rechecks whether retired
    /// versions that were still mapped have left memory since.
    pub fn status(&self) -> EngineStatus {
        let maps = maps::read();
        let mut modules: Vec<ModuleStatus> =
            self.modules.load().values().filter_map(|entry| entry.status(maps.as_deref())).collect();
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        EngineStatus { modules }
    }
}

impl ModuleEntry {
    /// Instance `key`, created (not started) if it does not exist and the
    /// module is below its `max_instances`.
    pub(super) fn instance(&self, key: &str) -> Result<Arc<Instance>, CallError> {
        if let Some(found) = self.instances.get(key) {
            return Ok(found.clone());
        }
        match self.instances.entry(key.into()) {
            dashmap::Entry::Occupied(found) => Ok(found.get().clone()),
            dashmap::Entry::Vacant(vacant) => {
                // Counted while the key's shard is locked, so concurrent
                // creators of other keys cannot together pass the limit.
                let limit = self.max_instances.load(Relaxed);
                self.instance_count
                    .fetch_update(Relaxed, Relaxed, |count| (count < limit).then_some(count + 1))
                    .map_err(|_| CallError::TooManyInstances { module: self.name.to_string(), limit })?;
                Ok(vacant.insert(Arc::new(Instance::new(key, Slot::Unstarted))).clone())
            }
        }
    }

    /// Adds an instance that starts from saved state (restore, adopt), with
    /// its saved timers, which the caller then enqueues. Saved state is never
    /// refused for the instance limit: it only stops new keys.
    ///
    /// An adopt holds every instance it listed; a key created since (by a
    /// call whose start waits for the adopt) is filled in place, so the
    /// instance its caller holds gets the state.
    pub(super) fn insert_saved(&self, key: &str, live: ModuleState, timers: SavedTimers) -> Option<Attached> {
        let existing = match self.instances.entry(key.into()) {
            dashmap::Entry::Occupied(found) => found.get().clone(),
            dashmap::Entry::Vacant(vacant) => {
                self.instance_count.fetch_add(1, Relaxed);
                let instance = Instance::new(key, Slot::Live(live));
                // Before the instance can be reached, so nothing sees its
                // state without its timers.
                let attached = self.timers.attach(&self.name, &instance, timers);
                vacant.insert(Arc::new(instance));
                return Some(attached);
            }
        };
        let mut slot = existing.slot.lock();
        if matches!(*slot, Slot::Unstarted) {
            *existing.version.lock() = Some(live.code().info.version.clone());
            *slot = Slot::Live(live);
            Some(self.timers.attach(&self.name, &existing, timers))
        } else {
            // Not reached: an instance that started while the gate was
            // closed would have been listed and held (hold.rs).
            tracing::error!(module = %self.name, instance = key, "an instance started during adopt; it keeps its state");
            None
        }
    }

    /// Takes `key` out of the instance map.
    fn remove(&self, key: &str) -> Option<Arc<Instance>> {
        let (_, removed) = self.instances.remove(key)?;
        self.instance_count.fetch_sub(1, Relaxed);
        Some(removed)
    }

    pub(super) fn status(&self, maps: Option<&str>) -> Option<ModuleStatus> {
        let current = self.current.lock().as_ref()?.info.clone();
        let mut books = self.books.lock();
        let mut by_version = books.counted.clone();
        let live = by_version
            .entry(current.version.clone())
            .or_insert_with(|| VersionCalls { version: current.version.clone(), ..VersionCalls::default() });
        let mut instances = 0;
        for item in self.instances.iter() {
            let [calls, errors, panics] = item.value().unbooked();
            live.calls += calls;
            live.errors += errors;
            live.panics += panics;
            instances += 1;
        }
        let by_version: Vec<VersionCalls> = by_version.into_values().collect();
        let calls = by_version.iter().map(|line| line.calls).sum();
        let errors = by_version.iter().map(|line| line.errors).sum();
        let panics = by_version.iter().map(|line| line.panics).sum();
        if let Some(maps) = maps {
            refresh_resident(&mut books, maps);
        }
        Some(ModuleStatus {
            name: self.name.to_string(),
            current,
            since: books.since,
            instances,
            calls,
            errors,
            panics,
            by_version,
            swaps: books.swaps,
            last_swap: books.last_swap.clone(),
            rollback_version: books.rollback.as_ref().map(|(info, _)| info.version.clone()),
            resident_retired: books.resident_retired.clone(),
            reclaimed: books.reclaimed,
            swap_in_progress: self.swap_progress.now(),
        })
    }
}
