//! The chat server under test: its binary on an ephemeral loopback port,
//! and blocking WebSocket clients of the `room` test module (see its hooks
//! in crates/test-modules/modules/room).

#![allow(dead_code)] // each test file uses its own part of this

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

/// Generous: the machine may be loaded; nothing here waits this long when it works.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The server, killed (by its own pid, and by the pid of the process that
/// took over from it) when dropped.
pub struct Server {
    child: Child,
    /// The process serving now: the child, or one an upgrade started.
    pub pid: u32,
    stdout: mpsc::Receiver<String>,
    pub address: String,
    /// The server's `loaded MODULE VERSION ..` line.
    pub loaded: String,
}

impl Server {
    pub fn start(module_file: &std::path::Path) -> Server {
        Server::start_with(module_file, &[])
    }

    /// Started with `env` added to its environment.
    pub fn start_with(module_file: &std::path::Path, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["room".as_ref(), module_file.as_os_str(), "0".as_ref()])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let (lines, stdout) = mpsc::channel();
        let pipe = BufReader::new(child.stdout.take().expect("piped stdout"));
        thread::spawn(move || pipe.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
        let pid = child.id();
        let mut server = Server { child, pid, stdout, address: String::new(), loaded: String::new() };
        server.loaded = server.line_starting("loaded ");
        let listening = server.line_starting("listening on ");
        server.address = listening.trim_start_matches("listening on ").to_owned();
        server
    }

    /// The next stdout line (of any of its processes) that starts with
    /// `prefix`, skipping others.
    pub fn line_starting(&self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.stdout.recv_timeout(left).unwrap_or_else(|_| panic!("no line {prefix:?} on stdout"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill has no memory preconditions; the pid is the server's,
        // which this test started (or which its process started by upgrading).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to the server (pid {pid})");
    }

    /// A new build (ROOM_V2) over the module's `file`, then SIGHUP: the
    /// server says it swapped 1.0.0 for 2.0.0.
    pub fn swap_to_v2(&self, file: &std::path::Path) {
        let staged = file.with_extension("so.new");
        std::fs::copy(hotswap_test_modules::ROOM_V2, &staged).expect("copy ROOM_V2");
        std::fs::rename(&staged, file).expect("replace the module file");
        self.signal(libc::SIGHUP);
        let swap = self.line_starting("swap");
        assert!(swap.starts_with("swapped room 1.0.0 -> 2.0.0"), "{swap}");
    }

    /// `kill -USR2`, then its `upgraded to pid N (moved K sessions)` line,
    /// the new process's `took over ..` line, and the old process gone.
    /// Returns K. The server is the new process from here on.
    pub fn upgrade(&mut self) -> usize {
        let old = self.pid;
        self.signal(libc::SIGUSR2);
        // The two processes print in either order.
        let (mut upgraded, mut took) = (None, None);
        while upgraded.is_none() || took.is_none() {
            let line = self.line_starting("");
            if line.starts_with("upgrade") {
                let parsed = parse_upgraded(&line).unwrap_or_else(|| panic!("not upgraded: {line}"));
                self.pid = parsed.0;
                upgraded = Some(parsed);
            } else if line.starts_with("took over from pid ") {
                took = Some(line);
            }
        }
        let (_, moved) = upgraded.expect("upgraded");
        assert_eq!(took.expect("took over"), format!("took over from pid {old}: {moved} sessions"));
        self.wait_gone(old);
        moved
    }

    /// Waits (bounded) until process `pid`, an earlier server, has exited.
    fn wait_gone(&mut self, pid: u32) {
        let deadline = Instant::now() + DEADLINE;
        if pid == self.child.id() {
            while self.child.try_wait().expect("wait for the old server").is_none() {
                assert!(Instant::now() < deadline, "the old server (pid {pid}) did not exit");
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        // Not our child: gone once /proc no longer lists it, or lists a zombie.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        {
            assert!(Instant::now() < deadline, "the old server (pid {pid}) did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many descriptors the serving process has open.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).expect("the server's /proc/PID/fd").count()
    }

    pub fn connect(&self, path_and_query: &str) -> WebSocket<TcpStream> {
        let tcp = TcpStream::connect(&self.address).expect("connect to the server");
        tcp.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        let url = format!("ws://{}/{path_and_query}", self.address);
        tungstenite::client(url, tcp).expect("WebSocket handshake").0
    }
}

/// `upgraded to pid N (moved K sessions)` as (N, K).
fn parse_upgraded(line: &str) -> Option<(u32, usize)> {
    let rest = line.strip_prefix("upgraded to pid ")?;
    let (pid, rest) = rest.split_once(" (moved ")?;
    Some((pid.parse().ok()?, rest.strip_suffix(" sessions)")?.parse().ok()?))
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.pid != self.child.id()
            && let Ok(pid) = libc::pid_t::try_from(self.pid)
        {
            // SAFETY: kill has no memory preconditions; the pid is the
            // process that took over from the server this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next text message; anything else (a close above all) fails the test.
pub fn next_text(socket: &mut WebSocket<TcpStream>) -> String {
    match socket.read().expect("the session stays open") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// One client: its session id (from the room's `joined ID`) and every
/// message it received, in order.
pub struct Client {
    pub socket: WebSocket<TcpStream>,
    pub id: u64,
    pub seen: Vec<String>,
}

impl Client {
    pub fn join(server: &Server, room: &str) -> Client {
        let mut socket = server.connect(room);
        let joined = next_text(&mut socket);
        let id = joined.strip_prefix("joined ").and_then(|id| id.parse().ok()).expect("`joined ID` first");
        Client { socket, id, seen: vec![joined] }
    }

    /// Sends `text` and reads up to the room's `ack SEQ` for it.
    pub fn say(&mut self, text: &str) -> u64 {
        self.socket.send(Message::text(text)).expect("send");
        self.read_ack()
    }

    /// Reads up to the next `ack SEQ`.
    pub fn read_ack(&mut self) -> u64 {
        loop {
            let message = next_text(&mut self.socket);
            let ack = message.strip_prefix("ack ").map(|seq| seq.parse().expect("ack SEQ"));
            self.seen.push(message);
            if let Some(seq) = ack {
                return seq;
            }
        }
    }

    /// Reads until the room's message number `last` arrived.
    pub fn read_through(&mut self, last: u64) {
        while !self.seen.iter().any(|message| numbered(message).is_some_and(|(_, seq, _)| seq == last)) {
            let message = next_text(&mut self.socket);
            self.seen.push(message);
        }
    }

    /// The room's numbers of the broadcasts it saw, in order.
    pub fn room_seqs(&self) -> Vec<u64> {
        self.seen.iter().filter_map(|m| numbered(m)).map(|(_, seq, _)| seq).collect()
    }

    /// Its own broadcasts, as the room numbered them: (seq, text).
    pub fn own(&self) -> Vec<(u64, &str)> {
        (self.seen.iter().filter_map(|m| numbered(m)))
            .filter(|(sender, _, _)| *sender == self.id)
            .map(|(_, seq, text)| (seq, text))
            .collect()
    }
}

/// A room broadcast `SENDER:SEQ:TEXT`.
pub fn numbered(message: &str) -> Option<(u64, u64, &str)> {
    let mut parts = message.splitn(3, ':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((sender, seq, parts.next()?))
}
