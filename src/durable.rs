//! Files that survive a crash whole: written through a temporary file of
//! their own, fsynced, renamed into place, and made durable by an fsync of
//! the folder. A crash at any moment leaves the old file or the new one.
//! Used for state files (`state.rs`) and the record of installed module
//! versions (`module_store.rs`).
//!
//! Every write has its own temporary file (pid and sequence number in its
//! name, created exclusively): two writers sharing one would truncate what
//! the other had just renamed into place.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Replaces `file` with `bytes`, atomically and durably; readable and
/// writable by the daemon's user only.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Relaxed)));
    let written = (|| {
        let mut out = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        drop(out);
        fs::rename(&temporary, file)?;
        // The rename itself is durable only once the folder is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Creates `dir` (and its parents) if needed, mode 0700: what it holds is
/// the modules' state, for the daemon's user only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The pid of the process that wrote temporary file `name`, if it is one.
pub fn temporary_writer(name: &str) -> Option<u32> {
    let (_, rest) = name.split_once(".tmp-")?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.state");
        write_atomically(&file, b"one").unwrap();
        write_atomically(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.state"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn temporary_names_carry_their_writer() {
        assert_eq!(temporary_writer(".counter.state.tmp-4242-7"), Some(4242));
        assert_eq!(temporary_writer("counter.state"), None);
    }
}
