//! Load on the daemon's HTTP front while the whole process is replaced
//! (`POST /v1/upgrade`) and modules are swapped, with every request's outcome
//! recorded per 100 ms.
//!
//! ```sh
//! cargo build --release -p hotswap-daemon
//! cargo run --release -p hotswap-bench --bin upgrade-load -- [--runs 3] [--plan load|state] [--daemon PATH]
//! cargo run --release -p hotswap-bench --bin upgrade-load -- --nginx /usr/sbin/nginx   # the comparison
//! ```
//!
//! It builds nothing itself. For each run it makes a private temporary folder
//! (mode 0700; module files 0644), writes a config (counter v1 at
//! `modules/libcounter.so`, `watch = false`; with `--plan state` also the
//! `blob` module), starts `hotswap serve` (default `target/release/hotswap`)
//! and reads the public address from `GET /v1/status` on the admin socket.
//!
//! Clients (threads, blocking sockets, 5 s timeouts) call
//! `POST /call/counter/add?instance=room-N` (body `1`, 16 rooms) for the whole
//! run: `--keepalive` of them (default 24) on keep-alive connections (a
//! response with `Connection: close` makes the client reconnect for its next
//! request), `--per-request` (default 8) on a new connection per request
//! (sent with `Connection: close`). A failed request is classed as refused
//! (connect refused), reset (`ECONNRESET`/`EPIPE`), eof (the connection ended
//! before the whole response), timeout, non-2xx or other, and listed with its
//! time, thread and the pid that served that connection last.
//!
//! Meanwhile one thread runs the plan's events at fixed times, each waiting
//! for the one before:
//!
//! - `--plan load` (default, `--duration 24`): 10 upgrades at 4.0, 5.5, …,
//!   17.5 s, and after each two swaps of counter (to v2 at +0.6 s, to v1 at
//!   +0.9 s) through `POST /v1/modules/counter/load`;
//! - `--plan state` (`--duration 20`): the blob instance `big` is resized to
//!   1 MiB at 1 s, 5 upgrades at 2.0, 3.5, …, 8.0 s; resized to 64 MiB at
//!   9.5 s, 5 upgrades at 10.5, …, 16.5 s; the answers' `frozen_ms` and
//!   `took_ms` are printed per size;
//! - `--plan steady`: no event at all, the control for the load plan;
//! - `--nginx PATH`: the same clients against nginx (`return 200`, a private
//!   prefix and config in a temporary folder, 127.0.0.1 only, 2 workers,
//!   `daemon on` as nginx's default, a `hotswap-pid` header set to the
//!   worker's pid), with nginx's binary upgrade at each upgrade time of the
//!   load plan (no swaps): `kill -USR2` the master, wait for the new master
//!   (its pid file) and its workers, `kill -WINCH` and `kill -QUIT` the old
//!   master, wait for it to exit. The master that serves at the end gets
//!   `kill -QUIT` (by the pid in its pid file, checked against the ones seen).
//!
//! Each upgrade spawns the same binary again (the daemon re-executes the
//! binary it was started from). Per run it writes to `--out` (default
//! `target/upgrade-load`) `<name>-buckets.csv` (per 100 ms: responses,
//! failures by class, latency p50/p99/max, which pids served),
//! `<name>-events.csv`, `<name>-failures.csv` and the daemon's log, and
//! prints a summary: requests/s in the 1 s windows around the upgrades
//! (trigger ± 0.5 s) against the steady windows (buckets at least 1 s from
//! any event, after a 1 s warm-up), failures, and the upgrades' `took_ms`,
//! `startup_ms` and the rest. At the end the rooms' totals must add up to
//! the acknowledged adds. Every process it started is stopped by its pid: the
//! daemon that serves at the end (`GET /v1/status`) with SIGTERM, after
//! checking that every replaced one has exited.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hotswap_bench::machine_description;
use hotswap_test_modules::{BLOB, COUNTER_V1, COUNTER_V2};

const BUCKET_US: u64 = 100_000;
const ROOMS: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Buckets before this are warm-up, never "steady".
const WARM_UP_S: f64 = 1.0;
/// A steady bucket is at least this far from every event.
const QUIET_S: f64 = 1.0;
/// The window counted as "during an upgrade": the trigger ± this.
const HALF_WINDOW_S: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Refused,
    Reset,
    Eof,
    Timeout,
    Non2xx,
    Other,
}

const FAILURE_CLASSES: [Outcome; 6] =
    [Outcome::Refused, Outcome::Reset, Outcome::Eof, Outcome::Timeout, Outcome::Non2xx, Outcome::Other];

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Eof => "eof",
            Outcome::Timeout => "timeout",
            Outcome::Non2xx => "non2xx",
            Outcome::Other => "other",
        }
    }
}

/// One request: when it ended (µs since the start), how long it took, which
/// pid answered (or served the connection last, for a failure).
#[derive(Clone, Copy, Debug)]
struct Record {
    t_us: u32,
    lat_us: u32,
    pid: u32,
    outcome: Outcome,
}

#[derive(Debug)]
struct Failure {
    t_us: u64,
    thread: usize,
    outcome: Outcome,
    pid: u32,
    detail: String,
}

#[derive(Debug, Default)]
struct ClientResult {
    records: Vec<Record>,
    failures: Vec<Failure>,
    acked: u64,
}

/// What the plan does at a moment.
#[derive(Clone, Debug)]
enum Action {
    Upgrade,
    Swap(u8),
    Resize(usize),
}

