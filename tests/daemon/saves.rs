//! Attacks on the durable state (issue 7, items 6 to 9): saves that race
//! each other, a `kill -9` in the middle of them, a state folder deleted or
//! made unusable under the daemon, and a second swap during a slow one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hotswap_test_support::http::write_request;
use sha2::{Digest, Sha256};

use crate::{COUNTER_CONFIG, Setup, json, modules, stderr};

/// A state file as a reader can see it at any moment: complete (magic and
/// checksum), or an error that says what is wrong with it.
fn check_state_file(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 + 32 || &bytes[..8] != b"HSSTATE\x01" {
        return Err(format!("{} bytes, not a whole state file", bytes.len()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(format!("{} bytes whose checksum does not match", bytes.len()));
    }
    Ok(())
}

/// The total of instance `lobby` in a counter state file (1.0.0 layout:
/// the key, then the state as an 8-byte little-endian total).
fn saved_total(bytes: &[u8], key: &str) -> Option<u64> {
    let at = bytes.windows(key.len()).position(|window| window == key.as_bytes())? + key.len();
    let state = bytes.get(at + 8..at + 16)?;
    Some(u64::from_le_bytes(state.try_into().ok()?))
}

fn snapshot(daemon: &crate::Daemon) -> (u16, Vec<u8>) {
    daemon.admin("POST", "/v1/snapshot", b"").unwrap()
}

/// Item 7: every save wrote through the same temporary file, so two saves
/// at once truncated what the other had just renamed into place (the live
/// file was seen empty or cut short, and 41 of 60 concurrent requests failed).
#[test]
fn concurrent_saves_never_tear_the_state_file_or_fail() {
    let setup =
        Setup::new(&COUNTER_CONFIG.replace("[server]", "[state]\nsnapshot_every = \"10ms\"\n\n[server]"));
    let daemon = Arc::new(setup.start());
    daemon.text("POST", "/call/counter/add?instance=lobby", "1");
    snapshot(&daemon);
    let file = setup.path("state/counter.state");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (file, stop) = (file.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut torn = Vec::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                // Between a rename and the next one the file always exists.
                match std::fs::read(&file) {
                    Ok(bytes) => {
                        if let Err(what) = check_state_file(&bytes) {
                            torn.push(what);
                        }
                    }
                    Err(err) => torn.push(format!("read failed: {err}")),
                }
                reads += 1;
            }
            (reads, torn)
        })
    };
    let savers: Vec<_> = (0..6)
        .map(|_| {
            let daemon = daemon.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| snapshot(&daemon))
                    .filter(|(code, _)| *code != 200)
                    .map(|(code, body)| format!("{code}: {}", String::from_utf8_lossy(&body)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failed: Vec<String> = savers.into_iter().flat_map(|saver| saver.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let (reads, torn) = reader.join().unwrap();
    assert!(failed.is_empty(), "{} of 60 snapshot requests failed: {failed:?}", failed.len());
    assert!(
        torn.is_empty(),
        "{} of {reads} reads saw a torn state file: {:?}",
        torn.len(),
        &torn[..3.min(torn.len())]
    );
    let daemon = Arc::try_unwrap(daemon).expect("the savers are done");
    assert!(daemon.stop().success());
    let leftovers = crate::files_starting(&setup.path("state"), ".counter.state.tmp");
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

/// Item 7: an older snapshot must never replace a newer one. Increments
/// race with saves from several threads; after the last increment was
/// acknowledged and a save that began after it returned, `kill -9` (no
/// shutdown save): the state on disk holds every increment.
#[test]
fn a_save_never_replaces_a_newer_one_and_kill_9_keeps_the_last() {
    let setup =
        Setup::new(&COUNTER_CONFIG.replace("[server]", "[state]\nsnapshot_every = \"5ms\"\n\n[server]"));
    let mut daemon = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let socket = daemon.socket.clone();
    let savers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, socket) = (stop.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
                    crate::send(&mut stream, "POST", "/v1/snapshot", b"", &[]);
                    codes.push(crate::read_response(&mut std::io::BufReader::new(stream)).unwrap().0);
                }
                codes
            })
        })
        .collect();
    let increments = 200;
    for _ in 0..increments {
        daemon.text("POST", "/call/counter/add?instance=lobby", "1");
    }
    stop.store(true, Ordering::Relaxed);
    for saver in savers {
        assert!(saver.join().unwrap().iter().all(|code| *code == 200));
    }
    assert_eq!(snapshot(&daemon).0, 200, "a save that began after the last increment");
    daemon.signal("KILL");
    let _ = daemon.child.wait();
    let bytes = std::fs::read(setup.path("state/counter.state")).unwrap();
    check_state_file(&bytes).unwrap();
    assert_eq!(saved_total(&bytes, "lobby"), Some(increments), "the newest save is on disk");
    drop(daemon);
    let daemon = setup.start_with(&[]).expect("starts from the state kill -9 left");
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=lobby", ""), increments.to_string());
}

