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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};
use tempfile::TempDir;

use crate::code::{Code, ModuleInfo, Previous, StatePtr};
use crate::config::EngineConfig;
use crate::error::{CallError, Fault, SnapshotError, SwapError};
use crate::maps;
use crate::status::{
    EngineStatus, InstanceStatus, ModuleSnapshot, ModuleStatus, PartialSnapshot, RetiredVersion, SwapReport,
    VersionCalls,
};

/// Module names come from the host's configuration, not from clients: a fast
/// randomly seeded hash is enough, and every call looks one up.
type ModuleHasher = foldhash::fast::RandomState;
type ModuleMap = HashMap<Box<str>, Arc<ModuleEntry>, ModuleHasher>;
/// Instance keys are chosen by clients. SipHash with a random key (std's
/// `RandomState`) is made to resist keys picked to collide (hash flooding);
/// foldhash says plainly it should not be used where someone may study the
/// process to build colliding inputs.
pub(crate) type InstanceHasher = std::hash::RandomState;

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
    instances: DashMap<Box<str>, Arc<Instance>, InstanceHasher>,
    /// How many entries `instances` has; kept beside the map so a new key
    /// can be checked against `max_instances` atomically, without a lock on
    /// every shard. Changed only together with an insert or a remove.
    instance_count: AtomicUsize,
    /// The most instances calls may create; `usize::MAX` is no limit.
    max_instances: AtomicUsize,
    books: Mutex<Books>,
}

struct Instance {
    key: Box<str>,
    slot: Mutex<Slot>,
    /// The version the slot's state belongs to (`None`: not started), for
    /// [`Engine::instances`], which must not wait for a running call. Written
    /// under `slot`'s lock whenever the slot changes version; a leaf lock.
    version: Mutex<Option<String>>,
    /// Calls since the instance was created. Written only under `slot`'s lock
    /// (see [`bump`]); read by status without it.
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    /// How much of each count is already booked to a version in
    /// [`Books::counted`]; written under `slot`'s lock and the books' lock.
    booked: [AtomicU64; 3],
}

enum Slot {
    /// Created by a first call that has not started it yet.
    Unstarted,
    Live(Live),
    /// Removed by `remove_instance` or `unload`; callers look the key up again.
    Removed,
}

/// A started instance: its state and the version that owns it.
struct Live {
    code: Arc<Code>,
    state: StatePtr,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Err(fault) = self.code.drop_state(self.state) {
            let info = &self.code.info;
            tracing::warn!(module = %info.name, version = %info.version, "dropping a state {fault}");
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
    /// Calls no instance counts any more, by the version that served them:
    /// a swap moves each instance's counts here, as does removing an instance.
    counted: BTreeMap<String, VersionCalls>,
}

impl Books {
    /// Moves `instance`'s counters to `version`'s line. The caller holds the
    /// instance's lock (so nothing counts meanwhile) and this `Books`'s lock
    /// (so status never sees a count twice or not at all).
    fn take_counts(&mut self, version: &str, instance: &Instance) {
        let line = self
            .counted
            .entry(version.to_owned())
            .or_insert_with(|| VersionCalls { version: version.to_owned(), ..VersionCalls::default() });
        let [calls, errors, panics] = instance.unbooked();
        line.calls += calls;
        line.errors += errors;
        line.panics += panics;
        for (booked, count) in instance.booked.iter().zip(instance.counts()) {
            booked.store(count, Relaxed);
        }
    }
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
        self.entry.call_instance(&self.instance, method, payload)
    }

    pub fn module(&self) -> &str {
        &self.entry.name
    }

