//! The registry of modules and their instances, the call path, and the swap.
//!
//! # Locking
//!
//! Each instance's state lives in `Instance::slot`, a mutex held for the
//! whole of a call. That lock is what pins a call to one version: a swap
//! takes every instance's lock, migrates, republishes each slot with the new
//! version and releases them, so a call runs entirely before or entirely
//! after a swap, and a call that arrives meanwhile waits for the lock.
//!
//! `ModuleEntry::current` (the version new instances start on) is only read
//! when an instance starts, and written by a swap before it takes any
//! instance lock. Both sides take `current` before a slot, never the other
//! way round, so they cannot deadlock.
//!
//! When a swap releases the instance locks, no slot refers to the old
//! version any more and no call can be running in it; its states are dropped
//! and its library is closed at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};
use tempfile::TempDir;

use crate::code::{Code, ModuleInfo, StatePtr};
use crate::config::EngineConfig;
use crate::error::{CallError, Fault, SnapshotError, SwapError};
use crate::maps;
use crate::status::{EngineStatus, ModuleSnapshot, ModuleStatus, RetiredVersion, SwapReport};

/// Randomly seeded, so instance keys chosen by clients cannot be picked to collide.
type Hasher = foldhash::fast::RandomState;
type ModuleMap = HashMap<Box<str>, Arc<ModuleEntry>, Hasher>;

/// Hosts modules, runs their calls and swaps their versions. See the crate docs.
pub struct Engine {
    config: EngineConfig,
    /// Read on every call without locking; replaced (copy on write) only when
    /// a module is added or removed.
    modules: ArcSwap<ModuleMap>,
    /// Modules with a load, rollback or unload under way.
    swapping: Mutex<HashSet<String>>,
    /// Private copies of module files; created on first load, removed on drop.
    private_dir: Mutex<Option<TempDir>>,
    next_copy: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let modules: Vec<_> = self.modules.load().keys().cloned().collect();
        f.debug_struct("Engine").field("config", &self.config).field("modules", &modules).finish()
    }
}

/// One module: the version new instances start on, its instances, and the
/// bookkeeping behind status and rollback.
struct ModuleEntry {
    name: Box<str>,
    /// `None` once the module is unloaded.
    current: RwLock<Option<Arc<Code>>>,
    instances: DashMap<Box<str>, Arc<Instance>, Hasher>,
    books: Mutex<Books>,
}

#[derive(Default)]
struct Instance {
    slot: Mutex<Option<Live>>,
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
}

/// A started instance: its state and the version that owns it.
struct Live {
    code: Arc<Code>,
    state: StatePtr,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Err(fault) = self.code.drop_state(self.state) {
            tracing::warn!(module = %self.code.info.name, version = %self.code.info.version, "dropping a state {fault}");
        }
    }
}

struct Books {
    since: SystemTime,
    swaps: u64,
    last_swap: Option<SwapReport>,
    /// The private copy of the version before the current one.
    rollback: Option<(ModuleInfo, PathBuf)>,
    resident_retired: Vec<RetiredVersion>,
    reclaimed: u64,
}

/// Marks a module as being swapped; dropping it ends the swap.
struct SwapGuard<'a> {
    engine: &'a Engine,
    module: String,
}

