//! End-to-end tests of the `hotswap` binary: each test writes a config into
//! a private folder, starts the real daemon on loopback (port 0), talks to
//! it over HTTP, its admin socket and the CLI, and stops it by its pid.

mod admin;
mod cli;
mod game;
mod handover;
mod http_front;
mod instances;
mod load;
mod policy;
mod public_limits;
mod reload;
mod restart;
mod saves;
mod state;
mod upgrade;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use hotswap_test_modules as modules;

/// A config for tests: `{listen}` and `{modules}` are filled in by `Daemon`.
pub const COUNTER_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
max_body = "4KiB"
shutdown_timeout = "5s"

[[module]]
name = "counter"
path = "modules/libcounter.so"
watch = true

[[route]]
method = "GET"
path = "/total"
module = "counter"
call = "get"
instance = "lobby"
"#;

/// A test's private folder: config, module files, state, admin socket.
#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A folder with `config` as hotswap.toml and counter v1 as modules/libcounter.so.
    pub fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        let setup = Setup { dir };
        setup.write_config(config);
        setup.install(modules::COUNTER_V1, "libcounter.so");
        setup
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config(&self) -> PathBuf {
        self.path("hotswap.toml")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config(), config).unwrap();
    }

    /// Copies a built module into modules/ (mode 0644), overwriting in place.
    pub fn install(&self, module: &str, name: &str) -> PathBuf {
        let to = self.path("modules").join(name);
        std::fs::copy(module, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        to
    }

    /// Starts the daemon and waits until it answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&[]).unwrap_or_else(|output| panic!("the daemon did not start:\n{output}"))
    }

    /// Starts the daemon with extra `serve` arguments; `Err` holds its log
    /// if it exited instead of serving.
    pub fn start_with(&self, args: &[&str]) -> Result<Daemon, String> {
        self.start_env(args, &[])
    }

    /// `start_with`, with extra environment variables.
    pub fn start_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Daemon, String> {
        let log = self.path("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_hotswap"))
            .arg("serve")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon::wait_ready(Daemon {
            child,
            socket: self.path("hotswap.sock"),
            log,
            public: None,
            successor: None,
        })
    }

    /// Runs the CLI against this setup's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hotswap"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// A running daemon, stopped (by its pid) when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    public: Option<SocketAddr>,
    /// The process that took over after an upgrade (not our child: the
    /// daemon started it), stopped by its pid like the first one.
    successor: Option<u32>,
}

impl Daemon {
    /// A daemon this test started by other means, once it answers.
    pub fn adopt(child: Child, setup: &Setup) -> Daemon {
        let (socket, log) = (setup.path("hotswap.sock"), setup.path("daemon.log"));
        let daemon = Daemon { child, socket, log, public: None, successor: None };
        Daemon::wait_ready(daemon).unwrap_or_else(|log| panic!("the daemon did not start:\n{log}"))
    }

    /// Waits until the daemon answers; `Err` holds its log if it exited instead.
    fn wait_ready(mut daemon: Daemon) -> Result<Daemon, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                return Err(format!("exit status {status}\n{}", daemon.log()));
            }
            if let Ok((200, body)) = daemon.admin("GET", "/v1/status", b"") {
                let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
                daemon.public = Some(status["public_addr"].as_str().unwrap().parse().unwrap());
                return Ok(daemon);
            }
            assert!(Instant::now() < deadline, "the daemon did not answer within 30 s:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn public(&self) -> SocketAddr {
        self.public.expect("started")
    }

    /// The pid of the process serving now.
    pub fn pid(&self) -> u32 {
        self.successor.unwrap_or(self.child.id())
    }

    /// Records that `pid` took over (after an upgrade) and reaps the old process.
    pub fn taken_over_by(&mut self, pid: u32) {
        match self.successor.replace(pid) {
            // Our own child: reap it.
            None => {
                let exited = wait_exit(&mut self.child, Duration::from_secs(30));
                assert!(exited.is_some(), "the old process did not exit after handing over:\n{}", self.log());
            }
            // A later generation is not our child: wait for it to be gone.
            Some(previous) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while is_running(previous) {
                    assert!(Instant::now() < deadline, "pid {previous} did not exit after handing over");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// SIGTERM, then waits for the exit (at most 20 s).
    pub fn stop(mut self) -> std::process::ExitStatus {
        assert!(self.successor.is_none(), "stop() reaps our own child; use stop_successor()");
        self.signal("TERM");
        let status = wait_exit(&mut self.child, Duration::from_secs(20));
        status.unwrap_or_else(|| panic!("the daemon did not exit within 20 s of SIGTERM:\n{}", self.log()))
    }

    /// One request over the public port (its own connection).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(self.public()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        send(&mut stream, method, path, body, &[]);
        let mut reader = BufReader::new(stream);
        read_response(&mut reader).unwrap()
    }

    /// `http` that expects 200 and returns the body as text.
    pub fn text(&self, method: &str, path: &str, body: &str) -> String {
        let (status, reply) = self.http(method, path, body.as_bytes());
        let reply = String::from_utf8(reply).unwrap();
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply
    }

    /// One request over the admin socket.
    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        send(&mut stream, method, path, body, &[]);
        read_response(&mut BufReader::new(stream))
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin("GET", "/v1/status", b"").unwrap();
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// The version `counter` runs, as its own `version` method says.
    pub fn version(&self) -> String {
        self.text("POST", "/call/counter/version?instance=probe", "")
    }

    /// Waits (at most 10 s) until `counter` runs `version`.
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
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while is_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_running(pid) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
            if wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Whether `pid` is a live process (a zombie waiting to be reaped is not).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Writes one HTTP/1.1 request (keep-alive unless a header says otherwise).
pub fn send(stream: &mut impl Write, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
}

/// Reads one response (status and body, by Content-Length).
pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    read_full(reader).map(|response| (response.status, response.body))
}

/// A response with its headers (names lowercase).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response with its headers.
pub fn read_full(reader: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in the headers",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().map_err(std::io::Error::other)?;
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Response { status, headers, body })
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Files in `dir` whose names start with `prefix`.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|name| name.starts_with(prefix));
    names.sort();
    names
}
