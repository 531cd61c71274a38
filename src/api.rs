//! The admin API's JSON documents, shared by the daemon (which writes them)
//! and the CLI (which reads them), so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub daemon_version: String,
    pub uptime_seconds: f64,
    pub config: String,
    /// The public HTTP address actually bound (a configured port 0 is resolved).
    pub public_addr: String,
    pub admin_socket: String,
    pub state_dir: String,
    /// `true` once the daemon stopped taking new connections.
    pub draining: bool,
    /// starting, serving, upgrading, handed over to pid N, stopping.
    #[serde(default)]
    pub phase: String,
    /// Swaps, saves and other operations under way now ("swap counter").
    #[serde(default)]
    pub running: Vec<String>,
    pub last_snapshot: Option<SnapshotRun>,
    /// The running or last process upgrade.
    pub upgrade: Option<Upgrade>,
    pub modules: Vec<Module>,
    /// `engine.slow_call`: calls running this long are listed in `slow_calls`.
    #[serde(default)]
    pub slow_call_ms: u64,
    /// Calls running for `engine.slow_call` or longer, longest first.
    #[serde(default)]
    pub slow_calls: Vec<SlowCall>,
    /// The timers modules set (`ctx.after`).
    #[serde(default)]
    pub timers: Timers,
    /// WebSocket sessions (`[[socket]]`).
    #[serde(default)]
    pub sessions: Sessions,
}

/// WebSocket sessions, as the daemon serves them (`src/sockets.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sessions {
    /// Open now, in all.
    pub open: u64,
    /// Open now, per module and instance (those with at least one).
    pub rooms: Vec<SessionRoom>,
    /// Messages from clients, since this process started.
    pub messages_in: u64,
    /// Frames sent to clients.
    pub messages_out: u64,
    /// Pushes not queued that an operator should look at: to a full queue
    /// (the session closes, too slow), to an id that is not a session of the
    /// pushing instance, or of a kind this daemon does not know.
    pub pushes_dropped: u64,
    /// Pushes not queued because their session of the room was already
    /// closing (its close decided, or its writer gone): the normal end of a
    /// session, e.g. a room's "left" broadcast reaching the leaver.
    #[serde(default)]
    pub pushes_after_close: u64,
    /// The most messages one session's outgoing queue held.
    pub queue_depth_max: u64,
    /// Sessions ended, by why: client, dropped, refused, module, failed, too_slow, protocol, going_away.
    pub closes: std::collections::BTreeMap<String, u64>,
    pub ticks: Ticks,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionRoom {
    pub module: String,
    pub instance: String,
    pub sessions: u64,
}

/// `on_tick` of instances with sessions (a `[[socket]]` with `tick`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ticks {
    pub ran: u64,
    /// Of those, the ones that returned an error or panicked.
    pub failed: u64,
    /// Skipped because the instance's previous tick still ran.
    pub skipped: u64,
    /// How late the last ticks (up to 1024) started, median and 99th percentile.
    pub late_p50_ms: Option<f64>,
    pub late_p99_ms: Option<f64>,
}

/// The timers modules set, as the daemon runs them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timers {
    /// Set and not run yet, across every instance.
    pub pending: u64,
    /// Run since this process started (ok or not).
    pub fired: u64,
    /// Of those, the ones whose call returned an error or panicked.
    pub failed: u64,
    /// How late the last timers started (up to 1024), median and 99th
    /// percentile; `None` until one ran.
    pub late_p50_ms: Option<f64>,
    pub late_p99_ms: Option<f64>,
}

/// A module call that has run for `engine.slow_call` or longer and still runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowCall {
    pub module: String,
    pub instance: String,
    pub method: String,
    pub started_unix_ms: u64,
    pub running_ms: u64,
}

impl SlowCall {
    pub fn from_running(call: &crate::calls::RunningCall) -> SlowCall {
        SlowCall {
            module: call.module.clone(),
            instance: call.instance.clone(),
            method: call.method.clone(),
            started_unix_ms: unix_ms(call.started_at),
            running_ms: call.running.as_millis() as u64,
        }
    }
}

