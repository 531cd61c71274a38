//! What a dry run of a swap found ([`Engine::dry_run`](crate::Engine::dry_run)):
//! the plan (versions, state layouts) and, for every live instance, whether
//! the new version could take over its state.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Fault;

/// How many refusals [`DryRunReport`]'s `Display` shows in full.
const REFUSALS_SHOWN: usize = 5;

/// The outcome of a dry run: what a swap of `module` to the file would do,
/// found by running the new version's `init(Some(previous))` and `snapshot`
/// on a copy of every live instance's state. Nothing was published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct DryRunReport {
    pub module: String,
    /// The version serving now.
    pub running_version: String,
    /// The version in the file that was tried.
    pub trial_version: String,
    pub file: PathBuf,
    /// The state layout of the running version (`ModuleInfo::state_layout`).
    pub running_layout: Option<u32>,
    /// The state layout of the tried version.
    pub trial_layout: Option<u32>,
    /// Why the tried version could not start a fresh instance (`init(None)`),
    /// which every swap checks first; `None` if it could.
    pub fresh_start: Option<Fault>,
    /// Every instance that was live when the dry run listed them, sorted by key.
    pub instances: Vec<TrialInstance>,
    /// Instances whose state the new version took over and snapshotted again.
    pub migrated: usize,
    /// Instances it refused (or that could not be snapshotted, or stayed busy).
    pub refused: usize,
    /// The running version's snapshots, all instances.
    pub old_snapshot_bytes_total: u64,
    /// The tried version's snapshots of the migrated states, all instances.
    pub new_snapshot_bytes_total: u64,
    /// Snapshot, `init` and snapshot again, summed over the instances.
    pub migrate_total: Duration,
    /// The same, for the slowest single instance.
    pub migrate_max: Duration,
    /// The longest any instance was held (its calls waited): one snapshot.
    pub hold_max: Duration,
    /// Copying the file, opening and verifying it, and the fresh start.
    pub open_and_verify: Duration,
    /// From the call to `dry_run` until the tried version was closed.
    pub total: Duration,
    /// Whether the tried version's code left memory once closed: as
    /// [`SwapReport::old_code_unmapped`](crate::SwapReport::old_code_unmapped).
    pub trial_code_unmapped: Option<bool>,
}

/// One instance in a [`DryRunReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct TrialInstance {
    pub key: String,
    pub outcome: TrialOutcome,
    /// Its snapshot on the running version (0 if none could be taken).
    pub old_snapshot_bytes: u64,
    /// The tried version's snapshot of the migrated state, if it got that far.
    pub new_snapshot_bytes: Option<u64>,
    /// Snapshot, `init` and snapshot again, for this instance.
    pub took: Duration,
}

/// What became of one instance in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum TrialOutcome {
    /// The new version took over its state and could snapshot it again.
    Migrated,
    /// The running version could not snapshot it.
    SnapshotFailed(Fault),
    /// The new version's `init(Some(previous))` refused or panicked.
    MigrationFailed(Fault),
    /// The new version took it over but could not snapshot the result: the
    /// next save or swap would fail.
    NewSnapshotFailed(Fault),
    /// Its call did not end within the swap deadline
    /// ([`EngineConfig::swap_timeout`](crate::EngineConfig::swap_timeout)):
    /// a swap would give up the same way.
    Busy { waited: Duration },
}

impl TrialOutcome {
    pub fn is_migrated(&self) -> bool {
        matches!(self, TrialOutcome::Migrated)
    }
}

impl fmt::Display for TrialOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrialOutcome::Migrated => write!(f, "would migrate"),
            TrialOutcome::SnapshotFailed(fault) => write!(f, "the running version's snapshot {fault}"),
            TrialOutcome::MigrationFailed(fault) => write!(f, "the new version's init {fault}"),
            TrialOutcome::NewSnapshotFailed(fault) => {
                write!(f, "the new version took it over, but its snapshot {fault}")
            }
            TrialOutcome::Busy { waited } => {
                write!(f, "its call did not end within {waited:?}, so a swap would give up")
            }
        }
    }
}

impl DryRunReport {
    /// Whether a swap to the tried file would go through now: it starts
    /// fresh instances and takes over every live one.
    pub fn would_swap(&self) -> bool {
        self.fresh_start.is_none() && self.refused == 0
    }

    /// The instances the new version would not take over, in key order.
    pub fn refusals(&self) -> impl Iterator<Item = &TrialInstance> {
        self.instances.iter().filter(|instance| !instance.outcome.is_migrated())
    }

    /// The planned change of state layout, for a person: "1 -> 2",
    /// "2 (unchanged)", or "none declared".
    pub fn layout_change(&self) -> String {
        let show = |layout: Option<u32>| layout.map_or_else(|| "none".to_owned(), |n| n.to_string());
        match (self.running_layout, self.trial_layout) {
            (None, None) => "none declared".to_owned(),
            (from, to) if from == to => format!("{} (unchanged)", show(to)),
            (from, to) => format!("{} -> {}", show(from), show(to)),
        }
    }
}

impl fmt::Display for DryRunReport {
    /// Several lines: the plan, the counts and times, the verdict, then the
    /// first refusals in full.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dry run of {} {} -> {} from {}: state layout {}",
            self.module,
            self.running_version,
            self.trial_version,
            self.file.display(),
            self.layout_change()
        )?;
        writeln!(
            f,
            "{} live instance(s): {} would migrate, {} refused; snapshots {} bytes now, {} bytes after",
            self.instances.len(),
            self.migrated,
            self.refused,
            self.old_snapshot_bytes_total,
            self.new_snapshot_bytes_total
        )?;
        writeln!(
            f,
            "migration {:?} in all, slowest instance {:?}; longest hold of an instance {:?}; took {:?}",
            self.migrate_total, self.migrate_max, self.hold_max, self.total
        )?;
        if let Some(fault) = &self.fresh_start {
            writeln!(f, "the new version cannot start a fresh instance: its init {fault}")?;
        }
        for refused in self.refusals().take(REFUSALS_SHOWN) {
            writeln!(f, "refused: instance '{}': {}", refused.key, refused.outcome)?;
        }
        if self.refused > REFUSALS_SHOWN {
            writeln!(f, "... and {} more refused instance(s)", self.refused - REFUSALS_SHOWN)?;
        }
        match self.would_swap() {
            true => write!(f, "a swap would go through; nothing was changed"),
            false => write!(f, "a swap would be refused; nothing was changed"),
        }
    }
}