/// What happened: times in seconds since the start.
#[derive(Clone, Debug, Default)]
struct Event {
    start_s: f64,
    end_s: f64,
    kind: String,
    ok: bool,
    old_pid: u32,
    new_pid: u32,
    took_ms: f64,
    startup_ms: f64,
    frozen_ms: f64,
    state_bytes: u64,
    detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Load,
    State,
    Steady,
}

#[derive(Debug)]
struct Options {
    daemon: PathBuf,
    nginx: Option<PathBuf>,
    plan: Plan,
    runs: usize,
    duration: Duration,
    keepalive: usize,
    per_request: usize,
    out: PathBuf,
}

fn main() {
    let options = parse_args();
    if options.nginx.is_none() {
        assert!(
            options.daemon.is_file(),
            "no daemon binary at {}: run `cargo build --release -p hotswap-daemon` first, or pass --daemon PATH",
            options.daemon.display()
        );
    }
    fs::create_dir_all(&options.out).expect("create the output folder");
    println!("machine: {}", machine_description());
    match &options.nginx {
        Some(nginx) => println!("target: nginx {} ({})", nginx.display(), nginx_version(nginx)),
        None => println!(
            "target: hotswap {}",
            fs::canonicalize(&options.daemon).unwrap_or(options.daemon.clone()).display()
        ),
    }
    println!(
        "load: {} keep-alive + {} connection-per-request clients, POST /call/counter/add?instance=room-0..{}, {:?} per run, plan {:?}, {} run(s)",
        options.keepalive,
        options.per_request,
        ROOMS - 1,
        options.duration,
        options.plan,
        options.runs
    );
    let mut summaries = Vec::new();
    for run in 1..=options.runs {
        let name = match (&options.nginx, options.plan) {
            (Some(_), _) => format!("nginx-run{run}"),
            (None, Plan::Load) => format!("run{run}"),
            (None, Plan::State) => format!("state-run{run}"),
            (None, Plan::Steady) => format!("steady-run{run}"),
        };
        println!("\n=== {name} ===");
        let summary = match &options.nginx {
            Some(nginx) => run_nginx(&options, nginx, &name),
            None => run_hotswap(&options, &name),
        };
        summaries.push(summary);
    }
    if summaries.len() > 1 {
        print_medians(&summaries);
    }
}

fn parse_args() -> Options {
    let mut options = Options {
        daemon: default_daemon(),
        nginx: None,
        plan: Plan::Load,
        runs: 1,
        duration: Duration::ZERO,
        keepalive: 24,
        per_request: 8,
        out: PathBuf::from("target/upgrade-load"),
    };
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> usize {
        value.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{flag} takes a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => options.daemon = PathBuf::from(args.next().expect("--daemon takes a path")),
            "--nginx" => options.nginx = Some(PathBuf::from(args.next().expect("--nginx takes a path"))),
            "--plan" => {
                options.plan = match args.next().as_deref() {
                    Some("load") => Plan::Load,
                    Some("state") => Plan::State,
                    Some("steady") => Plan::Steady,
                    other => panic!("--plan takes load, state or steady, not {other:?}"),
                }
            }
            "--runs" => options.runs = number(args.next(), "--runs").max(1),
            "--duration" => options.duration = Duration::from_secs(number(args.next(), "--duration") as u64),
            "--keepalive" => options.keepalive = number(args.next(), "--keepalive"),
            "--per-request" => options.per_request = number(args.next(), "--per-request"),
            "--out" => options.out = PathBuf::from(args.next().expect("--out takes a folder")),
            other => panic!(
                "unknown argument {other:?}; usage: upgrade-load [--daemon PATH | --nginx PATH] [--plan load|state] \
                 [--runs N] [--duration S] [--keepalive N] [--per-request N] [--out DIR]"
            ),
        }
    }
    if options.duration.is_zero() {
        options.duration = Duration::from_secs(if options.plan == Plan::State { 20 } else { 24 });
    }
    options
}

/// The plan's actions and when they start, in seconds.
fn schedule(plan: Plan) -> Vec<(f64, Action)> {
    match plan {
        Plan::Load => (0..10)
            .flat_map(|i| {
                let at = 4.0 + 1.5 * f64::from(i);
                [(at, Action::Upgrade), (at + 0.6, Action::Swap(2)), (at + 0.9, Action::Swap(1))]
            })
            .collect(),
        Plan::State => {
            let mut plan = vec![(1.0, Action::Resize(1 << 20))];
            plan.extend((0..5).map(|i| (2.0 + 1.5 * f64::from(i), Action::Upgrade)));
            plan.push((9.5, Action::Resize(64 << 20)));
            plan.extend((0..5).map(|i| (10.5 + 1.5 * f64::from(i), Action::Upgrade)));
            plan
        }
        Plan::Steady => Vec::new(),
    }
}

/// `target/release/hotswap` from the current folder, else next to this workspace.
fn default_daemon() -> PathBuf {
    let here = PathBuf::from("target/release/hotswap");
    if here.is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/hotswap")
}

fn private_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temporary folder");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    dir
}

