//! Every swap, whatever asked for it (the admin API or CLI, a watched file,
//! SIGHUP, a `load_from` route, the start): the load policy, the save
//! before it, the refusal of a second one, and the record of what it
//! installed.

use std::path::Path;
use std::sync::Mutex;

use hotswap::SwapError;

use super::{Daemon, Saving};
use crate::api;
use crate::config::{Config, ModuleConfig};
use crate::lifecycle::NotNow;
use crate::policy;

/// What asked for a swap; reported in status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A start (or the new process of an upgrade) loading the configured file.
    Start,
    Admin,
    Watch,
    Reload,
    Route,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Admin => "admin",
            Trigger::Watch => "watch",
            Trigger::Reload => "reload",
            Trigger::Route => "route",
        }
    }
}

/// Why a swap did not happen. The module keeps serving its current version.
#[derive(Debug)]
pub enum SwapFailure {
    /// No `[[module]]` of that name.
    NotConfigured(String),
    /// The load policy refused the file (folder, permissions).
    Refused(String),
    /// The engine refused the swap.
    Engine(SwapError),
    /// A watched file changed back to the content already loaded.
    Unchanged,
    /// Not while the daemon starts, upgrades, has handed over or stops.
    NotNow(NotNow),
    /// The state could not be saved first, so the swap was not made: the
    /// state on disk would otherwise be older than the version before it.
    SaveFailed(String),
}

impl SwapFailure {
    /// Whether the file may simply not have been complete yet (a watcher
    /// tries again shortly before it reports the failure).
    pub fn may_be_incomplete(&self) -> bool {
        matches!(
            self,
            SwapFailure::Engine(
                SwapError::EmptyFile { .. }
                    | SwapError::NotElf { .. }
                    | SwapError::InvalidElf { .. }
                    | SwapError::Open { .. }
                    | SwapError::Unreadable { .. }
                    | SwapError::SwapInProgress { .. }
            ) | SwapFailure::NotNow(_)
        )
    }
}

impl std::fmt::Display for SwapFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapFailure::NotConfigured(module) => {
                write!(f, "module '{module}' is not configured; add a [[module]] entry for it")
            }
            SwapFailure::Refused(reason) => write!(f, "refused: {reason}"),
            SwapFailure::Engine(error) => error.fmt(f),
            SwapFailure::Unchanged => write!(f, "the file did not change"),
            SwapFailure::NotNow(not_now) => not_now.fmt(f),
            SwapFailure::SaveFailed(error) => write!(
                f,
                "the swap was not made: the state could not be saved before it ({error}); \
                 fix the state folder (state.dir) and try again"
            ),
        }
    }
}

/// A swap of `module` under way in this daemon; dropping it ends it.
pub(super) struct SwapRunning<'a> {
    daemon: &'a Daemon,
    module: String,
}

impl Drop for SwapRunning<'_> {
    fn drop(&mut self) {
        self.daemon.swaps_running.lock().expect("swap lock").remove(&self.module);
    }
}

impl Daemon {
    /// Swaps `module` to `path` (default: its configured path).
    pub fn swap(
        &self,
        module: &str,
        path: Option<&Path>,
        trigger: Trigger,
    ) -> Result<api::SwapReport, SwapFailure> {
        let outcome = self
            .lifecycle
            .hold(&format!("swap {module}"))
            .map_err(SwapFailure::NotNow)
            .and_then(|_serving| self.swap_serving(module, path, trigger));
        if matches!(outcome, Err(SwapFailure::NotNow(_))) {
            self.record(module, trigger, &outcome);
        }
        outcome
    }

    /// [`swap`](Self::swap), for a caller that holds the lifecycle.
    pub(super) fn swap_serving(
        &self,
        module: &str,
        path: Option<&Path>,
        trigger: Trigger,
    ) -> Result<api::SwapReport, SwapFailure> {
        let config = self.config();
        let configured =
            config.module(module).ok_or_else(|| SwapFailure::NotConfigured(module.to_owned()))?;
        let requested = match path {
            Some(path) => config.file.parent().unwrap_or(Path::new("/")).join(path),
            None => configured.path.clone(),
        };
        let outcome = self.swap_file(&config, configured, &requested, trigger);
        self.record(module, trigger, &outcome);
        outcome
    }

    pub(super) fn swap_file(
        &self,
        config: &Config,
        configured: &ModuleConfig,
        requested: &Path,
        trigger: Trigger,
    ) -> Result<api::SwapReport, SwapFailure> {
        let module = configured.name.as_str();
        let source = policy::check_source(config, requested).map_err(SwapFailure::Refused)?;
        // For watched modules, remember what was loaded: a file event that
        // leaves the content as it was is not a reason to swap.
        let source_hash = match configured.watch {
            true => Some(policy::sha256_of(&source).map_err(|err| {
                SwapFailure::Engine(SwapError::Unreadable { path: source.clone(), source: err })
            })?),
            false => None,
        };
        if trigger == Trigger::Watch
            && source_hash.is_some()
            && self.loaded_hashes.lock().expect("hash lock").get(module) == source_hash.as_ref()
        {
            return Err(SwapFailure::Unchanged);
        }
        let _swapping = self.begin_swap(module)?;
        self.save_before_swap(module)?;
        let kept = Mutex::new(None);
        let report = self
            .engine
            .load_checked(module, &source, self.check_and_keep(configured, None, &kept))
            .map_err(SwapFailure::Engine)?;
        // Recorded before the swap is acknowledged, so what it installed is what a restart runs.
        let kept = kept.lock().expect("kept lock").take();
        self.record_installed(configured, kept, &report.to_version, trigger, &source);
        let mut hashes = self.loaded_hashes.lock().expect("hash lock");
        match source_hash {
            Some(hash) => hashes.insert(module.to_owned(), hash),
            None => hashes.remove(module),
        };
        Ok(api::SwapReport::from_engine(&report, trigger.as_str()))
    }

