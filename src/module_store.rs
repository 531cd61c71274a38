//! What each module runs, kept so that a restart or an upgrade runs it again.
//!
//! The config names a file, but an admin `load`, a `load_from` route or a
//! rollback may have swapped to another one since, and the state on disk was
//! then written by that other version: starting the configured file would
//! hand it a state it may not read, or silently go back a version. So every
//! successful swap keeps the bytes it runs and records them:
//!
//! ```text
//! state/modules/<sha256>.so    the module file, named by the SHA-256 of its content
//! state/modules/<module>.json  the record: which copy runs, where it came from,
//!                              what it replaced, and the configured file as last seen
//! ```
//!
//! Both are written the way state files are (unique temporary file, fsync,
//! rename, fsync of the folder), the copy before the record that names it,
//! so a crash leaves either the old record or the new one, and a record
//! never names a copy that is not complete. The copy is taken from the
//! engine's private copy, the bytes that were verified and run, not from the
//! original, which may change afterwards.
//!
//! Records are separate from the state files rather than inside their header:
//! a state is written every few seconds and a record only when a swap
//! succeeds, and the two need only one ordering: the record of a version is
//! durable before that version's swap is acknowledged, and a state is
//! written by the recorded version or read by it through its migration.
//!
//! Copies that no record names (neither the running version nor the one a
//! rollback returns to) are removed after each record is written.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::durable;

/// The sub-folder of `state.dir` that holds the copies and records.
const FOLDER: &str = "modules";

/// What one module runs, as recorded after its last successful swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub module: String,
    pub version: String,
    /// SHA-256 of the file, lowercase hex: the name of its stored copy.
    pub sha256: String,
    /// What installed it: start, admin, watch, reload, route, rollback.
    pub trigger: String,
    /// The file it was loaded from.
    pub source: PathBuf,
    pub recorded_unix_ms: u64,
    /// The configured file as the daemon last loaded or saw it: a start
    /// that finds it changed swaps to it from the recorded version.
    pub configured: Configured,
    /// The version this one replaced: what a rollback returns to.
    pub previous: Option<Previous>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configured {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub version: String,
    pub sha256: String,
    pub source: PathBuf,
    pub trigger: String,
}

/// Why a copy or a record could not be written or read.
#[derive(Debug)]
pub struct StoreError {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for StoreError {}

/// The stored copies and records of one state folder.
#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    /// Copies kept for a swap still under way, which no record names yet:
    /// the clean-up of another module's swap must not remove them.
    in_flight: Mutex<HashMap<String, usize>>,
    /// One writer of records at a time, so a clean-up sees every record.
    writing: Mutex<()>,
    /// The last record read or written of each module, for status.
    known: Mutex<HashMap<String, Record>>,
}

impl ModuleStore {
    /// The store in `state_dir`; its folder is created when first written.
    pub fn new(state_dir: &Path) -> ModuleStore {
        ModuleStore {
            dir: state_dir.join(FOLDER),
            in_flight: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The state folder that holds this store: the root of the trust checks
    /// of a stored copy (see `policy::check_trusted`).
    pub fn state_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// Where the copy of the content with this SHA-256 is kept.
    pub fn copy_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.so"))
    }

    fn record_path(&self, module: &str) -> PathBuf {
        self.dir.join(format!("{module}.json"))
    }

    /// Keeps `file` (whose content has SHA-256 `sha256`) as a stored copy,
    /// durably, unless it is kept already; the copy is protected from
    /// clean-up until the returned guard is dropped (once recorded).
    pub fn keep(&self, file: &Path, sha256: &str) -> Result<Kept<'_>, StoreError> {
        // Protected first: a clean-up between the write and the guard must not remove it.
        *self.in_flight.lock().expect("in-flight lock").entry(sha256.to_owned()).or_default() += 1;
        let kept = Kept { store: self, sha256: sha256.to_owned() };
        let target = self.copy_path(sha256);
        // Copies are renamed into place complete, so one that exists is whole.
        if !target.is_file() {
            let bytes = fs::read(file).map_err(|err| StoreError {
                file: file.to_owned(),
                reason: format!("cannot read it to keep a copy: {err}"),
            })?;
            self.write_atomically(&target, &bytes)?;
        }
        Ok(kept)
    }