/// Copies `from` to `to` with mode 0644.
fn install(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|err| panic!("copy {} to {}: {err}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o644)).expect("chmod 0644");
}

// ---------------------------------------------------------------------------
// hotswap

fn run_hotswap(options: &Options, name: &str) -> RunSummary {
    let dir = private_dir("hotswap-upgrade-");
    let root = dir.path();
    for sub in ["modules", "versions"] {
        fs::create_dir(root.join(sub)).expect("create a folder");
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    }
    install(Path::new(COUNTER_V1), &root.join("modules/libcounter.so"));
    install(Path::new(COUNTER_V1), &root.join("versions/counter-1.so"));
    install(Path::new(COUNTER_V2), &root.join("versions/counter-2.so"));
    let mut config = String::from(
        "allowed_dirs = [\"versions\"]\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"hotswap.sock\"\n\n\
         [state]\ndir = \"state\"\n\n[[module]]\nname = \"counter\"\npath = \"modules/libcounter.so\"\nwatch = false\n",
    );
    if options.plan == Plan::State {
        install(Path::new(BLOB), &root.join("modules/libblob.so"));
        config.push_str("\n[[module]]\nname = \"blob\"\npath = \"modules/libblob.so\"\nwatch = false\n");
    }
    let config_path = root.join("hotswap.toml");
    fs::write(&config_path, config).expect("write the config");
    let log = root.join("daemon.log");
    let socket = root.join("hotswap.sock");

    let log_file = fs::File::create(&log).expect("daemon log file");
    let mut first = Command::new(&options.daemon)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", options.daemon.display()));
    let status = wait_for_status(&socket, &mut first, &log);
    let addr: SocketAddr =
        status["public_addr"].as_str().expect("public_addr in the status").parse().expect("an address");
    println!("daemon pid {} serving on {addr}, folder {}", first.id(), root.display());
    let pids = Mutex::new(vec![first.id()]);

    let plan = schedule(options.plan);
    let versions = [root.join("versions/counter-1.so"), root.join("versions/counter-2.so")];
    let run = |at: Instant, action: &Action| -> Event {
        match action {
            Action::Upgrade => {
                let event = hotswap_upgrade(&socket, at);
                if event.ok {
                    pids.lock().expect("pids").push(event.new_pid);
                }
                event
            }
            Action::Swap(version) => {
                hotswap_swap(&socket, &versions[usize::from(*version) - 1], *version, at)
            }
            Action::Resize(bytes) => blob_resize(addr, *bytes, at),
        }
    };
    let (results, events) = drive(options, addr, &plan, run);

    // The totals, from the process that serves now.
    let mut total = 0u64;
    let mut room_errors = Vec::new();
    for room in 0..ROOMS {
        match call(addr, &format!("/call/counter/get?instance=room-{room}"), b"") {
            Ok((200, body, _)) => total += String::from_utf8_lossy(&body).trim().parse::<u64>().unwrap_or(0),
            other => room_errors.push(format!("room-{room}: {other:?}")),
        }
    }
    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let mut extra = vec![format!(
        "state check: sum of the {ROOMS} rooms' totals {total}, acknowledged adds {acked} ({})",
        if total == acked && room_errors.is_empty() {
            "equal".to_owned()
        } else {
            format!("DIFFER: {room_errors:?}")
        }
    )];
    if options.plan == Plan::State {
        match call(addr, "/call/blob/len?instance=big", b"") {
            Ok((200, body, pid)) => extra.push(format!(
                "blob 'big' after the upgrades: {} bytes (pid {pid})",
                String::from_utf8_lossy(&body)
            )),
            other => extra.push(format!("blob 'big' len failed: {other:?}")),
        }
    }
    let status = admin(&socket, "GET", "/v1/status", b"").ok().filter(|(code, _)| *code == 200);
    let status: serde_json::Value =
        status.and_then(|(_, body)| serde_json::from_slice(&body).ok()).unwrap_or_default();
    let serving = status["pid"].as_u64().unwrap_or(0) as u32;
    for module in status["modules"].as_array().into_iter().flatten() {
        extra.push(format!(
            "status: module {} {} — {} calls, {} errors, {} panics, {} swaps",
            module["name"],
            module["version"],
            module["calls"],
            module["errors"],
            module["panics"],
            module["swaps"]
        ));
    }

    // Every replaced process must have exited (they drain for at most
    // server.shutdown_timeout, 10 s); then the serving one gets SIGTERM.
    let pids = pids.into_inner().expect("pids");
    let replaced: Vec<u32> = pids.iter().copied().filter(|&pid| pid != serving).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while replaced.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        let _ = first.try_wait();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = first.try_wait();
    let lingering: Vec<u32> = replaced.iter().copied().filter(|&pid| alive(pid)).collect();
    if lingering.is_empty() {
        extra.push(format!("all {} replaced processes had exited", replaced.len()));
    } else {
        extra.push(format!(
            "REPLACED PROCESSES STILL ALIVE 15 s after the run: {lingering:?}; sending SIGTERM"
        ));
    }
    let mut to_stop = lingering;
    if serving != 0 && pids.contains(&serving) {
        to_stop.push(serving);
    } else {
        extra.push(format!("the status named pid {serving}, not one this run started: {pids:?}"));
    }
    for pid in to_stop {
        extra.push(format!("pid {pid}: {}", stop_pid(pid, &options.daemon)));
    }
    let _ = first.wait();
    for pid in &pids {
        if alive(*pid) {
            extra.push(format!("WARNING: pid {pid} is still alive"));
        }
    }
    let _ = fs::copy(&log, options.out.join(format!("{name}-daemon.log")));
    report(options, name, results, events, extra)
}

fn wait_for_status(socket: &Path, child: &mut Child, log: &Path) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = admin(socket, "GET", "/v1/status", b"") {
            return serde_json::from_slice(&body).expect("status JSON");
        }
        if let Ok(Some(exit)) = child.try_wait() {
            panic!(
                "the daemon exited ({exit}) before serving:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < START_TIMEOUT, "the daemon did not answer within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hotswap_upgrade(socket: &Path, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let answer = admin(socket, "POST", "/v1/upgrade", b"");
    let mut event =
        Event { start_s, end_s: at.elapsed().as_secs_f64(), kind: "upgrade".into(), ..Event::default() };
    match answer {
        Ok((200, body)) => {
            let done: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let ms = |key: &str| done[key].as_f64().unwrap_or(f64::NAN);
            event.ok = true;
            event.old_pid = done["old_pid"].as_u64().unwrap_or(0) as u32;
            event.new_pid = done["new_pid"].as_u64().unwrap_or(0) as u32;
            event.took_ms = ms("took_ms");
            event.startup_ms = ms("startup_ms");
            event.frozen_ms = ms("frozen_ms");
            event.state_bytes = done["state_bytes"].as_u64().unwrap_or(0);
        }
        Ok((code, body)) => event.detail = format!("{code} {}", String::from_utf8_lossy(&body)),
        Err(err) => event.detail = format!("admin request failed: {err}"),
    }
    event
}

fn hotswap_swap(socket: &Path, file: &Path, version: u8, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let body = serde_json::json!({ "path": file }).to_string();
    let answer = admin(socket, "POST", "/v1/modules/counter/load", body.as_bytes());
    let mut event = Event {
        start_s,
        end_s: at.elapsed().as_secs_f64(),
        kind: format!("swap-v{version}"),
        ..Event::default()
    };
    match answer {
        Ok((200, _)) => event.ok = true,
        Ok((code, body)) => event.detail = format!("{code} {}", String::from_utf8_lossy(&body)),
        Err(err) => event.detail = format!("admin request failed: {err}"),
    }
    event
}

fn blob_resize(addr: SocketAddr, bytes: usize, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let answer = call(addr, "/call/blob/resize?instance=big", bytes.to_string().as_bytes());
    let mut event = Event {
        start_s,
        end_s: at.elapsed().as_secs_f64(),
        kind: "resize".into(),
        state_bytes: bytes as u64,
        ..Event::default()
    };
    match answer {
        Ok((200, _, pid)) => {
            event.ok = true;
            event.new_pid = pid;
        }
        Ok((code, body, _)) => event.detail = format!("{code} {}", String::from_utf8_lossy(&body)),
        Err(err) => event.detail = err.to_string(),
    }
    event
}

/// One request on the admin socket (a fresh connection, `Connection: close`).
fn admin(socket: &Path, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let response = exchange(&mut reader, method, path, body, true)?;
    Ok((response.status, response.body))
}

/// One request to the public port on a fresh connection.
fn call(addr: SocketAddr, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>, u32)> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let response = exchange(&mut reader, "POST", path, body, true)?;
    Ok((response.status, response.body, response.pid))
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
    pid: u32,
    close: bool,
}

/// Why an exchange failed, and whether any byte of the response had arrived.
#[derive(Debug)]
struct ExchangeError {
    error: io::Error,
    stage: &'static str,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}) {}", self.error, self.error.kind(), self.stage)
    }
}

/// Writes one HTTP/1.1 request and reads its response (bodies with a
/// `Content-Length`, or up to EOF on a closing connection).
fn exchange<S: Read + Write>(
    reader: &mut BufReader<S>,
    method: &str,
    path: &str,
    body: &[u8],
    close: bool,
) -> io::Result<Response> {
    exchange_staged(reader, method, path, body, close)
        .map_err(|err| io::Error::new(err.error.kind(), err.to_string()))
}

fn exchange_staged<S: Read + Write>(
    reader: &mut BufReader<S>,
    method: &str,
    path: &str,
    body: &[u8],
    close: bool,
) -> Result<Response, ExchangeError> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    request.extend_from_slice(body);
    let at = |stage: &'static str| move |error: io::Error| ExchangeError { error, stage };
    reader.get_mut().write_all(&request).map_err(at("writing the request"))?;
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(at("before the status line"))? == 0 {
        return Err(at("before the status line")(ErrorKind::UnexpectedEof.into()));
    }
    let status = line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| {
        at("in the status line")(io::Error::other(format!("not an HTTP status line: {line:?}")))
    })?;
    let (mut length, mut pid, mut closing) = (None, 0, false);
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(at("in the headers"))? == 0 {
            return Err(at("in the headers")(ErrorKind::UnexpectedEof.into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("hotswap-pid") {
                pid = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                closing = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(at("in the headers")(io::Error::other("chunked responses are not expected")));
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).map_err(at("in the body"))?;
        }
        None => {
            reader.read_to_end(&mut body).map_err(at("in the body"))?;
            closing = true;
        }
    }
    Ok(Response { status, body, pid, close: closing })
}

