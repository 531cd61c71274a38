//! The comparison: nginx under the same load, with its binary upgrade
//! (USR2, WINCH, QUIT) where the daemon has its process upgrades.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hotswap_test_support::folder;
use hotswap_test_support::process::{has_children, is_running, read_pid, runs_binary, signal};

use crate::load::{call, drive};
use crate::options::{Options, Plan};
use crate::plan::{Action, Event, schedule};
use crate::report::{RunSummary, report};

/// How long nginx may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `nginx -v` says.
pub fn version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
        .unwrap_or_else(|err| format!("cannot run it: {err}"))
}

/// One run against nginx: a private prefix and config, the load with a
/// binary upgrade at each upgrade time of the load plan, then the master
/// that serves stopped.
pub fn run(options: &Options, nginx: &Path, name: &str) -> RunSummary {
    let nginx = fs::canonicalize(nginx).expect("the nginx binary");
    let dir = folder::private_dir("hotswap-nginx-");
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
        if let Some(master) = read_pid(&pid_file).filter(|&pid| is_running(pid))
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
        let event = upgrade(&pid_file, at);
        if event.ok {
            masters.lock().expect("masters").push(event.new_pid);
        }
        event
    };
    let (results, events) = drive(options, addr, &plan, run);
    let mut extra = Vec::new();
    let masters = masters.into_inner().expect("masters");
    match read_pid(&pid_file) {
        Some(current) if masters.contains(&current) && runs_binary(current, &nginx) => {
            signal(current, "QUIT");
            let asked = Instant::now();
            while is_running(current) && asked.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_running(current) {
                signal(current, "KILL");
                extra.push(format!("nginx master {current} did not quit within 15 s; killed"));
            } else {
                extra.push(format!("nginx master {current} quit (SIGQUIT) after {:.0?}", asked.elapsed()));
            }
        }
        other => extra.push(format!("pid file names {other:?}, not a master this run started ({masters:?})")),
    }
    for pid in &masters {
        if is_running(*pid) {
            extra.push(format!("WARNING: nginx master {pid} is still alive"));
        }
    }
    let _ = fs::copy(root.join("logs/error.log"), options.out.join(format!("{name}-error.log")));
    report(options, name, results, events, extra)
}

/// nginx's binary upgrade: USR2 to the master, wait for the new master and
/// its workers, WINCH and QUIT to the old master, wait until it has exited.
fn upgrade(pid_file: &Path, at: Instant) -> Event {
    let start_s = at.elapsed().as_secs_f64();
    let mut event = Event { start_s, kind: "upgrade".into(), ..Event::default() };
    let Some(old) = read_pid(pid_file) else {
        event.detail = "no pid file".into();
        event.end_s = at.elapsed().as_secs_f64();
        return event;
    };
    event.old_pid = old;
    signal(old, "USR2");
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
    signal(old, "WINCH");
    signal(old, "QUIT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_running(old) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    event.ok = !is_running(old);
    if !event.ok {
        event.detail = format!("old master {old} still alive 15 s after QUIT");
    }
    event.end_s = at.elapsed().as_secs_f64();
    event
}