/// Where a process upgrade stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upgrade {
    /// spawning, waiting for ready, transferring state, draining, failed.
    pub phase: String,
    pub binary: String,
    pub started_unix_ms: u64,
    pub new_pid: Option<u32>,
    pub modules_sent: usize,
    pub instances_sent: usize,
    pub bytes_sent: u64,
    /// How it ended, once it did.
    pub outcome: Option<String>,
}

impl Upgrade {
    pub fn new(binary: &std::path::Path, phase: &str) -> Upgrade {
        Upgrade {
            phase: phase.to_owned(),
            binary: binary.display().to_string(),
            started_unix_ms: unix_ms(SystemTime::now()),
            new_pid: None,
            modules_sent: 0,
            instances_sent: 0,
            bytes_sent: 0,
            outcome: None,
        }
    }
}

/// `POST /v1/upgrade` succeeded: the new process serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upgraded {
    pub old_pid: u32,
    pub new_pid: u32,
    /// From the request until the new process served.
    pub took_ms: u64,
    /// The new process's own start-up: from its start until it had loaded
    /// its modules and asked for the state.
    pub startup_ms: u64,
    /// How long calls were held: from the freeze to READY.
    pub frozen_ms: u64,
    pub modules: usize,
    pub instances: usize,
    pub state_bytes: u64,
}

/// Body of `POST /v1/upgrade`; the binary defaults to the one the daemon was started from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    pub binary: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Module {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sdk_version: String,
    pub rustc_version: String,
    pub since_unix_ms: u64,
    pub watch: bool,
    pub instances: usize,
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
    pub by_version: Vec<VersionCalls>,
    pub swaps: u64,
    pub rollback_version: Option<String>,
    /// Retired versions whose code is still mapped.
    pub resident_retired: Vec<String>,
    /// Retired versions whose code left memory.
    pub reclaimed: u64,
    pub last_swap: Option<SwapReport>,
    /// The last failed swap of this module, if it failed after the last success.
    pub last_error: Option<String>,
    /// State saves of this module that failed since the daemon started.
    #[serde(default)]
    pub saves_failed: u64,
    /// Why the last save failed, if it failed after the last success.
    #[serde(default)]
    pub last_save_error: Option<String>,
    /// Where the running version came from; a restart or an upgrade runs it again.
    #[serde(default)]
    pub origin: Option<Origin>,
    /// The swap of this module under way now, and what it waits for.
    #[serde(default)]
    pub swap_in_progress: Option<SwapInProgress>,
}

/// A swap that has not ended yet, as `hotswap::SwapInProgress`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapInProgress {
    pub to_version: String,
    /// A dry run (`hotswap load --dry-run`): it changes nothing, but other
    /// swaps of the module are refused until it ends.
    #[serde(default)]
    pub dry_run: bool,
    pub started_unix_ms: u64,
    /// How long it had been under way when the status was taken.
    pub elapsed_ms: u64,
    /// The instance whose call it waits for to end, if it waits for one.
    pub waiting_for: Option<String>,
}

impl SwapInProgress {
    pub fn from_engine(swap: &hotswap::SwapInProgress) -> SwapInProgress {
        SwapInProgress {
            to_version: swap.to_version.clone(),
            dry_run: swap.dry_run,
            started_unix_ms: unix_ms(swap.started),
            elapsed_ms: swap.elapsed.as_millis() as u64,
            waiting_for: swap.waiting_for.clone(),
        }
    }

    /// One line for `hotswap status`: "swap to 2.0.0 under way for 2.3 s,
    /// waiting for instance 'busy'".
    pub fn summary(&self) -> String {
        let what = if self.dry_run { "dry run of a swap" } else { "swap" };
        let mut line =
            format!("{what} to {} under way for {:.1} s", self.to_version, self.elapsed_ms as f64 / 1000.0);
        if let Some(key) = &self.waiting_for {
            line += &format!(", waiting for instance '{key}'");
        }
        line
    }
}

