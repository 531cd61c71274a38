//! The registry of modules and their instances, the call path, and the swap.
//!
//! # Locking
//!
//! Each instance's state lives in `Instance::slot`, a mutex held for the
//! whole of a call. That lock is what pins a call to one version: a swap
//! holds every instance's lock at once, migrates, republishes each slot with
//! the new version and releases them, so a call runs entirely before or
//! entirely after a swap, and a call that arrives meanwhile waits.
//!
//! How a swap comes to hold every instance without freezing the module
//! while one of them is busy (the module's gate) is in `hold.rs`.
//!
//! Locks are taken in this order, never the other way round:
//!
//! 1. `ModuleEntry::commit_lock` (swap and adopt, while they publish; a
//!    snapshot that keeps seeing swaps);
//! 2. instance slots: a swap or adopt tries them without waiting while it
//!    holds others (see `hold.rs`); everyone else holds one at a time;
//! 3. leaf locks, held briefly and never while waiting for anything else:
//!    `current` (the version new instances start on), `books`,
//!    `Instance::version`, the gate's own mutex, `swap_progress`.
//!
//! When a swap releases the instance locks, no slot refers to the old
//! version any more and no call can be running in it; its states are dropped
//! and its library is closed at once.

mod call;
mod dry_run;
mod hold;
mod instance_hash;
#[cfg(all(test, loom))]
mod loom_tests;
mod progress;
mod registry;
mod restore;
mod retire;
mod sessions;
mod swap;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
use tempfile::TempDir;

use crate::code::{Code, ModuleInfo, ModuleState};
use crate::config::EngineConfig;
use crate::error::SwapError;
use crate::status::{RetiredVersion, SwapReport, VersionCalls};
use crate::sync;

pub use call::InstanceHandle;

/// Module names come from the host's configuration, not from clients: a fast
/// randomly seeded hash is enough, and every call looks one up.
type ModuleHasher = foldhash::fast::RandomState;
type ModuleMap = HashMap<Box<str>, Arc<ModuleEntry>, ModuleHasher>;
/// Instance keys are chosen by clients. SipHash with a random key (std's
/// function, computed in one pass: `instance_hash.rs`) is made to resist
/// keys picked to collide (hash flooding); foldhash says plainly it should
/// not be used where someone may study the process to build colliding inputs.
pub(crate) type InstanceHasher = instance_hash::InstanceKeyHashing;

/// Hosts modules, runs their calls and swaps their versions. See the crate docs.
pub struct Engine {
    config: EngineConfig,
    /// Read on every call without locking; replaced (copy on write) only when
    /// a module is added or removed.
    modules: ArcSwap<ModuleMap>,
    /// Modules with a load, rollback, adopt or unload under way.
    swapping: hold::SwapsUnderWay,
    /// Private copies of module files; created on first load, removed on drop.
    private_dir: Mutex<Option<TempDir>>,
    next_copy: AtomicU64,
    /// Every instance's pending timers in due order (`timers.rs`).
    timers: Arc<timers::Schedule>,
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
    current: Mutex<Option<Arc<Code>>>,
    /// Closed while a swap or adopt takes the instances; see `hold.rs`.
    gate: hold::SwapGate,
    /// Held by a swap or adopt from taking the instances until they are
    /// released, so a snapshot can keep swaps out (see `ModuleEntry::snapshot`).
    commit_lock: Mutex<()>,
    instances: DashMap<Box<str>, Arc<Instance>, InstanceHasher>,
    /// How many entries `instances` has; kept beside the map so a new key
    /// can be checked against `max_instances` atomically, without a lock on
    /// every shard. Changed only together with an insert or a remove.
    instance_count: AtomicUsize,
    /// The most instances calls may create; `usize::MAX` is no limit.
    max_instances: AtomicUsize,
    books: Mutex<Books>,
    /// The swap under way, for status; written only by the swap.
    swap_progress: progress::ProgressSlot,
    /// The engine's timer schedule, where calls put the timers they set.
    timers: Arc<timers::Schedule>,
    /// The host's delivery of what calls push to sessions.
    pushes: Option<crate::PushSink>,
}

