//! The daemon's state and every operation that changes what it serves.
//!
//! All swaps go through [`Daemon::swap`], whatever asked for them (start,
//! admin API or CLI, file watch, SIGHUP, a `load_from` route), so the load
//! policy, the snapshot taken before every swap and the metrics apply to
//! each one. These methods block (a swap waits for busy instances); async
//! callers run them with `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hotswap::{Engine, SwapError};

use crate::api;
use crate::calls::CallRunner;
use crate::config::{Config, ModuleConfig};
use crate::lifecycle::{Lifecycle, NotNow};
use crate::metrics::Metrics;
use crate::module_store::ModuleStore;
use crate::partial_save;
use crate::policy;
use crate::state::StateStore;

mod installed;

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
    /// The HTTP status the admin API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            SwapFailure::NotConfigured(_) => 404,
            SwapFailure::Refused(_) => 403,
            SwapFailure::Engine(SwapError::SwapInProgress { .. }) | SwapFailure::NotNow(_) => 409,
            SwapFailure::SaveFailed(_) => 503,
            SwapFailure::Engine(SwapError::UnknownModule { .. }) => 404,
            SwapFailure::Engine(_) => 422,
            SwapFailure::Unchanged => 200,
        }
    }

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

/// Why a module's state was not saved.
#[derive(Debug)]
enum Saving {
    /// The module is not loaded: there is nothing to save.
    NotLoaded,
    Failed(String),
}

/// A swap of `module` under way in this daemon; dropping it ends it.
struct SwapRunning<'a> {
    daemon: &'a Daemon,
    module: String,
}

impl Drop for SwapRunning<'_> {
    fn drop(&mut self) {
        self.daemon.swaps_running.lock().expect("swap lock").remove(&self.module);
    }
}

pub struct Daemon {
    pub engine: Engine,
    config: RwLock<Arc<Config>>,
    pub store: StateStore,
    /// The module files that run, kept so a restart or an upgrade runs them again.
    pub module_store: ModuleStore,
    pub metrics: Metrics,
    /// Runs module calls off the async workers, one at a time per instance.
    pub calls: CallRunner,
    started: Instant,
    pub public_addr: OnceLock<SocketAddr>,
    /// Set when the daemon stops taking connections.
    pub draining: AtomicBool,
    last_errors: Mutex<HashMap<String, String>>,
    /// Why each module's last save failed, until one succeeds.
    last_save_errors: Mutex<HashMap<String, String>>,
    /// What triggered each module's last successful swap.
    last_triggers: Mutex<HashMap<String, Trigger>>,
    last_snapshot: Mutex<Option<api::SnapshotRun>>,
    /// SHA-256 of the file each watched module was last loaded from.
    loaded_hashes: Mutex<HashMap<String, String>>,
    /// Calls hold it for reading; an upgrade holds it for writing while the
    /// state moves, so calls wait (asynchronously) and none runs.
    pub gate: tokio::sync::RwLock<()>,
    /// Set once the state moved to a new process: where to forward, its pid.
    pub handed_over: OnceLock<(SocketAddr, u32)>,
    /// Starting, serving, upgrading, handed over or stopping; every swap and
    /// save holds it while it runs.
    pub lifecycle: Lifecycle,
    /// Modules with a swap under way here (from before its save to its end),
    /// so a second swap is refused at once rather than queued behind it.
    swaps_running: Mutex<HashSet<String>>,
    /// What the accept loops do.
    pub listening: tokio::sync::watch::Sender<crate::http::Listening>,
    /// Told when this process handed over and should drain and exit.
    pub exit: tokio::sync::Notify,
    progress: Mutex<Option<api::Upgrade>>,
    /// Copies of the listening sockets, lent to the next process.
    handoff: Mutex<Vec<(String, std::os::fd::OwnedFd)>>,
    /// How this process was started: the next one starts the same way.
    pub args: Vec<std::ffi::OsString>,
    /// The binary this process was started from (the default for an upgrade).
    pub binary: PathBuf,
    pub notifier: hotswap_upgrade::notify::Notifier,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("config", &self.config().file).finish_non_exhaustive()
    }
}

