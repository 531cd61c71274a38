//! Attacks on the process lifecycle (issue 7, items 3, 10, 11, 13): the old process writing state
//! after the hand-over, a new process that is late with READY, signals
//! that arrive while the daemon starts, a module state larger than one frame.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::upgrade::config;
use crate::{Setup, is_running, json, read_full, read_response, send, stderr, stdout};

/// Item 10: an admin connection opened before an upgrade reached the old
/// process afterwards, and `POST /v1/snapshot` on it wrote the old state
/// (alice = 5) over the new process's (alice = 105). After the hand-over
/// the old process must refuse, naming who serves now, and never write.
#[test]
fn the_old_process_never_writes_state_after_handing_over() {
    let setup = Setup::new(&config().replace("[server]", "[state]\nsnapshot_every = \"20ms\"\n\n[server]"));
    let mut daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=alice", "5");
    let mut old_admin = BufReader::new(UnixStream::connect(&daemon.socket).unwrap());
    old_admin.get_ref().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send(old_admin.get_mut(), "GET", "/v1/status", b"", &[]);
    assert_eq!(read_full(&mut old_admin).unwrap().status, 200);

    // Not `upgrade()`: it waits for the old process to exit, and the held
    // connection keeps it alive.
    let output = setup.cli(&["upgrade"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let new_pid: u32 =
        stdout(&output).split(" -> ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    daemon.text("POST", "/call/counter/add?instance=alice", "100");
    // A new connection reaches the new process.
    assert_eq!(daemon.admin("POST", "/v1/snapshot", b"").unwrap().0, 200);

    // The connection opened before the upgrade still reaches the old process.
    send(old_admin.get_mut(), "POST", "/v1/snapshot", b"", &[]);
    let refused = read_full(&mut old_admin).unwrap();
    let error = json(&refused.body)["error"].as_str().unwrap().to_owned();
    assert_eq!(refused.status, 409, "{error}");
    assert!(error.contains(&format!("handed over to pid {new_pid}")), "{error}");

    // Periodic saves of the old process, had it kept any, run every 20 ms.
    std::thread::sleep(Duration::from_millis(300));
    drop(old_admin);
    daemon.taken_over_by(new_pid);
    daemon.signal("KILL");
    // Until the killed process is gone its admin socket still takes
    // connections into its backlog, and a new start would see "another
    // daemon answers" (seen once under load).
    let gone = hotswap_test_support::process::wait_gone(new_pid, Duration::from_secs(30));
    assert!(gone.is_some(), "pid {new_pid} still runs 30 s after SIGKILL");
    let restarted = setup.start();
    assert_eq!(restarted.text("POST", "/call/counter/get?instance=alice", ""), "105");
}

/// Item 11: the new process accepted before saying READY; an old process
/// that then timed out killed it, resetting connections it had accepted
/// and losing writes it had acknowledged. Now: READY (state taken, nothing
/// accepted), the old process commits, then the new one accepts. A new
/// process that is late with READY never serves anyone.
#[test]
fn a_new_process_late_with_ready_serves_no_one_and_loses_nothing() {
    let setup =
        Setup::new(&config().replace("[server]", "[upgrade]\nready_timeout = \"1500ms\"\n\n[server]"));
    let daemon = setup.start_env(&[], &[("HOTSWAP_TEST_PAUSE_BEFORE_READY_MS", "4000")]).unwrap();
    let old_pid = daemon.pid();
    let address = daemon.public();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    // A connection per request: every one of them could be accepted by
    // whichever process calls accept on the shared socket.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, acknowledged, failures, pids) =
                (stop.clone(), acknowledged.clone(), failures.clone(), pids.clone());
            std::thread::spawn(move || {
                let give_up = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    let outcome = std::net::TcpStream::connect(address).and_then(|mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                        send(&mut stream, "POST", "/call/counter/add?instance=lobby", b"1", &[]);
                        read_full(&mut BufReader::new(stream))
                    });
                    match outcome {
                        Ok(response) if response.status == 200 => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                            pids.lock().unwrap().insert(response.header("hotswap-pid").unwrap().to_owned());
                        }
                        Ok(response) => failures.lock().unwrap().push(format!("status {}", response.status)),
                        Err(err) => failures.lock().unwrap().push(err.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let output = setup.cli(&["upgrade"]);
    assert!(!output.status.success(), "the late process must be given up");
    assert!(stderr(&output).contains("not ready within"), "{}", stderr(&output));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(*pids.lock().unwrap(), [old_pid.to_string()].into(), "only the old process served");
    let total = daemon.text("POST", "/call/counter/get?instance=lobby", "");
    assert_eq!(total, acknowledged.load(Ordering::SeqCst).to_string(), "every acknowledged add is kept");
    let new_pid = daemon.status()["upgrade"]["new_pid"].as_u64().unwrap() as u32;
    assert!(!is_running(new_pid), "the late process was ended");
}

/// Item 13: SIGHUP or SIGUSR2 while the daemon starts killed it (their
/// default action), before its handlers were installed. Signals that arrive
/// while it starts must wait until it serves, and never be fatal.
#[test]
fn signals_during_start_wait_until_the_daemon_serves() {
    let setup = Setup::new(&config());
    let log = setup.path("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .arg("serve")
        .arg("--config")
        .arg(setup.config())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Before its code runs (the exec, the dynamic linker) a process cannot
    // handle anything: wait for the daemon's own first steps, shown by a
    // second thread (its runtime), and signal it from then on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Threads:") && line[8..].trim() != "1")
    {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "the daemon did not start");
        std::thread::sleep(Duration::from_micros(200));
    }
    // SIGHUP until the daemon answers (at most 30 s).
    let mut sent = 0;
    loop {
        // SAFETY: signals the process this test started, by its pid.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        sent += 1;
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon died of signal {sent} during its start: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(stream) = UnixStream::connect(setup.path("hotswap.sock")) {
            let mut stream = stream;
            send(&mut stream, "GET", "/v1/status", b"", &[]);
            if let Ok((200, _)) = read_response(&mut BufReader::new(stream)) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not start within 30 s");
        std::thread::sleep(Duration::from_micros(500));
    }
    let daemon = crate::Daemon::adopt(child, &setup);
    daemon.text("POST", "/call/counter/add?instance=lobby", "1");
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(sent > 1, "signals were sent during the start");
}

/// Item 3: one module's state travelled in one frame, so a module with
/// more than 1 GiB of state could not upgrade ("payload … over the frame
/// limit"), and every attempt held all calls. Instances travel one frame
/// each now.
#[test]
fn a_module_state_larger_than_one_frame_upgrades() {
    // No periodic save during the test: the upgrade would rightly wait for
    // a save of 1 GB to finish first.
    let setup = Setup::new(
        r#"
[state]
snapshot_every = "1h"

[server]
listen = "127.0.0.1:0"

[[module]]
name = "blob"
path = "modules/libblob.so"
"#,
    );
    setup.install(crate::modules::BLOB, "libblob.so");
    let mut daemon = setup.start();
    let each = 560_000_000u64; // two of them pass the 1 GiB frame limit
    for instance in ["a", "b"] {
        daemon.text("POST", &format!("/call/blob/resize?instance={instance}"), &each.to_string());
    }
    crate::upgrade::upgrade(&setup, &mut daemon);
    for instance in ["a", "b"] {
        assert_eq!(daemon.text("POST", &format!("/call/blob/len?instance={instance}"), ""), each.to_string());
    }
    // Not SIGTERM: its final save would write 1 GB for nothing.
    daemon.signal("KILL");
}
