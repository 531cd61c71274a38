//! Whole-process upgrades: under load with no failed request, and every way
//! one can fail leaving the old process serving as if nothing happened.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{COUNTER_CONFIG, Daemon, Setup, modules, read_full, send, stderr, stdout};

pub(crate) fn config() -> String {
    COUNTER_CONFIG.replace("watch = true", "watch = false")
}

/// Runs `hotswap upgrade` and returns the new pid, once the old process exited.
pub(crate) fn upgrade(setup: &Setup, daemon: &mut Daemon) -> u32 {
    let new_pid = upgrade_started(setup, daemon);
    daemon.taken_over_by(new_pid);
    new_pid
}

/// Runs `hotswap upgrade` and returns the new pid, not waiting for the old process.
pub(crate) fn upgrade_started(setup: &Setup, daemon: &Daemon) -> u32 {
    new_pid(&upgrade_report(setup, daemon))
}

/// Runs `hotswap upgrade`, which must succeed, and returns what it printed.
fn upgrade_report(setup: &Setup, daemon: &Daemon) -> String {
    let output = setup.cli(&["upgrade"]);
    assert!(output.status.success(), "upgrade failed: {}\n{}", stderr(&output), daemon.log());
    stdout(&output)
}

/// The new pid in `hotswap upgrade`'s report.
fn new_pid(text: &str) -> u32 {
    text.split(" -> ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {text:?}"))
}

/// Failure classes a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Refused,
    Reset,
    EofMidResponse,
    Timeout,
    Non2xx,
}

fn classify(error: &std::io::Error) -> Failure {
    match error.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => Failure::Reset,
        ErrorKind::UnexpectedEof => Failure::EofMidResponse,
        _ => Failure::Timeout,
    }
}

struct Tally {
    stop: AtomicBool,
    acknowledged: Vec<AtomicU64>,
    failures: Mutex<BTreeMap<Failure, Vec<String>>>,
    pids: Mutex<HashSet<u32>>,
}

impl Tally {
    fn fail(&self, class: Failure, what: String) {
        self.failures.lock().unwrap().entry(class).or_default().push(what);
    }
}

const ROOMS: usize = 16;

/// One add on `stream` (connecting first if there is none); keeps the
/// connection while the server keeps it open.
fn add(address: SocketAddr, stream: &mut Option<BufReader<TcpStream>>, room: usize, tally: &Tally) {
    if stream.is_none() {
        match TcpStream::connect(address) {
            Ok(connected) => {
                connected.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                *stream = Some(BufReader::new(connected));
            }
            Err(err) => return tally.fail(classify(&err), format!("connect: {err}")),
        }
    }
    let reader = stream.as_mut().expect("connected above");
    send(reader.get_mut(), "POST", &format!("/call/counter/add?instance=room-{room}"), b"1", &[]);
    match read_full(reader) {
        Ok(response) if response.status == 200 => {
            tally.acknowledged[room].fetch_add(1, Ordering::Relaxed);
            if let Some(pid) = response.header("hotswap-pid").and_then(|pid| pid.parse().ok()) {
                tally.pids.lock().unwrap().insert(pid);
            }
            if response.header("connection") == Some("close") {
                *stream = None;
            }
        }
        Ok(response) => {
            tally.fail(
                Failure::Non2xx,
                format!("{}: {}", response.status, String::from_utf8_lossy(&response.body)),
            );
            *stream = None;
        }
        Err(err) => {
            tally.fail(classify(&err), format!("response: {err}"));
            *stream = None;
        }
    }
}

