//! Slow and stuck module calls (issue 7 item 4): a call holds only its own
//! instance. The public port, `/healthz`, the admin API, other instances and
//! other modules answer while it runs; status and metrics name it; SIGTERM
//! saves every other instance and keeps the stuck one's last saved state.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Daemon, Setup, json, modules, stdout};

/// Counter and blob, slow calls reported after 200 ms, a short drain.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "2s"

[engine]
slow_call = "200ms"
swap_timeout = "3s"

[[module]]
name = "counter"
path = "modules/libcounter.so"

[[module]]
name = "blob"
path = "modules/libblob.so"
"#;

/// Longer than any test runs: a call that, as far as the test sees, never returns.
const FOREVER_MS: &str = "3600000";

/// "Did not wait for the slow call": far below the slow call's length, far
/// above what an answer takes even on a loaded machine. Not a speed claim.
const DID_NOT_WAIT: Duration = Duration::from_secs(4);

fn setup() -> Setup {
    let setup = Setup::new(CONFIG);
    setup.install(modules::BLOB, "libblob.so");
    setup
}

/// Sends one call on its own connection from a thread; its answer, if any.
fn call_in_background(address: SocketAddr, path: &str, body: &str) -> JoinHandle<std::io::Result<u16>> {
    let (path, body) = (path.to_owned(), body.to_owned());
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address)?;
        // Bounded: the thread ends by itself even if nothing answers.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        crate::send(&mut stream, "POST", &path, body.as_bytes(), &[]);
        crate::read_response(&mut BufReader::new(stream)).map(|(status, _)| status)
    })
}

