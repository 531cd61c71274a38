//! The server under test: a fresh daemon per run in a private folder with
//! the room module behind a `[[socket]]`, the module swaps (v1 <-> v2
//! through the admin API), its process upgrades, its status and its
//! resident memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotswap_test_modules::{ROOM_V1, ROOM_V2};
use hotswap_test_support::process::{self, is_running, runs_binary};
use hotswap_test_support::{Daemon, folder};
use tempfile::TempDir;

/// A running daemon and the folder it runs in (removed when dropped, after
/// the daemon: fields drop in order).
pub struct Server {
    pub daemon: Daemon,
    /// The binary it was started from (and every upgrade re-executes).
    binary: PathBuf,
    versions: [PathBuf; 2],
    _dir: TempDir,
}

/// One swap: when it was asked for and answered (seconds from the load's
/// start), and whether it was answered 200.
#[derive(Debug, Clone)]
pub struct Swap {
    pub start_s: f64,
    pub end_s: f64,
    pub ok: bool,
    pub detail: String,
}

impl Server {
    /// Starts the daemon with room v1 at `/ws` (`?instance=room-K`), the
    /// socket's `tick` if given.
    pub fn start(daemon: &Path, tick: Option<&str>) -> Server {
        let binary = daemon.to_path_buf();
        let dir = folder::private_dir("hotswap-sessions-");
        let root = dir.path();
        for sub in ["modules", "versions"] {
            folder::make_private(&root.join(sub));
        }
        folder::install(ROOM_V1, root.join("modules/libroom.so"));
        folder::install(ROOM_V1, root.join("versions/room-1.so"));
        folder::install(ROOM_V2, root.join("versions/room-2.so"));
        let tick = tick.map(|t| format!("tick = \"{t}\"\n")).unwrap_or_default();
        let config = format!(
            "allowed_dirs = [\"versions\"]\n\n[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
             [admin]\nsocket = \"hotswap.sock\"\n\n[[module]]\nname = \"room\"\npath = \"modules/libroom.so\"\nwatch = false\n\n\
             [[socket]]\npath = \"/ws\"\nmodule = \"room\"\n{tick}"
        );
        fs::write(root.join(folder::CONFIG), config).expect("write the config");
        let daemon = Daemon::start(daemon, root, &[], &[])
            .unwrap_or_else(|log| panic!("the daemon exited before serving:\n{log}"));
        let versions = [root.join("versions/room-1.so"), root.join("versions/room-2.so")];
        Server { daemon, binary, versions, _dir: dir }
    }

    /// Swap number `n` (0-based): to v2 when `n` is even, back to v1 when odd.
    pub fn swap(&self, n: usize, at: Instant) -> Swap {
        let start_s = at.elapsed().as_secs_f64();
        let body = serde_json::json!({ "path": self.versions[(n + 1) % 2] }).to_string();
        let answer = self.daemon.admin("POST", "/v1/modules/room/load", body.as_bytes());
        let end_s = at.elapsed().as_secs_f64();
        match answer {
            Ok((200, _)) => Swap { start_s, end_s, ok: true, detail: String::new() },
            Ok((code, body)) => Swap {
                start_s,
                end_s,
                ok: false,
                detail: format!("{code} {}", String::from_utf8_lossy(&body)),
            },
            Err(err) => Swap { start_s, end_s, ok: false, detail: format!("admin request failed: {err}") },
        }
    }

    /// Runs `count` swaps, the first at `first` and then every `every`
    /// after the load's start `at` (each waits for the one before).
    pub fn swaps(&self, count: usize, first: Duration, every: Duration, at: Instant) -> Vec<Swap> {
        (0..count)
            .map(|n| {
                let when = at + first + every * n as u32;
                if let Some(wait) = when.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                self.swap(n, at)
            })
            .collect()
    }

