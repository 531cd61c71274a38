//! `sd_notify`: tells systemd (or anything listening on `NOTIFY_SOCKET`)
//! what the service is doing, one datagram per message. Without
//! `NOTIFY_SOCKET` every call does nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> io::Result<Notifier> {
        let Some(address) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(Notifier { target: None }) };
        let address = address.to_string_lossy().into_owned();
        let address = match address.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(&address)?,
        };
        Ok(Notifier { target: Some((UnixDatagram::unbound()?, address)) })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `message` (newline-separated `KEY=value` lines), if enabled.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            Some((socket, address)) => socket.send_to_addr(message.as_bytes(), address).map(drop),
            None => Ok(()),
        }
    }

    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// An upgrade (systemd's reload) started.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// The service's main process is now `pid`, and it is ready.
    pub fn handed_over(&self, pid: u32) -> io::Result<()> {
        self.send(&format!("MAINPID={pid}\nREADY=1"))
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC` refers to.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap())),
        };
        notifier.ready().unwrap();
        notifier.handed_over(42).unwrap();
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"MAINPID=42\nREADY=1");
        notifier.reloading().unwrap();
        let n = listener.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        let notifier = Notifier { target: None };
        assert!(!notifier.is_enabled());
        notifier.ready().unwrap();
    }
}
