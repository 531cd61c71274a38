//! State that comes from elsewhere and goes elsewhere: restoring a saved
//! snapshot into a first load, adopting one into a loaded module (process
//! upgrade), and taking snapshots.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::hold::StillBusy;
use super::timers::{SavedTimers, Schedule};
use super::{Engine, ModuleEntry, Slot};
use crate::code::{Code, ModuleState, Previous};
use crate::error::{SnapshotError, SwapError};
use crate::status::{ModuleSnapshot, PartialSnapshot, SavedTimer, SwapReport};

impl Engine {
    /// First load of `module` with its instances taken over from a saved
    /// [`ModuleSnapshot`] (from [`Engine::snapshot`] in this or another
    /// process, or from disk): each instance starts with
    /// `init(Some(previous))`, so a newer version migrates an older state.
    /// All instances start or none: on error nothing is loaded.
    pub fn restore(
        &self,
        module: &str,
        path: impl AsRef<Path>,
        saved: &ModuleSnapshot,
    ) -> Result<SwapReport, SwapError> {
        self.restore_checked(module, path, saved, |_| Ok(()))
    }

    /// [`restore`](Self::restore) with a check of the private copy, as in
    /// [`load_checked`](Self::load_checked).
    pub fn restore_checked(
        &self,
        module: &str,
        path: impl AsRef<Path>,
        saved: &ModuleSnapshot,
        check: impl Fn(&Path) -> Result<(), String>,
    ) -> Result<SwapReport, SwapError> {
        let _swap = self.begin_swap(module)?;
        self.swap_in(module, path.as_ref(), None, Some(saved), &check)
    }

    /// Starts instances of the loaded `module` from `saved`, each through
    /// `init(Some(previous))` on the version that serves now: a process that
    /// loaded its modules first and receives their state afterwards (a
    /// whole-process upgrade). All instances start or none; an instance that
    /// already started is refused rather than overwritten. Returns how many
    /// instances started.
    pub fn adopt(&self, module: &str, saved: &ModuleSnapshot) -> Result<usize, SwapError> {
        let _swap = self.begin_swap(module)?;
        let entry = self.entry(module).ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        check_saved_module(module, saved)?;
        let mut timers = saved_timers(saved)?;
        let code = entry.current.lock().clone();
        let code = code.ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        let wait_started = Instant::now();
        let deadline = wait_started + self.config.swap_timeout;
        let timeout = |waiting_for: String| SwapError::Timeout {
            module: module.into(),
            from_version: code.info.version.clone(),
            to_version: code.info.version.clone(),
            waiting_for,
            waited: wait_started.elapsed(),
        };
        let _commit = entry
            .commit_lock
            .try_lock_until(deadline)
            .ok_or_else(|| timeout("a snapshot of the module".into()))?;
        // Every instance held and the gate closed, as in a swap: no instance
        // can start while the saved ones are checked and filled in, so a first
        // call either started before (and adopt refuses) or runs on the
        // adopted state (issue 7, item 14).
        let adopted = entry.with_all_held(deadline, |instances, slots, _| {
            let held: HashMap<&str, usize> = (instances.iter().enumerate())
                .filter(|(i, _)| !matches!(*slots[*i], Slot::Removed))
                .map(|(i, instance)| (&*instance.key, i))
                .collect();
            for (key, _) in &saved.instances {
                if held.get(key.as_str()).is_some_and(|&i| matches!(*slots[i], Slot::Live(_))) {
                    return Err(SwapError::AlreadyStarted { module: module.into(), instance: key.clone() });
                }
            }
            let mut started = Vec::with_capacity(saved.instances.len());
            for (key, bytes) in &saved.instances {
                started.push((key, start_saved(&code, saved, key, bytes)?));
            }
            let count = started.len();
            let mut attached = Vec::with_capacity(count);
            for (key, live) in started {
                let its_timers = timers.remove(key.as_str()).unwrap_or_default();
                match held.get(key.as_str()) {
                    // Created by a call or a handle but not started: fill it in
                    // place, so whoever holds it sees the adopted state.
                    Some(&i) => {
                        *instances[i].version.lock() = Some(live.code().info.version.clone());
                        *slots[i] = Slot::Live(live);
                        attached.push(entry.timers.attach(&entry.name, &instances[i], its_timers));
                    }
                    None => attached.extend(entry.insert_saved(key, live, its_timers)),
                }
            }
            attached.into_iter().for_each(|attached| entry.timers.enqueue(attached));
            Ok(count)
        });
        adopted.unwrap_or_else(|StillBusy { key }| Err(timeout(format!("instance '{key}'"))))
    }

    /// Snapshots every started instance of `module` (each at its own moment;
    /// calls to an instance wait while it is snapshotted).
    pub fn snapshot(&self, module: &str) -> Result<ModuleSnapshot, SnapshotError> {
        let entry =
            self.entry(module).ok_or_else(|| SnapshotError::UnknownModule { module: module.into() })?;
        Ok(entry.snapshot(None)?.snapshot)
    }

    /// [`snapshot`](Self::snapshot), except that an instance still busy at
    /// `deadline` (a call that is stuck or slow) is left out and its key
    /// listed in [`PartialSnapshot::busy`]: a host shutting down saves every
    /// other instance and keeps the busy one's last saved state.
    pub fn snapshot_until(&self, module: &str, deadline: Instant) -> Result<PartialSnapshot, SnapshotError> {
        let entry =
            self.entry(module).ok_or_else(|| SnapshotError::UnknownModule { module: module.into() })?;
        entry.snapshot(Some(deadline))
    }