#[test]
fn ten_upgrades_under_load_fail_no_request_and_lose_no_update() {
    let setup = Setup::new(&config());
    let mut daemon = setup.start();
    let address = daemon.public();
    let tally = Arc::new(Tally {
        stop: AtomicBool::new(false),
        acknowledged: (0..ROOMS).map(|_| AtomicU64::new(0)).collect(),
        failures: Mutex::new(BTreeMap::new()),
        pids: Mutex::new(HashSet::new()),
    });
    // Keep-alive clients, and clients that open a connection per request.
    let clients: Vec<_> = (0..18)
        .map(|client| {
            let tally = tally.clone();
            std::thread::spawn(move || {
                let keep_alive = client < 12;
                let give_up = Instant::now() + Duration::from_secs(120);
                let mut stream = None;
                let mut n = client;
                while !tally.stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    add(address, &mut stream, n % ROOMS, &tally);
                    n += 1;
                    if !keep_alive {
                        stream = None;
                    }
                }
            })
        })
        .collect();

    let mut generations = vec![daemon.pid()];
    for _ in 0..10 {
        generations.push(upgrade(&setup, &mut daemon));
    }
    // A moment on the last process too.
    std::thread::sleep(Duration::from_millis(200));
    tally.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let failures = tally.failures.lock().unwrap();
    let counts: BTreeMap<_, _> = failures.iter().map(|(class, all)| (*class, all.len())).collect();
    assert!(failures.is_empty(), "failed requests by class: {counts:?}; first of each: {:?}", {
        failures.iter().map(|(class, all)| (*class, all[0].clone())).collect::<Vec<_>>()
    });
    let pids = tally.pids.lock().unwrap();
    for pid in &generations {
        assert!(pids.contains(pid), "pid {pid} of generations {generations:?} served nothing; seen {pids:?}");
    }
    for (room, acknowledged) in tally.acknowledged.iter().enumerate() {
        let total = daemon.text("POST", &format!("/call/counter/get?instance=room-{room}"), "");
        assert_eq!(total, acknowledged.load(Ordering::Relaxed).to_string(), "room-{room}");
    }
    assert_eq!(daemon.status()["pid"], generations[10]);
    let total: u64 = tally.acknowledged.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    eprintln!("{total} requests answered across {} processes", pids.len());
}

/// A request that reaches the old process while the upgrade holds it
/// frozen is forwarded to the new process once committed, and answered
/// keep-alive; the connection then moves, so the next request on it is
/// answered by the new process itself.
#[test]
fn a_request_in_flight_at_the_commit_is_forwarded_and_its_connection_moves() {
    let setup = Setup::new(&config());
    let mut daemon = setup
        .start_env(&[], &[("HOTSWAP_TEST_PAUSE_BEFORE_READY_MS", "1500")])
        .unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"));
    let old_pid = daemon.pid();
    daemon.text("POST", "/call/counter/add?instance=lobby", "5");
    let mut held = BufReader::new(TcpStream::connect(daemon.public()).unwrap());
    send(held.get_mut(), "GET", "/healthz", b"", &[]);
    assert_eq!(read_full(&mut held).unwrap().header("hotswap-pid"), Some(old_pid.to_string().as_str()));

    let report = std::thread::scope(|scope| {
        let upgrading = scope.spawn(|| upgrade_report(&setup, &daemon));
        // The state went out and the new process waits 1.5 s before READY,
        // the old one frozen: this call waits in the old process for the commit.
        daemon.wait_for_status("the state to be sent", |status| status["upgrade"]["modules_sent"] == 1);
        send(held.get_mut(), "POST", "/call/counter/add?instance=lobby", b"1", &[]);
        upgrading.join().unwrap()
    });
    let new_pid = new_pid(&report);
    let forwarded = read_full(&mut held).unwrap();
    assert_eq!(forwarded.status, 200);
    assert_eq!(forwarded.body, b"6", "the new process's state answered");
    assert_eq!(forwarded.header("hotswap-pid"), Some(new_pid.to_string().as_str()));
    assert_ne!(forwarded.header("connection"), Some("close"), "the connection moves rather than closes");

    send(held.get_mut(), "POST", "/call/counter/add?instance=lobby", b"1", &[]);
    let moved = read_full(&mut held).unwrap();
    assert_eq!(moved.body, b"7");
    assert_eq!(moved.header("hotswap-pid"), Some(new_pid.to_string().as_str()));
    daemon.taken_over_by(new_pid);
    assert_eq!(daemon.text("POST", "/call/counter/get?instance=lobby", ""), "7");
    // Calls were held from the freeze to the commit, the new process's 1.5 s
    // wait included. Checked last: once the daemon knows its new pid, a
    // failure here still stops that process.
    let held_ms: u64 = report
        .split("calls held ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no 'calls held' in {report:?}"));
    assert!(
        held_ms >= 1500,
        "calls held {held_ms} ms, but the new process kept the freeze 1,500 ms: {report}"
    );
}

