//! What the attack tests of the hand-over share: a host that records its
//! hooks, the command that re-runs this test binary as the new process, and
//! the socket on which that process reports what it saw.
//!
//! Each test binary has a test named `new_side` that calls
//! [`new_side::run_if_asked`]: without [`NEW_SIDE`] in its environment it
//! returns at once; with it, it is the new process and plays that part.

// Each test binary uses a part of this module.
#![allow(dead_code)]

pub mod new_side;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotswap_upgrade::handover::{self, AfterCommit, Handover, Hello, Options, Sender, Upgraded};

/// Selects what the re-run test binary does as the new process.
pub const NEW_SIDE: &str = "HOTSWAP_UPGRADE_TEST_NEW_SIDE";
/// How long anything may take on a loaded machine before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The name of the inherited socket the new process reports on.
pub const REPORT: &str = "report";

/// A [`Handover`] that records each hook, in order, and does what the test
/// says at each step.
pub struct Recorder<'a> {
    pub events: Vec<String>,
    pub hello: Option<Hello>,
    pub spawned: Option<u32>,
    pub fail_freeze: Option<String>,
    pub fail_before_commit: Option<String>,
    #[allow(clippy::type_complexity)]
    pub state: Box<dyn FnMut(&mut Sender<'_>) -> Result<(), String> + 'a>,
    pub after: Box<dyn FnMut(&mut AfterCommit) + 'a>,
}

impl<'a> Recorder<'a> {
    pub fn new(state: impl FnMut(&mut Sender<'_>) -> Result<(), String> + 'a) -> Recorder<'a> {
        Recorder {
            events: Vec::new(),
            hello: None,
            spawned: None,
            fail_freeze: None,
            fail_before_commit: None,
            state: Box::new(state),
            after: Box::new(|_| {}),
        }
    }

    /// The hooks by name only, for comparing orders.
    pub fn steps(&self) -> Vec<&str> {
        self.events.iter().map(|event| event.split(' ').next().unwrap_or("")).collect()
    }

    /// The reasons `rolled_back` was called with.
    pub fn rollbacks(&self) -> Vec<&str> {
        self.events.iter().filter_map(|event| event.strip_prefix("rolled_back ")).collect()
    }
}

impl Handover for Recorder<'_> {
    fn spawned(&mut self, pid: u32) {
        self.spawned = Some(pid);
        self.events.push(format!("spawned {pid}"));
    }

    fn freeze(&mut self, hello: &Hello, deadline: Instant) -> Result<(), String> {
        self.events.push(format!("freeze {}", hello.pid));
        assert!(deadline > Instant::now(), "freeze was called past its deadline");
        self.hello = Some(hello.clone());
        self.fail_freeze.clone().map_or(Ok(()), Err)
    }

    fn send_state(&mut self, out: &mut Sender<'_>) -> Result<(), String> {
        self.events.push("send_state".to_owned());
        (self.state)(out)
    }

    fn before_commit(&mut self, new_pid: u32) -> Result<(), String> {
        self.events.push(format!("before_commit {new_pid}"));
        self.fail_before_commit.clone().map_or(Ok(()), Err)
    }

    fn committed(&mut self, mut after: AfterCommit) {
        self.events.push("committed".to_owned());
        (self.after)(&mut after);
    }

    fn rolled_back(&mut self, reason: &str) {
        self.events.push(format!("rolled_back {reason}"));
    }
}

/// One upgrade to this test binary re-run as the new process, playing
/// `behaviour`, with `listeners` and a report socket. Returns the outcome
/// and the new process's report (read to its end, so after its exit).
pub struct Run {
    pub outcome: Result<Upgraded, String>,
    pub report: String,
    /// The new process's stderr: its panic, if it had one.
    pub log: String,
}

pub fn upgrade(
    behaviour: &str,
    listeners: &[(&str, BorrowedFd<'_>)],
    host: &mut Recorder<'_>,
    options: &Options,
) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("stderr");
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "new_side", "--nocapture"])
        .env(NEW_SIDE, behaviour)
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).unwrap());
    let (mut report, theirs) = UnixStream::pair().unwrap();
    let mut lent = listeners.to_vec();
    lent.push((REPORT, theirs.as_fd()));
    let outcome = handover::upgrade(command, &lent, host, options);
    drop(lent);
    drop(theirs); // Now the report ends when the new process exits.
    report.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut text = String::new();
    let read = report.read_to_string(&mut text);
    let log = read_log(&log_path);
    if let Err(err) = read {
        panic!(
            "the new process's report did not end within {PATIENCE:?}: {err}\nso far: {text}\nstderr: {log}"
        );
    }
    Run { outcome, report: text, log }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| format!("(no log: {err})"))
}

/// Waits for a committed new process (which the library released) to exit,
/// and says how it ended. Call once its report ended: it is exiting.
pub fn reap(pid: u32) -> String {
    let mut status = 0;
    // SAFETY: waitpid only writes the exit status of this process's child
    // `pid` into `status`, a local that outlives the call.
    let got = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    assert_eq!(got, pid as libc::pid_t, "waitpid({pid}): {}", io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        format!("exit status: {}", libc::WEXITSTATUS(status))
    } else {
        format!("signal: {}", libc::WTERMSIG(status))
    }
}

/// Whether `pid` no longer runs: its /proc entry is gone, or it is a zombie.
pub fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}
