//! The daemon's state and every operation that changes what it serves.
//!
//! All swaps go through [`Daemon::swap`], whatever asked for them (start,
//! admin API or CLI, file watch, SIGHUP, a `load_from` route), so the load
//! policy, the snapshot taken before every swap and the metrics apply to
//! each one. These methods block (a swap waits for busy instances); async
//! callers run them with `spawn_blocking`.
//!
//! | file | what |
//! |---|---|
//! | `daemon.rs` | the daemon's fields, its start, SIGHUP (`reconcile`) |
//! | `daemon/swap.rs` | every swap and rollback, and why one was refused |
//! | `daemon/saving.rs` | saving state: one module, all of them, at shutdown |
//! | `daemon/installed.rs` | which version of each module a start or an upgrade runs |
//! | `daemon/status.rs` | the status document and the metrics text |
//!
//! What HTTP makes of a refusal (its status code) is the HTTP layer's
//! business: `http::swap_failure_status`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use hotswap::Engine;

use crate::api;
use crate::calls::CallRunner;
use crate::config::{Config, ModuleConfig};
use crate::lifecycle::{Lifecycle, NotNow};
use crate::metrics::Metrics;
use crate::module_store::ModuleStore;
use crate::state::StateStore;

mod installed;
mod saving;
mod status;
mod swap;

use saving::Saving;
pub use swap::{SwapFailure, Trigger};

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
    /// The timer scheduler's wake-up and counts (`timers.rs`).
    pub timers: crate::timers::Timers,
    /// WebSocket sessions: the registry the engine's pushes are routed by (`sockets.rs`).
    pub sockets: Arc<crate::sockets::Sockets>,
    /// After an upgrade's commit: the open connections leaving for the new process.
    pub outgoing: crate::upgrade::connections::Outgoing,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("config", &self.config().file).finish_non_exhaustive()
    }
}

impl Daemon {
    pub fn new(config: Config, store: StateStore) -> Daemon {
        let timers = crate::timers::Timers::default();
        let sockets = Arc::new(crate::sockets::Sockets::new());
        let engine_config = hotswap::EngineConfig {
            on_earlier_timer: Some(timers.engine_wake()),
            on_push: Some(sockets.push_sink()),
            ..config.engine_config()
        };
        Daemon {
            engine: Engine::new(engine_config),
            timers,
            sockets,
            outgoing: crate::upgrade::connections::Outgoing::default(),
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

    /// Records the content a watched module was loaded from (see
    /// `swap_file`): the SHA-256 of the bytes that run, which the load
    /// already computed on the engine's private copy.
    fn remember_hash(&self, module: &ModuleConfig, loaded_sha256: Option<&str>) {
        if module.watch
            && let Some(hash) = loaded_sha256
        {
            self.loaded_hashes.lock().expect("hash lock").insert(module.name.clone(), hash.to_owned());
        }
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
                old.swap_timeout != new.swap_timeout
                    || old.max_resident_retired != new.max_resident_retired
                    || old.max_timers_per_instance != new.max_timers_per_instance,
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