impl Daemon {
    pub fn new(config: Config, store: StateStore) -> Daemon {
        Daemon {
            engine: Engine::new(config.engine_config()),
            calls: CallRunner::new(config.slow_call),
            config: RwLock::new(Arc::new(config)),
            module_store: ModuleStore::new(store.dir()),
            store,
            metrics: Metrics::default(),
            started: Instant::now(),
            public_addr: OnceLock::new(),
            draining: AtomicBool::new(false),
            last_errors: Mutex::new(HashMap::new()),
            last_save_errors: Mutex::new(HashMap::new()),
            last_triggers: Mutex::new(HashMap::new()),
            last_snapshot: Mutex::new(None),
            loaded_hashes: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
            handed_over: OnceLock::new(),
            lifecycle: Lifecycle::default(),
            swaps_running: Mutex::new(HashSet::new()),
            listening: tokio::sync::watch::Sender::new(crate::http::Listening::Accept),
            exit: tokio::sync::Notify::new(),
            progress: Mutex::new(None),
            handoff: Mutex::new(Vec::new()),
            args: std::env::args_os().skip(1).collect(),
            binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hotswap")),
            notifier: hotswap_upgrade::notify::Notifier::from_env().unwrap_or_else(|err| {
                tracing::warn!("NOTIFY_SOCKET is unusable, systemd will not hear from this process: {err}");
                hotswap_upgrade::notify::Notifier::disabled()
            }),
        }
    }

    /// Keeps a copy of a listening socket to lend to the next process.
    pub fn keep_for_handoff(&self, name: &str, socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
        let copy = socket.as_fd().try_clone_to_owned()?;
        self.handoff.lock().expect("handoff lock").push((name.to_owned(), copy));
        Ok(())
    }

    /// Copies of the listening sockets, by name, for the next process.
    pub fn handoff_sockets(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let kept = self.handoff.lock().expect("handoff lock");
        kept.iter().filter_map(|(name, fd)| Some((name.clone(), fd.try_clone().ok()?))).collect()
    }

