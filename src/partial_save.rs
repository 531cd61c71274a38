//! Which instances a save writes when some of them are busy.
//!
//! A save does not wait for a call without end: it snapshots every instance
//! it can reach before a deadline (`Engine::snapshot_until`), and for each
//! instance still busy then (a call that is stuck or slow) it carries over
//! that instance's bytes from the state file on disk, its last good state.
//! So one stuck instance never stops the saves of all the others, and never
//! loses what was saved of itself.

use hotswap::ModuleSnapshot;

use crate::state::StateStore;

/// What to write for one module.
#[derive(Debug)]
pub struct ToSave {
    /// The instances snapshotted now, plus the busy ones' last saved bytes.
    pub snapshot: ModuleSnapshot,
    /// Instances busy past the deadline, sorted: their bytes (if any) are
    /// from the last save that reached them.
    pub busy: Vec<String>,
    /// The busy instances that were never saved: they are not in the file.
    pub never_saved: Vec<String>,
}

/// Adds to `taken` (what a snapshot reached) the last saved bytes of every
/// instance in `busy`, read from `store`.
///
/// Refused, so the file on disk stays as it is, when those bytes cannot be
/// carried over faithfully: a state file that cannot be read, or one
/// written by another version of the module (its layout may differ, and one
/// file has one version).
pub fn carry_over_busy(
    store: &StateStore,
    mut taken: ModuleSnapshot,
    mut busy: Vec<String>,
) -> Result<ToSave, String> {
    busy.sort();
    if busy.is_empty() {
        return Ok(ToSave { snapshot: taken, busy, never_saved: Vec::new() });
    }
    let module = taken.module.clone();
    let listed = busy.iter().map(|key| format!("'{key}'")).collect::<Vec<_>>().join(", ");
    let saved = store.read(&module).map_err(|error| {
        format!(
            "instance(s) {listed} were busy, and their last saved state cannot be carried over \
             ({error}); the state file is left as it was"
        )
    })?;
    let Some(saved) = saved else {
        return Ok(ToSave { snapshot: taken, never_saved: busy.clone(), busy });
    };
    if saved.version != taken.version {
        return Err(format!(
            "instance(s) {listed} were busy, and their last saved state is from {module} {}, not {} \
             which runs now; the state file is left as it was until they are free",
            saved.version, taken.version
        ));
    }
    let mut never_saved = Vec::new();
    let mut saved_timers = saved.timers;
    let mut saved: std::collections::HashMap<String, Vec<u8>> = saved.instances.into_iter().collect();
    for key in &busy {
        match saved.remove(key) {
            Some(bytes) => taken.instances.push((key.clone(), bytes)),
            None => never_saved.push(key.clone()),
        }
    }
    // A busy instance's timers come from the same save as its bytes, so the
    // two still agree (a timer is pending or what it did is in the state).
    saved_timers.retain(|timer| busy.contains(&timer.instance) && !never_saved.contains(&timer.instance));
    taken.timers.append(&mut saved_timers);
    taken.instances.sort_by(|a, b| a.0.cmp(&b.0));
    taken.timers.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(ToSave { snapshot: taken, busy, never_saved })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: &str, instances: &[(&str, &[u8])]) -> ModuleSnapshot {
        ModuleSnapshot {
            module: "counter".into(),
            version: version.into(),
            instances: instances.iter().map(|(key, bytes)| (key.to_string(), bytes.to_vec())).collect(),
            timers: Vec::new(),
        }
    }

    fn timer(instance: &str, method: &str) -> hotswap::SavedTimer {
        hotswap::SavedTimer {
            instance: instance.into(),
            due: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            method: method.into(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn busy_instances_keep_their_last_saved_timers_with_their_bytes() {
        let (_dir, store) = store();
        let mut on_disk = snapshot("1.0.0", &[("a", b"old a"), ("stuck", b"old stuck")]);
        on_disk.timers = vec![timer("a", "old a's"), timer("stuck", "stuck's")];
        store.write(&on_disk).unwrap();
        let mut taken = snapshot("1.0.0", &[("a", b"new a")]);
        taken.timers = vec![timer("a", "new a's")];
        let saving = carry_over_busy(&store, taken, vec!["stuck".into()]).unwrap();
        assert_eq!(saving.snapshot.timers, [timer("a", "new a's"), timer("stuck", "stuck's")]);
    }

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    #[test]
    fn busy_instances_keep_their_last_saved_bytes() {
        let (_dir, store) = store();
        store.write(&snapshot("1.0.0", &[("a", b"old a"), ("stuck", b"old stuck")])).unwrap();
        let taken = snapshot("1.0.0", &[("a", b"new a"), ("b", b"new b")]);
        let saving = carry_over_busy(&store, taken, vec!["stuck".into(), "fresh".into()]).unwrap();
        assert_eq!(
            saving.snapshot,
            snapshot("1.0.0", &[("a", b"new a"), ("b", b"new b"), ("stuck", b"old stuck")])
        );
        assert_eq!(saving.busy, ["fresh", "stuck"]);
        assert_eq!(saving.never_saved, ["fresh"], "a busy instance that was never saved");
    }

    #[test]
    fn without_busy_instances_the_file_is_not_read() {
        let (_dir, store) = store();
        std::fs::write(store.file("counter"), b"not a state file").unwrap();
        let taken = snapshot("1.0.0", &[("a", b"1")]);
        let saving = carry_over_busy(&store, taken.clone(), Vec::new()).unwrap();
        assert_eq!(saving.snapshot, taken);
    }

    #[test]
    fn without_a_state_file_busy_instances_are_never_saved() {
        let (_dir, store) = store();
        let saving =
            carry_over_busy(&store, snapshot("1.0.0", &[("a", b"1")]), vec!["stuck".into()]).unwrap();
        assert_eq!(saving.snapshot, snapshot("1.0.0", &[("a", b"1")]));
        assert_eq!(saving.never_saved, ["stuck"]);
    }

    #[test]
    fn bytes_of_another_version_or_an_unreadable_file_are_not_carried_over() {
        let (_dir, store) = store();
        store.write(&snapshot("1.0.0", &[("stuck", b"v1 layout")])).unwrap();
        let error = carry_over_busy(&store, snapshot("2.0.0", &[]), vec!["stuck".into()]).unwrap_err();
        assert!(error.contains("'stuck'") && error.contains("1.0.0") && error.contains("2.0.0"), "{error}");

        std::fs::write(store.file("counter"), b"torn").unwrap();
        let error = carry_over_busy(&store, snapshot("1.0.0", &[]), vec!["stuck".into()]).unwrap_err();
        assert!(error.contains("'stuck'") && error.contains("left as it was"), "{error}");
    }
}
