//! What the engine reports: per-swap timings and per-module status.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::code::ModuleInfo;

/// What a successful load or swap did and how long each phase took.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SwapReport {
    pub module: String,
    /// The version that was replaced; `None` for a first load.
    pub from_version: Option<String>,
    pub to_version: String,
    pub file: PathBuf,
    /// Instances whose state was migrated to the new version.
    pub instances: usize,
    /// Copying the file to its private name.
    pub copy: Duration,
    /// ELF checks, `dlopen` and descriptor checks.
    pub open_and_verify: Duration,
    /// A trial `init(None)` of the new version (and dropping that state),
    /// so a version that cannot start instances is refused up front.
    pub start_check: Duration,
    /// Waiting for every instance's current call to finish.
    pub wait_for_calls: Duration,
    /// Snapshot on the old version plus `init` on the new one, all instances.
    pub migrate_total: Duration,
    /// The same, for the slowest single instance.
    pub migrate_max: Duration,
    /// The longest any instance was held (calls to it waited): from the
    /// moment the first instance was held until all were released.
    pub pause: Duration,
    /// From the call to `load` until calls run on the new version.
    pub total: Duration,
    pub snapshot_bytes_total: u64,
    pub snapshot_bytes_max: u64,
    /// Whether the replaced version's code left memory: `Some(true)` if it
    /// is unmapped, `Some(false)` if it is still mapped (see
    /// [`ModuleStatus::resident_retired`]), `None` for a first load or where
    /// `/proc/self/maps` cannot be read.
    pub old_code_unmapped: Option<bool>,
}

impl fmt::Display for SwapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(from) = &self.from_version else {
            return write!(
                f,
                "{} {} loaded from {} in {:?}",
                self.module,
                self.to_version,
                self.file.display(),
                self.total
            );
        };
        write!(f, "{} {} -> {}", self.module, from, self.to_version)?;
        write!(
            f,
            " from {}: {} instance(s) migrated, {} snapshot bytes; total {:?} \
             (copy {:?}, open+verify {:?}, start check {:?}, wait {:?}, migrate {:?}), longest pause {:?}",
            self.file.display(),
            self.instances,
            self.snapshot_bytes_total,
            self.total,
            self.copy,
            self.open_and_verify,
            self.start_check,
            self.wait_for_calls,
            self.migrate_total,
            self.pause,
        )?;
        match self.old_code_unmapped {
            Some(true) => write!(f, "; old code unmapped"),
            Some(false) => write!(f, "; old code still mapped"),
            None => Ok(()),
        }
    }
}

/// A retired version whose code is still mapped in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct RetiredVersion {
    pub version: String,
    pub file: PathBuf,
    /// The private copy that is still mapped.
    pub private_copy: PathBuf,
}

/// The state of one loaded module.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ModuleStatus {
    pub name: String,
    /// The version serving now.
    pub current: ModuleInfo,
    /// When the serving version was published.
    pub since: SystemTime,
    pub instances: usize,
    /// Calls since the module was first loaded, across versions.
    pub calls: u64,
    /// Calls the module refused (`Err`), including failed instance starts.
    pub errors: u64,
    /// Calls in which the module panicked.
    pub panics: u64,
    /// The same counts per version that served them, sorted by version.
    pub by_version: Vec<VersionCalls>,
    /// Successful swaps after the first load.
    pub swaps: u64,
    pub last_swap: Option<SwapReport>,
    /// The version [`Engine::rollback`](crate::Engine::rollback) would restore.
    pub rollback_version: Option<String>,
    /// Retired versions still mapped (their code could not be unloaded).
    pub resident_retired: Vec<RetiredVersion>,
    /// Retired versions whose code left memory.
    pub reclaimed: u64,
    /// The swap (load or rollback) of this module under way now, if any.
    pub swap_in_progress: Option<SwapInProgress>,
}

/// A swap of a loaded module that has not ended yet, and what it waits for:
/// an operator whose load seems stuck can see why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SwapInProgress {
    /// The version being swapped in.
    pub to_version: String,
    /// It is a dry run ([`Engine::dry_run`](crate::Engine::dry_run)): it
    /// will publish nothing, but other swaps of the module wait for it.
    pub dry_run: bool,
    /// When the swap started (wall clock).
    pub started: SystemTime,
    /// How long the swap has been under way, when the status was taken.
    pub elapsed: Duration,
    /// The key of the instance whose call the swap waits for to end; `None`
    /// while it opens and checks the new version, takes the instances or
    /// migrates them.
    pub waiting_for: Option<String>,
}

impl fmt::Display for SwapInProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.dry_run { "dry run of a swap" } else { "swap" };
        write!(f, "{what} to {} under way for {:.1} s", self.to_version, self.elapsed.as_secs_f64())?;
        match &self.waiting_for {
            Some(key) => write!(f, ", waiting for instance '{key}'"),
            None => Ok(()),
        }
    }
}

/// Calls served by one version of a module (all the times it was loaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct VersionCalls {
    pub version: String,
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
}

/// Every loaded module, sorted by name.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct EngineStatus {
    pub modules: Vec<ModuleStatus>,
}

impl EngineStatus {
    pub fn module(&self, name: &str) -> Option<&ModuleStatus> {
        self.modules.iter().find(|module| module.name == name)
    }
}

/// The state of every instance of a module, taken at one moment per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModuleSnapshot {
    pub module: String,
    pub version: String,
    /// Instance key and snapshot bytes, sorted by key.
    pub instances: Vec<(String, Vec<u8>)>,
    /// The timers pending on those instances, taken at the same moment as
    /// each instance's bytes (so a timer is either here or what it did is in
    /// the state, never both or neither), sorted by instance and due time.
    /// Every one belongs to an instance in `instances`.
    pub timers: Vec<SavedTimer>,
}

/// A timer a module set with `ctx.after`, as a [`ModuleSnapshot`] carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedTimer {
    /// The key of the instance it calls.
    pub instance: String,
    /// When it is due, by the wall clock: the same moment after a restart.
    pub due: SystemTime,
    pub method: String,
    pub payload: Vec<u8>,
}

/// A timer that is due, taken with
/// [`Engine::take_due_timers`](crate::Engine::take_due_timers); run it with
/// [`Engine::run_timer`](crate::Engine::run_timer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct DueTimer {
    pub module: String,
    pub instance: String,
    pub method: String,
    pub payload: Vec<u8>,
    pub due: SystemTime,
    /// Which timer of the instance this is (unique in this engine).
    pub(crate) id: u64,
}

/// A [`ModuleSnapshot`] that leaves out instances that were busy past a
/// deadline (from [`Engine::snapshot_until`](crate::Engine::snapshot_until)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PartialSnapshot {
    /// Every instance that could be snapshotted.
    pub snapshot: ModuleSnapshot,
    /// Keys of the instances whose call had not ended by the deadline,
    /// sorted; they are not in `snapshot`.
    pub busy: Vec<String>,
}

/// One instance of a module, as [`Engine::instances`](crate::Engine::instances) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct InstanceStatus {
    pub key: String,
    /// The version its state belongs to; `None` if it was created (by a
    /// handle, or a first call whose `init` failed) but has not started.
    pub version: Option<String>,
    /// Calls since the instance was created, across versions (a failed
    /// start counts as a call).
    pub calls: u64,
    /// Calls the module refused (`Err`), including failed starts.
    pub errors: u64,
    /// Calls in which the module panicked.
    pub panics: u64,
}
