//! Which module files the daemon agrees to load. Checked before every load,
//! whatever triggered it (start, admin API, CLI, file watch, SIGHUP, a demo
//! route): a module runs with the daemon's privileges, so only files in
//! known folders that nobody else can rewrite are accepted.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Checks that `path` may be loaded and returns it with links resolved.
///
/// It must lie in an allowed folder or below one, and — the way sshd checks
/// `authorized_keys` — the file and every folder from it up to that allowed
/// folder must be owned by root or the daemon's user and not writable by
/// group or others: whoever can write a folder on the way can rename what is
/// below it and put their own code in its place. The path is resolved first,
/// so a link is judged by where it leads, not where it sits.
pub fn check_source(config: &Config, path: &Path) -> Result<PathBuf, String> {
    let real = fs::canonicalize(path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    let folder = real.parent().unwrap_or(Path::new("/"));
    // A subfolder counts too: the owner of a folder controls what is below it
    // (a Kubernetes volume keeps its files in a timestamped subfolder). Of
    // nested allowed folders the outermost is where the checks stop, so a
    // writable folder between two allowed ones is still seen.
    let root = config
        .allowed_dirs
        .iter()
        .filter_map(|dir| fs::canonicalize(dir).ok())
        .filter(|dir| folder.starts_with(dir))
        .min_by_key(|dir| dir.components().count());
    let Some(root) = root else {
        let dirs: Vec<String> = config.allowed_dirs.iter().map(|dir| dir.display().to_string()).collect();
        return Err(format!(
            "{} is not in a folder modules may be loaded from ({}); add its folder to allowed_dirs in {}",
            real.display(),
            dirs.join(", "),
            config.file.display()
        ));
    };
    check_trusted(&real, &root)?;
    Ok(real)
}

/// Checks that `file` is a regular file and that it and every folder from
/// its own up to `root` (included) are owned by root or the daemon's user
/// and not writable by group or others. `file` must be resolved (no links)
/// and lie below `root`.
pub fn check_trusted(file: &Path, root: &Path) -> Result<(), String> {
    let meta = fs::metadata(file).map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    check_owner_and_mode("file", file, &meta)?;
    for folder in file.ancestors().skip(1).take_while(|folder| folder.starts_with(root)) {
        let meta = fs::metadata(folder).map_err(|err| format!("cannot read {}: {err}", folder.display()))?;
        check_owner_and_mode("folder", folder, &meta)?;
    }
    Ok(())
}

/// The user this process acts as.
fn daemon_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn check_owner_and_mode(what: &str, path: &Path, meta: &fs::Metadata) -> Result<(), String> {
    let (owner, mode, ours) = (meta.uid(), meta.permissions().mode() & 0o7777, daemon_uid());
    if owner != 0 && owner != ours {
        return Err(format!(
            "the {what} {} is owned by uid {owner} (mode {mode:o}), not by root or the daemon's user \
             (uid {ours}), so that user could replace the code; run `chown {ours} {}` if its content is trusted",
            path.display(),
            path.display()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "the {what} {} is group- or world-writable (mode {mode:o}) and owned by uid {owner}, so \
             others could replace the code; run `chmod go-w {}`",
            path.display(),
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

/// Compares the SHA-256 of the bytes to be loaded with the one pinned in
/// the config, if any.
pub fn check_pin(pinned: Option<&str>, actual: &str) -> Result<(), String> {
    match pinned {
        Some(pinned) if pinned != actual => {
            Err(format!("its sha256 is {actual}, the config expects {pinned}"))
        }
        _ => Ok(()),
    }
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
    fn every_folder_up_to_the_outermost_allowed_root_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let shared = dir.path().join("shared");
        let inner = shared.join("inner");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o755)).unwrap();
        let file = inner.join("libm.so");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        // `inner` is allowed too, but `shared` above it lets anyone swap it.
        let text = format!(
            "allowed_dirs = [{:?}, {:?}]\n[server]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().display().to_string(),
            inner.display().to_string()
        );
        let config = Config::parse(&dir.path().join("hotswap.toml"), &text).unwrap();
        let error = check_source(&config, &file).unwrap_err();
        assert!(error.contains(&format!("the folder {} ", shared.display())), "{error}");
        assert!(error.contains("mode 777") && error.contains("chmod go-w"), "{error}");

        // A link in a good folder is judged by the folder it leads to.
        let link = dir.path().join("libm-link.so");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let error = check_source(&config, &link).unwrap_err();
        assert!(error.contains(&format!("the folder {} ", shared.display())), "{error}");

        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_source(&config, &link).unwrap(), fs::canonicalize(&file).unwrap());
    }

    #[test]
    fn files_and_folders_of_other_users_are_refused() {
        if daemon_uid() != 0 {
            // Only root can give a file away; the daemon tests cover this as root too.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let file = sub.join("libm.so");
        fs::write(&file, b"x").unwrap();
        let config = config_allowing(dir.path());
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let error = check_source(&config, &file).unwrap_err();
        assert!(error.contains("the file") && error.contains("owned by uid 65534"), "{error}");
        assert!(error.contains(&format!("chown 0 {}", file.display())), "{error}");
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        std::os::unix::fs::chown(&sub, Some(65534), None).unwrap();
        let error = check_source(&config, &file).unwrap_err();
        assert!(error.contains(&format!("the folder {} is owned by uid 65534", sub.display())), "{error}");
    }

    #[test]
    fn sha256_pins_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libm.so");
        fs::write(&file, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_of(&file).unwrap(), abc);
        assert!(check_pin(Some(abc), abc).is_ok());
        assert!(check_pin(None, abc).is_ok());
        let error = check_pin(Some(&"0".repeat(64)), abc).unwrap_err();
        assert!(error.contains(abc) && error.contains(&"0".repeat(64)), "names both sides: {error}");
    }
}