    /// Where a forwarded request reaches the process that now accepts on the
    /// public socket (an unspecified listen address is reached on loopback).
    pub fn forward_address(&self) -> SocketAddr {
        let mut address = *self.public_addr.get().expect("the public port is bound before any upgrade");
        if address.ip().is_unspecified() {
            address.set_ip(match address {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        address
    }

    pub fn set_progress(&self, progress: api::Upgrade) {
        *self.progress.lock().expect("progress lock") = Some(progress);
    }

    pub fn update_progress(&self, change: impl FnOnce(&mut api::Upgrade)) {
        if let Some(progress) = self.progress.lock().expect("progress lock").as_mut() {
            change(progress);
        }
    }

    pub fn progress(&self) -> Option<api::Upgrade> {
        self.progress.lock().expect("progress lock").clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Loads every configured module, restoring its saved state. A state
    /// file that is corrupt, or that the module cannot take over, stops the
    /// start, unless `discard_corrupt` is set: then it is moved aside (never
    /// deleted) and the module starts fresh.
    pub fn start_modules(&self, discard_corrupt: bool) -> Result<(), String> {
        let config = self.config();
        for module in &config.modules {
            self.start_module(&config, module, discard_corrupt)?;
        }
        self.apply_instance_limits(&config);
        Ok(())
    }

    /// Applies each module's `max_instances` (at start, in an upgrade's new
    /// process, on SIGHUP). Saved state is never refused for it; new
    /// instances past it are.
    fn apply_instance_limits(&self, config: &Config) {
        for module in &config.modules {
            // A module that could not be loaded has no instances to limit.
            let _ = self.engine.set_max_instances(&module.name, Some(module.max_instances));
        }
    }

    /// Records the content a watched module was loaded from (see `swap_file`).
    fn remember_hash(&self, module: &ModuleConfig, source: &Path) {
        if module.watch
            && let Ok(hash) = policy::sha256_of(source)
        {
            self.loaded_hashes.lock().expect("hash lock").insert(module.name.clone(), hash);
        }
    }

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
    fn swap_serving(
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

    fn swap_file(
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
    fn begin_swap(&self, module: &str) -> Result<SwapRunning<'_>, SwapFailure> {
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
    fn save_before_swap(&self, module: &str) -> Result<(), SwapFailure> {
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

    fn record(&self, module: &str, trigger: Trigger, outcome: &Result<api::SwapReport, SwapFailure>) {
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

    /// Snapshots `module` and writes its state file. Saves of one module
    /// are ordered (see [`StateStore::save`]): an older snapshot never
    /// replaces a newer one. The caller holds the lifecycle, or is the stop
    /// path.
    ///
    /// A call still running after `wait` does not hold the save up: its
    /// instance keeps its last saved state (see `partial_save.rs`) and is
    /// listed in the result as busy.
    fn save(&self, module: &str, wait: Duration) -> Result<api::Written, Saving> {
        let mut busy = (Vec::new(), Vec::new());
        let saved = self.store.save(module, || {
            let partial = match self.engine.snapshot_until(module, Instant::now() + wait) {
                Ok(partial) => partial,
                Err(hotswap::SnapshotError::UnknownModule { .. }) => return Ok(None),
                Err(error) => return Err(error.to_string()),
            };
            let saving = partial_save::carry_over_busy(&self.store, partial.snapshot, partial.busy)?;
            busy = (saving.busy, saving.never_saved);
            Ok(Some(saving.snapshot))
        });
        let (busy, never_saved) = busy;
        if !busy.is_empty() {
            self.report_busy(module, &busy, &never_saved);
        }
        let mut last_save_errors = self.last_save_errors.lock().expect("save error lock");
        match saved {
            Ok(Some(written)) => {
                last_save_errors.remove(module);
                Ok(api::Written {
                    module: module.to_owned(),
                    file: written.file.display().to_string(),
                    instances: written.instances,
                    bytes: written.bytes,
                    busy,
                    never_saved,
                })
            }
            Ok(None) => Err(Saving::NotLoaded),
            Err(error) => {
                self.metrics.save_failed(module);
                last_save_errors.insert(module.to_owned(), error.clone());
                Err(Saving::Failed(error))
            }
        }
    }

    /// Logs each instance a save could not reach, with the call that held it.
    fn report_busy(&self, module: &str, busy: &[String], never_saved: &[String]) {
        let running = self.calls.running_for(Duration::ZERO);
        for key in busy {
            let call = running
                .iter()
                .find(|call| call.module == module && &call.instance == key)
                .map_or_else(|| "a call".to_owned(), |call| format!("{call}"));
            let kept = match never_saved.contains(key) {
                true => "it was never saved, so it is not in the state file",
                false => "the state file keeps its state from the last save",
            };
            tracing::warn!(module, instance = %key, "instance '{key}' is stuck or slow ({call}): {kept}");
        }
    }

    /// Writes every module's state file now (the admin API, the periodic
    /// save); a module that fails does not stop the others. Refused while
    /// the daemon is not serving: during an upgrade the state is moving,
    /// and after it the new process owns it.
    pub fn snapshot_all(&self) -> Result<api::SnapshotRun, NotNow> {
        let _serving = self.lifecycle.hold("save the state")?;
        Ok(self.save_all(self.calls.slow_call()))
    }

    /// The last save of the stop path, once the lifecycle is `Stopping`.
    /// `None` if the daemon handed over meanwhile: the state is not ours to write.
    /// A call still running after `engine.slow_call` (or
    /// `server.shutdown_timeout`, if shorter) is taken for stuck: its
    /// instance keeps the state it had at the last save.
    pub fn final_save(&self) -> Option<api::SnapshotRun> {
        let wait = self.calls.slow_call().min(self.config().shutdown_timeout);
        (self.lifecycle.phase() == crate::lifecycle::Phase::Stopping).then(|| self.save_all(wait))
    }

    /// Saves every module; each waits at most `wait` for its busy instances.
    fn save_all(&self, wait: Duration) -> api::SnapshotRun {
        let mut run =
            api::SnapshotRun { at_unix_ms: api::unix_ms(SystemTime::now()), written: vec![], failed: vec![] };
        for module in self.engine.status().modules {
            match self.save(&module.name, wait) {
                Ok(written) => run.written.push(written),
                // Unloaded meanwhile (SIGHUP removed it, after saving it).
                Err(Saving::NotLoaded) => {}
                Err(Saving::Failed(error)) => {
                    tracing::error!(module = %module.name, "could not save the state: {error}");
                    run.failed.push(api::Failed { module: module.name, error });
                }
            }
        }
        *self.last_snapshot.lock().expect("snapshot lock") = Some(run.clone());
        run
    }

    /// Applies a new config (SIGHUP): loads added modules, swaps modules
    /// whose file changed, saves and unloads removed ones. Settings that
    /// only take effect at start are reported, not applied.
    pub fn reconcile(&self, new: Config) -> Result<(), NotNow> {
        let _serving = self.lifecycle.hold("apply the config")?;
        let old = self.config();
        for (what, changed) in [
            ("server.listen", old.listen != new.listen),
            ("admin", old.admin != new.admin),
            ("state.dir", old.state_dir != new.state_dir),
            (
                "engine",
                old.swap_timeout != new.swap_timeout || old.max_resident_retired != new.max_resident_retired,
            ),
        ] {
            if changed {
                tracing::warn!(
                    "{what} changed in {}; it takes effect at the next start or upgrade",
                    new.file.display()
                );
            }
        }
        *self.config.write().expect("config lock") = Arc::new(new.clone());
        self.calls.set_slow_call(new.slow_call);
        for module in &old.modules {
            if new.module(&module.name).is_none() {
                let saved = match self.save(&module.name, self.calls.slow_call()) {
                    Ok(_) | Err(Saving::NotLoaded) => Ok(()),
                    Err(Saving::Failed(error)) => Err(format!("its state could not be saved: {error}")),
                };
                match saved.and_then(|()| self.engine.unload(&module.name).map_err(|err| err.to_string())) {
                    Ok(()) => {
                        tracing::info!(module = %module.name, "removed from the config: state saved, unloaded")
                    }
                    Err(error) => tracing::error!(module = %module.name, "could not remove it: {error}"),
                }
            }
        }
        let loaded: std::collections::HashSet<String> =
            self.engine.status().modules.into_iter().map(|module| module.name).collect();
        for module in &new.modules {
            if !loaded.contains(&module.name) {
                if let Err(error) = self.start_module(&new, module, false) {
                    tracing::error!(module = %module.name, "could not load the added module: {error}");
                }
            } else if old.module(&module.name).map(|m| &m.path) != Some(&module.path) {
                let _ = self.swap_serving(&module.name, None, Trigger::Reload);
            }
        }
        self.apply_instance_limits(&new);
        Ok(())
    }

    pub fn status(&self) -> api::Status {
        let config = self.config();
        let engine = self.engine.status();
        let last_errors = self.last_errors.lock().expect("error lock").clone();
        let last_triggers = self.last_triggers.lock().expect("trigger lock").clone();
        let saves_failed = self.metrics.saves_failed();
        let last_save_errors = self.last_save_errors.lock().expect("save error lock").clone();
        let modules = engine
            .modules
            .iter()
            .map(|module| api::Module {
                name: module.name.clone(),
                version: module.current.version.clone(),
                file: module.current.file.display().to_string(),
                sdk_version: module.current.sdk_version.clone(),
                rustc_version: module.current.rustc_version.clone(),
                since_unix_ms: api::unix_ms(module.since),
                watch: config.module(&module.name).is_some_and(|m| m.watch),
                instances: module.instances,
                calls: module.calls,
                errors: module.errors,
                panics: module.panics,
                by_version: module
                    .by_version
                    .iter()
                    .map(|line| api::VersionCalls {
                        version: line.version.clone(),
                        calls: line.calls,
                        errors: line.errors,
                        panics: line.panics,
                    })
                    .collect(),
                swaps: module.swaps,
                rollback_version: module.rollback_version.clone(),
                resident_retired: module.resident_retired.iter().map(|r| r.version.clone()).collect(),
                reclaimed: module.reclaimed,
                last_swap: module.last_swap.as_ref().map(|report| {
                    // A swap the daemon did not record was the load at start.
                    let trigger = last_triggers.get(&module.name).map_or("start", |trigger| trigger.as_str());
                    api::SwapReport::from_engine(report, trigger)
                }),
                last_error: last_errors.get(&module.name).cloned(),
                saves_failed: saves_failed.get(&module.name).copied().unwrap_or(0),
                last_save_error: last_save_errors.get(&module.name).cloned(),
                origin: self.origin(&module.name),
            })
            .collect();
        api::Status {
            pid: std::process::id(),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            config: config.file.display().to_string(),
            public_addr: self.public_addr.get().map(ToString::to_string).unwrap_or_default(),
            admin_socket: config.admin.socket.display().to_string(),
            state_dir: self.store.dir().display().to_string(),
            draining: self.draining.load(std::sync::atomic::Ordering::Relaxed),
            phase: self.lifecycle.phase().to_string(),
            running: self.lifecycle.running(),
            last_snapshot: self.last_snapshot.lock().expect("snapshot lock").clone(),
            upgrade: self.progress(),
            modules,
            slow_call_ms: self.calls.slow_call().as_millis() as u64,
            slow_calls: self.calls.slow_calls().iter().map(api::SlowCall::from_running).collect(),
        }
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.engine.status(), &self.calls.slow_calls(), self.started.elapsed())
    }

    /// The file a `load_from` route swaps to for `?name=NAME`: `libNAME.so`
    /// or `NAME.so` in that folder, and nothing outside it.
    pub fn route_file(dir: &Path, name: &str) -> Result<PathBuf, String> {
        crate::config::check_name("name", name)?;
        ["lib{}.so", "{}.so", "{}"]
            .iter()
            .map(|pattern| dir.join(pattern.replace("{}", name)))
            .find(|candidate| candidate.is_file() && candidate.extension().is_some_and(|ext| ext == "so"))
            .ok_or_else(|| format!("no module file lib{name}.so or {name}.so in {}", dir.display()))
    }
}
