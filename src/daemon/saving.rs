//! Saving module state: one module (ordered, through `StateStore::save`),
//! every module, and the last save at shutdown.

use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use crate::api;
use crate::lifecycle::NotNow;
use crate::partial_save;

/// Why a module's state was not saved.
#[derive(Debug)]
pub(super) enum Saving {
    /// The module is not loaded: there is nothing to save.
    NotLoaded,
    Failed(String),
}

impl Daemon {
    /// Snapshots `module` and writes its state file. Saves of one module
    /// are ordered (see [`crate::state::StateStore::save`]): an older snapshot never
    /// replaces a newer one. The caller holds the lifecycle, or is the stop
    /// path.
    ///
    /// A call still running after `wait` does not hold the save up: its
    /// instance keeps its last saved state (see `partial_save.rs`) and is
    /// listed in the result as busy.
    pub(super) fn save(&self, module: &str, wait: Duration) -> Result<api::Written, Saving> {
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
    pub(super) fn report_busy(&self, module: &str, busy: &[String], never_saved: &[String]) {
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
    pub(super) fn save_all(&self, wait: Duration) -> api::SnapshotRun {
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
}