struct Instance {
    key: Box<str>,
    /// Held for the whole of a call; `sync`'s, so the loom models check it.
    slot: sync::Mutex<Slot>,
    /// The version the slot's state belongs to (`None`: not started), for
    /// [`Engine::instances`], which must not wait for a running call. Written
    /// under `slot`'s lock whenever the slot changes version; a leaf lock.
    version: Mutex<Option<String>>,
    /// Calls since the instance was created. Written only under `slot`'s lock
    /// (see [`bump`]); read by status without it.
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    /// Set while a swap waits for this instance's call to end: new calls to
    /// it wait at the gate (see `hold.rs`).
    wanted_by_swap: sync::AtomicBool,
    /// How much of each count is already booked to a version in
    /// [`Books::counted`]; written under `slot`'s lock and the books' lock.
    booked: [AtomicU64; 3],
    /// The timers this instance set (`ctx.after`) that have not run, kept
    /// beside its state so a swap keeps them. Changed only under `slot`'s
    /// lock (see `timers.rs`); a leaf lock.
    timers: Mutex<Vec<Arc<timers::PendingTimer>>>,
    /// `timers.len()`, read by the call path without taking that lock.
    timer_count: AtomicUsize,
}

enum Slot {
    /// Created by a first call that has not started it yet.
    Unstarted,
    /// Started: its state, which owns the version it belongs to. Replacing
    /// or dropping the slot drops the state through that version.
    Live(ModuleState),
    /// Removed by `remove_instance` or `unload`; callers look the key up again.
    Removed,
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

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let timers =
            Arc::new(timers::Schedule::new(config.max_timers_per_instance, config.on_earlier_timer.clone()));
        Engine {
            config,
            modules: ArcSwap::from_pointee(ModuleMap::default()),
            swapping: hold::SwapsUnderWay::new(),
            private_dir: Mutex::new(None),
            next_copy: AtomicU64::new(1),
            timers,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Replaces the module map with `change` applied to a copy.
    fn publish_modules(&self, change: impl Fn(&mut ModuleMap)) {
        self.modules.rcu(|modules| {
            let mut modules = ModuleMap::clone(modules);
            change(&mut modules);
            modules
        });
    }

    fn entry(&self, module: &str) -> Option<Arc<ModuleEntry>> {
        self.modules.load().get(module).cloned()
    }

    fn begin_swap(&self, module: &str) -> Result<hold::SwapUnderWay<'_>, SwapError> {
        self.swapping.begin(module).ok_or_else(|| SwapError::SwapInProgress { module: module.into() })
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

impl Instance {
    fn new(key: &str, slot: Slot) -> Instance {
        let version = match &slot {
            Slot::Live(live) => Some(live.code().info.version.clone()),
            Slot::Unstarted | Slot::Removed => None,
        };
        Instance {
            key: key.into(),
            slot: sync::Mutex::new(slot),
            version: Mutex::new(version),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            wanted_by_swap: sync::AtomicBool::new(false),
            booked: Default::default(),
            timers: Mutex::new(Vec::new()),
            timer_count: AtomicUsize::new(0),
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
    fn new(
        name: &str,
        code: Arc<Code>,
        timers: Arc<timers::Schedule>,
        pushes: Option<crate::PushSink>,
    ) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            current: Mutex::new(Some(code)),
            gate: hold::SwapGate::new(),
            commit_lock: Mutex::new(()),
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
            swap_progress: progress::ProgressSlot::default(),
            timers,
            pushes,
        }
    }

    /// The instances that exist now, in no particular order.
    fn instances_now(&self) -> Vec<Arc<Instance>> {
        self.instances.iter().map(|item| item.value().clone()).collect()
    }
}