    /// Adds a module that was not loaded, with its instances restored from
    /// `saved` if given.
    pub(super) fn publish_first(
        &self,
        module: &str,
        code: Arc<Code>,
        saved: Option<&ModuleSnapshot>,
        report: &mut SwapReport,
        started: Instant,
    ) -> Result<(), SwapError> {
        let entry = Arc::new(ModuleEntry::new(
            module,
            code.clone(),
            self.timers.clone(),
            self.config.on_push.clone(),
        ));
        let mut attached = Vec::new();
        if let Some(saved) = saved {
            check_saved_module(module, saved)?;
            let mut timers = saved_timers(saved)?;
            report.from_version = Some(saved.version.clone());
            let migrate_started = Instant::now();
            for (key, bytes) in &saved.instances {
                let live = start_saved(&code, saved, key, bytes)?;
                let its_timers = timers.remove(key.as_str()).unwrap_or_default();
                attached.extend(entry.insert_saved(key, live, its_timers));
                report.instances += 1;
                report.snapshot_bytes_total += bytes.len() as u64;
                report.snapshot_bytes_max = report.snapshot_bytes_max.max(bytes.len() as u64);
            }
            report.migrate_total = migrate_started.elapsed();
        }
        self.publish_modules(|modules| {
            modules.insert(module.into(), entry.clone());
        });
        // Only now: a timer that came due before the module was published
        // would find nothing to call.
        attached.into_iter().for_each(|attached| self.timers.enqueue(attached));
        report.total = started.elapsed();
        entry.books.lock().last_swap = Some(report.clone());
        tracing::debug!("{report}");
        Ok(())
    }
}

impl ModuleEntry {
    /// Snapshots every started instance; with a `deadline`, an instance whose
    /// call has not ended by then is listed as busy instead of waited for.
    fn snapshot(&self, deadline: Option<Instant>) -> Result<PartialSnapshot, SnapshotError> {
        for attempt in 0.. {
            // Instances are snapshotted one by one, so a swap can publish
            // between two of them, and one snapshot would hold two versions'
            // layouts under one version. Such a try is thrown away; after a
            // few, `commit_lock` is held, which keeps swaps out until done.
            let _no_swap = match (attempt >= 3, deadline) {
                (false, _) => None,
                (true, None) => Some(self.commit_lock.lock()),
                (true, Some(deadline)) => self.commit_lock.try_lock_until(deadline),
            };
            let mut version = None;
            let mut instances = Vec::new();
            let mut timers = Vec::new();
            let mut busy = Vec::new();
            let mut mixed = false;
            for instance in self.instances_now() {
                let slot = match deadline {
                    None => instance.slot.lock(),
                    Some(deadline) => match instance.slot.try_lock_until(deadline) {
                        Some(slot) => slot,
                        None => {
                            busy.push(instance.key.to_string());
                            continue;
                        }
                    },
                };
                let Slot::Live(live) = &*slot else { continue };
                let live_version = &live.code().info.version;
                if version.get_or_insert_with(|| live_version.clone()) != live_version {
                    mixed = true;
                    break;
                }
                let bytes = live.snapshot().map_err(|fault| SnapshotError::Failed {
                    module: self.name.to_string(),
                    version: live_version.clone(),
                    instance: instance.key.to_string(),
                    fault,
                })?;
                instances.push((instance.key.to_string(), bytes));
                // Under the same lock as the state: see `timers.rs`.
                timers.extend(Schedule::saved(&instance));
            }
            if mixed {
                continue;
            }
            let version = version
                .or_else(|| self.current.lock().as_ref().map(|code| code.info.version.clone()))
                .unwrap_or_default();
            instances.sort_by(|a, b| a.0.cmp(&b.0));
            // Stable: each instance's timers stay in due order.
            timers.sort_by(|a: &SavedTimer, b: &SavedTimer| a.instance.cmp(&b.instance));
            busy.sort();
            let snapshot = ModuleSnapshot { module: self.name.to_string(), version, instances, timers };
            return Ok(PartialSnapshot { snapshot, busy });
        }
        unreachable!("the loop returns")
    }
}

pub(super) fn check_saved_module(module: &str, saved: &ModuleSnapshot) -> Result<(), SwapError> {
    if saved.module != module {
        return Err(SwapError::SnapshotOfAnotherModule {
            module: module.into(),
            found: saved.module.clone(),
        });
    }
    Ok(())
}

/// The saved timers of each instance of `saved`. A timer of an instance the
/// snapshot does not hold is refused: it could never run, and a snapshot
/// the engine took never has one, so the snapshot was changed or damaged.
fn saved_timers(saved: &ModuleSnapshot) -> Result<HashMap<&str, SavedTimers>, SwapError> {
    let keys: HashSet<&str> = saved.instances.iter().map(|(key, _)| key.as_str()).collect();
    let mut timers: HashMap<&str, SavedTimers> = HashMap::new();
    for timer in &saved.timers {
        let Some(key) = keys.get(timer.instance.as_str()) else {
            return Err(SwapError::TimerOfUnknownInstance {
                module: saved.module.clone(),
                instance: timer.instance.clone(),
                method: timer.method.clone(),
            });
        };
        timers.entry(key).or_default().push((timer.due, timer.method.clone(), timer.payload.clone()));
    }
    Ok(timers)
}

/// Starts instance `key` on `code` from its saved state (restore, adopt).
fn start_saved(
    code: &Arc<Code>,
    saved: &ModuleSnapshot,
    key: &str,
    state: &[u8],
) -> Result<ModuleState, SwapError> {
    let previous = Previous { name: &saved.module, version: &saved.version, state };
    code.init(key, Some(previous)).map_err(|fault| SwapError::RestoreFailed {
        module: saved.module.clone(),
        instance: key.to_owned(),
        saved_version: saved.version.clone(),
        fault,
    })
}
