//! A dry run of a swap: the new version takes over a copy of every live
//! instance's state, one instance at a time, and nothing is published.
//!
//! Unlike a swap, it never holds more than one instance, and that one only
//! for its snapshot on the running version: the new version's `init` and
//! `snapshot` run on the copy after the instance is released, so no call
//! waits longer than one snapshot. It counts as the module's swap under way
//! (a load, rollback, adopt or unload meanwhile is refused, and it is refused
//! during one), so every instance is on the running version while it runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::retire::retire;
use super::{Engine, Instance, ModuleEntry, Slot};
use crate::code::{Code, ModuleState, Previous};
use crate::dry_run::{DryRunReport, TrialInstance, TrialOutcome};
use crate::error::SwapError;

impl Engine {
    /// Tries a swap of `module` to the file at `path` without making it.
    ///
    /// The file is opened beside the running version as a swap opens it
    /// (private copy, ELF and descriptor checks, module name) and must start
    /// a fresh instance. Then each live instance in turn is held only while
    /// the running version snapshots it; the new version's
    /// `init(Some(previous))` takes over that snapshot and `snapshot`s the
    /// result, which is then dropped. Finally the tried version is closed
    /// (and checked to have left memory, as a retired version is). Calls
    /// keep running throughout and every instance stays on the running
    /// version with its state.
    ///
    /// Returns `Err` when the file cannot be opened as this module (the
    /// errors a swap would give before it touches an instance), when the
    /// module is not loaded, or [`SwapError::SwapInProgress`] when a swap (or
    /// another dry run) of the module is under way. What the new version
    /// makes of the instances, refusals included, is in the report.
    pub fn dry_run(&self, module: &str, path: impl AsRef<Path>) -> Result<DryRunReport, SwapError> {
        self.dry_run_checked(module, path, |_| Ok(()))
    }

    /// [`dry_run`](Self::dry_run) with a check of the private copy, as in
    /// [`load_checked`](Self::load_checked): a file the check refuses is
    /// refused here as the swap would refuse it.
    pub fn dry_run_checked(
        &self,
        module: &str,
        path: impl AsRef<Path>,
        check: impl Fn(&Path) -> Result<(), String>,
    ) -> Result<DryRunReport, SwapError> {
        let _swap = self.begin_swap(module)?;
        let entry = self.entry(module).ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        let started = Instant::now();
        let path = path.as_ref();
        let private_copy = self.private_copy_path(module, path)?;
        let (code, _) = Code::open(module, path, private_copy.clone(), &check)?;
        let code = match entry.make_room(code, self.config.max_resident_retired, module, path) {
            Ok(code) => Arc::new(code),
            Err(refused) => {
                let _ = std::fs::remove_file(&private_copy);
                return Err(refused);
            }
        };
        let running = entry.current.lock().as_ref().map(|current| current.info.clone());
        let Some(running) = running else {
            drop(code);
            let _ = std::fs::remove_file(&private_copy);
            return Err(SwapError::UnknownModule { module: module.into() });
        };
        // Shown in status like a swap, with what it waits for, until it ends.
        let _shown = entry.show_dry_run(&code.info.version, started);
        let fresh_start = code.init("", None).err();
        let mut report = DryRunReport {
            module: module.into(),
            running_version: running.version,
            trial_version: code.info.version.clone(),
            file: path.to_owned(),
            running_layout: running.state_layout,
            trial_layout: code.info.state_layout,
            fresh_start,
            instances: Vec::new(),
            migrated: 0,
            refused: 0,
            old_snapshot_bytes_total: 0,
            new_snapshot_bytes_total: 0,
            migrate_total: Duration::ZERO,
            migrate_max: Duration::ZERO,
            hold_max: Duration::ZERO,
            open_and_verify: started.elapsed(),
            total: Duration::ZERO,
            trial_code_unmapped: None,
        };
        let mut instances = entry.instances_now();
        instances.sort_by(|a, b| a.key.cmp(&b.key));
        for instance in &instances {
            let timeout = self.config.swap_timeout;
            if let Some(tried) = entry.try_instance(&code, instance, timeout, &mut report.hold_max) {
                report.add(tried);
            }
        }
        // Every trial state was dropped with its instance's turn: nothing
        // holds the tried version but `code`. Close it as a retired version.
        report.trial_code_unmapped = retire(&mut entry.books.lock(), code);
        let _ = std::fs::remove_file(&private_copy);
        report.total = started.elapsed();
        tracing::debug!("{report}");
        Ok(report)
    }
}

impl DryRunReport {
    fn add(&mut self, tried: TrialInstance) {
        match tried.outcome.is_migrated() {
            true => self.migrated += 1,
            false => self.refused += 1,
        }
        self.old_snapshot_bytes_total += tried.old_snapshot_bytes;
        self.new_snapshot_bytes_total += tried.new_snapshot_bytes.unwrap_or(0);
        self.migrate_total += tried.took;
        self.migrate_max = self.migrate_max.max(tried.took);
        self.instances.push(tried);
    }
}

impl ModuleEntry {
    /// One instance's turn: snapshots it on the running version while
    /// holding it (waiting up to `timeout` for its call), releases it, and
    /// has `code` take over and snapshot a copy. `None` if it is not live
    /// (not started, or removed meanwhile).
    fn try_instance(
        &self,
        code: &Arc<Code>,
        instance: &Instance,
        timeout: Duration,
        hold_max: &mut Duration,
    ) -> Option<TrialInstance> {
        let waiting_since = Instant::now();
        let deadline = waiting_since + timeout;
        let key = instance.key.to_string();
        let slot = instance.slot.try_lock().or_else(|| {
            self.swap_progress.waiting_for(Some(&instance.key));
            let slot = instance.slot.try_lock_until(deadline);
            self.swap_progress.waiting_for(None);
            slot
        });
        let Some(slot) = slot else {
            let outcome = TrialOutcome::Busy { waited: waiting_since.elapsed() };
            return Some(TrialInstance {
                key,
                outcome,
                old_snapshot_bytes: 0,
                new_snapshot_bytes: None,
                took: Duration::ZERO,
            });
        };
        let started = Instant::now();
        let Slot::Live(live) = &*slot else { return None };
        let from = live.code().info.clone();
        let snapshot = live.snapshot();
        drop(slot);
        *hold_max = (*hold_max).max(started.elapsed());

        let old_snapshot = match snapshot {
            Ok(bytes) => bytes,
            Err(fault) => {
                let outcome = TrialOutcome::SnapshotFailed(fault);
                return Some(TrialInstance {
                    key,
                    outcome,
                    old_snapshot_bytes: 0,
                    new_snapshot_bytes: None,
                    took: started.elapsed(),
                });
            }
        };
        let previous = Previous { name: &from.name, version: &from.version, state: &old_snapshot };
        let (outcome, new_snapshot_bytes) = match code.init(&instance.key, Some(previous)) {
            Err(fault) => (TrialOutcome::MigrationFailed(fault), None),
            Ok(trial) => new_snapshot_of(&trial),
        };
        Some(TrialInstance {
            key,
            outcome,
            old_snapshot_bytes: old_snapshot.len() as u64,
            new_snapshot_bytes,
            took: started.elapsed(),
        })
    }
}

/// Snapshots a trial state on its (new) version, then drops it.
fn new_snapshot_of(trial: &ModuleState) -> (TrialOutcome, Option<u64>) {
    match trial.with_snapshot(|bytes| bytes.len() as u64) {
        Ok(size) => (TrialOutcome::Migrated, Some(size)),
        Err(fault) => (TrialOutcome::NewSnapshotFailed(fault), None),
    }
}