impl Drop for SwapGuard<'_> {
    fn drop(&mut self) {
        self.engine.swapping.lock().remove(&self.module);
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            modules: ArcSwap::from_pointee(ModuleMap::default()),
            swapping: Mutex::new(HashSet::new()),
            private_dir: Mutex::new(None),
            next_copy: AtomicU64::new(1),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads `module` from `path`: a first load, or a swap of the running
    /// version. Returns once calls run on the new version; on error the old
    /// version keeps serving with its state untouched.
    pub fn load(&self, module: &str, path: impl AsRef<Path>) -> Result<SwapReport, SwapError> {
        let _swap = self.begin_swap(module)?;
        self.swap_in(module, path.as_ref(), None)
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
        self.swap_in(module, &private_copy, Some(&info.file))
    }

    /// Removes `module`: waits for its running calls, drops every instance's
    /// state and unloads its code. Take a [`snapshot`](Self::snapshot) first
    /// to keep the state. Calls that arrive afterwards get `UnknownModule`.
    pub fn unload(&self, module: &str) -> Result<(), SwapError> {
        let _swap = self.begin_swap(module)?;
        let entry = self.entry(module).ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        self.modules.rcu(|modules| {
            let mut modules = ModuleMap::clone(modules);
            modules.remove(module);
            modules
        });
        let old = entry.current.write().take();
        let instances = entry.instances_now();
        for (_, instance) in &instances {
            instance.slot.lock().take();
        }
        entry.instances.clear();
        let mut books = entry.books.lock();
        if let Some(old) = old {
            let private_copy = old.private_copy.clone();
            retire(&mut books, old);
            let _ = std::fs::remove_file(private_copy);
        }
        if let Some((_, private_copy)) = books.rollback.take() {
            let _ = std::fs::remove_file(private_copy);
        }
        tracing::info!(module, "unloaded");
        Ok(())
    }

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
        let modules = self.modules.load();
        let entry = modules.get(module).ok_or_else(|| CallError::UnknownModule { module: module.into() })?;
        entry.call(instance, method, payload)
    }

    /// Snapshots every started instance of `module` (each at its own moment;
    /// calls to an instance wait while it is snapshotted).
    pub fn snapshot(&self, module: &str) -> Result<ModuleSnapshot, SnapshotError> {
        let entry =
            self.entry(module).ok_or_else(|| SnapshotError::UnknownModule { module: module.into() })?;
        let version = entry.current.read().as_ref().map(|code| code.info.version.clone()).unwrap_or_default();
        let mut instances = Vec::new();
        for (key, instance) in entry.instances_now() {
            let slot = instance.slot.lock();
            let Some(live) = slot.as_ref() else { continue };
            let bytes = live.code.snapshot(live.state).map_err(|fault| SnapshotError::Failed {
                module: module.into(),
                version: live.code.info.version.clone(),
                instance: key.to_string(),
                fault,
            })?;
            instances.push((key.to_string(), bytes));
        }
        instances.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ModuleSnapshot { module: module.into(), version, instances })
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

    fn entry(&self, module: &str) -> Option<Arc<ModuleEntry>> {
        self.modules.load().get(module).cloned()
    }

    fn begin_swap(&self, module: &str) -> Result<SwapGuard<'_>, SwapError> {
        if !self.swapping.lock().insert(module.to_owned()) {
            return Err(SwapError::SwapInProgress { module: module.into() });
        }
        Ok(SwapGuard { engine: self, module: module.to_owned() })
    }

    /// Opens `path` as `module` and publishes it: a first load or a swap.
    /// `shown_file` is the file to report, when `path` is a private copy.
    fn swap_in(&self, module: &str, path: &Path, shown_file: Option<&Path>) -> Result<SwapReport, SwapError> {
        let started = Instant::now();
        let existing = self.entry(module);
        if let Some(entry) = &existing {
            entry.check_resident_limit(self.config.max_resident_retired)?;
        }
        let private_copy = self.private_copy_path(module, path)?;
        let (mut code, timings) = Code::open(module, path, private_copy)?;
        if let Some(file) = shown_file {
            code.info.file = file.to_owned();
        }
        let code = Arc::new(code);
        let mut report = SwapReport {
            module: module.into(),
            from_version: None,
            to_version: code.info.version.clone(),
            file: code.info.file.clone(),
            instances: 0,
            copy: timings.copy,
            open_and_verify: timings.open_and_verify,
            wait_for_calls: Duration::ZERO,
            migrate_total: Duration::ZERO,
            migrate_max: Duration::ZERO,
            pause: Duration::ZERO,
            total: Duration::ZERO,
            snapshot_bytes_total: 0,
            snapshot_bytes_max: 0,
            old_code_unmapped: None,
        };
        match existing {
            None => {
                let entry = Arc::new(ModuleEntry::new(module, code));
                self.modules.rcu(|modules| {
                    let mut modules = ModuleMap::clone(modules);
                    modules.insert(module.into(), entry.clone());
                    modules
                });
                report.total = started.elapsed();
                entry.books.lock().last_swap = Some(report.clone());
                tracing::info!(module, version = %report.to_version, file = %report.file.display(), "loaded");
            }
            Some(entry) => {
                let deadline = started + self.config.swap_timeout;
                entry.commit(code, deadline, &mut report, started)?;
                tracing::info!("swapped {report}");
            }
        }
        Ok(report)
    }

    fn private_copy_path(&self, module: &str, source: &Path) -> Result<PathBuf, SwapError> {
        let mut dir = self.private_dir.lock();
        if dir.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix("hotswap-");
            let created = match &self.config.private_dir {
                Some(parent) => std::fs::create_dir_all(parent).and_then(|()| builder.tempdir_in(parent)),
                None => builder.tempdir(),
            };
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
    fn new(name: &str, code: Arc<Code>) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            current: RwLock::new(Some(code)),
            instances: DashMap::with_hasher(Hasher::default()),
            books: Mutex::new(Books {
                since: SystemTime::now(),
                swaps: 0,
                last_swap: None,
                rollback: None,
                resident_retired: Vec::new(),
                reclaimed: 0,
            }),
        }
    }

    fn instance(&self, key: &str) -> Arc<Instance> {
        if let Some(found) = self.instances.get(key) {
            return found.clone();
        }
        self.instances.entry(key.into()).or_default().clone()
    }

    /// The instances that exist now, in no particular order.
    fn instances_now(&self) -> Vec<(Box<str>, Arc<Instance>)> {
        self.instances.iter().map(|item| (item.key().clone(), item.value().clone())).collect()
    }

    fn call(&self, key: &str, method: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let instance = self.instance(key);
        let mut slot = instance.slot.lock();
        instance.calls.fetch_add(1, Relaxed);
        if slot.is_none() {
            drop(slot);
            slot = self.start(&instance, key).inspect_err(|error| {
                let counter = match error {
                    CallError::InitFailed { fault: Fault::Panic(_), .. } => &instance.panics,
                    _ => &instance.errors,
                };
                counter.fetch_add(1, Relaxed);
            })?;
        }
        let live = slot.as_ref().expect("the slot was started above");
        live.code.handle(live.state, method, payload).map_err(|fault| {
            let info = &live.code.info;
            let (module, version, method) = (info.name.clone(), info.version.clone(), method.to_owned());
            match fault {
                Fault::Error(message) => {
                    instance.errors.fetch_add(1, Relaxed);
                    CallError::Refused { module, version, method, message }
                }
                Fault::Panic(message) => {
                    instance.panics.fetch_add(1, Relaxed);
                    tracing::warn!(%module, %version, %method, instance = key, "module panicked: {message}");
                    CallError::Panicked { module, version, method, message }
                }
            }
        })
    }

    /// Starts `instance` on the current version with `init(None)`.
    fn start<'a>(
        &self,
        instance: &'a Instance,
        key: &str,
    ) -> Result<MutexGuard<'a, Option<Live>>, CallError> {
        // `current` before the slot: the order a swap uses too.
        let current = self.current.read();
        let mut slot = instance.slot.lock();
        if slot.is_none() {
            let code =
                current.as_ref().ok_or_else(|| CallError::UnknownModule { module: self.name.to_string() })?;
            let state = code.init(None).map_err(|fault| CallError::InitFailed {
                module: self.name.to_string(),
                version: code.info.version.clone(),
                instance: key.to_owned(),
                fault,
            })?;
            *slot = Some(Live { code: code.clone(), state });
        }
        Ok(slot)
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
        let timeout = |report: &SwapReport, waiting_for: String| SwapError::Timeout {
            module: self.name.to_string(),
            from_version: report.from_version.clone().unwrap_or_default(),
            to_version: code.info.version.clone(),
            waiting_for,
            waited: wait_started.elapsed(),
        };
        // No instance can start on the old version once we hold `current`.
        let mut current = self
            .current
            .try_write_until(deadline)
            .ok_or_else(|| timeout(report, "instances that are starting".into()))?;
        let old =
            current.clone().ok_or_else(|| SwapError::UnknownModule { module: self.name.to_string() })?;
        report.from_version = Some(old.info.version.clone());

        let instances = self.instances_now();
        let mut slots = Vec::with_capacity(instances.len());
        let mut first_held = None;
        for (key, instance) in &instances {
            match instance.slot.try_lock_until(deadline) {
                Some(slot) => slots.push(slot),
                None => return Err(timeout(report, format!("instance '{key}'"))),
            }
            first_held.get_or_insert_with(Instant::now);
        }
        let first_held = first_held.unwrap_or_else(Instant::now);
        report.wait_for_calls = wait_started.elapsed();

        // Every call of this module is now waiting for us. Migrate each
        // started instance; on the first failure drop what was built (the
        // new states, through the new version) and leave the slots as they were.
        let mut migrated = Vec::with_capacity(slots.len());
        for ((key, _), slot) in instances.iter().zip(&slots) {
            let Some(live) = slot.as_ref() else {
                migrated.push(None);
                continue;
            };
            let one_started = Instant::now();
            let snapshot = live.code.snapshot(live.state).map_err(|fault| SwapError::SnapshotFailed {
                module: self.name.to_string(),
                instance: key.to_string(),
                from_version: live.code.info.version.clone(),
                fault,
            })?;
            let state = code.init(Some((&live.code.info, &snapshot))).map_err(|fault| {
                SwapError::MigrationFailed {
                    module: self.name.to_string(),
                    instance: key.to_string(),
                    from_version: live.code.info.version.clone(),
                    to_version: code.info.version.clone(),
                    fault,
                }
            })?;
            migrated.push(Some(Live { code: code.clone(), state }));
            let took = one_started.elapsed();
            report.migrate_total += took;
            report.migrate_max = report.migrate_max.max(took);
            report.snapshot_bytes_total += snapshot.len() as u64;
            report.snapshot_bytes_max = report.snapshot_bytes_max.max(snapshot.len() as u64);
            report.instances += 1;
        }

        // Publish: every slot and `current` now name the new version.
        let mut old_states = Vec::with_capacity(slots.len());
        for (slot, new_live) in slots.iter_mut().zip(migrated) {
            if let Some(new_live) = new_live {
                old_states.extend(slot.replace(new_live));
            }
        }
        *current = Some(code);
        drop(slots);
        drop(current);
        report.pause = first_held.elapsed();
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

    fn check_resident_limit(&self, limit: usize) -> Result<(), SwapError> {
        let mut books = self.books.lock();
        if books.resident_retired.is_empty() {
            return Ok(());
        }
        if let Some(maps) = maps::read() {
            refresh_resident(&mut books, &maps);
        }
        if books.resident_retired.len() >= limit {
            return Err(SwapError::TooManyResident {
                module: self.name.to_string(),
                resident: books.resident_retired.len(),
                limit,
            });
        }
        Ok(())
    }

    fn status(&self, maps: Option<&str>) -> Option<ModuleStatus> {
        let current = self.current.read().as_ref()?.info.clone();
        let (mut calls, mut errors, mut panics) = (0, 0, 0);
        let mut instances = 0;
        for item in self.instances.iter() {
            let instance = item.value();
            calls += instance.calls.load(Relaxed);
            errors += instance.errors.load(Relaxed);
            panics += instance.panics.load(Relaxed);
            instances += 1;
        }
        let mut books = self.books.lock();
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
            swaps: books.swaps,
            last_swap: books.last_swap.clone(),
            rollback_version: books.rollback.as_ref().map(|(info, _)| info.version.clone()),
            resident_retired: books.resident_retired.clone(),
            reclaimed: books.reclaimed,
        })
    }
}

