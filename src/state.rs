//! Durable snapshots: one file per module in `state.dir`, replaced
//! atomically (`durable.rs`: temporary file, fsync, rename, fsync of the folder), so a
//! crash at any moment leaves either the old file or the new one, never a
//! torn one. Each file ends with the SHA-256 of everything before it, which
//! is checked before anything in it is believed.
//!
//! The bytes before the checksum are [`ModuleSnapshot::to_bytes`] (its doc
//! has the format); a file is those bytes and then 32 bytes of SHA-256 of
//! them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hotswap::ModuleSnapshot;

use crate::durable;
use sha2::{Digest, Sha256};

/// How every snapshot's bytes start (a format byte follows, checked by
/// [`ModuleSnapshot::from_bytes`]): a file without it is not a state file,
/// whatever its checksum says.
const HEADER: &[u8] = b"HSSTATE";
const SUFFIX: &str = "state";

/// Why a state file could not be written or used.
#[derive(Debug)]
pub struct StateError {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state file {}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for StateError {}

/// What one write stored.
#[derive(Debug, Clone)]
pub struct Written {
    pub file: PathBuf,
    pub instances: usize,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// One lock per module, held from the snapshot to the rename: saves of
    /// one module happen one after the other, so an older snapshot is never
    /// renamed over a newer one.
    module_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl StateStore {
    /// Opens (creating if needed) the state folder and removes temporary
    /// files that processes which no longer run left behind (a crash in
    /// the middle of a write).
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let error = |reason: String| StateError { file: dir.to_owned(), reason };
        durable::create_private_dir(dir)
            .map_err(|err| error(format!("cannot create the state folder: {err}")))?;
        let entries =
            fs::read_dir(dir).map_err(|err| error(format!("cannot read the state folder: {err}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(writer) = durable::temporary_writer(&name)
                && (writer == std::process::id() || !is_running(writer))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(StateStore { dir: dir.to_owned(), module_locks: Mutex::new(HashMap::new()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self, module: &str) -> PathBuf {
        self.dir.join(format!("{module}.{SUFFIX}"))
    }

    /// Saves `module`: takes its snapshot with `take` and replaces its state
    /// file with it, atomically. `take` runs under the module's save lock,
    /// so saves of one module are ordered: a snapshot taken later is always
    /// written later. `take` returning `None` (nothing to save) writes nothing.
    pub fn save(
        &self,
        module: &str,
        take: impl FnOnce() -> Result<Option<ModuleSnapshot>, String>,
    ) -> Result<Option<Written>, String> {
        let lock = self.module_lock(module);
        let _ordered = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match take()? {
            Some(snapshot) => self.write(&snapshot).map(Some).map_err(|err| err.to_string()),
            None => Ok(None),
        }
    }

    fn module_lock(&self, module: &str) -> Arc<Mutex<()>> {
        let mut locks = self.module_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(module.to_owned()).or_default().clone()
    }

    /// Replaces `snapshot.module`'s state file with `snapshot`, atomically:
    /// a temporary file of its own (two writers never share one: one would
    /// truncate what the other just renamed into place), fsync, rename,
    /// fsync of the folder. A state folder that was deleted is made again.
    /// Callers that may race use [`save`](Self::save), which orders writes.
    pub fn write(&self, snapshot: &ModuleSnapshot) -> Result<Written, StateError> {
        let file = self.file(&snapshot.module);
        let bytes = encode(snapshot);
        let written = durable::write_atomically(&file, &bytes).or_else(|err| {
            if err.kind() != io::ErrorKind::NotFound || self.dir.exists() {
                return Err(err);
            }
            tracing::warn!("the state folder {} was deleted; making it again", self.dir.display());
            durable::create_private_dir(&self.dir)?;
            durable::write_atomically(&file, &bytes)
        });
        written
            .map_err(|err| StateError { file: file.clone(), reason: format!("cannot write it: {err}") })?;
        Ok(Written { file, instances: snapshot.instances.len(), bytes: bytes.len() as u64 })
    }

    /// The saved state of `module`, or `None` when it has no state file.
    pub fn read(&self, module: &str) -> Result<Option<ModuleSnapshot>, StateError> {
        let file = self.file(module);
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StateError { file, reason: format!("cannot read it: {err}") }),
        };
        let snapshot = decode(&bytes).map_err(|reason| StateError { file: file.clone(), reason })?;
        if snapshot.module != module {
            return Err(StateError {
                file,
                reason: format!("it holds module '{}', not '{module}'", snapshot.module),
            });
        }
        Ok(Some(snapshot))
    }

    /// Renames `module`'s state file out of the way (it is never deleted)
    /// and returns its new name.
    pub fn move_aside(&self, module: &str) -> Result<PathBuf, StateError> {
        let file = self.file(module);
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let aside = self.dir.join(format!("{module}.{SUFFIX}.corrupt-{seconds}"));
        fs::rename(&file, &aside)
            .map_err(|err| StateError { file, reason: format!("cannot move it aside: {err}") })?;
        Ok(aside)
    }
}

fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The bytes of a state file for `snapshot`: [`ModuleSnapshot::to_bytes`]
/// and the SHA-256 of them.
pub fn encode(snapshot: &ModuleSnapshot) -> Vec<u8> {
    let mut out = snapshot.to_bytes();
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Reads what [`encode`] wrote, checking its SHA-256 first.
pub fn decode(bytes: &[u8]) -> Result<ModuleSnapshot, String> {
    if bytes.len() < HEADER.len() + 1 + 32 || !bytes.starts_with(HEADER) {
        return Err(
            "it is not a hotswap state file (bad header); it may be truncated or from elsewhere".into()
        );
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("its checksum does not match: the file is corrupt".into());
    }
    ModuleSnapshot::from_bytes(body).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotswap::SavedTimer;
    use std::time::Duration;

    fn sample() -> ModuleSnapshot {
        ModuleSnapshot {
            module: "game".into(),
            version: "1002".into(),
            instances: vec![("".into(), b"{\"hits\":3}".to_vec()), ("room-1".into(), vec![0, 255, 7])],
            timers: Vec::new(),
        }
    }

    fn with_timers() -> ModuleSnapshot {
        let at = |secs, nanos| UNIX_EPOCH + Duration::new(secs, nanos);
        let timer = |instance: &str, due, method: &str, payload: &[u8]| SavedTimer {
            instance: instance.into(),
            due,
            method: method.into(),
            payload: payload.to_vec(),
        };
        ModuleSnapshot {
            timers: vec![
                timer("", at(1_700_000_000, 999_999_999), "fire", b""),
                timer("room-1", at(1_700_000_001, 5), "remind", &[0, 1, 2]),
            ],
            ..sample()
        }
    }

    /// A state file is the snapshot's bytes and their SHA-256. (That those
    /// bytes keep their format, and that bytes written before timers still
    /// read, is tested where they are made: the engine's `snapshot_bytes.rs`.)
    #[test]
    fn a_file_is_the_snapshot_bytes_and_their_sha256_with_or_without_timers() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.write(&with_timers()).unwrap();
        assert_eq!(store.read("game").unwrap(), Some(with_timers()));

        let mut by_hand = sample().to_bytes();
        let digest = Sha256::digest(&by_hand);
        by_hand.extend_from_slice(&digest);
        fs::write(store.file("game"), by_hand).unwrap();
        assert_eq!(store.read("game").unwrap(), Some(sample()));
    }

    #[test]
    fn a_file_from_a_newer_release_is_refused_naming_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut body = sample().to_bytes();
        body[HEADER.len()] = 3;
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        fs::write(store.file("game"), body).unwrap();
        let error = store.read("game").unwrap_err().to_string();
        assert!(error.contains("game.state") && error.contains("state format 3"), "{error}");
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(store.read("game").unwrap().is_none());
        let written = store.write(&sample()).unwrap();
        assert_eq!(written.file, dir.path().join("game.state"));
        assert_eq!(store.read("game").unwrap(), Some(sample()));
        let mut newer = sample();
        newer.instances.pop();
        store.write(&newer).unwrap();
        assert_eq!(store.read("game").unwrap(), Some(newer));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["game.state"], "no temporary file is left behind");
    }

    #[test]
    fn every_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let file = store.write(&sample()).unwrap().file;
        let good = fs::read(&file).unwrap();
        // Flip each byte in turn, and cut the file at each length.
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(&file, &bad).unwrap();
            assert!(store.read("game").is_err(), "flipped byte {at} went unnoticed");
            fs::write(&file, &good[..at]).unwrap();
            assert!(store.read("game").is_err(), "cut at {at} went unnoticed");
        }
        fs::write(&file, b"").unwrap();
        let error = store.read("game").unwrap_err();
        assert!(error.to_string().contains("game.state"), "{error}");
    }

    #[test]
    fn a_file_of_another_module_is_refused_and_corrupt_files_move_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.write(&sample()).unwrap();
        fs::rename(store.file("game"), store.file("chat")).unwrap();
        let error = store.read("chat").unwrap_err();
        assert!(error.reason.contains("holds module 'game'"), "{error}");
        let aside = store.move_aside("chat").unwrap();
        assert!(aside.exists() && !store.file("chat").exists());
        assert!(store.read("chat").unwrap().is_none());
    }
}
