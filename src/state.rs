//! Durable snapshots: one file per module in `state.dir`, replaced
//! atomically (`durable.rs`: temporary file, fsync, rename, fsync of the folder), so a
//! crash at any moment leaves either the old file or the new one, never a
//! torn one. Each file ends with the SHA-256 of everything before it, which
//! is checked before anything in it is believed.
//!
//! The frame is written by hand rather than with a serde format: states can
//! be many megabytes, and a length-prefixed byte copy is both the fastest
//! encoding and a few lines to read back with every length bounds-checked.
//!
//! ```text
//! "HSSTATE\x01" or "HSSTATE\x02"
//! u32 len, module name | u32 len, module version | u64 written (unix ms) | u32 instance count
//! per instance: u32 len, key | u64 len, state bytes
//! only in "\x02": u32 timer count, per timer (`ctx.after`, pending):
//!   u32 len, instance key | u64 due (unix s) | u32 due (ns) | u32 len, method | u64 len, payload
//! 32 bytes: SHA-256 of all of the above
//! ```
//!
//! A state without timers is written as "\x01", as before timers existed:
//! files written before them load unchanged, and a release that knows no
//! timers still reads a state that has none (an upgrade to it, or a start
//! of it after a downgrade). One with timers is refused by such a release
//! rather than read without them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotswap::{ModuleSnapshot, SavedTimer};

use crate::durable;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"HSSTATE\x01";
/// The same, followed by the pending timers.
const MAGIC_TIMERS: &[u8; 8] = b"HSSTATE\x02";
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

