//! The private folder a daemon under test or measurement runs in. Every
//! harness lays it out the same way, so [`crate::Daemon`] finds the config,
//! the admin socket and the log from the folder alone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The daemon's config, in the folder.
pub const CONFIG: &str = "hotswap.toml";
/// The admin socket: the daemon's default, `hotswap.sock` beside the config
/// (a config that sets `[admin] socket` must keep this name).
pub const ADMIN_SOCKET: &str = "hotswap.sock";
/// The daemon's stdout and stderr.
pub const LOG: &str = "daemon.log";

/// A new temporary folder named `<prefix>…`, mode 0700 (the daemon refuses
/// module folders that others can write), removed when dropped.
///
/// # Panics
///
/// If the folder cannot be made.
pub fn private_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("a temporary folder");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    dir
}

/// Makes `dir` (its parent must exist) with mode 0700.
///
/// # Panics
///
/// If it cannot.
pub fn make_private(dir: &Path) {
    fs::create_dir(dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
}

/// Copies `from` to `to` with mode 0644 (the daemon's load policy refuses
/// module files that others can write), overwriting `to` in place.
///
/// # Panics
///
/// If the copy fails.
pub fn install(from: impl AsRef<Path>, to: impl AsRef<Path>) -> PathBuf {
    let (from, to) = (from.as_ref(), to.as_ref());
    fs::copy(from, to).unwrap_or_else(|err| panic!("copy {} to {}: {err}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o644)).expect("chmod 0644");
    to.to_owned()
}
