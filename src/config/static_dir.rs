//! `[[static]]`: a folder of files served read-only on the public port
//! (the game demo's page, issue 9).
//!
//! ```toml
//! [[static]]
//! path = "/"               # URL prefix; "/" serves the folder at the root
//! dir = "web"              # relative to the config file's folder
//! max_file = "1MiB"        # optional: a larger file is answered 413
//! ```
//!
//! Only files inside `dir` are served (`static_files.rs` says how): a
//! request path is a URL under `path`, never a file-system path.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::parse_size;

/// One `[[static]]` folder, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    /// The URL prefix, starting and ending with '/'.
    pub path: String,
    /// The folder, resolved against the config file's folder.
    pub dir: PathBuf,
    /// Files larger than this are refused (413).
    pub max_file: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatic {
    path: String,
    dir: PathBuf,
    max_file: Option<String>,
}

/// `max_file` without a setting.
pub const DEFAULT_MAX_FILE: u64 = 1024 * 1024;

/// Validates the `[[static]]` tables; `resolve` makes a path relative to
/// the config file's folder.
pub(super) fn parse(
    raw: Vec<RawStatic>,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<StaticDir>, String> {
    let mut dirs: Vec<StaticDir> = Vec::new();
    for entry in raw {
        let where_ = format!("static {}", entry.path);
        if !entry.path.starts_with('/') {
            return Err(format!("{where_}: the path must start with '/'"));
        }
        if entry.path.split('/').any(|segment| segment == ".." || segment == ".") {
            return Err(format!("{where_}: the path must not contain '.' or '..' segments"));
        }
        if entry.path.starts_with("/call/") || entry.path.starts_with("/healthz") {
            return Err(format!("{where_}: /call/... and /healthz are built in"));
        }
        let path = match entry.path.ends_with('/') {
            true => entry.path.clone(),
            false => format!("{}/", entry.path),
        };
        if dirs.iter().any(|other| other.path == path) {
            return Err(format!("{where_}: configured twice"));
        }
        let max_file = match entry.max_file {
            None => DEFAULT_MAX_FILE,
            Some(text) => parse_size(&format!("{where_}: max_file"), &text)? as u64,
        };
        if max_file == 0 {
            return Err(format!("{where_}: max_file must be at least 1 byte"));
        }
        dirs.push(StaticDir { path, dir: resolve(&entry.dir), max_file });
    }
    Ok(dirs)
}