/// Descriptors the process has open.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

/// What each open descriptor of `pid` refers to (for failure messages).
pub(crate) fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut targets: Vec<String> = entries
        .flatten()
        .map(|entry| {
            format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                std::fs::read_link(entry.path()).unwrap_or_default().display()
            )
        })
        .collect();
    targets.sort();
    targets
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let parent = rest.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            children.extend(head.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()));
        }
    }
    children
}

pub(crate) fn script(setup: &Setup, name: &str, body: &str) -> String {
    let path = setup.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Asserts that a refused upgrade left `daemon` as it was.
fn assert_untouched(daemon: &Daemon, pid: u32, fds: usize, total: &str) {
    assert_eq!(daemon.pid(), pid);
    assert_eq!(daemon.status()["pid"], pid, "the same process serves");
    assert_eq!(daemon.text("GET", "/total", ""), total, "its state is untouched");
    assert_eq!(daemon.version(), "1.0.0");
    let children: Vec<String> = children_of(pid)
        .iter()
        .map(|child| {
            std::fs::read_to_string(format!("/proc/{child}/cmdline")).unwrap_or_default().replace('\0', " ")
        })
        .collect();
    assert!(children.is_empty(), "child processes were left: {children:?}");
    // Connections of the checks above close asynchronously: allow a moment.
    assert_fds_back_to(pid, fds, Duration::from_secs(5), "before");
}

/// Waits up to `within` for `pid` to have at most `fds` descriptors open
/// (`before` says where that count came from), and fails naming them if not.
pub(crate) fn assert_fds_back_to(pid: u32, fds: usize, within: Duration, before: &str) {
    let deadline = Instant::now() + within;
    while open_fds(pid) > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        open_fds(pid) <= fds,
        "descriptors leaked: {} open, {fds} {before}: {:?}",
        open_fds(pid),
        fd_targets(pid)
    );
}

#[test]
fn failed_upgrades_leave_the_old_process_serving_as_if_nothing_happened() {
    let setup = Setup::new(&format!("{}\n[upgrade]\nready_timeout = \"1s\"\n", config()));
    let not_executable = setup.path("hotswap-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_hotswap"), &not_executable).unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exits = script(&setup, "exits.sh", "echo 'the new binary gives up' >&2\nexit 3");
    let hangs = script(&setup, "hangs.sh", "exec sleep 30");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "7");
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_millis(100));
    let fds = open_fds(pid);

    let cases = [
        (setup.path("no-such-binary").display().to_string(), "No such file or directory"),
        (not_executable.display().to_string(), "not an executable file"),
        (exits, "exited before it was ready; the new process (pid"),
        (hangs, "was not ready within 1s"),
    ];
    for (binary, says) in &cases {
        let output = setup.cli(&["upgrade", "--binary", binary]);
        assert!(!output.status.success(), "{binary} must fail");
        assert!(stderr(&output).contains(says), "{binary}: {}", stderr(&output));
        assert_untouched(&daemon, pid, fds, "7");
        assert_eq!(daemon.status()["upgrade"]["phase"], "failed");
    }
    assert!(stderr(&setup.cli(&["upgrade", "--binary", &cases[2].0])).contains("exit status: 3"));
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=lobby", "1"), "8", "calls go on");
}

#[test]
fn an_upgrade_whose_new_process_cannot_take_the_state_changes_nothing() {
    let setup = Setup::new(&config());
    setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "4");
    daemon.text("POST", "/call/counter/corrupt-snapshot?instance=lobby", "");
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_millis(100));
    let fds = open_fds(pid);
    // The new process will run 2.0.0, which cannot read lobby's snapshot.
    setup.write_config(&config().replace("modules/libcounter.so", "modules/libcounter_v2.so"));
    let output = setup.cli(&["upgrade"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("could not take the state") && message.contains("cannot migrate a 7-byte snapshot"),
        "{message}"
    );
    setup.write_config(&config());
    assert_untouched(&daemon, pid, fds, "4");
}

