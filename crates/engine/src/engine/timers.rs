//! Timers modules set with `ctx.after`: kept by the engine with their
//! instance (never in the module's state), so a swap keeps them without the
//! module doing anything, and snapshots carry them to a new process or disk.
//!
//! # Where a timer lives
//!
//! Each instance holds its pending timers (`Instance::timers`); the
//! engine-wide [`Schedule`] orders the ones not yet taken by due time, for
//! [`Engine::next_timer_due`] and [`Engine::take_due_timers`]. A timer
//! leaves its instance only while the instance's lock is held: when it runs
//! ([`Engine::run_timer`] removes it in the same step as the call), or when
//! the instance is removed or unloaded. Snapshots read the instance's timers
//! under the same lock as its state, so every snapshot holds either the
//! timer or what it did, never both and never neither. A timer that is
//! taken but not yet run is still the instance's, and a snapshot still
//! carries it: if this process hands over or stops before running it, the
//! next one does.
//!
//! Every list here is bounded: an instance holds at most
//! `EngineConfig::max_timers_per_instance` timers it set itself (restored
//! ones are never refused), and the schedule holds only timers that
//! instances hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::{Engine, Instance};
use crate::config::TimerWake;
use crate::error::CallError;
use crate::host::TimerRequest;
use crate::status::{DueTimer, SavedTimer};

/// One pending timer; shared by its instance and the schedule.
#[derive(Debug)]
pub(super) struct PendingTimer {
    id: u64,
    due: SystemTime,
    method: String,
    payload: Vec<u8>,
}

/// A timer in due order, not yet taken.
struct Queued {
    module: Arc<str>,
    instance: Arc<str>,
    timer: Arc<PendingTimer>,
}

/// The engine's timers in due order. Its lock is a leaf: nothing else is
/// locked while it is held, and the wake-up runs after it is released.
pub(super) struct Schedule {
    pub(super) limit: usize,
    on_earlier: Option<TimerWake>,
    next_id: AtomicU64,
    /// Timers held by instances, taken or not.
    pending: AtomicUsize,
    queue: Mutex<BTreeMap<(SystemTime, u64), Queued>>,
}

/// Saved timers of one instance, to give it back: due, method, payload.
pub(super) type SavedTimers = Vec<(SystemTime, String, Vec<u8>)>;

/// Timers given to an instance whose schedule entries are still to be made
/// (see [`Schedule::attach`]).
#[must_use = "the timers run only once enqueued"]
pub(super) struct Attached {
    module: Arc<str>,
    instance: Arc<str>,
    timers: Vec<Arc<PendingTimer>>,
}

