//! A `hotswap serve` process run in a private folder laid out as
//! [`crate::folder`] says, and the process that took over from it after an
//! upgrade.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::folder;
use crate::http;
use crate::process::{self, Ended};

/// How long a daemon may take to answer its admin socket after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeouts of one request: generous, so that a loaded machine does not
/// fail a test, and bounded, so that a daemon that hangs does.
const PUBLIC_READ_TIMEOUT: Duration = Duration::from_secs(20);
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon has to exit after SIGTERM before it is killed, when a
/// harness stops it without waiting for a verdict (on drop).
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running daemon, stopped by its pid when dropped (also when a test
/// panics): SIGTERM, then SIGKILL after 10 s.
#[derive(Debug)]
pub struct Daemon {
    /// The process this harness started.
    pub child: Child,
    /// Its admin socket (the same path for every later process).
    pub socket: PathBuf,
    /// Its stdout and stderr (every later process writes there too).
    pub log: PathBuf,
    /// Read from its status once it answers.
    public: Option<SocketAddr>,
    /// The process that took over after an upgrade (not our child: the
    /// daemon started it), stopped by its pid like the first one.
    successor: Option<u32>,
}

impl Daemon {
    /// Starts `binary serve --config <folder>/hotswap.toml ARGS` with `env`
    /// added, its output in `<folder>/daemon.log`, and waits until it
    /// answers. `Err` holds its log if it exited instead of serving.
    ///
    /// # Panics
    ///
    /// If it cannot be started, or neither answers nor exits within 30 s.
    pub fn start(
        binary: impl AsRef<Path>,
        folder: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let (binary, folder) = (binary.as_ref(), folder.as_ref());
        let log = std::fs::File::create(folder.join(folder::LOG)).expect("the daemon's log file");
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(folder.join(folder::CONFIG))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the daemon's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        Daemon::wait_ready(child, folder)
    }

    /// A daemon the caller started by other means in `folder`, once it
    /// answers.
    ///
    /// # Panics
    ///
    /// If it exits instead, or does not answer within 30 s.
    pub fn adopt(child: Child, folder: impl AsRef<Path>) -> Daemon {
        Daemon::wait_ready(child, folder).unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"))
    }

    /// Waits until `child` answers `GET /v1/status` on `folder`'s admin
    /// socket; `Err` holds its exit status and log if it exited instead.
    ///
    /// # Panics
    ///
    /// If it neither answers nor exits within 30 s.
    pub fn wait_ready(child: Child, folder: impl AsRef<Path>) -> Result<Daemon, String> {
        let folder = folder.as_ref();
        let (socket, log) = (folder.join(folder::ADMIN_SOCKET), folder.join(folder::LOG));
        // Made before it answers, so that it is stopped if this panics.
        let mut daemon = Daemon { child, socket, log, public: None, successor: None };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait().expect("the daemon's status") {
                return Err(format!("exit status {status}\n{}", daemon.log()));
            }
            if let Ok((200, body)) = daemon.admin("GET", "/v1/status", b"") {
                let status: serde_json::Value = serde_json::from_slice(&body).expect("the status is JSON");
                let public = status["public_addr"].as_str().expect("public_addr in the status");
                daemon.public = Some(public.parse().expect("public_addr is an address"));
                return Ok(daemon);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within {START_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The public port's address.
    pub fn public(&self) -> SocketAddr {
        self.public.expect("read when the daemon answered")
    }

    /// The pid of the process serving now.
    pub fn pid(&self) -> u32 {
        self.successor.unwrap_or(self.child.id())
    }

    /// Records that `pid` took over (after an upgrade) and waits for the
    /// process it replaced to exit (reaping it if it is our child).
    ///
    /// # Panics
    ///
    /// If the replaced process still runs 30 s later.
    pub fn taken_over_by(&mut self, pid: u32) {
        let within = Duration::from_secs(30);
        match self.successor.replace(pid) {
            None => {
                let exited = process::wait_exit(&mut self.child, within);
                assert!(exited.is_some(), "the old process did not exit after handing over:\n{}", self.log());
            }
            Some(previous) => {
                let gone = process::wait_gone(previous, within);
                assert!(gone.is_some(), "pid {previous} did not exit after handing over:\n{}", self.log());
            }
        }
    }

    /// Everything the daemon has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`HUP`, `USR2`, ...) to the process serving now.
    ///
    /// # Panics
    ///
    /// If `kill` fails.
    pub fn signal(&self, name: &str) {
        assert!(process::signal(self.pid(), name), "kill -{name} {}", self.pid());
    }

    /// SIGTERM to our own child, then waits for its exit (at most 20 s).
    ///
    /// # Panics
    ///
    /// After an upgrade (the serving process is not our child), or if it
    /// does not exit within 20 s (it is killed then).
    pub fn stop(mut self) -> ExitStatus {
        assert!(self.successor.is_none(), "stop() reaps our own child; after an upgrade, drop the Daemon");
        let within = Duration::from_secs(20);
        match process::terminate_child(&mut self.child, within) {
            Ended::AlreadyExited(Some(status)) | Ended::Exited { status: Some(status), .. } => status,
            ended => panic!("the daemon {ended}:\n{}", self.log()),
        }
    }

    /// SIGTERM to our own child, up to `within` for it to exit, then
    /// SIGKILL; says how it ended.
    pub fn terminate(&mut self, within: Duration) -> Ended {
        process::terminate_child(&mut self.child, within)
    }

    /// One request over the public port (its own connection, kept alive).
    ///
    /// # Panics
    ///
    /// If the connection fails or breaks before the whole response.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let stream = TcpStream::connect(self.public()).expect("connect to the public port");
        stream.set_read_timeout(Some(PUBLIC_READ_TIMEOUT)).expect("a read timeout");
        let response = http::exchange(&mut BufReader::new(stream), method, path, body, &[])
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        (response.status, response.body)
    }

    /// [`Daemon::http`] that expects 200 and returns the body as text.
    ///
    /// # Panics
    ///
    /// On another status, or a body that is not UTF-8.
    pub fn text(&self, method: &str, path: &str, body: &str) -> String {
        let (status, reply) = self.http(method, path, body.as_bytes());
        let reply = String::from_utf8(reply).expect("a text reply");
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply
    }

    /// One request over the admin socket (its own connection).
    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(ADMIN_READ_TIMEOUT))?;
        let response = http::exchange(&mut BufReader::new(stream), method, path, body, &[])?;
        Ok((response.status, response.body))
    }

    /// `GET /v1/status`.
    ///
    /// # Panics
    ///
    /// If it is not answered 200 with JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin("GET", "/v1/status", b"").expect("GET /v1/status");
        assert_eq!(code, 200, "GET /v1/status: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("the status is JSON")
    }

    /// Waits (at most 20 s) until `check` accepts the admin status, and
    /// returns that status; `what` names what is awaited, for the failure.
    pub fn wait_for_status(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what} not shown within 20 s: {status:#}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The version the `counter` test module runs, as its own `version`
    /// method says (asked on the instance `probe`).
    pub fn version(&self) -> String {
        self.text("POST", "/call/counter/version?instance=probe", "")
    }

    /// Waits (at most 10 s) until `counter` runs `version`.
    ///
    /// # Panics
    ///
    /// If it does not.
    pub fn wait_for_version(&self, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.version() != version {
            assert!(
                Instant::now() < deadline,
                "counter did not reach {version} within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.successor.take() {
            process::terminate_pid(pid, DROP_TIMEOUT);
        }
        process::terminate_child(&mut self.child, DROP_TIMEOUT);
    }
}
