//! The server under test: the hotswap daemon, its process upgrades and
//! module swaps through the admin API, and every process a run started
//! stopped at the end.

use std::fs;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hotswap_test_modules::{BLOB, COUNTER_V1, COUNTER_V2};
use hotswap_test_support::http::{self, CLOSE};
use hotswap_test_support::process::{self, is_running, runs_binary};
use hotswap_test_support::{Daemon, folder};

use crate::load::{IO_TIMEOUT, ROOMS, call, drive};
use crate::options::{Options, Plan};
use crate::plan::{Action, Event, schedule};
use crate::report::{RunSummary, report};

/// One run against the daemon: its folder and config, the load with the
/// plan's events, then the state check and every process stopped.
pub fn run(options: &Options, name: &str) -> RunSummary {
    let dir = folder::private_dir("hotswap-upgrade-");
    let root = dir.path();
    for sub in ["modules", "versions"] {
        folder::make_private(&root.join(sub));
    }
    folder::install(COUNTER_V1, root.join("modules/libcounter.so"));
    folder::install(COUNTER_V1, root.join("versions/counter-1.so"));
    folder::install(COUNTER_V2, root.join("versions/counter-2.so"));
    let mut config = String::from(
        "allowed_dirs = [\"versions\"]\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"hotswap.sock\"\n\n\
         [state]\ndir = \"state\"\n\n[[module]]\nname = \"counter\"\npath = \"modules/libcounter.so\"\nwatch = false\n",
    );
    if options.plan == Plan::State {
        folder::install(BLOB, root.join("modules/libblob.so"));
        config.push_str("\n[[module]]\nname = \"blob\"\npath = \"modules/libblob.so\"\nwatch = false\n");
    }
    fs::write(root.join(folder::CONFIG), config).expect("write the config");

    let mut daemon = Daemon::start(&options.daemon, root, &[], &[])
        .unwrap_or_else(|log| panic!("the daemon exited before serving:\n{log}"));
    let (addr, socket) = (daemon.public(), daemon.socket.clone());
    println!("daemon pid {} serving on {addr}, folder {}", daemon.pid(), root.display());
    let pids = Mutex::new(vec![daemon.pid()]);

    let plan = schedule(options.plan);
    let versions = [root.join("versions/counter-1.so"), root.join("versions/counter-2.so")];
    let run = |at: Instant, action: &Action| -> Event {
        match action {
            Action::Upgrade => {
                let event = upgrade(&socket, at);
                if event.ok {
                    pids.lock().expect("pids").push(event.new_pid);
                }
                event
            }
            Action::Swap(version) => swap(&socket, &versions[usize::from(*version) - 1], *version, at),
            Action::Resize(bytes) => blob_resize(addr, *bytes, at),
        }
    };
    let (results, events) = drive(options, addr, &plan, run);

    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let (mut extra, serving) = check_state(options, addr, &socket, acked);
    let pids = pids.into_inner().expect("pids");
    extra.extend(stop_processes(options, &mut daemon, serving, &pids));
    let _ = fs::copy(&daemon.log, options.out.join(format!("{name}-daemon.log")));
    report(options, name, results, events, extra)
}

/// Lines that say whether the rooms' totals add up to the acknowledged
/// adds, and what the status of the process that serves now says; and its
/// pid (0 if the status did not answer).
fn check_state(options: &Options, addr: SocketAddr, socket: &Path, acked: u64) -> (Vec<String>, u32) {
    // The totals, from the process that serves now.
    let mut total = 0u64;
    let mut room_errors = Vec::new();
    for room in 0..ROOMS {
        match call(addr, &format!("/call/counter/get?instance=room-{room}"), b"") {
            Ok((200, body, _)) => total += String::from_utf8_lossy(&body).trim().parse::<u64>().unwrap_or(0),
            other => room_errors.push(format!("room-{room}: {other:?}")),
        }
    }
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
    let status = admin(socket, "GET", "/v1/status", b"").ok().filter(|(code, _)| *code == 200);
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
    (extra, serving)
}

/// Waits for every replaced process to have exited (they drain for at most
/// server.shutdown_timeout, 10 s), then stops the serving one with SIGTERM;
/// lines that say how each ended.
fn stop_processes(options: &Options, daemon: &mut Daemon, serving: u32, pids: &[u32]) -> Vec<String> {
    let mut extra = Vec::new();
    let replaced: Vec<u32> = pids.iter().copied().filter(|&pid| pid != serving).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while replaced.iter().any(|&pid| is_running(pid)) && Instant::now() < deadline {
        let _ = daemon.child.try_wait();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = daemon.child.try_wait();
    let lingering: Vec<u32> = replaced.iter().copied().filter(|&pid| is_running(pid)).collect();
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
    let _ = daemon.child.wait();
    for pid in pids {
        if is_running(*pid) {
            extra.push(format!("WARNING: pid {pid} is still alive"));
        }
    }
    extra
}

fn upgrade(socket: &Path, at: Instant) -> Event {
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

fn swap(socket: &Path, file: &Path, version: u8, at: Instant) -> Event {
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
/// An upgrade with a large state can take a while: 120 s to answer.
fn admin(socket: &Path, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = http::exchange(&mut BufReader::new(stream), method, path, body, &[CLOSE])?;
    Ok((response.status, response.body))
}

/// SIGTERM to `pid` (after checking it runs `binary`), up to 15 s for it to
/// exit, then SIGKILL.
fn stop_pid(pid: u32, binary: &Path) -> String {
    if is_running(pid) && !runs_binary(pid, binary) {
        return format!("NOT stopped: it does not run {}", binary.display());
    }
    process::terminate_pid(pid, Duration::from_secs(15)).to_string()
}
