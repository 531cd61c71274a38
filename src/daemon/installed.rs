//! What each module runs across restarts and upgrades (issue 7, item 20):
//! the version the last successful swap installed, from the copy the daemon
//! keeps of it (see `module_store.rs`), not whatever the config names.
//!
//! - Every load checks the engine's private copy (pinned sha256, and for a
//!   stored copy the sha256 it is named by), keeps those bytes, and records
//!   them once the swap succeeded, before the swap is acknowledged.
//! - A start restores each module's state into its recorded version; if the
//!   configured file changed since it was recorded (edited, replaced, or the
//!   config now names another file), that is then a swap like any other:
//!   when it fails the recorded version keeps serving and status says why.
//! - The new process of an upgrade loads the recorded version too (or the
//!   changed configured file, which then takes the state over from the old
//!   process, or refuses it and the upgrade changes nothing).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hotswap::{ModuleSnapshot, SwapError, SwapReport};

use super::{Daemon, Trigger};
use crate::api;
use crate::config::{Config, ModuleConfig};
use crate::module_store::{Configured, Kept, Previous, Record};
use crate::policy;

/// What a start or an upgrade loads for one module.
#[derive(Debug)]
pub(super) struct Choice {
    /// The file to load: the configured file (resolved) or a stored copy.
    pub source: PathBuf,
    /// The SHA-256 the loaded bytes must have (a stored copy's name).
    pub expected: Option<String>,
    /// The record the stored copy comes from.
    pub record: Option<Record>,
    /// The configured file changed since the record: swap to it afterwards.
    pub configured_changed: bool,
}

impl Daemon {
    /// Loads every configured module with no instances: the new process of
    /// an upgrade, whose state comes from the old process, not from disk.
    /// Each runs its recorded version, or the configured file if that
    /// changed since (it then takes the state over from the old process).
    pub fn load_modules(&self) -> Result<(), String> {
        let config = self.config();
        for module in &config.modules {
            let name = &module.name;
            let mut choice = self.choose(&config, module)?;
            if choice.configured_changed {
                choice = Choice {
                    source: policy::check_source(&config, &module.path)
                        .map_err(|reason| format!("module '{name}': {reason}"))?,
                    expected: None,
                    record: None,
                    configured_changed: false,
                };
            }
            let kept = Mutex::new(None);
            let report = self
                .engine
                .load_checked(
                    name,
                    &choice.source,
                    self.check_and_keep(module, choice.expected.as_deref(), &kept),
                )
                .map_err(|error| format!("module '{name}': {error}"))?;
            let kept = kept.lock().expect("kept lock").take();
            self.remember_hash(module, kept.as_ref().map(|kept| kept.sha256.as_str()));
            if choice.record.is_none() {
                self.record_installed(module, kept, &report.to_version, Trigger::Start, &choice.source);
            }
        }
        self.apply_instance_limits(&config);
        Ok(())
    }

    /// Loads `module` at a start, restoring its saved state (see
    /// `start_modules`), then swaps to the configured file if it changed.
    pub(super) fn start_module(
        &self,
        config: &Config,
        module: &ModuleConfig,
        discard_corrupt: bool,
    ) -> Result<(), String> {
        let name = &module.name;
        let choice = self.choose(config, module)?;
        let hint = "start with --discard-corrupt-state to move it aside and start this module fresh";
        let saved = match self.store.read(name) {
            Ok(saved) => saved,
            Err(error) if discard_corrupt => {
                let aside = self.store.move_aside(name).map_err(|err| err.to_string())?;
                tracing::warn!(module = %name, "{error}; moved it to {} and starting fresh", aside.display());
                None
            }
            Err(error) => return Err(format!("{error}; {hint}")),
        };
        let kept = Mutex::new(None);
        let mut source = choice.source.clone();
        let check = self.check_and_keep(module, choice.expected.as_deref(), &kept);
        let report = match &saved {
            None => self.engine.load_checked(name, &source, &check),
            Some(saved) => match self.restore_or_previous(module, &choice, saved, &kept, &check) {
                Ok((used, report)) => {
                    source = used;
                    Ok(report)
                }
                // Read by neither the recorded version nor, failing that, its
                // predecessor (which may have written it: see `restore_or_previous`).
                Err(
                    error @ (SwapError::RestoreFailed { .. } | SwapError::SnapshotOfAnotherModule { .. }),
                ) => {
                    let file = self.store.file(name);
                    if !discard_corrupt {
                        return Err(format!("state file {}: {error}; {hint}", file.display()));
                    }
                    let aside = self.store.move_aside(name).map_err(|err| err.to_string())?;
                    tracing::warn!(module = %name, "{error}; moved {} to {} and starting fresh", file.display(), aside.display());
                    self.engine.load_checked(name, &source, &check)
                }
                Err(error) => Err(error),
            },
        };
        let report = report.map_err(|error| format!("module '{name}': {error}"))?;
        let kept = kept.lock().expect("kept lock").take();
        self.remember_hash(module, kept.as_ref().map(|kept| kept.sha256.as_str()));
        if choice.record.is_none() {
            self.record_installed(module, kept, &report.to_version, Trigger::Start, &source);
        }
        let restored = saved.as_ref().map_or(0, |saved| saved.instances.len());
        tracing::info!(module = %name, version = %report.to_version, restored, "started: {report}");
        // The configured file changed while the daemon was stopped, or the
        // version recorded before ran (see `restore_or_previous`): a swap
        // from what runs, which keeps serving if the file is refused.
        if choice.configured_changed || source != choice.source {
            tracing::info!(module = %name, "swapping from {} to the configured file {}", report.to_version, module.path.display());
            let outcome = self.swap_file(config, module, &module.path, Trigger::Start);
            self.record(name, Trigger::Start, &outcome);
        }
        Ok(())
    }

