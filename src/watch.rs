//! Swaps a module when its file is replaced, without ever loading a
//! half-written file.
//!
//! The folders holding watched module files are watched (not the files: an
//! atomic rename replaces the file's inode). A swap starts as soon as the
//! kernel says a write is complete: the file was closed after writing (a
//! compiler or `cp` writing in place) or renamed into place. There is no
//! debounce on that path, so the new version serves within milliseconds.
//! Writes that end without a close (mmap) are picked up after a quiet
//! period. If the file still does not load as a module (a writer that
//! closes before it is done), the watcher tries again a few times, then
//! reports the error; the old version serves throughout.
//!
//! A rename of anything else in a watched folder also checks the watched
//! modules there (a file whose content did not change is left alone): that
//! is how a Kubernetes ConfigMap volume or a symlink flip updates files.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::config::Config;
use crate::daemon::{Daemon, SwapFailure, Trigger};

/// How long a file must be quiet after writes that were not closed.
const QUIET: Duration = Duration::from_millis(200);
/// Delay before each new try of a file that did not load (doubling).
const RETRY: Duration = Duration::from_millis(50);
const TRIES: u32 = 5;

pub struct Watch {
    watcher: Mutex<RecommendedWatcher>,
    dirs: Mutex<HashSet<PathBuf>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("dirs", &self.dirs).finish()
    }
}

impl Watch {
    /// Starts watching the modules of `daemon`'s config marked `watch = true`.
    pub fn start(daemon: Arc<Daemon>) -> Result<Watch, String> {
        let (events, incoming) = mpsc::channel();
        let watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(event);
        })
        .map_err(|err| format!("cannot start the file watcher: {err}"))?;
        let config = daemon.config();
        std::thread::Builder::new()
            .name("hotswap-watch".into())
            .spawn(move || run(&daemon, &incoming))
            .map_err(|err| format!("cannot start the file watcher thread: {err}"))?;
        let watch = Watch { watcher: Mutex::new(watcher), dirs: Mutex::new(HashSet::new()) };
        watch.refresh(&config);
        Ok(watch)
    }

    /// Watches the folders of the modules `config` marks `watch = true`, and
    /// stops watching folders no longer needed.
    pub fn refresh(&self, config: &Config) {
        let wanted: HashSet<PathBuf> = config
            .modules
            .iter()
            .filter(|module| module.watch)
            .filter_map(|module| module.path.parent().map(PathBuf::from))
            .collect();
        let mut watcher = self.watcher.lock().expect("watcher lock");
        let mut dirs = self.dirs.lock().expect("watcher lock");
        for gone in dirs.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        dirs.retain(|dir| wanted.contains(dir));
        for dir in wanted {
            if dirs.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!("watching {} for new module files", dir.display());
                    dirs.insert(dir);
                }
                Err(err) => {
                    tracing::error!("cannot watch {}: {err}; its modules swap only on request", dir.display())
                }
            }
        }
    }
}

/// What an event says about a file.
enum Seen {
    /// Closed after writing, or renamed into place: swap now.
    Complete,
    /// Being written: swap once it has been quiet for a while.
    Written,
}

fn classify(kind: &EventKind) -> Option<Seen> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Seen::Complete),
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => Some(Seen::Complete),
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            Some(Seen::Written)
        }
        _ => None,
    }
}

fn run(daemon: &Daemon, incoming: &mpsc::Receiver<notify::Result<Event>>) {
    // Module name -> when to try, and how many tries were made.
    let mut due: HashMap<String, (Instant, u32)> = HashMap::new();
    loop {
        let now = Instant::now();
        let wait = due
            .values()
            .map(|(at, _)| at.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match incoming.recv_timeout(wait) {
            Ok(Ok(event)) => {
                let Some(seen) = classify(&event.kind) else { continue };
                let config = daemon.config();
                for path in &event.paths {
                    let exact = config.modules.iter().filter(|m| m.watch && &m.path == path);
                    let beside = config
                        .modules
                        .iter()
                        .filter(|m| m.watch && &m.path != path && m.path.parent() == path.parent());
                    let affected: Vec<&str> = match seen {
                        Seen::Complete => exact.chain(beside).map(|m| m.name.as_str()).collect(),
                        Seen::Written => exact.map(|m| m.name.as_str()).collect(),
                    };
                    for module in affected {
                        let at = match seen {
                            Seen::Complete => Instant::now(),
                            Seen::Written => Instant::now() + QUIET,
                        };
                        let entry = due.entry(module.to_owned()).or_insert((at, 0));
                        // A complete write moves the swap earlier; more writes push a quiet one later.
                        entry.0 = match seen {
                            Seen::Complete => at.min(entry.0),
                            Seen::Written => at.max(entry.0),
                        };
                    }
                }
            }
            Ok(Err(err)) => tracing::warn!("file watcher: {err}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let ready: Vec<(String, u32)> = due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(name, (_, tries))| (name.clone(), *tries))
            .collect();
        for (module, tries) in ready {
            due.remove(&module);
            match daemon.swap(&module, None, Trigger::Watch) {
                Ok(_) | Err(SwapFailure::Unchanged) => {}
                Err(failure) if failure.may_be_incomplete() && tries + 1 < TRIES => {
                    tracing::info!(module, "the new file does not load yet ({failure}); trying again");
                    due.insert(module, (Instant::now() + RETRY * 2u32.pow(tries), tries + 1));
                }
                Err(_) => {} // Reported by `Daemon::swap`; the old version keeps serving.
            }
        }
    }
}
