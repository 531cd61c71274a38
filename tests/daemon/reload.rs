//! Swaps without a request: file watch (atomic rename and in-place
//! overwrite) and SIGHUP with a changed config.

use std::time::{Duration, Instant};

use crate::{COUNTER_CONFIG, Setup, modules};

#[test]
fn watch_swaps_on_rename_and_on_overwrite_in_place() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "4");

    // A deploy script: write beside, then rename over the watched file.
    let staged = setup.install(modules::COUNTER_V2, ".libcounter.so.new");
    std::fs::rename(&staged, setup.path("modules/libcounter.so")).unwrap();
    daemon.wait_for_version("2.0.0");

    // A compiler or `cp`: rewrite the watched file in place.
    setup.install(modules::COUNTER_V1, "libcounter.so");
    daemon.wait_for_version("1.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "4", "the state came through both swaps");
    let status = daemon.status();
    assert_eq!(status["modules"][0]["swaps"], 2);
    assert_eq!(status["modules"][0]["last_swap"]["to_version"], "1.0.0");
    assert_eq!(status["modules"][0]["last_swap"]["trigger"], "watch");
}

#[test]
fn a_watched_file_that_stays_broken_is_reported_and_the_old_version_serves() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "9");
    std::fs::write(setup.path("modules/libcounter.so"), b"not a library at all").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = daemon.status();
        if let Some(error) = status["modules"][0]["last_error"].as_str() {
            assert!(error.contains("not a shared library"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "no error reported:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.version(), "1.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "9");
    // Fixing the file swaps it.
    setup.install(modules::COUNTER_V2, "libcounter.so");
    daemon.wait_for_version("2.0.0");
}

#[test]
fn sighup_applies_a_changed_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let config = COUNTER_CONFIG.replace("watch = true", "watch = false");
    let setup = Setup::new(&config);
    setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "6");

    setup.write_config(&config.replace("modules/libcounter.so", "modules/libcounter_v2.so"));
    daemon.signal("HUP");
    daemon.wait_for_version("2.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "6");

    setup.write_config("[server]\nlisten = this is not toml");
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("keeping the running config") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.text("GET", "/total", ""), "6", "still serving with the old config");

    // A module removed from the config is saved and unloaded.
    setup.write_config("[server]\nlisten = \"127.0.0.1:0\"\n");
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.status()["modules"].as_array().is_some_and(|m| !m.is_empty()) {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(setup.path("state/counter.state").exists(), "its state was saved first");
    assert_eq!(daemon.http("GET", "/total", b"").0, 404, "its route is gone too");
}

/// A Kubernetes ConfigMap volume: the module path is a link through
/// `..data`, a link to a timestamped folder, and an update renames a new
/// `..data` into place. The watched file's own name never changes.
#[test]
fn watch_follows_a_configmap_style_update() {
    use std::os::unix::fs::symlink;
    let setup = Setup::new(COUNTER_CONFIG);
    let modules = setup.path("modules");
    std::fs::remove_file(modules.join("libcounter.so")).unwrap();
    std::fs::create_dir(modules.join("..2026_11_21_v1")).unwrap();
    std::fs::copy(modules::COUNTER_V1, modules.join("..2026_11_21_v1/libcounter.so")).unwrap();
    symlink("..2026_11_21_v1", modules.join("..data")).unwrap();
    symlink("..data/libcounter.so", modules.join("libcounter.so")).unwrap();
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "8");

    std::fs::create_dir(modules.join("..2026_11_21_v2")).unwrap();
    std::fs::copy(modules::COUNTER_V2, modules.join("..2026_11_21_v2/libcounter.so")).unwrap();
    symlink("..2026_11_21_v2", modules.join("..data_tmp")).unwrap();
    std::fs::rename(modules.join("..data_tmp"), modules.join("..data")).unwrap();
    daemon.wait_for_version("2.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "8");
    assert_eq!(daemon.status()["modules"][0]["swaps"], 1, "one swap, not one per event");
}
