//! The comparison: the same room logic compiled into a plain tokio
//! WebSocket server (`room-server`, no hotswap layer, nothing to swap),
//! started as a process of its own like the daemon, stopped by its pid.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct PlainServer {
    child: Child,
    pub addr: SocketAddr,
}

impl PlainServer {
    /// Starts `room-server` (next to this binary) and reads its address.
    pub fn start() -> PlainServer {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("room-server")))
            .unwrap_or_else(|| PathBuf::from("room-server"));
        let mut child =
            Command::new(&binary).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap_or_else(|err| {
                panic!(
                    "start {}: {err} (build it: cargo build --release -p hotswap-bench --bin room-server)",
                    binary.display()
                )
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("its stdout is piped");
        BufReader::new(stdout).read_line(&mut line).expect("read room-server's address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("room-server printed {line:?}, not `listening on ADDR`"));
        PlainServer { child, addr }
    }

    /// Its resident memory (VmRSS), in KiB.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        crate::server::rss_kib(self.child.id())
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        // Our own child, by its pid (SIGKILL: it holds nothing to save).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