    /// The record of `module`, or `None` if it has none.
    pub fn read(&self, module: &str) -> Result<Option<Record>, StoreError> {
        let file = self.record_path(module);
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StoreError { file, reason: format!("cannot read it: {err}") }),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|err| StoreError {
            file: file.clone(),
            reason: format!("it is not a module record: {err}"),
        })?;
        if record.module != module {
            return Err(StoreError { file, reason: format!("it records module '{}'", record.module) });
        }
        self.known.lock().expect("record cache lock").insert(module.to_owned(), record.clone());
        Ok(Some(record))
    }

    /// The record of `module` this process last read or wrote, without
    /// touching the disk (for status).
    pub fn known(&self, module: &str) -> Option<Record> {
        self.known.lock().expect("record cache lock").get(module).cloned()
    }

    /// Replaces `record.module`'s record, atomically, then removes the
    /// copies no record names any more.
    pub fn write(&self, record: &Record) -> Result<(), StoreError> {
        let _writing = self.writing.lock().expect("record lock");
        let bytes = serde_json::to_vec_pretty(record).expect("a record serializes");
        self.write_atomically(&self.record_path(&record.module), &bytes)?;
        self.known.lock().expect("record cache lock").insert(record.module.clone(), record.clone());
        if let Err(error) = self.remove_unreferenced() {
            tracing::warn!("could not remove module copies no longer used: {error}");
        }
        Ok(())
    }

    /// Removes every stored copy that no record names and no swap under way holds.
    fn remove_unreferenced(&self) -> io::Result<()> {
        let mut referenced: HashSet<String> =
            self.in_flight.lock().expect("in-flight lock").keys().cloned().collect();
        let mut copies = Vec::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(module) = name.strip_suffix(".json") {
                // A record that cannot be read keeps every copy: better a
                // file too many than the one a start needs.
                let record = self.read(module).map_err(|err| io::Error::other(err.to_string()))?;
                if let Some(record) = record {
                    referenced.insert(record.sha256);
                    referenced.extend(record.previous.map(|previous| previous.sha256));
                }
            } else if let Some(sha256) = name.strip_suffix(".so")
                && sha256.len() == 64
                && sha256.bytes().all(|byte| byte.is_ascii_hexdigit())
            {
                copies.push((sha256.to_owned(), entry.path()));
            }
        }
        for (sha256, path) in copies {
            if !referenced.contains(&sha256) {
                fs::remove_file(&path)?;
                tracing::debug!("removed the module copy {}: no longer used", path.display());
            }
        }
        Ok(())
    }

    /// Writes `file` through a unique temporary file, fsync, rename and an
    /// fsync of the folder; readable and writable by the daemon's user only.
    fn write_atomically(&self, file: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let error = |reason: String| StoreError { file: file.to_owned(), reason };
        durable::create_private_dir(&self.dir)
            .map_err(|err| error(format!("cannot create its folder: {err}")))?;
        durable::write_atomically(file, bytes).map_err(|err| error(format!("cannot write it: {err}")))
    }
}

/// A stored copy protected from clean-up while its swap is under way.
#[derive(Debug)]
pub struct Kept<'a> {
    store: &'a ModuleStore,
    pub sha256: String,
}

impl Drop for Kept<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.store.in_flight.lock().expect("in-flight lock");
        if let Some(count) = in_flight.get_mut(&self.sha256) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.sha256);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(module: &str, sha256: &str, previous: Option<&str>) -> Record {
        Record {
            module: module.into(),
            version: "1.0.0".into(),
            sha256: sha256.into(),
            trigger: "admin".into(),
            source: "/srv/modules/libm.so".into(),
            recorded_unix_ms: 1,
            configured: Configured { path: "/srv/modules/libm.so".into(), sha256: sha256.into() },
            previous: previous.map(|sha256| Previous {
                version: "0.9.0".into(),
                sha256: sha256.into(),
                source: "/srv/modules/old.so".into(),
                trigger: "start".into(),
            }),
        }
    }

    fn sha(byte: char) -> String {
        byte.to_string().repeat(64)
    }

    #[test]
    fn records_round_trip_and_unreferenced_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        assert_eq!(store.read("m").unwrap(), None);
        let source = dir.path().join("libm.so");
        fs::write(&source, b"code").unwrap();
        for byte in ['a', 'b', 'c'] {
            drop(store.keep(&source, &sha(byte)).unwrap());
        }
        store.write(&record("m", &sha('b'), Some(&sha('a')))).unwrap();
        assert_eq!(store.read("m").unwrap(), Some(record("m", &sha('b'), Some(&sha('a')))));
        assert!(!store.copy_path(&sha('c')).exists(), "named by no record");
        assert!(store.copy_path(&sha('a')).exists() && store.copy_path(&sha('b')).exists());

        // A copy whose swap is under way stays though no record names it yet.
        let kept = store.keep(&source, &sha('d')).unwrap();
        store.write(&record("other", &sha('e'), None)).unwrap();
        assert!(store.copy_path(&kept.sha256).exists());
        drop(kept);
        store.write(&record("m", &sha('a'), None)).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path().join(FOLDER))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [format!("{}.so", sha('a')), "m.json".into(), "other.json".into()],
            "no temporary file either"
        );
    }

    #[test]
    fn a_damaged_record_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        store.write(&record("m", &sha('a'), None)).unwrap();
        fs::write(store.record_path("m"), b"{ half").unwrap();
        let error = store.read("m").unwrap_err();
        assert!(
            error.to_string().contains("m.json") && error.reason.contains("not a module record"),
            "{error}"
        );
        fs::rename(store.record_path("m"), store.record_path("n")).unwrap();
        store.write(&record("m", &sha('a'), None)).unwrap();
        fs::copy(store.record_path("m"), store.record_path("n")).unwrap();
        assert!(store.read("n").unwrap_err().reason.contains("records module 'm'"));
    }
}