// ---------------------------------------------------------------------------
// nginx

fn nginx_version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
        .unwrap_or_else(|err| format!("cannot run it: {err}"))
}

fn run_nginx(options: &Options, nginx: &Path, name: &str) -> RunSummary {
    let nginx = fs::canonicalize(nginx).expect("the nginx binary");
    let dir = private_dir("hotswap-nginx-");
    let root = dir.path().to_owned();
    fs::create_dir(root.join("logs")).expect("logs folder");
    // A free port on loopback (bound, read, released; nginx binds it next).
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let pid_file = root.join("nginx.pid");
    // `daemon on` (nginx's default): a master whose parent is still the one
    // that started it ignores USR2 ("the changing binary signal is ignored").
    let conf = format!(
        "daemon on;\nmaster_process on;\nworker_processes 2;\npid {pid};\nerror_log {root}/logs/error.log notice;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  \
         fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    \
         location / {{ add_header hotswap-pid $pid always; return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        pid = pid_file.display(),
        root = root.display(),
    );
    let conf_path = root.join("nginx.conf");
    fs::write(&conf_path, conf).expect("write nginx.conf");
    let log = root.join("logs/stderr.log");
    let log_file = fs::File::create(&log).expect("log file");
    // The process started here forks the master and exits.
    let status = Command::new(&nginx)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .status()
        .unwrap_or_else(|err| panic!("start {}: {err}", nginx.display()));
    assert!(status.success(), "nginx exited {status}:\n{}", fs::read_to_string(&log).unwrap_or_default());
    let started = Instant::now();
    let master = loop {
        if let Some(master) = read_pid(&pid_file).filter(|&pid| alive(pid))
            && call(addr, "/", b"").is_ok()
        {
            break master;
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "nginx did not answer within {START_TIMEOUT:?}:\n{}",
            fs::read_to_string(root.join("logs/error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("nginx master pid {master} serving on {addr}, prefix {}", root.display());
    let masters = Mutex::new(vec![master]);

    // nginx replaces its binary in place of each hotswap upgrade; no swaps.
    let plan: Vec<(f64, Action)> =
        schedule(Plan::Load).into_iter().filter(|(_, action)| matches!(action, Action::Upgrade)).collect();
    let run = |at: Instant, _: &Action| -> Event {
        let event = nginx_upgrade(&pid_file, at);
        if event.ok {
            masters.lock().expect("masters").push(event.new_pid);
        }
        event
    };
    let (results, events) = drive(options, addr, &plan, run);
    let mut extra = Vec::new();
    let masters = masters.into_inner().expect("masters");
    match read_pid(&pid_file) {
        Some(current) if masters.contains(&current) && is_running(current, &nginx) => {
            let _ = Command::new("kill").args(["-QUIT", &current.to_string()]).status();
            let asked = Instant::now();
            while alive(current) && asked.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(current) {
                let _ = Command::new("kill").args(["-KILL", &current.to_string()]).status();
                extra.push(format!("nginx master {current} did not quit within 15 s; killed"));
            } else {
                extra.push(format!("nginx master {current} quit (SIGQUIT) after {:.0?}", asked.elapsed()));
            }
        }
        other => extra.push(format!("pid file names {other:?}, not a master this run started ({masters:?})")),
    }
    for pid in &masters {
        if alive(*pid) {
            extra.push(format!("WARNING: nginx master {pid} is still alive"));
        }
    }
    let _ = fs::copy(root.join("logs/error.log"), options.out.join(format!("{name}-error.log")));
    report(options, name, results, events, extra)
}

fn read_pid(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether some process has `parent` as its parent (a master's workers).
fn has_children(parent: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ..."
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            .is_some_and(|ppid| ppid == parent)
    })
}

/// nginx's binary upgrade: USR2 to the master, wait for the new master and
/// its workers, WINCH and QUIT to the old master, wait until it has exited.
fn nginx_upgrade(pid_file: &Path, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let mut event = Event { start_s, kind: "upgrade".into(), ..Event::default() };
    let Some(old) = read_pid(pid_file) else {
        event.detail = "no pid file".into();
        event.end_s = at.elapsed().as_secs_f64();
        return event;
    };
    event.old_pid = old;
    let signal = |name: &str, pid: u32| Command::new("kill").args([name, &pid.to_string()]).status();
    let _ = signal("-USR2", old);
    let deadline = Instant::now() + Duration::from_secs(10);
    let oldbin = pid_file.with_extension("pid.oldbin");
    let new = loop {
        if let Some(new) = read_pid(pid_file).filter(|&new| new != old)
            && oldbin.exists()
            && has_children(new)
        {
            break Some(new);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let Some(new) = new else {
        event.detail = "no new master with workers within 10 s of USR2".into();
        event.end_s = at.elapsed().as_secs_f64();
        return event;
    };
    event.new_pid = new;
    // The new master serves: the time from USR2 to here is nginx's "took".
    event.took_ms = (at.elapsed().as_secs_f64() - start_s) * 1e3;
    let _ = signal("-WINCH", old);
    let _ = signal("-QUIT", old);
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(old) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    event.ok = !alive(old);
    if !event.ok {
        event.detail = format!("old master {old} still alive 15 s after QUIT");
    }
    event.end_s = at.elapsed().as_secs_f64();
    event
}

// ---------------------------------------------------------------------------
// processes

/// The state letter of `pid` in `/proc/<pid>/stat`, if it exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Running (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X')
}

/// Whether `pid` is alive and runs `binary`.
fn is_running(pid: u32, binary: &Path) -> bool {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    alive(pid) && exe == fs::canonicalize(binary).unwrap_or_default()
}

/// SIGTERM to `pid` (after checking it runs `binary`), up to 15 s for it to
/// exit, then SIGKILL.
fn stop_pid(pid: u32, binary: &Path) -> String {
    if !alive(pid) {
        return "had already exited".into();
    }
    if !is_running(pid, binary) {
        return format!("NOT stopped: it does not run {}", binary.display());
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_secs(15) {
        if !alive(pid) {
            return format!("exited {:.0?} after SIGTERM", asked.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    "did not exit within 15 s of SIGTERM; killed".into()
}

// ---------------------------------------------------------------------------
// the load

/// Runs the clients for `options.duration` and the plan's events meanwhile.
fn drive<F>(
    options: &Options,
    addr: SocketAddr,
    plan: &[(f64, Action)],
    run: F,
) -> (Vec<ClientResult>, Vec<Event>)
where
    F: Fn(Instant, &Action) -> Event + Sync,
{
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let end = started + options.duration;
    let (results, events) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..options.keepalive + options.per_request)
            .map(|id| {
                let keep_alive = id < options.keepalive;
                let stop = &stop;
                scope.spawn(move || client(id, addr, keep_alive, started, end, stop))
            })
            .collect();
        let events = scope.spawn(|| {
            let mut events = Vec::new();
            for (at, action) in plan {
                let when = started + Duration::from_secs_f64(*at);
                if when >= end || Instant::now() >= end {
                    break;
                }
                if let Some(wait) = when.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let event = run(started, action);
                let label = match action {
                    Action::Upgrade if event.ok => format!(
                        "upgrade {} -> {}: took {} ms (start-up {} ms, frozen {} ms), {} state bytes",
                        event.old_pid,
                        event.new_pid,
                        event.took_ms,
                        event.startup_ms,
                        event.frozen_ms,
                        event.state_bytes
                    ),
                    Action::Upgrade => format!("upgrade FAILED: {}", event.detail),
                    Action::Swap(version) => {
                        format!("swap to v{version}: {}", if event.ok { "ok" } else { &event.detail })
                    }
                    Action::Resize(bytes) => {
                        format!(
                            "resize blob to {bytes} bytes: {}",
                            if event.ok { "ok" } else { &event.detail }
                        )
                    }
                };
                println!("  {:>6.3} s  {label}", event.start_s);
                events.push(event);
            }
            events
        });
        let events = events.join().expect("the event thread");
        let results: Vec<ClientResult> =
            clients.into_iter().map(|c| c.join().expect("a client thread")).collect();
        stop.store(true, Ordering::Relaxed);
        (results, events)
    });
    (results, events)
}

/// One client thread: requests back to back until `end`.
fn client(
    id: usize,
    addr: SocketAddr,
    keep_alive: bool,
    started: Instant,
    end: Instant,
    stop: &AtomicBool,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut connection_pid = 0u32;
    let mut sent = 0usize;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let room = (id + sent) % ROOMS;
        sent += 1;
        let path = format!("/call/counter/add?instance=room-{room}");
        let begin = Instant::now();
        let outcome: Result<Response, (Outcome, String)> = (|| {
            if connection.is_none() {
                let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|err| {
                    let class = if err.kind() == ErrorKind::ConnectionRefused {
                        Outcome::Refused
                    } else {
                        Outcome::Other
                    };
                    (class, format!("connect: {err}"))
                })?;
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                connection = Some(BufReader::new(stream));
                connection_pid = 0;
            }
            let reader = connection.as_mut().expect("connected");
            exchange_staged(reader, "POST", &path, b"1", !keep_alive).map_err(|err| {
                let class = match err.error.kind() {
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                        Outcome::Reset
                    }
                    ErrorKind::UnexpectedEof => Outcome::Eof,
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Timeout,
                    _ => Outcome::Other,
                };
                (class, err.to_string())
            })
        })();
        let now = Instant::now();
        let t_us = (now - started).as_micros() as u64;
        let lat_us = (now - begin).as_micros() as u32;
        match outcome {
            Ok(response) => {
                let outcome =
                    if (200..300).contains(&response.status) { Outcome::Ok } else { Outcome::Non2xx };
                if outcome == Outcome::Ok {
                    result.acked += 1;
                } else {
                    result.failures.push(Failure {
                        t_us,
                        thread: id,
                        outcome,
                        pid: response.pid,
                        detail: format!(
                            "{} {}",
                            response.status,
                            String::from_utf8_lossy(&response.body).replace(['\n', ','], " ")
                        ),
                    });
                }
                result.records.push(Record { t_us: t_us as u32, lat_us, pid: response.pid, outcome });
                connection_pid = response.pid;
                if response.close || !keep_alive {
                    connection = None;
                }
            }
            Err((class, detail)) => {
                result.failures.push(Failure {
                    t_us,
                    thread: id,
                    outcome: class,
                    pid: connection_pid,
                    detail: format!(
                        "{} connection: {detail}",
                        if keep_alive { "keep-alive" } else { "per-request" }
                    )
                    .replace(',', ";"),
                });
                result.records.push(Record {
                    t_us: t_us as u32,
                    lat_us,
                    pid: connection_pid,
                    outcome: class,
                });
                connection = None;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    result
}

// ---------------------------------------------------------------------------
// results

#[derive(Debug, Default, Clone)]
struct Bucket {
    ok: u64,
    failures: BTreeMap<Outcome, u64>,
    latencies: Vec<u32>,
    pids: BTreeMap<u32, u64>,
}

/// The figures of one run.
#[derive(Debug, Default, Clone)]
struct RunSummary {
    steady_rps: f64,
    upgrade_rps: f64,
    worst_window_rps: f64,
    ratio: f64,
    ok: u64,
    failures: u64,
    upgrades: usize,
    upgrades_failed: usize,
    took_ms: f64,
    startup_ms: f64,
    rest_ms: f64,
    frozen_ms: f64,
    client_ms: f64,
    steady_p99_ms: f64,
    upgrade_p99_ms: f64,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn report(
    options: &Options,
    name: &str,
    results: Vec<ClientResult>,
    events: Vec<Event>,
    extra: Vec<String>,
) -> RunSummary {
    let count = (options.duration.as_micros() as u64).div_ceil(BUCKET_US) as usize + 1;
    let mut buckets = vec![Bucket::default(); count];
    let mut failures: Vec<&Failure> = Vec::new();
    for result in &results {
        for record in &result.records {
            let bucket = &mut buckets[(u64::from(record.t_us) / BUCKET_US).min(count as u64 - 1) as usize];
            if record.outcome == Outcome::Ok {
                bucket.ok += 1;
                bucket.latencies.push(record.lat_us);
                *bucket.pids.entry(record.pid).or_default() += 1;
            } else {
                *bucket.failures.entry(record.outcome).or_default() += 1;
            }
        }
        failures.extend(&result.failures);
    }
    failures.sort_by_key(|failure| failure.t_us);
    for bucket in &mut buckets {
        bucket.latencies.sort_unstable();
    }
    // The last bucket(s) past the duration are partial: not written.
    let full = (options.duration.as_micros() as u64 / BUCKET_US) as usize;
    buckets.truncate(full);

    let mut csv =
        String::from("t_s,responses,refused,reset,eof,timeout,non2xx,other,p50_ms,p99_ms,max_ms,pids\n");
    for (i, bucket) in buckets.iter().enumerate() {
        let failed = |class: Outcome| bucket.failures.get(&class).copied().unwrap_or(0);
        let pids: Vec<String> = bucket.pids.iter().map(|(pid, n)| format!("{pid}:{n}")).collect();
        csv.push_str(&format!(
            "{:.1},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{}\n",
            i as f64 * BUCKET_US as f64 / 1e6,
            bucket.ok,
            failed(Outcome::Refused),
            failed(Outcome::Reset),
            failed(Outcome::Eof),
            failed(Outcome::Timeout),
            failed(Outcome::Non2xx),
            failed(Outcome::Other),
            percentile(&bucket.latencies, 0.5) / 1e3,
            percentile(&bucket.latencies, 0.99) / 1e3,
            percentile(&bucket.latencies, 1.0) / 1e3,
            pids.join(";")
        ));
    }
    let write = |suffix: &str, text: &str| {
        let path = options.out.join(format!("{name}-{suffix}"));
        fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    };
    let buckets_path = write("buckets.csv", &csv);
    let mut csv = String::from(
        "start_s,end_s,kind,ok,old_pid,new_pid,took_ms,startup_ms,frozen_ms,state_bytes,client_ms,detail\n",
    );
    for event in &events {
        csv.push_str(&format!(
            "{:.4},{:.4},{},{},{},{},{},{},{},{},{:.3},{}\n",
            event.start_s,
            event.end_s,
            event.kind,
            event.ok,
            event.old_pid,
            event.new_pid,
            event.took_ms,
            event.startup_ms,
            event.frozen_ms,
            event.state_bytes,
            (event.end_s - event.start_s) * 1e3,
            event.detail.replace([',', '\n'], " ")
        ));
    }
    let events_path = write("events.csv", &csv);
    let mut csv = String::from("t_s,thread,class,pid,detail\n");
    for failure in &failures {
        csv.push_str(&format!(
            "{:.6},{},{},{},{}\n",
            failure.t_us as f64 / 1e6,
            failure.thread,
            failure.outcome.name(),
            failure.pid,
            failure.detail
        ));
    }
    write("failures.csv", &csv);

    // Windows.
    let upgrades: Vec<&Event> = events.iter().filter(|e| e.kind == "upgrade").collect();
    let bucket_s = BUCKET_US as f64 / 1e6;
    let steady: Vec<usize> = (0..buckets.len())
        .filter(|&i| {
            let (from, to) = (i as f64 * bucket_s, (i + 1) as f64 * bucket_s);
            from >= WARM_UP_S
                && events
                    .iter()
                    .all(|e| to <= e.start_s - QUIET_S || from >= e.end_s.max(e.start_s) + QUIET_S)
        })
        .collect();
    let rate = |indices: &[usize]| {
        indices.iter().map(|&i| buckets[i].ok).sum::<u64>() as f64 / (indices.len() as f64 * bucket_s)
    };
    let p99 = |indices: &[usize]| {
        let mut all: Vec<u32> = indices.iter().flat_map(|&i| buckets[i].latencies.iter().copied()).collect();
        all.sort_unstable();
        percentile(&all, 0.99) / 1e3
    };
    let steady_rps = rate(&steady);
    let windows: Vec<Vec<usize>> = upgrades
        .iter()
        .map(|e| {
            let first = ((e.start_s - HALF_WINDOW_S) / bucket_s).round().max(0.0) as usize;
            (first..(first + (2.0 * HALF_WINDOW_S / bucket_s).round() as usize).min(buckets.len())).collect()
        })
        .collect();
    let all_windows: Vec<usize> = windows.iter().flatten().copied().collect();
    let upgrade_rps = rate(&all_windows);
    let worst_window_rps = windows.iter().map(|w| rate(w)).fold(f64::INFINITY, f64::min);
    let worst_bucket = all_windows.iter().map(|&i| buckets[i].ok).min().unwrap_or(0);

    let ok: u64 = buckets.iter().map(|b| b.ok).sum::<u64>();
    let ok_all: u64 = results.iter().map(|r| r.acked).sum();
    let failed = failures.len() as u64;
    let ms =
        |pick: fn(&Event) -> f64| upgrades.iter().filter(|e| e.ok).map(|e| pick(e)).collect::<Vec<f64>>();
    let took = ms(|e| e.took_ms);
    let startup = ms(|e| e.startup_ms);
    let rest = ms(|e| e.took_ms - e.startup_ms);
    let frozen = ms(|e| e.frozen_ms);
    let client_ms = ms(|e| (e.end_s - e.start_s) * 1e3);
    let summary = RunSummary {
        steady_rps,
        upgrade_rps,
        worst_window_rps,
        ratio: upgrade_rps / steady_rps,
        ok: ok_all,
        failures: failed,
        upgrades: upgrades.iter().filter(|e| e.ok).count(),
        upgrades_failed: upgrades.iter().filter(|e| !e.ok).count(),
        took_ms: median(&took),
        startup_ms: median(&startup),
        rest_ms: median(&rest),
        frozen_ms: median(&frozen),
        client_ms: median(&client_ms),
        steady_p99_ms: p99(&steady),
        upgrade_p99_ms: p99(&all_windows),
    };

    println!("\n{name}: {} ok responses ({} in full buckets), {failed} failed", ok_all, ok);
    for class in FAILURE_CLASSES {
        let n = failures.iter().filter(|f| f.outcome == class).count();
        if n > 0 {
            println!("  {:<8} {n}", class.name());
        }
    }
    for failure in failures.iter().take(20) {
        println!(
            "  FAILED at {:.6} s, thread {}, {} (pid {}): {}",
            failure.t_us as f64 / 1e6,
            failure.thread,
            failure.outcome.name(),
            failure.pid,
            failure.detail
        );
    }
    println!(
        "  steady: {:.0} req/s over {} buckets (≥ {QUIET_S} s from any event, after {WARM_UP_S} s), p99 {:.2} ms",
        steady_rps,
        steady.len(),
        summary.steady_p99_ms
    );
    println!(
        "  during upgrades (trigger ± {HALF_WINDOW_S} s, {} windows): {:.0} req/s = {:.1}% of steady, p99 {:.2} ms; worst window {:.0} req/s ({:.1}%), worst 100 ms bucket {} responses ({:.1}% of steady)",
        windows.len(),
        upgrade_rps,
        100.0 * summary.ratio,
        summary.upgrade_p99_ms,
        worst_window_rps,
        100.0 * worst_window_rps / steady_rps,
        worst_bucket,
        100.0 * worst_bucket as f64 / (steady_rps * bucket_s)
    );
    if !took.is_empty() {
        println!(
            "  upgrades: {} ok, {} failed; medians: took {:.1} ms = start-up {:.1} ms + rest {:.1} ms (max rest {:.1} ms); frozen {:.1} ms (max {:.1}); admin request {:.1} ms",
            summary.upgrades,
            summary.upgrades_failed,
            summary.took_ms,
            summary.startup_ms,
            summary.rest_ms,
            max(&rest),
            summary.frozen_ms,
            max(&frozen),
            summary.client_ms
        );
    }
    let mut pids: BTreeSet<u32> = BTreeSet::new();
    for bucket in &buckets {
        pids.extend(bucket.pids.keys());
    }
    println!("  {} pids served responses", pids.len());
    if options.plan == Plan::State && options.nginx.is_none() {
        let mut size = 0u64;
        let mut per_size: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
        for event in &events {
            match event.kind.as_str() {
                "resize" => size = event.state_bytes,
                "upgrade" => per_size.entry(size).or_default().push(event),
                _ => {}
            }
        }
        for (size, ups) in per_size {
            let ok: Vec<&&Event> = ups.iter().filter(|e| e.ok).collect();
            let f = |pick: fn(&Event) -> f64| ok.iter().map(|e| pick(e)).collect::<Vec<f64>>();
            println!(
                "  blob state {} MiB: {} upgrades ok of {}; frozen median {:.0} ms max {:.0} ms; took median {:.0} ms max {:.0} ms; startup median {:.0} ms; state_bytes {:?}; failed: {:?}",
                size >> 20,
                ok.len(),
                ups.len(),
                median(&f(|e| e.frozen_ms)),
                max(&f(|e| e.frozen_ms)),
                median(&f(|e| e.took_ms)),
                max(&f(|e| e.took_ms)),
                median(&f(|e| e.startup_ms)),
                ok.first().map(|e| e.state_bytes),
                ups.iter().filter(|e| !e.ok).map(|e| e.detail.clone()).collect::<Vec<_>>()
            );
        }
    }
    for line in extra {
        println!("  {line}");
    }
    println!("  wrote {} and {}", buckets_path.display(), events_path.display());
    summary
}

/// One figure of a run.
type Pick = fn(&RunSummary) -> f64;

fn print_medians(summaries: &[RunSummary]) {
    let pick = |f: fn(&RunSummary) -> f64| -> (f64, String) {
        let values: Vec<f64> = summaries.iter().map(f).collect();
        let each: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
        (median(&values), each.join(", "))
    };
    println!("\n=== medians of {} runs (each run's value in brackets) ===", summaries.len());
    let rows: [(&str, Pick); 13] = [
        ("steady req/s", |s| s.steady_rps),
        ("req/s during upgrades", |s| s.upgrade_rps),
        ("during / steady (%)", |s| 100.0 * s.ratio),
        ("worst window req/s", |s| s.worst_window_rps),
        ("steady p99 (ms)", |s| s.steady_p99_ms),
        ("p99 during upgrades (ms)", |s| s.upgrade_p99_ms),
        ("ok responses", |s| s.ok as f64),
        ("failed requests", |s| s.failures as f64),
        ("upgrades ok", |s| s.upgrades as f64),
        ("took_ms (median)", |s| s.took_ms),
        ("startup_ms (median)", |s| s.startup_ms),
        ("took - startup (median ms)", |s| s.rest_ms),
        ("frozen_ms (median)", |s| s.frozen_ms),
    ];
    for (label, f) in rows {
        let (value, each) = pick(f);
        println!("  {label:<28} {value:>10.1}   [{each}]");
    }
    let failed: u64 = summaries.iter().map(|s| s.failures).sum();
    let upgrades_failed: usize = summaries.iter().map(|s| s.upgrades_failed).sum();
    println!("  total failed requests {failed}, failed upgrades {upgrades_failed}");
}