/// What installed a module's running version, and the copy the daemon keeps of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Origin {
    /// What loaded it: "start" (the configured file), "admin", "watch", "reload", "route", "rollback".
    pub trigger: String,
    /// The file it was loaded from.
    pub source: String,
    /// The daemon's copy of exactly those bytes in the state folder.
    pub stored: String,
    pub sha256: String,
    pub recorded_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionCalls {
    pub version: String,
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
}

/// A successful swap, as `hotswap::SwapReport`, durations in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapReport {
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub file: String,
    pub instances: usize,
    pub copy_us: u64,
    pub open_and_verify_us: u64,
    pub start_check_us: u64,
    pub wait_for_calls_us: u64,
    pub migrate_total_us: u64,
    pub migrate_max_us: u64,
    pub pause_us: u64,
    pub total_us: u64,
    pub snapshot_bytes_total: u64,
    pub old_code_unmapped: Option<bool>,
    /// What asked for the swap: "start", "admin", "watch", "reload", "route".
    pub trigger: String,
}

impl SwapReport {
    pub fn from_engine(report: &hotswap::SwapReport, trigger: &str) -> SwapReport {
        let us = |d: Duration| d.as_micros() as u64;
        SwapReport {
            module: report.module.clone(),
            from_version: report.from_version.clone(),
            to_version: report.to_version.clone(),
            file: report.file.display().to_string(),
            instances: report.instances,
            copy_us: us(report.copy),
            open_and_verify_us: us(report.open_and_verify),
            start_check_us: us(report.start_check),
            wait_for_calls_us: us(report.wait_for_calls),
            migrate_total_us: us(report.migrate_total),
            migrate_max_us: us(report.migrate_max),
            pause_us: us(report.pause),
            total_us: us(report.total),
            snapshot_bytes_total: report.snapshot_bytes_total,
            old_code_unmapped: report.old_code_unmapped,
            trigger: trigger.to_owned(),
        }
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        let took = format_us(self.total_us);
        match &self.from_version {
            None => format!("loaded {} {} from {} in {took}", self.module, self.to_version, self.file),
            Some(from) => format!(
                "swapped {} {from} -> {} in {took}: {} instance(s) migrated, longest pause {}{}",
                self.module,
                self.to_version,
                self.instances,
                format_us(self.pause_us),
                match self.old_code_unmapped {
                    Some(false) => "; the old code is still mapped (see `hotswap status`)",
                    _ => "",
                }
            ),
        }
    }
}

/// The outcome of writing every module's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRun {
    pub at_unix_ms: u64,
    pub written: Vec<Written>,
    pub failed: Vec<Failed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub module: String,
    pub file: String,
    pub instances: usize,
    pub bytes: u64,
    /// Instances busy in a call past the save's deadline: the file keeps
    /// their state from the last save that reached them.
    #[serde(default)]
    pub busy: Vec<String>,
    /// The busy instances that no save ever reached: not in the file.
    #[serde(default)]
    pub never_saved: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    pub module: String,
    pub error: String,
}

/// Body of every error response: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Error {
    pub error: String,
}

/// Body of `POST /v1/modules/{name}/load`; the path defaults to the configured one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    pub path: Option<String>,
    /// Only try the swap (`Engine::dry_run`): answer a [`DryRunReport`], change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `POST /v1/modules/{name}/load` with `"dry_run": true`: what the swap