/// Closes a replaced version and records whether its code left memory.
/// Returns `Some(true)` when it did, `Some(false)` when it is still mapped.
fn retire(books: &mut Books, old: Arc<Code>) -> Option<bool> {
    let code = match Arc::try_unwrap(old) {
        Ok(code) => code,
        Err(_still_shared) => {
            // Not reached: every slot and `current` let go of the version
            // before this point. Should it happen, the last holder closes it.
            tracing::error!("a replaced module version is still referenced; it will close when released");
            return None;
        }
    };
    let (info, private_copy) = (code.info.clone(), code.private_copy.clone());
    if let Err(message) = code.close() {
        tracing::warn!(module = %info.name, version = %info.version, "dlclose failed: {message}");
    }
    let mapped = maps::read().map(|maps| maps::is_mapped(&maps, &private_copy));
    match mapped {
        Some(true) => {
            tracing::warn!(
                module = %info.name,
                version = %info.version,
                "the replaced version is still mapped after dlclose (it registered thread-local destructors \
                 on threads that are still running); it counts against max_resident_retired"
            );
            books.resident_retired.push(RetiredVersion {
                version: info.version,
                file: info.file,
                private_copy,
            });
        }
        Some(false) => books.reclaimed += 1,
        None => {}
    }
    mapped.map(|mapped| !mapped)
}

/// Forgets retired versions that have left memory since they were closed.
fn refresh_resident(books: &mut Books, maps: &str) {
    let before = books.resident_retired.len();
    books.resident_retired.retain(|retired| maps::is_mapped(maps, &retired.private_copy));
    books.reclaimed += (before - books.resident_retired.len()) as u64;
}
