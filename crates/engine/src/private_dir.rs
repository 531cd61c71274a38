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

use tempfile::TempDir;

const PREFIX: &str = "hotswap-";

/// Creates a fresh private folder in `parent` (the system temporary folder
/// if `None`), after removing the leftovers of dead processes there.
pub(crate) fn create(parent: Option<&Path>) -> io::Result<TempDir> {
    let parent = match parent {
        Some(parent) => {
            fs::create_dir_all(parent)?;
            parent.to_owned()
        }
        None => std::env::temp_dir(),
    };
    remove_leftovers(&parent);
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
}

/// Removes the folders in `parent` that an engine of a process that no
/// longer runs left behind. Only folders owned by this user are touched;
/// a folder that cannot be removed is reported and left.
fn remove_leftovers(parent: &Path) {
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
    use super::*;

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
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = parent.path().join(format!("hotswap-{dead_pid}-leftover"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("000001-counter-libcounter.so"), b"old copy").unwrap();
        let alive = parent.path().join(format!("hotswap-{}-other", std::process::id()));
        fs::create_dir(&alive).unwrap();
        let unrelated = parent.path().join(format!("hotswap-{dead_pid}"));
        fs::create_dir(&unrelated).unwrap();

        let created = create(Some(parent.path())).unwrap();
        assert!(!dead.exists(), "the folder of dead pid {dead_pid} is removed");
        assert!(alive.exists(), "the folder of a running process is kept");
        assert!(unrelated.exists(), "a name without the random part is not ours");
        let mode = fs::metadata(created.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the private folder is {mode:o}");
        let name = created.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(owner_pid(&name), Some(std::process::id()), "{name}");
    }
}