/// Item 7: `kill -9` at random moments while saves run flat out. Every
/// restart must find a whole state file (never a 0-byte or cut one) holding
/// at least what the last completed save held.
#[test]
fn kill_9_in_the_middle_of_saves_never_leaves_a_torn_state() {
    let setup =
        Setup::new(&COUNTER_CONFIG.replace("[server]", "[state]\nsnapshot_every = \"2ms\"\n\n[server]"));
    for round in 0..4u64 {
        let mut daemon = setup.start_with(&[]).unwrap_or_else(|log| panic!("round {round}: {log}"));
        let before: u64 = daemon.text("POST", "/call/counter/get?instance=lobby", "").parse().unwrap();
        let saved_at_least = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let adder = {
            let (address, stop, saved_at_least) = (daemon.public(), stop.clone(), saved_at_least.clone());
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // The kill can land at any step: every error ends the adder.
                    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return };
                    let add = "/call/counter/add?instance=lobby";
                    if write_request(&mut stream, "POST", add, b"1", &[]).is_err() {
                        return;
                    }
                    let Ok((200, total)) = crate::read_response(&mut std::io::BufReader::new(stream)) else {
                        return;
                    };
                    let total: u64 = String::from_utf8(total).unwrap().parse().unwrap();
                    let Ok(mut admin) = std::os::unix::net::UnixStream::connect(&socket) else { return };
                    if write_request(&mut admin, "POST", "/v1/snapshot", b"", &[]).is_err() {
                        return;
                    }
                    if let Ok((200, _)) = crate::read_response(&mut std::io::BufReader::new(admin)) {
                        saved_at_least.store(total, Ordering::SeqCst);
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        daemon.signal("KILL");
        let _ = daemon.child.wait();
        stop.store(true, Ordering::Relaxed);
        adder.join().unwrap();
        let bytes = std::fs::read(setup.path("state/counter.state")).unwrap();
        check_state_file(&bytes).unwrap_or_else(|what| panic!("round {round}: the state file is {what}"));
        let total = saved_total(&bytes, "lobby").unwrap();
        let floor = saved_at_least.load(Ordering::SeqCst);
        assert!(total >= floor, "round {round}: saved {total}, but a save of {floor} had completed");
    }
}

/// Item 8: the state folder deleted while the daemon runs is made again
/// (mode 0700) by the next save; a save that cannot be written is counted
/// in status and metrics.
#[test]
fn a_deleted_state_folder_is_made_again_and_failed_saves_are_counted() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "4");
    let state = setup.path("state");
    std::fs::remove_dir_all(&state).unwrap();
    let (code, body) = snapshot(&daemon);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(saved_total(&std::fs::read(state.join("counter.state")).unwrap(), "lobby"), Some(4));

    // A file where the folder should be: no save can succeed.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, b"not a folder").unwrap();
    let (code, body) = snapshot(&daemon);
    assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));
    let status = daemon.status();
    let module = &status["modules"][0];
    assert_eq!(module["saves_failed"], 1, "{status:#}");
    assert!(module["last_save_error"].as_str().unwrap().contains("counter.state"), "{status:#}");
    let (_, metrics) = daemon.admin("GET", "/metrics", b"").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("hotswap_state_saves_failed_total{module=\"counter\"} 1"), "{metrics}");
}

/// Item 9: a swap whose save before it fails is not made: the module stays
/// on its version with its state, and the caller is told why.
#[test]
fn a_swap_whose_save_fails_is_refused_and_changes_nothing() {
    let setup = Setup::new(&COUNTER_CONFIG.replace("watch = true", "watch = false"));
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "7");
    let state = setup.path("state");
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, b"not a folder").unwrap();
    setup.install(modules::COUNTER_V2, "libcounter-2.so");
    let output = setup.cli(&["load", "counter", setup.path("modules/libcounter-2.so").to_str().unwrap()]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("swap was not made") && error.contains("could not be saved"), "{error}");
    assert!(error.contains("state.dir"), "says what to fix: {error}");
    assert_eq!(daemon.version(), "1.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "7");
}

/// Item 6: a second load during a slow swap was queued and then ran. It
/// must be refused at once with "swap in progress" while the first goes on.
#[test]
fn a_second_swap_during_a_slow_one_is_refused_at_once() {
    let setup = Setup::new(
        &COUNTER_CONFIG
            .replace("watch = true", "watch = false")
            .replace("[server]", "[engine]\nslow_call = \"50ms\"\n\n[server]"),
    );
    setup.install(modules::COUNTER_V2, "libcounter-2.so");
    let daemon = Arc::new(setup.start());
    // A 3 s call holds its instance: the first swap waits for it (within its 5 s deadline).
    let slow = {
        let daemon = daemon.clone();
        std::thread::spawn(move || daemon.http("POST", "/call/counter/sleep?instance=busy", b"3000"))
    };
    daemon.wait_for_status("the slow call", |status| {
        status["slow_calls"].as_array().is_some_and(|c| !c.is_empty())
    });
    let first = {
        let daemon = daemon.clone();
        std::thread::spawn(move || {
            daemon
                .admin("POST", "/v1/modules/counter/load", br#"{"path": "modules/libcounter-2.so"}"#)
                .unwrap()
        })
    };
    daemon.wait_for_status("the first swap under way", |status| {
        status["running"].as_array().is_some_and(|running| running.iter().any(|op| op == "swap counter"))
    });
    let asked = Instant::now();
    let (code, body) = daemon.admin("POST", "/v1/modules/counter/rollback", b"").unwrap();
    assert!(!slow.is_finished(), "the refusal came at once, while the first swap still waited");
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"].as_str().unwrap().contains("already in progress"), "{:?}", asked.elapsed());
    let output = setup.cli(&["load", "counter"]);
    assert!(!output.status.success(), "the CLI exits non-zero");
    assert!(stderr(&output).contains("in progress"), "{}", stderr(&output));
    assert_eq!(slow.join().unwrap().0, 200);
    let (code, body) = first.join().unwrap();
    assert_eq!(code, 200, "the first swap went through: {}", String::from_utf8_lossy(&body));
    assert_eq!(daemon.version(), "2.0.0", "and the second did not run after it");
}