/// would do, as `hotswap::DryRunReport`, durations in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunReport {
    pub module: String,
    pub running_version: String,
    pub trial_version: String,
    pub file: String,
    pub running_layout: Option<u32>,
    pub trial_layout: Option<u32>,
    /// For a person: "1 -> 2", "2 (unchanged)", "none declared".
    pub layout_change: String,
    /// Whether the swap would go through now.
    pub would_swap: bool,
    /// Why the new version cannot start a fresh instance, if it cannot.
    pub fresh_start_error: Option<String>,
    /// Live instances tried.
    pub instances: usize,
    pub migrated: usize,
    pub refused: usize,
    /// Every refused instance, in key order, with the reason.
    pub refusals: Vec<DryRunRefusal>,
    pub old_snapshot_bytes_total: u64,
    pub new_snapshot_bytes_total: u64,
    pub migrate_total_us: u64,
    pub migrate_max_us: u64,
    /// The longest any instance was held (its calls waited).
    pub hold_max_us: u64,
    pub total_us: u64,
    pub trial_code_unmapped: Option<bool>,
}

/// An instance the new version would not take over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunRefusal {
    pub instance: String,
    pub reason: String,
}

impl DryRunReport {
    pub fn from_engine(report: &hotswap::DryRunReport) -> DryRunReport {
        let us = |d: Duration| d.as_micros() as u64;
        DryRunReport {
            module: report.module.clone(),
            running_version: report.running_version.clone(),
            trial_version: report.trial_version.clone(),
            file: report.file.display().to_string(),
            running_layout: report.running_layout,
            trial_layout: report.trial_layout,
            layout_change: report.layout_change(),
            would_swap: report.would_swap(),
            fresh_start_error: report.fresh_start.as_ref().map(|fault| format!("its init {fault}")),
            instances: report.instances.len(),
            migrated: report.migrated,
            refused: report.refused,
            refusals: report
                .refusals()
                .map(|refused| DryRunRefusal {
                    instance: refused.key.clone(),
                    reason: refused.outcome.to_string(),
                })
                .collect(),
            old_snapshot_bytes_total: report.old_snapshot_bytes_total,
            new_snapshot_bytes_total: report.new_snapshot_bytes_total,
            migrate_total_us: us(report.migrate_total),
            migrate_max_us: us(report.migrate_max),
            hold_max_us: us(report.hold_max),
            total_us: us(report.total),
            trial_code_unmapped: report.trial_code_unmapped,
        }
    }

    /// Lines for a person: the plan, counts and times, the first refusals in
    /// full, and whether the swap would go through.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 5;
        let mut out = format!(
            "dry run of {} {} -> {} from {}: state layout {}\n",
            self.module, self.running_version, self.trial_version, self.file, self.layout_change
        );
        out += &format!(
            "{} live instance(s): {} would migrate, {} refused; snapshots {} bytes now, {} bytes after\n",
            self.instances,
            self.migrated,
            self.refused,
            self.old_snapshot_bytes_total,
            self.new_snapshot_bytes_total
        );
        out += &format!(
            "migration {} in all, slowest instance {}; longest hold of an instance {}; took {}\n",
            format_us(self.migrate_total_us),
            format_us(self.migrate_max_us),
            format_us(self.hold_max_us),
            format_us(self.total_us)
        );
        if let Some(error) = &self.fresh_start_error {
            out += &format!("the new version cannot start a fresh instance: {error}\n");
        }
        for refused in self.refusals.iter().take(SHOWN) {
            out += &format!("refused: instance '{}': {}\n", refused.instance, refused.reason);
        }
        if self.refusals.len() > SHOWN {
            out += &format!("... and {} more refused instance(s)\n", self.refusals.len() - SHOWN);
        }
        out += match self.would_swap {
            true => "a swap would go through; nothing was changed",
            false => "a swap would be refused; nothing was changed",
        };
        out
    }
}

/// One instance in `GET /v1/modules/{name}/instances` (a JSON list of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub key: String,
    /// The version its state belongs to; `null` if it has not started.
    pub version: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
}

impl From<hotswap::InstanceStatus> for Instance {
    fn from(instance: hotswap::InstanceStatus) -> Instance {
        Instance {
            key: instance.key,
            version: instance.version,
            calls: instance.calls,
            errors: instance.errors,
            panics: instance.panics,
        }
    }
}

/// `DELETE /v1/modules/{name}/instances/{key}` removed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedInstance {
    pub module: String,
    pub key: String,
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn format_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}
