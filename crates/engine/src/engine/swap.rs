//! Loading a version and swapping it in: open and verify beside the old
//! version, then move every instance to it or none (`commit`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use super::retire::{refresh_resident, retire};
use crate::sync::MutexGuard;

use super::hold::StillBusy;
use super::{Engine, Instance, ModuleEntry, Slot};
use crate::code::{Code, ModuleState, Previous};
use crate::error::SwapError;
use crate::status::{ModuleSnapshot, SwapReport};
use crate::{maps, private_dir};

impl Engine {
    /// Loads `module` from `path`: a first load, or a swap of the running
    /// version. Returns once calls run on the new version; on error the old
    /// version keeps serving with its state untouched.
    pub fn load(&self, module: &str, path: impl AsRef<Path>) -> Result<SwapReport, SwapError> {
        self.load_checked(module, path, |_| Ok(()))
    }

    /// [`load`](Self::load), with a check of the host's own (a checksum, a
    /// signature) run on the engine's private copy of the file before it is
    /// opened: it sees exactly the bytes that will run, however the original
    /// changes afterwards. An `Err` refuses the load with
    /// [`SwapError::Rejected`] and its reason.
    pub fn load_checked(
        &self,
        module: &str,
        path: impl AsRef<Path>,
        check: impl Fn(&Path) -> Result<(), String>,
    ) -> Result<SwapReport, SwapError> {
        let _swap = self.begin_swap(module)?;
        self.swap_in(module, path.as_ref(), None, None, &check)
    }

    /// Swaps `module` back to the version it ran before the last swap, from
    /// the engine's private copy of that file (the original may have been
    /// overwritten since). The state migrates as in any swap, so the older
    /// version's `init` must accept the newer version's snapshot.
    pub fn rollback(&self, module: &str) -> Result<SwapReport, SwapError> {
        let _swap = self.begin_swap(module)?;
        let entry = self.entry(module).ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        let rollback = entry.books.lock().rollback.clone();
        let (info, private_copy) =
            rollback.ok_or_else(|| SwapError::NothingToRollBack { module: module.into() })?;
        self.swap_in(module, &private_copy, Some(&info.file), None, &|_| Ok(()))
    }

    /// Opens `path` as `module` and publishes it: a first load (fresh, or
    /// restoring `saved`) or a swap. `shown_file` is the file to report, when
    /// `path` is a private copy.
    pub(super) fn swap_in(
        &self,
        module: &str,
        path: &Path,
        shown_file: Option<&Path>,
        saved: Option<&ModuleSnapshot>,
        check: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<SwapReport, SwapError> {
        let started = Instant::now();
        let existing = self.entry(module);
        if saved.is_some() && existing.is_some() {
            return Err(SwapError::AlreadyLoaded { module: module.into() });
        }
        let private_copy = self.private_copy_path(module, path)?;
        let (mut code, timings) = Code::open(module, path, private_copy.clone(), check)?;
        // Shown in status from here until the swap ends, either way.
        let _shown = existing.as_ref().map(|entry| entry.show_swap(&code.info.version, started));
        let result = (|| {
            if let Some(entry) = &existing {
                code = entry.make_room(code, self.config.max_resident_retired, module, path)?;
            }
            if let Some(file) = shown_file {
                code.info.file = file.to_owned();
            }
            let start_check = Instant::now();
            let code = Arc::new(code);
            start_check_of(&code)?;
            let mut report = SwapReport {
                module: module.into(),
                from_version: None,
                to_version: code.info.version.clone(),
                file: code.info.file.clone(),
                instances: 0,
                copy: timings.copy,
                open_and_verify: timings.open_and_verify,
                start_check: start_check.elapsed(),
                wait_for_calls: Duration::ZERO,
                migrate_total: Duration::ZERO,
                migrate_max: Duration::ZERO,
                pause: Duration::ZERO,
                total: Duration::ZERO,
                snapshot_bytes_total: 0,
                snapshot_bytes_max: 0,
                old_code_unmapped: None,
            };
            match &existing {
                None => self.publish_first(module, code, saved, &mut report, started)?,
                Some(entry) => {
                    let deadline = started + self.config.swap_timeout;
                    entry.commit(code, deadline, &mut report, started)?;
                    tracing::debug!("swapped {report}");
                }
            }
            Ok(report)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&private_copy);
        }
        result
    }

    pub(super) fn private_copy_path(&self, module: &str, source: &Path) -> Result<PathBuf, SwapError> {
        let mut dir = self.private_dir.lock();
        if dir.is_none() {
            let created = private_dir::create(self.config.private_dir.as_deref());
            *dir = Some(created.map_err(|source| SwapError::PrivateDir { source })?);
        }
        let dir = dir.as_ref().expect("created above");
        let seq = self.next_copy.fetch_add(1, Relaxed);
        let file_name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let safe = |s: &str| -> String {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
        };
        Ok(dir.path().join(format!("{seq:06}-{}-{}", safe(module), safe(&file_name))))
    }
}

impl ModuleEntry {
    /// Makes sure retiring one more version will not pass `limit` resident
    /// retired versions, and hands `code` back.
    ///
    /// glibc unmaps a library whose thread-local destructors have all run only
    /// during some later `dlclose`. So when the limit is reached, closing the
    /// candidate (an ordinary `dlclose`) may free room: close it, look again,
    /// and reopen it from its private copy if there is room now.
    pub(super) fn make_room(
        &self,
        code: Code,
        limit: usize,
        module: &str,
        source: &Path,
    ) -> Result<Code, SwapError> {
        if !self.resident_limit_reached(limit) {
            return Ok(code);
        }
        let private_copy = code.private_copy.clone();
        if let Err(message) = code.close() {
            tracing::warn!(module, "dlclose failed: {message}");
        }
        if self.resident_limit_reached(limit) {
            let resident = self.books.lock().resident_retired.len();
            return Err(SwapError::TooManyResident { module: module.into(), resident, limit });
        }
        Code::open_copy(module, source, &private_copy)
    }

