//! Did a closed library really leave memory? `dlclose` does not say: glibc
//! keeps a library mapped while it has thread-local destructors pending, and
//! musl never unmaps at all. The kernel's view in `/proc/self/maps` does say.

use std::collections::HashSet;
use std::path::Path;

/// The current mappings of this process, or `None` where `/proc` is missing.
pub(crate) fn read() -> Option<String> {
    std::fs::read_to_string("/proc/self/maps").ok()
}

/// The files mapped according to `maps` (the text of `/proc/self/maps`).
pub(crate) fn mapped_files(maps: &str) -> HashSet<&Path> {
    maps.lines().filter_map(mapped_path).map(Path::new).collect()
}

/// Whether `file` is mapped according to `maps`.
pub(crate) fn is_mapped(maps: &str, file: &Path) -> bool {
    maps.lines().filter_map(mapped_path).any(|path| Path::new(path) == file)
}

/// The path column of one maps line, without the " (deleted)" the kernel adds
/// once the file was unlinked.
fn mapped_path(line: &str) -> Option<&str> {
    // address perms offset dev inode path: the path is the rest after five fields.
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    let path = rest.trim_start();
    if path.is_empty() {
        return None;
    }
    Some(path.strip_suffix(" (deleted)").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
7f0000000000-7f0000001000 r--p 00000000 08:01 42        /tmp/hs/counter-1-libcounter.so
7f0000001000-7f0000002000 r-xp 00001000 08:01 43        /tmp/hs/counter-2-libcounter.so (deleted)
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0         [stack]
";

    #[test]
    fn finds_live_and_deleted_mappings() {
        assert!(is_mapped(MAPS, Path::new("/tmp/hs/counter-1-libcounter.so")));
        assert!(is_mapped(MAPS, Path::new("/tmp/hs/counter-2-libcounter.so")));
    }

    #[test]
    fn does_not_match_prefixes_or_anonymous_maps() {
        assert!(!is_mapped(MAPS, Path::new("/tmp/hs/counter-1")));
        assert!(!is_mapped(MAPS, Path::new("/tmp/hs/counter-10-libcounter.so")));
        assert!(!is_mapped(MAPS, Path::new("")));
    }

    #[test]
    fn lists_mapped_files_once() {
        let files = mapped_files(MAPS);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.contains(Path::new("/tmp/hs/counter-2-libcounter.so")));
        assert!(files.contains(Path::new("[stack]")));
    }

    #[test]
    fn sees_this_process() {
        let maps = read().expect("/proc/self/maps is readable on Linux");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(is_mapped(&maps, &exe), "the test binary itself is mapped");
    }
}
