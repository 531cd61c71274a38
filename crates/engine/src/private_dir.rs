//! The folder that holds the engine's private copies of module files.
//!
//! Only this process may read or replace the code it maps, so the folder is
//! `0700`. It is removed when the engine is dropped, but a process that
//! crashes or is killed leaves it behind; its name carries the owner's pid
//! (`hotswap-<pid>-<random>`), so the next engine that creates a folder in
//! the same place removes the folders of processes that no longer run.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread::JoinHandle;

use tempfile::TempDir;

const PREFIX: &str = "hotswap-";

/// Creates a fresh private folder in `parent` (the system temporary folder
/// if `None`); the leftovers of dead processes there are removed next to
/// the caller's work, on a thread of their own (see `create_and_clean`).
pub(crate) fn create(parent: Option<&Path>) -> io::Result<TempDir> {
    create_and_clean(parent).map(|(dir, _cleaning)| dir)
}

/// [`create`], also returning the thread that removes the leftovers (`None`
/// if none could be started: they are then removed before this returns).
///
/// Why not before the folder is made: the scan reads every entry of
/// `parent`, and the system temporary folder of a busy machine holds
/// thousands; the first load of a process (the new process of an upgrade,
/// whose start the old one waits for) would wait for that scan, 0.5–1.8 ms
/// with 1,300 entries. The leftovers only take disk space, so nothing needs
/// them gone before this process runs its code.
fn create_and_clean(parent: Option<&Path>) -> io::Result<(TempDir, Option<JoinHandle<()>>)> {
    let parent = match parent {
        Some(parent) => {
            fs::create_dir_all(parent)?;
            parent.to_owned()
        }
        None => std::env::temp_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)?;
    let scanned = parent.clone();
    let cleaning = std::thread::Builder::new()
        .name("hotswap-leftovers".into())
        .spawn(move || remove_leftovers(&scanned));
    match cleaning {
        Ok(cleaning) => Ok((dir, Some(cleaning))),
        Err(_) => {
            remove_leftovers(&parent);
            Ok((dir, None))
        }
    }
}

/// Removes the folders in `parent` that an engine of a process that no
/// longer runs left behind. Only folders owned by this user are touched;
/// a folder that cannot be removed is reported and left.
fn remove_leftovers(parent: &Path) {
    #[cfg(test)]
    let _held = tests::SCAN_GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Ok(entries) = fs::read_dir(parent) else { return };
    let me = fs::metadata("/proc/self").map(|meta| meta.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else { continue };
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if !meta.is_dir() || Some(meta.uid()) != me || process_runs(pid) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(folder = %entry.path().display(), pid, "removed the module copies of a process that no longer runs")
            }
            Err(error) => {
                tracing::warn!(folder = %entry.path().display(), "cannot remove a leftover folder of module copies: {error}")
            }
        }
    }
}

/// The pid in a folder name `hotswap-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    (!random.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok())?
}

/// Whether process `pid` exists (any process with that pid: a pid reused by
/// another process keeps the folder, which errs on the safe side).
fn process_runs(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Held by a test to keep every leftover scan from starting.
    pub(super) static SCAN_GATE: Mutex<()> = Mutex::new(());

    /// A leftover folder of a process that has exited, in `parent`.
    fn leftover_of_a_dead_process(parent: &Path) -> std::path::PathBuf {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = parent.join(format!("hotswap-{dead_pid}-leftover"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("000001-counter-libcounter.so"), b"old copy").unwrap();
        dead
    }

    #[test]
    fn folder_names_carry_their_owner_pid() {
        assert_eq!(owner_pid("hotswap-1234-AbC9x"), Some(1234));
        assert_eq!(owner_pid("hotswap-1234-"), None);
        assert_eq!(owner_pid("hotswap-abc-x"), None);
        assert_eq!(owner_pid("hotswapX1234-x"), None);
        assert_eq!(owner_pid("other-1234-x"), None);
    }

    /// Attack: crashed daemons leave their folders of module copies behind
    /// (issue 7, item 19). A new engine's folder removes those of dead
    /// processes, keeps those of live ones, and is private (0700).
    #[test]
    fn a_new_private_folder_is_0700_and_removes_leftovers_of_dead_processes() {
        let parent = tempfile::tempdir().unwrap();
        let dead = leftover_of_a_dead_process(parent.path());
        let dead_pid = owner_pid(dead.file_name().unwrap().to_str().unwrap()).unwrap();
        let alive = parent.path().join(format!("hotswap-{}-other", std::process::id()));
        fs::create_dir(&alive).unwrap();
        let unrelated = parent.path().join(format!("hotswap-{dead_pid}"));
        fs::create_dir(&unrelated).unwrap();

        let (created, cleaning) = create_and_clean(Some(parent.path())).unwrap();
        if let Some(cleaning) = cleaning {
            cleaning.join().unwrap();
        }
        assert!(!dead.exists(), "the folder of dead pid {dead_pid} is removed");
        assert!(alive.exists(), "the folder of a running process is kept");
        assert!(unrelated.exists(), "a name without the random part is not ours");
        let mode = fs::metadata(created.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the private folder is {mode:o}");
        let name = created.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(owner_pid(&name), Some(std::process::id()), "{name}");
    }

    /// Attack: the leftover scan reads every entry of the parent folder (the
    /// system temporary folder of a busy machine holds thousands), and the
    /// first load of an upgrade's new process waited for it. With the scan
    /// held back, the folder is still created, and the leftovers go once
    /// the scan runs.
    #[test]
    fn the_folder_is_created_without_waiting_for_the_leftover_scan() {
        let parent = tempfile::tempdir().unwrap();
        let dead = leftover_of_a_dead_process(parent.path());
        let held = SCAN_GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (sender, created) = mpsc::channel();
        let place = parent.path().to_owned();
        std::thread::spawn(move || sender.send(create_and_clean(Some(&place))));
        let (created, cleaning) = created
            .recv_timeout(Duration::from_secs(30))
            .expect("the folder is created while the leftover scan cannot start")
            .unwrap();
        assert!(created.path().is_dir());
        assert!(dead.exists(), "the scan has not run yet");
        drop(held);
        cleaning.expect("the scan runs on its own thread").join().unwrap();
        assert!(!dead.exists(), "the leftover is removed once the scan runs");
    }
}