    fn resident_limit_reached(&self, limit: usize) -> bool {
        let mut books = self.books.lock();
        if books.resident_retired.is_empty() {
            return false;
        }
        if let Some(maps) = maps::read() {
            refresh_resident(&mut books, &maps);
        }
        books.resident_retired.len() >= limit
    }

    /// Moves every instance to `code`, or none of them.
    fn commit(
        &self,
        code: Arc<Code>,
        deadline: Instant,
        report: &mut SwapReport,
        started: Instant,
    ) -> Result<(), SwapError> {
        let wait_started = Instant::now();
        let from_version = self.current.lock().as_ref().map(|old| old.info.version.clone());
        let from_version =
            from_version.ok_or_else(|| SwapError::UnknownModule { module: self.name.to_string() })?;
        report.from_version = Some(from_version.clone());
        let timeout = |waiting_for: String| SwapError::Timeout {
            module: self.name.to_string(),
            from_version: from_version.clone(),
            to_version: code.info.version.clone(),
            waiting_for,
            waited: wait_started.elapsed(),
        };
        let _commit = self
            .commit_lock
            .try_lock_until(deadline)
            .ok_or_else(|| timeout("a snapshot of the module".into()))?;
        let held = self.with_all_held(deadline, |instances, slots, held_since| {
            report.wait_for_calls = wait_started.elapsed();
            let migrated = self.migrate(&code, instances, slots, report)?;
            // Publish: every slot and `current` now name the new version, and
            // the calls each instance made so far are booked to the old one.
            let old = self.current.lock().replace(code.clone());
            let old = old.ok_or_else(|| SwapError::UnknownModule { module: self.name.to_string() })?;
            let mut old_states = Vec::with_capacity(slots.len());
            let mut books = self.books.lock();
            for ((instance, slot), new_live) in instances.iter().zip(slots.iter_mut()).zip(migrated) {
                books.take_counts(&old.info.version, instance);
                if let Some(new_live) = new_live {
                    *instance.version.lock() = Some(code.info.version.clone());
                    old_states.push(std::mem::replace(&mut **slot, Slot::Live(new_live)));
                }
            }
            Ok((old, old_states, held_since))
        });
        let (old, old_states, held_since) = match held {
            Ok(published) => published?,
            Err(StillBusy { key }) => return Err(timeout(format!("instance '{key}'"))),
        };
        report.pause = held_since.elapsed();
        report.total = started.elapsed();

        // Nothing can reach the old version now: drop its states, close it.
        drop(old_states);
        let rollback = (old.info.clone(), old.private_copy.clone());
        let mut books = self.books.lock();
        report.old_code_unmapped = retire(&mut books, old);
        // The replaced version's private copy is kept as the rollback target.
        if let Some((_, stale_copy)) = books.rollback.replace(rollback) {
            let _ = std::fs::remove_file(stale_copy);
        }
        books.swaps += 1;
        books.since = SystemTime::now();
        books.last_swap = Some(report.clone());
        Ok(())
    }
}

impl ModuleEntry {
    /// Builds each started instance's state on `code` from its snapshot on
    /// the version it runs; the caller holds every slot. On the first failure
    /// the states built so far are dropped (through `code`) and the slots
    /// are left as they were.
    fn migrate(
        &self,
        code: &Arc<Code>,
        instances: &[Arc<Instance>],
        slots: &[MutexGuard<'_, Slot>],
        report: &mut SwapReport,
    ) -> Result<Vec<Option<ModuleState>>, SwapError> {
        let mut migrated = Vec::with_capacity(slots.len());
        for (instance, slot) in instances.iter().zip(slots) {
            let Slot::Live(live) = &**slot else {
                migrated.push(None);
                continue;
            };
            let one_started = Instant::now();
            let from = &live.code().info;
            let mut size = 0;
            let state = live
                .with_snapshot(|state| {
                    size = state.len() as u64;
                    code.init(
                        &instance.key,
                        Some(Previous { name: &from.name, version: &from.version, state }),
                    )
                })
                .map_err(|fault| SwapError::SnapshotFailed {
                    module: self.name.to_string(),
                    instance: instance.key.to_string(),
                    from_version: from.version.clone(),
                    fault,
                })?
                .map_err(|fault| SwapError::MigrationFailed {
                    module: self.name.to_string(),
                    instance: instance.key.to_string(),
                    from_version: from.version.clone(),
                    to_version: code.info.version.clone(),
                    fault,
                })?;
            migrated.push(Some(state));
            let took = one_started.elapsed();
            report.migrate_total += took;
            report.migrate_max = report.migrate_max.max(took);
            report.snapshot_bytes_total += size;
            report.snapshot_bytes_max = report.snapshot_bytes_max.max(size);
            report.instances += 1;
        }
        Ok(migrated)
    }
}

/// Starts and drops one fresh state on `code`, so a version whose `init`
/// fails is refused at load time rather than at its first call.
fn start_check_of(code: &Arc<Code>) -> Result<(), SwapError> {
    let trial = code.init("", None).map_err(|fault| SwapError::InitFailed {
        module: code.info.name.clone(),
        version: code.info.version.clone(),
        fault,
    })?;
    drop(trial);
    Ok(())
}
