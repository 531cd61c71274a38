//! The anchor of `upgrades`: nginx's binary upgrade in front of the same
//! rooms. nginx (on loopback, 2 workers) proxies the WebSocket upgrade of
//! `/ws` to `room-server` (the room in plain tokio, which keeps the rooms
//! and never restarts), and is upgraded where the daemon is: USR2 to the
//! master, the new master and its workers up, WINCH and QUIT to the old
//! master ([`hotswap_bench::nginx`]). The old workers stop accepting and
//! keep proxying the sessions they hold until those end, or until
//! `worker_shutdown_timeout` (unset by default: no limit) cuts them.
//!
//! The same clients, load and checks as the daemon's run; a session cut by
//! nginx (a dropped connection, no close frame: nginx does not speak
//! WebSocket) is counted and joins its room again through the new master.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hotswap_bench::nginx::{Config, Nginx};
use hotswap_test_support::process::{runs_binary, wait_gone};

use crate::Options;
use crate::clients;
use crate::plain::PlainServer;
use crate::server::Upgrade;
use crate::tally::{print_sessions_ended, tally};
use crate::upgrades::{UpgradeRun, count_closes};

/// The longest wait for an old master to exit, as the daemon's run waits
/// for its old process.
const GONE_TIMEOUT: Duration = Duration::from_secs(30);

/// The anchor's name in the output: nginx and its `worker_shutdown_timeout`.
pub fn name(shutdown_timeout: Option<Duration>) -> String {
    match shutdown_timeout {
        None => "nginx (worker_shutdown_timeout unset, the default)".into(),
        Some(t) => format!("nginx (worker_shutdown_timeout {}ms)", t.as_millis()),
    }
}

/// The proxy's settings: the WebSocket upgrade passed to the backend, and
/// read/send timeouts far longer than the run (the defaults, 60 s, would
/// cut an idle session, not ours).
fn config(backend: std::net::SocketAddr, shutdown_timeout: Option<Duration>) -> Config {
    Config {
        // Each session takes two connections (client and upstream); the
        // workers need not share them evenly.
        worker_connections: 8192,
        main: shutdown_timeout
            .map_or(String::new(), |t| format!("worker_shutdown_timeout {}ms;", t.as_millis())),
        server: format!(
            "    location /ws {{\n      proxy_pass http://{backend};\n      proxy_http_version 1.1;\n      \
             proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n      \
             proxy_read_timeout 1h;\n      proxy_send_timeout 1h;\n    }}"
        ),
    }
}

/// One run: room-server, nginx in front of it, the load of `broadcast`
/// with nginx's binary upgrade at the daemon's upgrade times: each at its
/// time or once the old master before is gone, but waiting for that no
/// longer than until the next one's time (nginx's answer to a USR2 while
/// an old master runs is part of what is measured); none after the stop.
pub fn run(options: &Options, binary: &Path, shutdown_timeout: Option<Duration>) -> UpgradeRun {
    let backend = PlainServer::start();
    let mut nginx = Nginx::start(binary, &config(backend.addr, shutdown_timeout));
    let load = options.rooms_load(true);
    let (start_tx, start_rx) = mpsc::channel::<Instant>();
    let ((start, mut upgrades), results) = std::thread::scope(|scope| {
        let nginx = &nginx;
        let upgrader = scope.spawn(move || {
            let Ok(start) = start_rx.recv() else { return (Instant::now(), Vec::new()) };
            let stop = start + options.duration;
            let at = |n: usize| start + options.first_upgrade + options.upgrade_every * n as u32;
            let mut upgrades = Vec::new();
            for n in 0..options.upgrades {
                if at(n).max(Instant::now()) >= stop {
                    let at_s = at(n).duration_since(start).as_secs_f64();
                    let detail = "not started: its time came after the load's stop".into();
                    upgrades.push(Upgrade { start_s: at_s, end_s: at_s, detail, ..Upgrade::default() });
                    continue;
                }
                if let Some(wait) = at(n).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let next = if n + 1 < options.upgrades { at(n + 1).min(stop) } else { stop };
                let gone_within = next.saturating_duration_since(Instant::now()).min(GONE_TIMEOUT);
                upgrades.push(upgrade(nginx, start, gone_within));
            }
            (start, upgrades)
        });
        let ready = || {
            // No status to ask: every handshake is done; give the joins a moment.
            std::thread::sleep(Duration::from_millis(1000));
        };
        let results = clients::run(nginx.addr, &load, ready, |start| {
            let _ = start_tx.send(start);
        });
        (upgrader.join().expect("the upgrade thread"), results)
    });
    let mut run = UpgradeRun::default();
    // The window of each upgrade: to its old master gone if that was before
    // the next upgrade (the sessions cut by worker_shutdown_timeout fall in
    // it), else to the new master serving.
    let windows: Vec<(f64, f64)> =
        upgrades.iter().map(|u| (u.start_s, u.gone_s.unwrap_or(u.end_s))).collect();
    // Old masters still running when the next upgrade (or the stop) came:
    // how long after that they went, now that the clients have closed.
    for (n, upgrade) in upgrades.iter_mut().enumerate().filter(|(_, u)| u.ok && u.gone_s.is_none()) {
        upgrade.gone_s = wait_gone(upgrade.old_pid, GONE_TIMEOUT).map(|_| start.elapsed().as_secs_f64());
        run.notes.push(format!(
            "upgrade {}: old master {} still ran at the next upgrade or the stop; {}",
            n + 1,
            upgrade.old_pid,
            upgrade.gone_s.map_or("still running 30 s after the clients closed".into(), |gone| {
                format!("gone at {gone:.1} s, once the clients had closed their sessions (load stopped at {:.1} s)", options.duration.as_secs_f64())
            })
        ));
    }
    tally(&mut run.sessions, &results, &windows, options);
    count_closes(&mut run, &results, &upgrades);
    print_sessions_ended(&results);
    run.notes.extend(nginx.stop());
    run.upgrades = upgrades;
    run
}

/// One binary upgrade, then the wait (`gone_within` at most) until the
/// old master is gone; times in seconds from `at`. It is "answered" when
/// the new master serves.
fn upgrade(nginx: &Nginx, at: Instant, gone_within: Duration) -> Upgrade {
    let start_s = at.elapsed().as_secs_f64();
    let mut upgrade = Upgrade { start_s, frozen_ms: f64::NAN, ..Upgrade::default() };
    match nginx.upgrade() {
        Err(why) => {
            upgrade.end_s = at.elapsed().as_secs_f64();
            upgrade.old_pid = nginx.master().unwrap_or(0);
            upgrade.detail = why;
        }
        Ok(done) => {
            upgrade.end_s = at.elapsed().as_secs_f64();
            upgrade.ok = true;
            upgrade.old_pid = done.old;
            upgrade.new_pid = done.new;
            upgrade.took_ms = done.took.as_secs_f64() * 1e3;
            upgrade.same_binary = runs_binary(done.new, nginx.binary());
            upgrade.gone_s = wait_gone(done.old, gone_within).map(|_| at.elapsed().as_secs_f64());
        }
    }
    upgrade
}