#[test]
fn a_second_upgrade_while_one_runs_is_refused() {
    let setup = Setup::new(&format!("{}\n[upgrade]\nready_timeout = \"3s\"\n", config()));
    let hangs = script(&setup, "hangs.sh", "exec sleep 30");
    let daemon = setup.start();
    let first = std::thread::spawn({
        let config = setup.config();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
                .args(["--config", config.to_str().unwrap(), "upgrade", "--binary", &hangs])
                .output()
                .unwrap()
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.status()["upgrade"]["phase"] != "waiting for ready" {
        assert!(Instant::now() < deadline, "the first upgrade did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = setup.cli(&["upgrade"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("already in progress"), "{}", stderr(&output));
    // Module swaps wait for the next process too.
    let output = setup.cli(&["load", "counter"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("a process upgrade is in progress"), "{}", stderr(&output));
    let first = first.join().unwrap();
    assert!(stderr(&first).contains("not ready within 3s"), "{}", stderr(&first));
    assert_eq!(daemon.text("GET", "/total", ""), "0");
}

#[test]
fn systemd_hears_ready_reloading_mainpid_and_stopping_and_the_pid_file_follows() {
    let setup = Setup::new(&config().replace("[server]", "[server]\npid_file = \"hotswap.pid\""));
    let notify_path = setup.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let receive = || {
        let mut buffer = [0u8; 512];
        let n = notify.recv(&mut buffer).expect("a notification");
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    };
    let mut daemon = setup.start_env(&[], &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]).unwrap();
    assert_eq!(receive(), "READY=1");
    let pid_file =
        || std::fs::read_to_string(setup.path("hotswap.pid")).unwrap().trim().parse::<u32>().unwrap();
    assert_eq!(pid_file(), daemon.pid());

    let new_pid = upgrade(&setup, &mut daemon);
    let reloading = receive();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(receive(), format!("MAINPID={new_pid}\nREADY=1"));
    assert_eq!(pid_file(), new_pid);

    daemon.signal("TERM");
    assert_eq!(receive(), "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::is_running(new_pid) {
        assert!(Instant::now() < deadline, "the new process did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!setup.path("hotswap.pid").exists(), "the pid file is removed at the end");
}

/// At first start, sockets from systemd socket activation (LISTEN_FDS) are
/// served instead of binding `server.listen`.
#[test]
fn socket_activation_serves_the_inherited_socket() {
    // Bound by "systemd" (this test); the config asks for another port.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    let setup = Setup::new(&config());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"));
    command
        .args(["serve", "--config", setup.config().to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(setup.path("daemon.log")).unwrap());
    use std::os::fd::AsFd;
    let child = hotswap_upgrade::listen::spawn_with(&mut command, &[("public", socket.as_fd())]).unwrap();
    drop(socket);
    let daemon = Daemon::adopt(child, &setup);
    assert_eq!(daemon.public(), address, "it serves the socket it was given");
    assert_eq!(daemon.text("POST", "/call/counter/add?instance=a", "2"), "2");
}

#[test]
fn sigusr2_upgrades_to_the_binary_the_daemon_was_started_from() {
    let setup = Setup::new(&config());
    let mut daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let old_pid = daemon.pid();
    daemon.signal("USR2");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_pid = loop {
        let status = daemon.status();
        if status["pid"] != old_pid {
            break status["pid"].as_u64().unwrap() as u32;
        }
        assert!(Instant::now() < deadline, "no upgrade after SIGUSR2:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    daemon.taken_over_by(new_pid);
    assert_eq!(daemon.text("GET", "/total", ""), "3");
    let text = stdout(&setup.cli(&["status"]));
    assert!(text.contains(&format!("upgrade to pid {new_pid}: took over from pid {old_pid}")), "{text}");
}