    /// A process upgrade (`POST /v1/upgrade` on the admin socket, whose
    /// path every process keeps), then the wait (at most 30 s) until the
    /// old process is gone from `/proc`; times in seconds from `at`.
    pub fn upgrade(&self, at: Instant) -> Upgrade {
        let start_s = at.elapsed().as_secs_f64();
        let answer = self.daemon.admin("POST", "/v1/upgrade", b"");
        let end_s = at.elapsed().as_secs_f64();
        let mut upgrade = Upgrade { start_s, end_s, ..Upgrade::default() };
        match answer {
            Ok((200, body)) => {
                let done: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                upgrade.ok = true;
                upgrade.old_pid = done["old_pid"].as_u64().unwrap_or(0) as u32;
                upgrade.new_pid = done["new_pid"].as_u64().unwrap_or(0) as u32;
                upgrade.took_ms = done["took_ms"].as_f64().unwrap_or(f64::NAN);
                upgrade.frozen_ms = done["frozen_ms"].as_f64().unwrap_or(f64::NAN);
                upgrade.same_binary = runs_binary(upgrade.new_pid, &self.binary);
            }
            Ok((code, body)) => upgrade.detail = format!("{code} {}", String::from_utf8_lossy(&body)),
            Err(err) => upgrade.detail = format!("admin request failed: {err}"),
        }
        if upgrade.ok && upgrade.old_pid != 0 {
            // A zombie (the first process is our child, reaped later) is gone.
            upgrade.gone_s = process::wait_gone(upgrade.old_pid, Duration::from_secs(30))
                .map(|_| at.elapsed().as_secs_f64());
        }
        upgrade
    }

    /// Records the processes that took over in `upgrades` (in order), so
    /// that the last one is stopped with the server; an old process still
    /// running is stopped now by its pid (only if it runs our binary).
    pub fn taken_over(&mut self, upgrades: &[Upgrade]) -> Vec<String> {
        let mut notes = Vec::new();
        for upgrade in upgrades.iter().filter(|u| u.ok && u.new_pid != 0) {
            if is_running(upgrade.old_pid) {
                if runs_binary(upgrade.old_pid, &self.binary) {
                    let ended = process::terminate_pid(upgrade.old_pid, Duration::from_secs(10));
                    notes.push(format!("old pid {} still ran after the run: {ended}", upgrade.old_pid));
                } else {
                    notes.push(format!("old pid {} runs another binary: left alone", upgrade.old_pid));
                    continue;
                }
            }
            self.daemon.taken_over_by(upgrade.new_pid);
        }
        notes
    }

    /// `sessions` from `GET /v1/status`.
    pub fn sessions_status(&self) -> serde_json::Value {
        self.daemon.status()["sessions"].clone()
    }

    /// The daemon's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.daemon.pid())
    }

    /// Waits (at most 30 s) until the daemon counts `open` sessions.
    pub fn wait_open(&self, open: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.sessions_status()["open"].as_u64() == Some(open) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// One process upgrade: when it was asked for, answered and the old
/// process was gone (seconds from the load's start), and what the answer said.
#[derive(Debug, Clone, Default)]
pub struct Upgrade {
    pub start_s: f64,
    pub end_s: f64,
    /// `None`: the old process still ran 30 s after the answer (or the upgrade failed).
    pub gone_s: Option<f64>,
    pub ok: bool,
    pub old_pid: u32,
    pub new_pid: u32,
    pub took_ms: f64,
    pub frozen_ms: f64,
    /// Whether the new process runs the binary the run started.
    pub same_binary: bool,
    pub detail: String,
}

/// The resident memory (VmRSS) of process `pid`, in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) process `pid` has used, in seconds (0 if unknown).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after
    // its closing parenthesis): utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Measures the CPU time `pid` uses over the load window that starts at
/// `start` and lasts `duration`, on a thread of its own; join for seconds.
pub fn cpu_during(pid: u32, start: Instant, duration: Duration) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let before = cpu_seconds(pid);
        if let Some(wait) = (start + duration).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        cpu_seconds(pid) - before
    })
}

/// Order statistics in milliseconds: (p50, p99, max, count); NaN if empty.
pub fn percentiles(samples: &mut [f64]) -> (f64, f64, f64, usize) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, 0);
    }
    samples.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), samples[samples.len() - 1], samples.len())
}

/// The median of some values (NaN if none).
pub fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}