    /// Chooses what to load for `module`: its recorded version when there is
    /// one and its copy is usable, else the configured file.
    pub(super) fn choose(&self, config: &Config, module: &ModuleConfig) -> Result<Choice, String> {
        let name = &module.name;
        let configured = || -> Result<Choice, String> {
            let source = policy::check_source(config, &module.path)
                .map_err(|reason| format!("module '{name}': {reason}"))?;
            Ok(Choice { source, expected: None, record: None, configured_changed: false })
        };
        let record = self.module_store.read(name).map_err(|error| {
            format!("module '{name}': record {error}; remove it to start from the configured file")
        })?;
        let Some(record) = record else { return configured() };
        if module.sha256.as_ref().is_some_and(|pin| *pin != record.sha256) {
            tracing::info!(module = %name, "the pinned sha256 is not the recorded version's; loading the configured file");
            return configured();
        }
        let copy = self.module_store.copy_path(&record.sha256);
        if let Err(reason) = policy::check_trusted(&copy, self.module_store.state_dir()) {
            tracing::warn!(module = %name, "the stored copy of {} {} cannot be used ({reason}); loading the configured file", name, record.version);
            return configured();
        }
        let changed = record.configured.path != module.path
            || policy::sha256_of(&module.path).is_ok_and(|sha256| sha256 != record.configured.sha256);
        Ok(Choice {
            source: copy,
            expected: Some(record.sha256.clone()),
            record: Some(record),
            configured_changed: changed,
        })
    }

    /// Restores `saved` into the chosen version. If that version cannot take
    /// it and was recorded over a predecessor, the state may be the
    /// predecessor's (the new process of an upgrade records what it loads,
    /// and the upgrade may then have failed): the predecessor's copy is
    /// tried, and runs if it takes the state. Returns the file that runs.
    pub(super) fn restore_or_previous<'s>(
        &'s self,
        module: &ModuleConfig,
        choice: &Choice,
        saved: &ModuleSnapshot,
        kept: &Mutex<Option<Kept<'s>>>,
        check: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<(PathBuf, SwapReport), SwapError> {
        let name = &module.name;
        let error = match self.engine.restore_checked(name, &choice.source, saved, check) {
            Ok(report) => return Ok((choice.source.clone(), report)),
            Err(error) => error,
        };
        let (SwapError::RestoreFailed { .. }, Some(record)) = (&error, &choice.record) else {
            return Err(error);
        };
        let Some(previous) = &record.previous else { return Err(error) };
        let copy = self.module_store.copy_path(&previous.sha256);
        if policy::check_trusted(&copy, self.module_store.state_dir()).is_err() {
            return Err(error);
        }
        let check_previous = self.check_and_keep(module, Some(&previous.sha256), kept);
        match self.engine.restore_checked(name, &copy, saved, check_previous) {
            Ok(report) => {
                tracing::warn!(
                    module = %name,
                    "the recorded {} {} cannot take the state on disk ({error}); {} {}, recorded before it, can and runs",
                    name, record.version, name, previous.version
                );
                self.record_fallback(record);
                Ok((copy, report))
            }
            Err(_) => Err(error),
        }
    }

