//! Durable state: restored on start (and migrated to a new version),
//! corrupt files stop the start unless asked, clean shutdown saves it.

use crate::{COUNTER_CONFIG, Setup, files_starting, modules};

#[test]
fn restart_restores_state_and_a_new_version_migrates_it() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "11");
    daemon.text("POST", "/call/counter/add?instance=room-2", "2");
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM ends with exit 0: {status}");
    assert!(!setup.path("hotswap.sock").exists(), "the admin socket is removed");

    let daemon = setup.start();
    assert_eq!(daemon.text("GET", "/total", ""), "11");
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=room-2", ""), "2");
    daemon.stop();

    // The next start runs 2.0.0: the saved 1.0.0 state migrates.
    setup.install(modules::COUNTER_V2, "libcounter.so");
    let daemon = setup.start();
    assert_eq!(daemon.version(), "2.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "11");
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=room-2", "1"), "3");
}

#[test]
fn periodic_snapshots_are_written() {
    let setup =
        Setup::new(&COUNTER_CONFIG.replace("[server]", "[state]\nsnapshot_every = \"100ms\"\n\n[server]"));
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "1");
    // Status records a periodic save once it finished, after the rename.
    daemon.wait_for_status("a periodic save", |status| !status["last_snapshot"].is_null());
    assert!(setup.path("state/counter.state").exists());
    let status = daemon.status();
    assert_eq!(status["last_snapshot"]["written"][0]["module"], "counter");
}

#[test]
fn a_corrupt_state_file_stops_the_start_unless_told_to_move_it_aside() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "5");
    daemon.stop();
    let file = setup.path("state/counter.state");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let log = setup.start_with(&[]).expect_err("the start must stop");
    assert!(log.contains(&file.display().to_string()), "names the file: {log}");
    assert!(log.contains("checksum does not match"), "{log}");
    assert!(log.contains("--discard-corrupt-state"), "says how to go on: {log}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the file is left as it was");

    let daemon = setup.start_with(&["--discard-corrupt-state"]).unwrap();
    assert_eq!(daemon.text("GET", "/total", ""), "0", "started fresh");
    let aside = files_starting(&setup.path("state"), "counter.state.corrupt-");
    assert_eq!(aside.len(), 1, "moved aside, not deleted");
    assert_eq!(std::fs::read(setup.path("state").join(&aside[0])).unwrap(), bytes);
}

#[test]
fn a_state_the_module_cannot_take_over_stops_the_start() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "5");
    daemon.text("POST", "/call/counter/corrupt-snapshot?instance=lobby", "");
    daemon.stop(); // saves a well-formed file whose content 2.0.0 cannot read
    setup.install(modules::COUNTER_V2, "libcounter.so");
    let log = setup.start_with(&[]).expect_err("the start must stop");
    // The recorded 1.0.0 takes the state first (then 2.0.0 would be swapped
    // to): it cannot read it either.
    assert!(log.contains("counter.state") && log.contains("a 7-byte snapshot"), "{log}");
}

#[test]
fn sigterm_finishes_requests_in_flight_then_saves_and_exits() {
    let setup = Setup::new(COUNTER_CONFIG);
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let address = daemon.public();
    // A call that takes 800 ms is running when SIGTERM arrives.
    let slow = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        crate::send(&mut stream, "POST", "/call/counter/sleep?instance=slow", b"800", &[]);
        crate::read_response(&mut std::io::BufReader::new(stream)).unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = daemon.stop();
    assert_eq!(slow.join().unwrap().0, 200, "the request in flight was answered");
    assert!(status.success(), "{status}");
    assert!(std::net::TcpStream::connect(address).is_err(), "the port is closed");
    let saved = std::fs::read(setup.path("state/counter.state")).unwrap();
    assert!(saved.windows(5).any(|w| w == b"lobby"), "the state was saved at shutdown");
}