/// Waits (at most 20 s) until `n` module calls are in flight, by the daemon's own gauge.
fn wait_in_flight(daemon: &Daemon, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = daemon.admin("GET", "/metrics", b"") {
            let text = String::from_utf8_lossy(&body).into_owned();
            let now = text
                .lines()
                .find_map(|line| line.strip_prefix("hotswap_inflight_calls "))
                .and_then(|value| value.trim().parse::<u64>().ok());
            if now.is_some_and(|now| now >= n) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{n} call(s) never showed as in flight:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `request` and asserts it answered without waiting for the slow call.
fn answers_at_once<T>(what: &str, request: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let answer = request();
    let took = started.elapsed();
    assert!(took < DID_NOT_WAIT, "{what} waited {took:?} for another instance's call");
    answer
}

/// One admin request with a bounded wait: a frozen admin API fails the test
/// instead of hanging it.
fn admin_bounded(daemon: &Daemon, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    crate::send(&mut stream, method, path, b"", &[]);
    crate::read_response(&mut BufReader::new(stream))
        .unwrap_or_else(|err| panic!("admin {method} {path} did not answer: {err}"))
}

/// One public request with a bounded wait.
fn http_bounded(daemon: &Daemon, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(daemon.public()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let method = if path == "/healthz" { "GET" } else { "POST" };
    crate::send(&mut stream, method, path, body.as_bytes(), &[]);
    let (status, reply) = crate::read_response(&mut BufReader::new(stream))
        .unwrap_or_else(|err| panic!("{path} did not answer: {err}"));
    (status, String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn slow_calls_hold_only_their_own_instances() {
    let setup = setup();
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=other", "1");
    // More slow calls than the daemon has async workers (one per core).
    let slow: Vec<_> = (0..8)
        .map(|i| {
            call_in_background(daemon.public(), &format!("/call/counter/sleep?instance=slow-{i}"), "8000")
        })
        .collect();
    wait_in_flight(&daemon, 8);
    // Several requests in a row: each could be queued behind a slow one.
    for round in 0..3 {
        let (status, total) = answers_at_once("another instance", || {
            http_bounded(&daemon, "/call/counter/add?instance=other", "1")
        });
        assert_eq!((status, total), (200, (round + 2).to_string()));
        let (status, _) = answers_at_once("another module", || http_bounded(&daemon, "/call/blob/len", ""));
        assert_eq!(status, 200);
        let (status, _) = answers_at_once("/healthz", || http_bounded(&daemon, "/healthz", ""));
        assert_eq!(status, 200);
    }
    for call in slow {
        assert_eq!(call.join().unwrap().unwrap(), 200, "each slow call is answered");
    }
}

#[test]
fn a_call_that_never_returns_leaves_health_admin_and_other_modules_answering() {
    let setup = setup();
    let daemon = setup.start();
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck", FOREVER_MS);
    wait_in_flight(&daemon, 1);
    // Callers pile up on the stuck instance: they wait, without a thread each.
    let queued: Vec<_> = (0..64)
        .map(|_| call_in_background(daemon.public(), "/call/counter/get?instance=stuck", ""))
        .collect();
    wait_in_flight(&daemon, 65);
    for _ in 0..3 {
        assert_eq!(answers_at_once("/healthz", || http_bounded(&daemon, "/healthz", "")).0, 200);
        assert_eq!(answers_at_once("admin status", || admin_bounded(&daemon, "GET", "/v1/status")).0, 200);
        assert_eq!(answers_at_once("admin metrics", || admin_bounded(&daemon, "GET", "/metrics")).0, 200);
        assert_eq!(answers_at_once("another module", || http_bounded(&daemon, "/call/blob/len", "")).0, 200);
        let (status, _) = answers_at_once("another instance", || {
            http_bounded(&daemon, "/call/counter/add?instance=b", "1")
        });
        assert_eq!(status, 200);
    }
    let threads = process_threads(daemon.pid());
    assert!(threads < 40, "65 calls to one stuck instance must not take a thread each: {threads} threads");
    assert!(queued.iter().all(|call| !call.is_finished()), "the queued calls wait for their instance");
}

#[test]
fn status_and_metrics_show_a_call_running_past_slow_call() {
    let setup = setup();
    let daemon = setup.start();
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck%20one", FOREVER_MS);
    // Waits for the report itself; the call passes 200 ms soon after it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let slow = loop {
        let status = json(&admin_bounded(&daemon, "GET", "/v1/status").1);
        if let Some(slow) = status["slow_calls"].as_array().and_then(|calls| calls.first()).cloned() {
            break slow;
        }
        assert!(Instant::now() < deadline, "no slow call in status: {status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(slow["module"], "counter");
    assert_eq!(slow["instance"], "stuck one");
    assert_eq!(slow["method"], "sleep");
    assert!(slow["running_ms"].as_u64().unwrap() >= 200, "{slow}");

    let metrics = String::from_utf8(admin_bounded(&daemon, "GET", "/metrics").1).unwrap();
    let line = metrics
        .lines()
        .find(|line| line.starts_with("hotswap_slow_call_running_seconds{"))
        .unwrap_or_else(|| panic!("no slow call metric:\n{metrics}"));
    assert!(line.contains(r#"module="counter""#) && line.contains(r#"instance="stuck one""#), "{line}");
    assert!(line.contains(r#"method="sleep""#), "{line}");
    let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(seconds >= 0.2, "{line}");

    let output = setup.cli(&["status"]);
    let text = stdout(&output);
    assert!(text.contains("slow call") && text.contains("counter 'stuck one' sleep"), "{text}");

    // A call that ends is no longer listed; one that took long is counted.
    daemon.text("POST", "/call/counter/sleep?instance=brief", "400");
    let metrics = String::from_utf8(admin_bounded(&daemon, "GET", "/metrics").1).unwrap();
    assert!(metrics.contains("hotswap_slow_calls_total{module=\"counter\"} 1\n"), "{metrics}");
    let status = json(&admin_bounded(&daemon, "GET", "/v1/status").1);
    assert_eq!(status["slow_calls"].as_array().unwrap().len(), 1, "{status}");
}

#[test]
fn a_swap_waiting_for_a_stuck_call_leaves_other_modules_answering() {
    let setup = setup();
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=a", "1");
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck", FOREVER_MS);
    wait_in_flight(&daemon, 1);
    // The swap waits for the stuck instance until swap_timeout (3 s), then gives up.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .arg("--config")
        .arg(setup.config())
        .args(["load", "counter"])
        .arg(&v2)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) && cli.try_wait().unwrap().is_none() {
        assert_eq!(answers_at_once("/healthz", || http_bounded(&daemon, "/healthz", "")).0, 200);
        assert_eq!(answers_at_once("another module", || http_bounded(&daemon, "/call/blob/len", "")).0, 200);
        let admin_call = || admin_bounded(&daemon, "POST", "/v1/modules/blob/call/len");
        assert_eq!(answers_at_once("an admin call", admin_call).0, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = cli.kill();
            panic!("the swap never answered:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = cli.wait_with_output().unwrap();
    assert!(!output.status.success(), "the swap cannot take the stuck instance");
    assert!(crate::stderr(&output).contains("stuck"), "names the instance: {}", crate::stderr(&output));
    assert_eq!(http_bounded(&daemon, "/call/counter/get?instance=a", "").1, "1");
}

#[test]
fn sigterm_with_a_stuck_call_saves_every_other_instance_and_exits_non_zero() {
    let setup = setup();
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=stuck", "5");
    daemon.text("POST", "/call/counter/add?instance=other", "1");
    let (status, _) = daemon.admin("POST", "/v1/snapshot", b"").unwrap();
    assert_eq!(status, 200, "the last good state: stuck = 5, other = 1");
    daemon.text("POST", "/call/counter/add?instance=other", "6");
    daemon.text("POST", "/call/counter/add?instance=new", "3");
    daemon.text("POST", "/call/blob/resize?instance=big", "1000");
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck", FOREVER_MS);
    wait_in_flight(&daemon, 1);

    let status = stop_within(daemon, Duration::from_secs(2 + 15));
    let log = std::fs::read_to_string(setup.path("daemon.log")).unwrap();
    assert!(!status.success(), "a state that could not be saved is an unclean exit: {status}\n{log}");
    assert!(log.contains("'stuck'") && log.contains("sleep"), "the log names the stuck instance:\n{log}");

    let daemon = setup.start();
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=other", ""), "7", "saved at shutdown");
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=new", ""), "3", "saved at shutdown");
    assert_eq!(daemon.text("POST", "/call/blob/len?instance=big", ""), "1000", "other modules saved");
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=stuck", ""), "5", "its last good state");
}

#[test]
fn periodic_saves_go_on_while_an_instance_is_stuck() {
    let setup = Setup::new(&CONFIG.replace("[engine]", "[state]\nsnapshot_every = \"200ms\"\n\n[engine]"));
    setup.install(modules::BLOB, "libblob.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=stuck", "5");
    assert_eq!(daemon.admin("POST", "/v1/snapshot", b"").unwrap().0, 200, "stuck = 5 is saved");
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck", FOREVER_MS);
    wait_in_flight(&daemon, 1);
    daemon.text("POST", "/call/counter/add?instance=other", "9");
    let after_other = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    // Two saves in a row that went past the stuck instance: saves go on.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 {
        let status = json(&admin_bounded(&daemon, "GET", "/v1/status").1);
        let run = &status["last_snapshot"];
        let counter = run["written"].as_array().and_then(|written| {
            written
                .iter()
                .find(|w| w["module"] == "counter" && w["busy"].as_array().is_some_and(|b| !b.is_empty()))
        });
        if let Some(counter) = counter
            && run["at_unix_ms"].as_u64().is_some_and(|at| u128::from(at) > after_other)
            && !seen.contains(&run["at_unix_ms"])
        {
            assert_eq!(counter["busy"][0], "stuck", "{counter}");
            assert_eq!(counter["never_saved"], serde_json::json!([]), "{counter}");
            assert_eq!(counter["instances"], 2, "other, saved now, and stuck, kept: {counter}");
            seen.push(run["at_unix_ms"].clone());
        }
        assert!(Instant::now() < deadline, "periodic saves stopped at a stuck instance: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then the exit status, which must come within `within`.
fn stop_within(mut daemon: Daemon, within: Duration) -> std::process::ExitStatus {
    daemon.signal("TERM");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within {within:?} of SIGTERM:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Threads of process `pid`, from /proc.
fn process_threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|line| line.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

#[test]
fn an_upgrade_blocked_by_a_stuck_call_gives_up_and_calls_go_on() {
    let setup = Setup::new(&CONFIG.replace("[engine]", "[upgrade]\nready_timeout = \"3s\"\n\n[engine]"));
    setup.install(modules::BLOB, "libblob.so");
    let daemon = setup.start();
    let _stuck = call_in_background(daemon.public(), "/call/counter/sleep?instance=stuck", FOREVER_MS);
    wait_in_flight(&daemon, 1);
    // The upgrade cannot move a state that a call is still changing: it
    // must give up by its deadline, not hold every call behind it.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .arg("--config")
        .arg(setup.config())
        .arg("upgrade")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = cli.kill();
            let _ = cli.wait();
            panic!("the upgrade never gave up:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = cli.wait_with_output().unwrap();
    let said = crate::stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("counter 'stuck' sleep"), "the refusal names the call it waited for: {said}");
    assert_eq!(http_bounded(&daemon, "/call/counter/add?instance=other", "1"), (200, "1".to_owned()));
    assert_eq!(http_bounded(&daemon, "/call/blob/len", "").0, 200);
    assert_eq!(daemon.status()["pid"], daemon.pid(), "this process serves on");
}