    /// The check run on the engine's private copy of a file (the bytes that
    /// will run): its SHA-256 must be `expected` (for a stored copy) and the
    /// pinned one; then it is kept in the state folder and the guard put in
    /// `kept` until the swap is recorded.
    pub(super) fn check_and_keep<'s: 'k, 'k>(
        &'s self,
        module: &'k ModuleConfig,
        expected: Option<&'k str>,
        kept: &'k Mutex<Option<Kept<'s>>>,
    ) -> impl Fn(&Path) -> Result<(), String> + 'k {
        move |copy: &Path| {
            let actual = policy::sha256_of(copy).map_err(|err| format!("cannot hash it: {err}"))?;
            if let Some(expected) = expected
                && actual != expected
            {
                return Err(format!("the stored copy's sha256 is {actual}, its name says {expected}"));
            }
            policy::check_pin(module.sha256.as_deref(), &actual)?;
            let guard = self.module_store.keep(copy, &actual).map_err(|error| {
                format!("cannot keep a copy to run after a restart or an upgrade: {error}")
            })?;
            *kept.lock().expect("kept lock") = Some(guard);
            Ok(())
        }
    }

    /// Records that `module` now runs `version` from the bytes in `kept`,
    /// loaded from `source` by `trigger`. A record that cannot be written is
    /// logged loudly: the swap happened, but a restart would run the
    /// version recorded before it.
    pub(super) fn record_installed(
        &self,
        module: &ModuleConfig,
        kept: Option<Kept<'_>>,
        version: &str,
        trigger: Trigger,
        source: &Path,
    ) {
        let Some(kept) = kept else { return };
        let name = &module.name;
        let old = self.module_store.read(name).ok().flatten();
        let from_configured = std::fs::canonicalize(&module.path).is_ok_and(|path| path == source);
        let configured = match &old {
            _ if from_configured => Configured { path: module.path.clone(), sha256: kept.sha256.clone() },
            Some(old) if old.configured.path == module.path => old.configured.clone(),
            _ => Configured {
                path: module.path.clone(),
                sha256: policy::sha256_of(&module.path).unwrap_or_default(),
            },
        };
        let record = Record {
            module: name.clone(),
            version: version.to_owned(),
            sha256: kept.sha256.clone(),
            trigger: trigger.as_str().to_owned(),
            source: source.to_owned(),
            recorded_unix_ms: api::unix_ms(std::time::SystemTime::now()),
            configured,
            previous: old.map(|old| Previous {
                version: old.version,
                sha256: old.sha256,
                source: old.source,
                trigger: old.trigger,
            }),
        };
        self.write_record(&record);
    }

    /// Records a rollback: the previous version runs again, from its copy.
    pub(super) fn record_rollback(&self, module: &str, version: &str) {
        let Some(old) = self.module_store.read(module).ok().flatten() else { return };
        let Some(previous) = old.previous.clone() else { return };
        let record = Record {
            module: module.to_owned(),
            version: version.to_owned(),
            sha256: previous.sha256,
            trigger: "rollback".to_owned(),
            source: previous.source,
            recorded_unix_ms: api::unix_ms(std::time::SystemTime::now()),
            configured: old.configured.clone(),
            previous: Some(Previous {
                version: old.version,
                sha256: old.sha256,
                source: old.source,
                trigger: old.trigger,
            }),
        };
        self.write_record(&record);
    }

    /// After a start ran the version recorded *before* the last one (the
    /// state on disk was written by it: an upgrade that failed after the new
    /// process recorded its version), records that this one runs. The
    /// configured file is marked unseen, so the next start tries it again.
    pub(super) fn record_fallback(&self, record: &Record) {
        let Some(previous) = record.previous.clone() else { return };
        let fallback = Record {
            module: record.module.clone(),
            version: previous.version,
            sha256: previous.sha256,
            trigger: previous.trigger,
            source: previous.source,
            recorded_unix_ms: api::unix_ms(std::time::SystemTime::now()),
            configured: Configured { path: record.configured.path.clone(), sha256: String::new() },
            previous: None,
        };
        self.write_record(&fallback);
    }

    fn write_record(&self, record: &Record) {
        if let Err(error) = self.module_store.write(record) {
            tracing::error!(
                module = %record.module,
                "{} {} runs, but recording it failed, so a restart would run the version recorded before: {error}",
                record.module,
                record.version
            );
        }
    }

    /// Where the running version of `module` came from, for status.
    pub(super) fn origin(&self, module: &str) -> Option<api::Origin> {
        let record = self.module_store.known(module)?;
        Some(api::Origin {
            stored: self.module_store.copy_path(&record.sha256).display().to_string(),
            trigger: record.trigger,
            source: record.source.display().to_string(),
            sha256: record.sha256,
            recorded_unix_ms: record.recorded_unix_ms,
        })
    }
}