/// The bytes of a state file for `snapshot`: its [`encode_body`] and the
/// SHA-256 of it.
pub fn encode(snapshot: &ModuleSnapshot) -> Vec<u8> {
    let mut out = encode_body(snapshot);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// `snapshot` as the framed body of a state file, without the checksum: how
/// state travels in an upgrade, over a local socket whose frames are
/// length-checked and which cannot corrupt bytes the way a disk can.
pub fn encode_body(snapshot: &ModuleSnapshot) -> Vec<u8> {
    let state_bytes: usize = snapshot.instances.iter().map(|(key, state)| key.len() + state.len() + 12).sum();
    let mut out = Vec::with_capacity(64 + snapshot.module.len() + snapshot.version.len() + state_bytes);
    out.extend_from_slice(if snapshot.timers.is_empty() { MAGIC } else { MAGIC_TIMERS });
    put_text(&mut out, &snapshot.module);
    put_text(&mut out, &snapshot.version);
    let written = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    out.extend_from_slice(&written.to_le_bytes());
    out.extend_from_slice(&(snapshot.instances.len() as u32).to_le_bytes());
    for (key, state) in &snapshot.instances {
        put_text(&mut out, key);
        out.extend_from_slice(&(state.len() as u64).to_le_bytes());
        out.extend_from_slice(state);
    }
    if !snapshot.timers.is_empty() {
        out.extend_from_slice(&(snapshot.timers.len() as u32).to_le_bytes());
        for timer in &snapshot.timers {
            put_text(&mut out, &timer.instance);
            // Due times are now plus a delay, never before 1970.
            let due = timer.due.duration_since(UNIX_EPOCH).unwrap_or_default();
            out.extend_from_slice(&due.as_secs().to_le_bytes());
            out.extend_from_slice(&due.subsec_nanos().to_le_bytes());
            put_text(&mut out, &timer.method);
            out.extend_from_slice(&(timer.payload.len() as u64).to_le_bytes());
            out.extend_from_slice(&timer.payload);
        }
    }
    out
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Reads what [`encode`] wrote, checking its SHA-256 first.
pub fn decode(bytes: &[u8]) -> Result<ModuleSnapshot, String> {
    if bytes.len() < MAGIC.len() + 32 || ![&MAGIC[..], &MAGIC_TIMERS[..]].contains(&&bytes[..MAGIC.len()]) {
        return Err(
            "it is not a hotswap state file (bad header); it may be truncated or from elsewhere".into()
        );
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("its checksum does not match: the file is corrupt".into());
    }
    decode_body(body)
}

/// Reads what [`encode_body`] wrote; every length is checked against what is there.
pub fn decode_body(body: &[u8]) -> Result<ModuleSnapshot, String> {
    let (fields, has_timers) = match (body.strip_prefix(MAGIC.as_slice()), body.strip_prefix(MAGIC_TIMERS)) {
        (Some(fields), _) => (fields, false),
        (_, Some(fields)) => (fields, true),
        _ => return Err("it does not start like a hotswap state".into()),
    };
    let mut reader = Reader { rest: fields };
    let module = reader.text()?;
    let version = reader.text()?;
    let _written = reader.u64()?;
    let count = reader.u32()?;
    let mut instances = Vec::with_capacity((count as usize).min(4096));
    for _ in 0..count {
        let key = reader.text()?;
        let len = usize::try_from(reader.u64()?).map_err(|_| "a state is too large".to_owned())?;
        instances.push((key, reader.take(len)?.to_vec()));
    }
    let mut timers = Vec::new();
    if has_timers {
        let count = reader.u32()?;
        timers.reserve((count as usize).min(4096));
        for _ in 0..count {
            let instance = reader.text()?;
            let (secs, nanos) = (reader.u64()?, reader.u32()?);
            // Checked before `Duration::new`, which panics when nanoseconds
            // carry past the largest number of seconds.
            let due = (nanos < 1_000_000_000)
                .then(|| UNIX_EPOCH.checked_add(Duration::new(secs, nanos)))
                .flatten()
                .ok_or_else(|| format!("a timer of instance '{instance}' has an impossible due time"))?;
            let method = reader.text()?;
            let len =
                usize::try_from(reader.u64()?).map_err(|_| "a timer's payload is too large".to_owned())?;
            timers.push(SavedTimer { instance, due, method, payload: reader.take(len)?.to_vec() });
        }
    }
    if !reader.rest.is_empty() {
        return Err(format!("{} unexpected bytes after the last instance", reader.rest.len()));
    }
    Ok(ModuleSnapshot { module, version, instances, timers })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.rest.len() {
            return Err(format!("a field of {len} bytes runs past the end of the file"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn text(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a name is not valid UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The bytes of a state file as releases before timers wrote it, made
    /// here by hand from the format they documented.
    fn written_before_timers(snapshot: &ModuleSnapshot) -> Vec<u8> {
        let mut body = b"HSSTATE\x01".to_vec();
        let text = |body: &mut Vec<u8>, text: &str| {
            body.extend_from_slice(&(text.len() as u32).to_le_bytes());
            body.extend_from_slice(text.as_bytes());
        };
        text(&mut body, &snapshot.module);
        text(&mut body, &snapshot.version);
        body.extend_from_slice(&1_600_000_000_000u64.to_le_bytes());
        body.extend_from_slice(&(snapshot.instances.len() as u32).to_le_bytes());
        for (key, state) in &snapshot.instances {
            text(&mut body, key);
            body.extend_from_slice(&(state.len() as u64).to_le_bytes());
            body.extend_from_slice(state);
        }
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        body
    }

    #[test]
    fn timers_round_trip_and_files_from_before_timers_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.write(&with_timers()).unwrap();
        assert_eq!(store.read("game").unwrap(), Some(with_timers()));

        fs::write(store.file("game"), written_before_timers(&sample())).unwrap();
        assert_eq!(store.read("game").unwrap(), Some(sample()), "an old file loads, with no timers");
        // And a state without timers is written as before, for older releases.
        assert_eq!(encode_body(&sample())[..8], *MAGIC);
        assert_eq!(encode_body(&with_timers())[..8], *MAGIC_TIMERS);
    }

    #[test]
    fn timers_cut_or_damaged_are_refused_never_misread() {
        let body = encode_body(&with_timers());
        assert_eq!(decode_body(&body).unwrap(), with_timers());
        for at in 0..body.len() {
            assert!(decode_body(&body[..at]).is_err(), "cut at {at} went unnoticed");
        }
        // A due time whose nanoseconds are out of range: refused, not a panic.
        let mut bad = body.clone();
        let nanos_at = body.len() - (4 + "remind".len() + 8 + 3) - 4;
        bad[nanos_at..nanos_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        bad[nanos_at - 8..nanos_at].copy_from_slice(&u64::MAX.to_le_bytes());
        let error = decode_body(&bad).unwrap_err();
        assert!(error.contains("impossible due time") && error.contains("room-1"), "{error}");
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
    fn bodies_round_trip_and_refuse_what_is_cut() {
        let body = encode_body(&sample());
        assert_eq!(decode_body(&body).unwrap(), sample());
        for at in 0..body.len() {
            assert!(decode_body(&body[..at]).is_err(), "cut at {at} went unnoticed");
        }
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