    /// Tries a swap of `module` to `path` (default: its configured file)
    /// without making it ([`hotswap::Engine::dry_run`]). The file must pass
    /// the load policy and the module's pinned sha256, as for a swap; it
    /// counts as the module's swap under way. Nothing is saved or recorded.
    pub fn dry_run(&self, module: &str, path: Option<&Path>) -> Result<api::DryRunReport, SwapFailure> {
        let _serving = self.lifecycle.hold(&format!("dry run of {module}")).map_err(SwapFailure::NotNow)?;
        let config = self.config();
        let configured =
            config.module(module).ok_or_else(|| SwapFailure::NotConfigured(module.to_owned()))?;
        let requested = match path {
            Some(path) => config.file.parent().unwrap_or(Path::new("/")).join(path),
            None => configured.path.clone(),
        };
        let source = policy::check_source(&config, &requested).map_err(SwapFailure::Refused)?;
        let _swapping = self.begin_swap(module)?;
        let pinned = configured.sha256.as_deref();
        let check = |copy: &Path| {
            let actual = policy::sha256_of(copy).map_err(|err| format!("cannot hash it: {err}"))?;
            policy::check_pin(pinned, &actual)
        };
        let report = self.engine.dry_run_checked(module, &source, check).map_err(SwapFailure::Engine)?;
        tracing::info!(module, "{report}");
        Ok(api::DryRunReport::from_engine(&report))
    }

    /// Swaps `module` back to the version it ran before.
    pub fn rollback(&self, module: &str) -> Result<api::SwapReport, SwapFailure> {
        let outcome = (|| {
            let _serving =
                self.lifecycle.hold(&format!("roll back {module}")).map_err(SwapFailure::NotNow)?;
            let _swapping = self.begin_swap(module)?;
            self.save_before_swap(module)?;
            let report = self.engine.rollback(module).map_err(SwapFailure::Engine)?;
            self.record_rollback(module, &report.to_version);
            self.loaded_hashes.lock().expect("hash lock").remove(module);
            Ok(api::SwapReport::from_engine(&report, Trigger::Admin.as_str()))
        })();
        self.record(module, Trigger::Admin, &outcome);
        outcome
    }

    /// Marks `module` as being swapped by this daemon until the guard drops;
    /// a second swap meanwhile is refused at once.
    pub(super) fn begin_swap(&self, module: &str) -> Result<SwapRunning<'_>, SwapFailure> {
        if !self.swaps_running.lock().expect("swap lock").insert(module.to_owned()) {
            return Err(SwapFailure::Engine(SwapError::SwapInProgress { module: module.to_owned() }));
        }
        Ok(SwapRunning { daemon: self, module: module.to_owned() })
    }

    /// Every swap is preceded by a durable snapshot of the module, so the
    /// state on disk is at most one swap old if the new version misbehaves.
    /// If that save fails the swap is not made: going ahead would leave the
    /// state on disk older than the version that wrote it, with nothing
    /// saying so until the next restart.
    pub(super) fn save_before_swap(&self, module: &str) -> Result<(), SwapFailure> {
        match self.save(module, self.calls.slow_call()) {
            // A first load: nothing runs yet, so there is nothing to save.
            Ok(_) | Err(Saving::NotLoaded) => Ok(()),
            Err(Saving::Failed(error)) => {
                tracing::error!(
                    module,
                    "could not save the state before the swap, so it was not made: {error}"
                );
                Err(SwapFailure::SaveFailed(error))
            }
        }
    }

    pub(super) fn record(
        &self,
        module: &str,
        trigger: Trigger,
        outcome: &Result<api::SwapReport, SwapFailure>,
    ) {
        match outcome {
            Ok(report) => {
                self.last_errors.lock().expect("error lock").remove(module);
                self.last_triggers.lock().expect("trigger lock").insert(module.to_owned(), trigger);
                if report.from_version.is_some() {
                    self.metrics.swap_succeeded(module, std::time::Duration::from_micros(report.total_us));
                }
                tracing::info!(module, trigger = trigger.as_str(), "{}", report.summary());
            }
            Err(SwapFailure::Unchanged) => {}
            Err(failure) => {
                self.metrics.swap_failed(module);
                self.last_errors.lock().expect("error lock").insert(module.to_owned(), failure.to_string());
                tracing::warn!(
                    module,
                    trigger = trigger.as_str(),
                    "swap refused, the current version keeps serving: {failure}"
                );
            }
        }
    }
}