    pub fn key(&self) -> &str {
        &self.instance.key
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
        // Holding `current` keeps first calls from starting instances meanwhile.
        let current = entry.current.read();
        let code = current.as_ref().ok_or_else(|| SwapError::UnknownModule { module: module.into() })?;
        let mut started = Vec::with_capacity(saved.instances.len());
        for (key, bytes) in &saved.instances {
            let existing = entry.instances.get(key.as_str()).map(|found| found.clone());
            if existing.as_ref().is_some_and(|instance| matches!(*instance.slot.lock(), Slot::Live(_))) {
                return Err(SwapError::AlreadyStarted { module: module.into(), instance: key.clone() });
            }
            started.push((key, existing, start_saved(code, saved, key, bytes)?));
        }
        let count = started.len();
        for (key, existing, live) in started {
            match existing {
                // Created by a call or a handle but not started: fill it in
                // place, so whoever holds it sees the adopted state.
                Some(instance) => {
                    let mut slot = instance.slot.lock();
                    *instance.version.lock() = Some(live.code.info.version.clone());
                    *slot = Slot::Live(live);
                }
                None => entry.insert_saved(key, live),
            }
        }
        Ok(count)
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
        let old = entry.shut_down();
        let mut books = entry.books.lock();
        if let Some(old) = old {
            let private_copy = old.private_copy.clone();
            retire(&mut books, old);
            let _ = std::fs::remove_file(private_copy);
        }
        if let Some((_, private_copy)) = books.rollback.take() {
            let _ = std::fs::remove_file(private_copy);
        }
        tracing::debug!(module, "unloaded");
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
        loop {
            let found = entry.instance(instance)?;
            match entry.call_instance(&found, method, payload) {
                // Removed between the lookup and the lock: look up again.
                Err(CallError::InstanceRemoved { .. }) => continue,
                outcome => return outcome,
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
            let mut slot = instance.slot.lock();
            let version = match &*slot {
                Slot::Live(live) => live.code.info.version.clone(),
                _ => entry.current.read().as_ref().map(|code| code.info.version.clone()).unwrap_or_default(),
            };
            entry.books.lock().take_counts(&version, &instance);
            *instance.version.lock() = None;
            std::mem::replace(&mut *slot, Slot::Removed)
        };
        drop(removed);
        Ok(true)
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

    /// Opens `path` as `module` and publishes it: a first load (fresh, or
    /// restoring `saved`) or a swap. `shown_file` is the file to report, when
    /// `path` is a private copy.
    fn swap_in(
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
        let result = (|| {
            if let Some(entry) = &existing {
                code = entry.make_room(code, self.config.max_resident_retired, module, path)?;
            }
            if let Some(file) = shown_file {
                code.info.file = file.to_owned();
            }
            let start_check = Instant::now();
            start_check_of(&code)?;
            let code = Arc::new(code);
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
            match existing {
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

    /// Adds a module that was not loaded, with its instances restored from
    /// `saved` if given.
    fn publish_first(
        &self,
        module: &str,
        code: Arc<Code>,
        saved: Option<&ModuleSnapshot>,
        report: &mut SwapReport,
        started: Instant,
    ) -> Result<(), SwapError> {
        let entry = Arc::new(ModuleEntry::new(module, code.clone()));
        if let Some(saved) = saved {
            check_saved_module(module, saved)?;
            report.from_version = Some(saved.version.clone());
            let migrate_started = Instant::now();
            for (key, bytes) in &saved.instances {
                entry.insert_saved(key, start_saved(&code, saved, key, bytes)?);
                report.instances += 1;
                report.snapshot_bytes_total += bytes.len() as u64;
                report.snapshot_bytes_max = report.snapshot_bytes_max.max(bytes.len() as u64);
            }
            report.migrate_total = migrate_started.elapsed();
        }
        self.modules.rcu(|modules| {
            let mut modules = ModuleMap::clone(modules);
            modules.insert(module.into(), entry.clone());
            modules
        });
        report.total = started.elapsed();
        entry.books.lock().last_swap = Some(report.clone());
        tracing::debug!("{report}");
        Ok(())
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

impl Drop for Engine {
    /// Drops every instance's state and closes every module now, even if
    /// [`InstanceHandle`]s outlive the engine.
    fn drop(&mut self) {
        for entry in self.modules.load().values() {
            entry.shut_down();
        }
    }
}

fn check_saved_module(module: &str, saved: &ModuleSnapshot) -> Result<(), SwapError> {
    if saved.module != module {
        return Err(SwapError::SnapshotOfAnotherModule {
            module: module.into(),
            found: saved.module.clone(),
        });
    }
    Ok(())
}

/// Starts instance `key` on `code` from its saved state (restore, adopt).
fn start_saved(code: &Arc<Code>, saved: &ModuleSnapshot, key: &str, state: &[u8]) -> Result<Live, SwapError> {
    let previous = Previous { name: &saved.module, version: &saved.version, state };
    let state = code.init(Some(previous)).map_err(|fault| SwapError::RestoreFailed {
        module: saved.module.clone(),
        instance: key.to_owned(),
        saved_version: saved.version.clone(),
        fault,
    })?;
    Ok(Live { code: code.clone(), state })
}

/// Starts and drops one fresh state on `code`, so a version whose `init`
/// fails is refused at load time rather than at its first call.
fn start_check_of(code: &Code) -> Result<(), SwapError> {
    let state = code.init(None).map_err(|fault| SwapError::InitFailed {
        module: code.info.name.clone(),
        version: code.info.version.clone(),
        fault,
    })?;
    if let Err(fault) = code.drop_state(state) {
        tracing::warn!(module = %code.info.name, version = %code.info.version, "dropping a trial state {fault}");
    }
    Ok(())
}

/// Counters are written only under their instance's lock, so a load and a
/// store is enough (no read-modify-write, which costs as much as the rest of
/// a call); readers only need a recent value.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

impl Instance {
    fn new(key: &str, slot: Slot) -> Instance {
        let version = match &slot {
            Slot::Live(live) => Some(live.code.info.version.clone()),
            Slot::Unstarted | Slot::Removed => None,
        };
        Instance {
            key: key.into(),
            slot: Mutex::new(slot),
            version: Mutex::new(version),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            booked: Default::default(),
        }
    }

    /// Calls, errors and panics since the instance was created.
    fn counts(&self) -> [u64; 3] {
        [self.calls.load(Relaxed), self.errors.load(Relaxed), self.panics.load(Relaxed)]
    }

    /// The counts not yet booked to a version (see [`Books::take_counts`]).
    fn unbooked(&self) -> [u64; 3] {
        let counts = self.counts();
        std::array::from_fn(|i| counts[i] - self.booked[i].load(Relaxed))
    }
}

impl ModuleEntry {
    fn new(name: &str, code: Arc<Code>) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            current: RwLock::new(Some(code)),
            instances: DashMap::with_hasher(InstanceHasher::default()),
            instance_count: AtomicUsize::new(0),
            max_instances: AtomicUsize::new(usize::MAX),
            books: Mutex::new(Books {
                since: SystemTime::now(),
                swaps: 0,
                last_swap: None,
                rollback: None,
                resident_retired: Vec::new(),
                reclaimed: 0,
                counted: BTreeMap::new(),
            }),
        }
    }

    /// Instance `key`, created (not started) if it does not exist and the
    /// module is below its `max_instances`.
    fn instance(&self, key: &str) -> Result<Arc<Instance>, CallError> {
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

    /// Adds an instance that starts from saved state (restore, adopt). Saved
    /// state is never refused for the instance limit: it only stops new keys.
    fn insert_saved(&self, key: &str, live: Live) {
        let instance = Arc::new(Instance::new(key, Slot::Live(live)));
        if self.instances.insert(key.into(), instance).is_none() {
            self.instance_count.fetch_add(1, Relaxed);
        }
    }

    /// Takes `key` out of the instance map.
    fn remove(&self, key: &str) -> Option<Arc<Instance>> {
        let (_, removed) = self.instances.remove(key)?;
        self.instance_count.fetch_sub(1, Relaxed);
        Some(removed)
    }

    /// Snapshots every started instance; with a `deadline`, an instance whose
    /// call has not ended by then is listed as busy instead of waited for.
    fn snapshot(&self, deadline: Option<Instant>) -> Result<PartialSnapshot, SnapshotError> {
        for attempt in 0.. {
            // Instances are snapshotted one by one, so a swap can publish
            // between two of them, and one snapshot would hold two versions'
            // layouts under one version. Such a try is thrown away; after a
            // few, `current` is held, which keeps swaps out until done.
            let _no_swap = (attempt >= 3).then(|| self.current.read());
            let mut version = None;
            let mut instances = Vec::new();
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
                let live_version = &live.code.info.version;
                if version.get_or_insert_with(|| live_version.clone()) != live_version {
                    mixed = true;
                    break;
                }
                let bytes = live.code.snapshot(live.state).map_err(|fault| SnapshotError::Failed {
                    module: self.name.to_string(),
                    version: live_version.clone(),
                    instance: instance.key.to_string(),
                    fault,
                })?;
                instances.push((instance.key.to_string(), bytes));
            }
            if mixed {
                continue;
            }
            let version = version
                .or_else(|| self.current.read().as_ref().map(|code| code.info.version.clone()))
                .unwrap_or_default();
            instances.sort_by(|a, b| a.0.cmp(&b.0));
            busy.sort();
            let snapshot = ModuleSnapshot { module: self.name.to_string(), version, instances };
            return Ok(PartialSnapshot { snapshot, busy });
        }
        unreachable!("the loop returns")
    }

    /// The instances that exist now, in no particular order.
    fn instances_now(&self) -> Vec<Arc<Instance>> {
        self.instances.iter().map(|item| item.value().clone()).collect()
    }

    fn call_instance(&self, instance: &Instance, method: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let mut slot = instance.slot.lock();
        if !matches!(*slot, Slot::Live(_)) {
            drop(slot);
            slot = self.start(instance)?;
        }
        let Slot::Live(live) = &*slot else { unreachable!("start returns a live slot") };
        bump(&instance.calls);
        live.code.handle(live.state, method, payload).map_err(|fault| {
            let info = &live.code.info;
            let (module, version, method) = (info.name.clone(), info.version.clone(), method.to_owned());
            match fault {
                Fault::Error(message) => {
                    bump(&instance.errors);
                    CallError::Refused { module, version, method, message: message.into() }
                }
                Fault::Panic(message) => {
                    bump(&instance.panics);
                    tracing::warn!(%module, %version, %method, instance = %instance.key, "module panicked: {message}");
                    CallError::Panicked { module, version, method, message: message.into() }
                }
            }
        })
    }

    /// Starts `instance` on the current version with `init(None)`.
    fn start<'a>(&self, instance: &'a Instance) -> Result<MutexGuard<'a, Slot>, CallError> {
        // `current` before the slot: the order a swap uses too.
        let current = self.current.read();
        let mut slot = instance.slot.lock();
        // An unloaded module has no current version (and removed every slot).
        let code =
            current.as_ref().ok_or_else(|| CallError::UnknownModule { module: self.name.to_string() })?;
        match &*slot {
            Slot::Live(_) => return Ok(slot),
            Slot::Removed => {
                return Err(CallError::InstanceRemoved {
                    module: self.name.to_string(),
                    instance: instance.key.to_string(),
                });
            }
            Slot::Unstarted => {}
        }
        match code.init(None) {
            Ok(state) => {
                *instance.version.lock() = Some(code.info.version.clone());
                *slot = Slot::Live(Live { code: code.clone(), state });
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

    /// Removes every instance (dropping its state) and the current version,
    /// which it returns for the caller to retire.
    fn shut_down(&self) -> Option<Arc<Code>> {
        let old = self.current.write().take();
        for instance in self.instances_now() {
            let removed = std::mem::replace(&mut *instance.slot.lock(), Slot::Removed);
            drop(removed);
        }
        self.instances.clear();
        self.instance_count.store(0, Relaxed);
        old
    }

    /// Makes sure retiring one more version will not pass `limit` resident
    /// retired versions, and hands `code` back.
    ///
    /// glibc unmaps a library whose thread-local destructors have all run only
    /// during some later `dlclose`. So when the limit is reached, closing the
    /// candidate (an ordinary `dlclose`) may free room: close it, look again,
    /// and reopen it from its private copy if there is room now.
    fn make_room(&self, code: Code, limit: usize, module: &str, source: &Path) -> Result<Code, SwapError> {
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
        for instance in &instances {
            match instance.slot.try_lock_until(deadline) {
                Some(slot) => slots.push(slot),
                None => return Err(timeout(report, format!("instance '{}'", instance.key))),
            }
            first_held.get_or_insert_with(Instant::now);
        }
        let first_held = first_held.unwrap_or_else(Instant::now);
        report.wait_for_calls = wait_started.elapsed();

        // Every call of this module is now waiting for us. Migrate each
        // started instance; on the first failure drop what was built (the
        // new states, through the new version) and leave the slots as they were.
        let mut migrated = Vec::with_capacity(slots.len());
        for (instance, slot) in instances.iter().zip(&slots) {
            let Slot::Live(live) = &**slot else {
                migrated.push(None);
                continue;
            };
            let one_started = Instant::now();
            let from = &live.code.info;
            let mut size = 0;
            let state = live
                .code
                .with_snapshot(live.state, |state| {
                    size = state.len() as u64;
                    code.init(Some(Previous { name: &from.name, version: &from.version, state }))
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
            migrated.push(Some(Live { code: code.clone(), state }));
            let took = one_started.elapsed();
            report.migrate_total += took;
            report.migrate_max = report.migrate_max.max(took);
            report.snapshot_bytes_total += size;
            report.snapshot_bytes_max = report.snapshot_bytes_max.max(size);
            report.instances += 1;
        }

        // Publish: every slot and `current` now name the new version, and
        // the calls each instance made so far are booked to the old one.
        let mut old_states = Vec::with_capacity(slots.len());
        let mut books = self.books.lock();
        for ((instance, slot), new_live) in instances.iter().zip(slots.iter_mut()).zip(migrated) {
            books.take_counts(&old.info.version, instance);
            if let Some(new_live) = new_live {
                *instance.version.lock() = Some(code.info.version.clone());
                old_states.push(std::mem::replace(&mut **slot, Slot::Live(new_live)));
            }
        }
        drop(books);
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

    fn status(&self, maps: Option<&str>) -> Option<ModuleStatus> {
        let current = self.current.read().as_ref()?.info.clone();
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
    let mapped = maps::mapped_files(maps);
    let before = books.resident_retired.len();
    books.resident_retired.retain(|retired| mapped.contains(retired.private_copy.as_path()));
    books.reclaimed += (before - books.resident_retired.len()) as u64;
}

#[cfg(test)]
mod tests {
    use std::any::TypeId;
    use std::hash::BuildHasher;

    use super::InstanceHasher;

    /// Instance keys come from clients, who could pick keys that collide in
    /// a weak or fixed hash and make every lookup walk one long chain. The map
    /// hashes them with std's SipHash under a random key.
    #[test]
    fn instance_keys_are_hashed_with_siphash_under_a_random_key() {
        assert_eq!(TypeId::of::<InstanceHasher>(), TypeId::of::<std::hash::RandomState>());
        let (one, other) = (InstanceHasher::default(), InstanceHasher::default());
        assert_ne!(one.hash_one("room-1"), other.hash_one("room-1"), "each map has its own key");
    }
}
