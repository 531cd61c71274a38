//! Processes by pid, read from `/proc` and signalled with `kill(1)`. A
//! harness only ever signals pids it started itself (or that a daemon it
//! started handed over to), never processes found by name.

use std::fmt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a wait for an exit looks again.
const POLL: Duration = Duration::from_millis(10);

/// Whether `pid` is a live process: it exists and is neither a zombie
/// waiting to be reaped (`Z`) nor dead (`X`).
pub fn is_running(pid: u32) -> bool {
    matches!(state(pid), Some(state) if state != 'Z' && state != 'X')
}

/// The state letter of `pid` in `/proc/<pid>/stat`, if it exists.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ...": comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is alive and runs `binary` (compared after resolving links).
pub fn runs_binary(pid: u32, binary: &Path) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    is_running(pid) && exe == std::fs::canonicalize(binary).unwrap_or_default()
}

/// Whether some process has `parent` as its parent (a master's workers).
pub fn has_children(parent: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ..."
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            .is_some_and(|ppid| ppid == parent)
    })
}

/// A pid written in a file (a pid file), if it holds one.
pub fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Sends signal `name` (`TERM`, `KILL`, `HUP`, ...) to `pid`; whether `kill`
/// succeeded.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

/// Waits up to `within` for our child to exit, and reaps it.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits up to `within` for `pid` (not necessarily our child) to be gone;
/// how long it took, or `None` if it still runs.
pub fn wait_gone(pid: u32, within: Duration) -> Option<Duration> {
    let asked = Instant::now();
    loop {
        if !is_running(pid) {
            return Some(asked.elapsed());
        }
        if asked.elapsed() >= within {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// How a process asked to stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It had exited before it was asked.
    AlreadyExited(Option<ExitStatus>),
    /// It exited this long after SIGTERM (with this status, for our child).
    Exited { status: Option<ExitStatus>, after: Duration },
    /// It still ran `within` after SIGTERM and got SIGKILL.
    Killed { within: Duration },
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::AlreadyExited(Some(status)) => write!(f, "had already exited ({status})"),
            Ended::AlreadyExited(None) => write!(f, "had already exited"),
            Ended::Exited { status: Some(status), after } => write!(f, "{status} after {after:.0?}"),
            Ended::Exited { status: None, after } => write!(f, "exited {after:.0?} after SIGTERM"),
            Ended::Killed { within } => {
                write!(f, "did not exit within {} s of SIGTERM; killed", within.as_secs())
            }
        }
    }
}

/// SIGTERM to our child, up to `within` for it to exit (reaped), then SIGKILL.
pub fn terminate_child(child: &mut Child, within: Duration) -> Ended {
    if let Ok(Some(status)) = child.try_wait() {
        return Ended::AlreadyExited(Some(status));
    }
    signal(child.id(), "TERM");
    let asked = Instant::now();
    match wait_exit(child, within) {
        Some(status) => Ended::Exited { status: Some(status), after: asked.elapsed() },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Ended::Killed { within }
        }
    }
}

/// SIGTERM to `pid` (a process that is not our child, such as the daemon
/// that took over after an upgrade), up to `within` for it to be gone, then
/// SIGKILL.
pub fn terminate_pid(pid: u32, within: Duration) -> Ended {
    if !is_running(pid) {
        return Ended::AlreadyExited(None);
    }
    signal(pid, "TERM");
    match wait_gone(pid, within) {
        Some(after) => Ended::Exited { status: None, after },
        None => {
            signal(pid, "KILL");
            Ended::Killed { within }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_deadline() {
        // One process that ignores TERM: the shell sets the trap and execs
        // sleep, which keeps the ignored signal (so nothing outlives the kill).
        let mut child = Command::new("sh").args(["-c", "trap '' TERM; exec sleep 30"]).spawn().unwrap();
        // Until the trap is set, a TERM would end it: wait for the signal to
        // show as ignored (bit 15 - 1 of SigIgn).
        let ignores_term = |pid: u32| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << 14) != 0)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ignores_term(child.id()) {
            assert!(Instant::now() < deadline, "sh never set its trap");
            std::thread::sleep(POLL);
        }
        let ended = terminate_child(&mut child, Duration::from_millis(300));
        assert_eq!(ended, Ended::Killed { within: Duration::from_millis(300) });
        assert!(!is_running(child.id()));
    }

    #[test]
    fn a_child_that_exits_on_sigterm_is_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(is_running(pid));
        let ended = terminate_child(&mut child, Duration::from_secs(20));
        let Ended::Exited { status: Some(status), .. } = ended else { panic!("sleep did not exit: {ended}") };
        assert!(!status.success(), "ended by the signal: {status}");
        assert!(!is_running(pid), "reaped, not a zombie");
        let again = terminate_child(&mut child, Duration::from_secs(1));
        assert_eq!(again, Ended::AlreadyExited(Some(status)), "no signal to a reaped pid");
    }
}