impl Schedule {
    pub(super) fn new(limit: usize, on_earlier: Option<TimerWake>) -> Schedule {
        Schedule {
            limit,
            on_earlier,
            next_id: AtomicU64::new(1),
            pending: AtomicUsize::new(0),
            queue: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keeps the timers a call on `instance` asked for. The caller holds the
    /// instance's lock.
    pub(super) fn keep(&self, module: &str, instance: &Instance, asked: Vec<TimerRequest>) {
        let timers = asked.into_iter().map(|asked| (asked.due, asked.method, asked.payload));
        let attached = self.attach(module, instance, timers);
        self.enqueue(attached);
    }

    /// Gives `instance` the timers, without scheduling them yet: a restored
    /// module's instances get theirs before the module is published, and
    /// are scheduled once it is (so a timer never comes due for a module
    /// that cannot be called yet). The caller holds the instance's lock, or
    /// nobody else can reach the instance yet.
    pub(super) fn attach(
        &self,
        module: &str,
        instance: &Instance,
        timers: impl IntoIterator<Item = (SystemTime, String, Vec<u8>)>,
    ) -> Attached {
        let timers: Vec<Arc<PendingTimer>> = timers
            .into_iter()
            .map(|(due, method, payload)| {
                Arc::new(PendingTimer { id: self.next_id.fetch_add(1, Relaxed), due, method, payload })
            })
            .collect();
        if !timers.is_empty() {
            let mut held = instance.timers.lock();
            held.extend(timers.iter().cloned());
            instance.timer_count.store(held.len(), Relaxed);
            self.pending.fetch_add(timers.len(), Relaxed);
        }
        Attached { module: module.into(), instance: (*instance.key).into(), timers }
    }

    /// Schedules attached timers; wakes the host if one is due before every
    /// timer scheduled so far.
    pub(super) fn enqueue(&self, attached: Attached) {
        let Attached { module, instance, timers } = attached;
        let Some(earliest) = timers.iter().map(|timer| timer.due).min() else { return };
        let earlier = {
            let mut queue = self.queue.lock();
            let earlier = queue.first_key_value().is_none_or(|((due, _), _)| earliest < *due);
            for timer in timers {
                let queued = Queued { module: module.clone(), instance: instance.clone(), timer };
                queue.insert((queued.timer.due, queued.timer.id), queued);
            }
            earlier
        };
        if earlier && let Some(wake) = &self.on_earlier {
            wake.wake(earliest);
        }
    }

    /// Drops every timer of `instance` (removed or unloaded). The caller
    /// holds the instance's lock.
    pub(super) fn drop_all(&self, instance: &Instance) {
        let dropped = std::mem::take(&mut *instance.timers.lock());
        instance.timer_count.store(0, Relaxed);
        if dropped.is_empty() {
            return;
        }
        self.pending.fetch_sub(dropped.len(), Relaxed);
        let mut queue = self.queue.lock();
        for timer in dropped {
            queue.remove(&(timer.due, timer.id));
        }
    }

    /// Removes timer `id` from `instance` because it runs now; `false` if
    /// the instance does not hold it (it ran already, or the instance was
    /// removed since it was taken). The caller holds the instance's lock.
    pub(super) fn take_to_run(&self, instance: &Instance, id: u64) -> bool {
        let mut held = instance.timers.lock();
        let Some(at) = held.iter().position(|timer| timer.id == id) else { return false };
        let timer = held.swap_remove(at);
        instance.timer_count.store(held.len(), Relaxed);
        drop(held);
        self.pending.fetch_sub(1, Relaxed);
        // Normally taken from the queue already; a host may run a timer it
        // got otherwise (a clone of a `DueTimer`), so make sure.
        self.queue.lock().remove(&(timer.due, timer.id));
        true
    }

    /// The timers `instance` holds, as a snapshot carries them. The caller
    /// holds the instance's lock.
    pub(super) fn saved(instance: &Instance) -> Vec<SavedTimer> {
        let mut saved: Vec<SavedTimer> = instance
            .timers
            .lock()
            .iter()
            .map(|timer| SavedTimer {
                instance: instance.key.to_string(),
                due: timer.due,
                method: timer.method.clone(),
                payload: timer.payload.clone(),
            })
            .collect();
        saved.sort_by_key(|timer| timer.due);
        saved
    }
}

impl Engine {
    /// When the earliest timer not yet taken is due (`None`: there is none).
    /// A host sleeps until then, or until [`EngineConfig::on_earlier_timer`]
    /// says an earlier one was set.
    ///
    /// [`EngineConfig::on_earlier_timer`]: crate::EngineConfig::on_earlier_timer
    pub fn next_timer_due(&self) -> Option<SystemTime> {
        self.timers.queue.lock().first_key_value().map(|((due, _), _)| *due)
    }

    /// Takes every timer due at `now` or before, earliest first. Each is
    /// returned once; run each with [`Engine::run_timer`]. Until it runs it
    /// stays pending with its instance, so a snapshot taken meanwhile still
    /// carries it (and the process the state moves to runs it).
    pub fn take_due_timers(&self, now: SystemTime) -> Vec<DueTimer> {
        let mut taken = Vec::new();
        let mut queue = self.timers.queue.lock();
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            taken.push(entry.remove());
        }
        drop(queue);
        taken
            .into_iter()
            .map(|queued| DueTimer {
                module: queued.module.to_string(),
                instance: queued.instance.to_string(),
                method: queued.timer.method.clone(),
                payload: queued.timer.payload.clone(),
                due: queued.timer.due,
                id: queued.timer.id,
            })
            .collect()
    }

    /// Runs a timer from [`Engine::take_due_timers`]: calls its method on its
    /// instance with its payload, as [`Engine::call`] does, and removes the
    /// timer from the instance in the same step (under the instance's lock).
    ///
    /// `Ok(None)`: the timer no longer exists, and nothing ran: it ran
    /// already, or its instance was removed (or its module unloaded) since.
    /// A call that fails (`Err`, a refusal or a panic) still used the timer
    /// up: it is not retried.
    pub fn run_timer(&self, timer: &DueTimer) -> Result<Option<Vec<u8>>, CallError> {
        let Some(entry) = self.entry(&timer.module) else { return Ok(None) };
        // Looked up, never created: a timer does not start an instance.
        let Some(instance) = entry.instances.get(timer.instance.as_str()).map(|found| found.clone()) else {
            return Ok(None);
        };
        match entry
            .call_instance(&instance, &timer.method, &timer.payload, Some(timer.id))
            .map_err(|error| *error)
        {
            Err(CallError::InstanceRemoved { .. } | CallError::UnknownModule { .. }) => Ok(None),
            outcome => outcome,
        }
    }

    /// Timers pending across every instance, taken or not.
    pub fn pending_timers(&self) -> usize {
        self.timers.pending.load(Relaxed)
    }
}
