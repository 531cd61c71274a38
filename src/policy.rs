//! Which module files the daemon agrees to load. Checked before every load,
//! whatever triggered it (start, admin API, CLI, file watch, SIGHUP, a demo
//! route): a module runs with the daemon's privileges, so only files in
//! known folders that nobody else can rewrite are accepted.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Checks that `path` may be loaded (it lies in an allowed folder or below
/// one, and neither it nor its folder is group- or world-writable); returns
/// it with links resolved.
pub fn check_source(config: &Config, path: &Path) -> Result<PathBuf, String> {
    let real = fs::canonicalize(path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    let folder = real.parent().unwrap_or(Path::new("/"));
    // A subfolder counts too: the owner of a folder controls what is below it
    // (a Kubernetes volume keeps its files in a timestamped subfolder).
    let allowed = config
        .allowed_dirs
        .iter()
        .filter_map(|dir| fs::canonicalize(dir).ok())
        .any(|dir| folder.starts_with(&dir));
    if !allowed {
        let dirs: Vec<String> = config.allowed_dirs.iter().map(|dir| dir.display().to_string()).collect();
        return Err(format!(
            "{} is not in a folder modules may be loaded from ({}); add its folder to allowed_dirs in {}",
            real.display(),
            dirs.join(", "),
            config.file.display()
        ));
    }
    let meta = fs::metadata(&real).map_err(|err| format!("cannot read {}: {err}", real.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    check_not_shared_writable("file", &real, meta.permissions().mode())?;
    let folder_mode =
        fs::metadata(folder).map_err(|err| format!("cannot read {}: {err}", folder.display()))?;
    check_not_shared_writable("folder", folder, folder_mode.permissions().mode())?;
    Ok(real)
}

fn check_not_shared_writable(what: &str, path: &Path, mode: u32) -> Result<(), String> {
    if mode & 0o022 != 0 {
        return Err(format!(
            "the {what} {} is group- or world-writable (mode {:o}), so others could replace the code; \
             run `chmod go-w {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buffer)? {
            0 => break,
            n => hasher.update(&buffer[..n]),
        }
    }
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Compares `file`'s SHA-256 with the one pinned in the config, if any.
pub fn check_sha256(expected: Option<&str>, file: &Path) -> Result<(), String> {
    let Some(expected) = expected else { return Ok(()) };
    let actual = sha256_of(file).map_err(|err| format!("cannot hash it: {err}"))?;
    if actual != expected {
        return Err(format!("its sha256 is {actual}, the config expects {expected}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_allowing(dir: &Path) -> Config {
        let text =
            format!("allowed_dirs = [{:?}]\n[server]\nlisten = \"127.0.0.1:0\"\n", dir.display().to_string());
        Config::parse(&dir.join("hotswap.toml"), &text).unwrap()
    }

    #[test]
    fn accepts_a_private_file_in_an_allowed_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libm.so");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_source(&config_allowing(dir.path()), &file).unwrap(),
            fs::canonicalize(&file).unwrap()
        );
    }

    #[test]
    fn refuses_other_folders_and_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let config = config_allowing(dir.path());
        let outside = other.path().join("libm.so");
        fs::write(&outside, b"x").unwrap();
        let error = check_source(&config, &outside).unwrap_err();
        assert!(error.contains("not in a folder modules may be loaded from"), "{error}");

        let file = dir.path().join("libm.so");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let error = check_source(&config, &file).unwrap_err();
        assert!(error.contains("world-writable (mode 666)"), "{error}");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_source(&config, &file).unwrap_err();
        assert!(error.contains("the folder"), "{error}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();

        assert!(check_source(&config, &dir.path().join("missing.so")).unwrap_err().contains("cannot open"));
    }

    #[test]
    fn sha256_pins_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libm.so");
        fs::write(&file, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_of(&file).unwrap(), abc);
        assert!(check_sha256(Some(abc), &file).is_ok());
        assert!(check_sha256(None, &file).is_ok());
        let error = check_sha256(Some(&"0".repeat(64)), &file).unwrap_err();
        assert!(error.contains(abc) && error.contains(&"0".repeat(64)), "names both sides: {error}");
    }
}
