//! The load policy (issue 7, item 18): a module runs with the daemon's
//! privileges, so a file loads only when nobody but root or the daemon's
//! user can change it — neither the file nor any folder from it up to the
//! allowed root may be owned by someone else or writable by group or others.
//! Each refusal names the path, its owner and mode, and the command that
//! fixes it; the running version keeps serving.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{COUNTER_CONFIG, Daemon, Setup, json, modules};

/// The uid of `nobody`: a user that is neither root nor the test's user.
const OTHER_UID: u32 = 65534;

fn config() -> String {
    COUNTER_CONFIG.replace("watch = true", "watch = false")
}

/// Asks `daemon` to load `path` into counter; returns the status and message.
fn load(daemon: &Daemon, path: &Path) -> (u16, String) {
    let body = format!("{{\"path\": {:?}}}", path.to_str().unwrap());
    let (status, reply) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
    let message = match status {
        200 => String::new(),
        _ => json(&reply)["error"].as_str().unwrap().to_owned(),
    };
    (status, message)
}

fn assert_refused(daemon: &Daemon, path: &Path, says: &[&str]) {
    let (status, message) = load(daemon, path);
    assert_eq!(status, 403, "{}: {message}", path.display());
    for part in says {
        assert!(message.contains(part), "the refusal should contain {part:?}: {message}");
    }
    assert_eq!(daemon.version(), "1.0.0", "the running version keeps serving");
    assert_eq!(daemon.text("GET", "/total", ""), "3", "with its state");
}

#[test]
fn load_policy_refuses_a_file_owned_by_another_user() {
    let setup = Setup::new(&config());
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let file = setup.install(modules::COUNTER_V2, "libforeign.so");
    std::os::unix::fs::chown(&file, Some(OTHER_UID), None).unwrap();
    let shown = file.display().to_string();
    assert_refused(&daemon, &file, &[&shown, "owned by uid 65534", "mode 644", "chown"]);
}

#[test]
fn load_policy_refuses_a_world_writable_folder_between_the_allowed_root_and_the_file() {
    let setup = Setup::new(&config());
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    // modules/shared is world-writable: anyone could rename `inner` away
    // and put a folder of their own in its place.
    let shared = setup.path("modules/shared");
    let inner = shared.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = inner.join("libcounter_v2.so");
    std::fs::copy(modules::COUNTER_V2, &file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shown = format!("folder {}", shared.display());
    assert_refused(&daemon, &file, &[&shown, "mode 777", "chmod go-w"]);

    // A link to it is judged by where it leads.
    let link = setup.path("modules/libcounter_link.so");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert_refused(&daemon, &link, &[&shown, "mode 777"]);
}

#[test]
fn load_policy_refuses_a_group_writable_file() {
    let setup = Setup::new(&config());
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let file = setup.install(modules::COUNTER_V2, "libgroup.so");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    let shown = format!("file {}", file.display());
    assert_refused(&daemon, &file, &[&shown, "mode 664", "owned by uid 0", "chmod go-w"]);
}

#[test]
fn load_policy_accepts_a_file_only_root_or_the_daemon_user_can_change() {
    let setup = Setup::new(&config());
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let releases = setup.path("modules/releases/2");
    std::fs::create_dir_all(&releases).unwrap();
    let file = releases.join("libcounter.so");
    std::fs::copy(modules::COUNTER_V2, &file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, message) = load(&daemon, &file);
    assert_eq!(status, 200, "{message}");
    assert_eq!(daemon.version(), "2.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "3");
}

#[test]
fn load_policy_stops_the_start_when_the_configured_file_belongs_to_another_user() {
    let setup = Setup::new(&config());
    let file = setup.path("modules/libcounter.so");
    std::os::unix::fs::chown(&file, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let log = setup.start_with(&[]).expect_err("the start must stop");
    assert!(log.contains(&file.display().to_string()) && log.contains("owned by uid 65534"), "{log}");
    assert!(log.contains("chown"), "says how to fix it: {log}");
}
