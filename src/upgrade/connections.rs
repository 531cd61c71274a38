//! Keep-alive HTTP connections of the public port move to an upgrade's new
//! process with their sockets (issue 10). After COMMIT the old process parks
//! each connection at a request boundary (`http::serve`, `http/parked.rs`)
//! and sends it as one CONNECTIONS frame: the socket attached (SCM_RIGHTS),
//! the bytes read ahead of the boundary as its record. CONNECTIONS_END says
//! every connection parked or closed. The new process serves each one like
//! an accepted connection, starting with those bytes.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hotswap_upgrade::frame::FrameError;
use hotswap_upgrade::pass;
use hyper::body::Bytes;

use super::{CONNECTIONS, CONNECTIONS_END};
use crate::http::parked::ParkedRecord;

/// A connection on its way between processes: its socket and the bytes
/// read ahead of its request boundary.
pub type Moving = (TcpStream, Bytes);

/// How long one frame may take to reach a new process that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// In the old process: the connections leaving for the new one.
#[derive(Debug, Default)]
pub struct Outgoing {
    moving: AtomicBool,
    sink: Mutex<Option<mpsc::Sender<Moving>>>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Outgoing {
    /// Whether the open connections move to the new process (so answers
    /// given here after the hand-over keep them alive).
    pub fn moving(&self) -> bool {
        self.moving.load(Ordering::Acquire)
    }

    /// At the commit, to a new process that takes connections: from now on
    /// parked connections go over `control`, until every one has parked or
    /// closed, or `deadline` passed.
    pub fn start(&self, control: UnixStream, deadline: Instant) -> io::Result<()> {
        let (sink, parked) = mpsc::channel();
        let sender = std::thread::Builder::new()
            .name("hotswap-move-connections".into())
            .spawn(move || send_all(control, &parked, deadline))?;
        *lock(&self.sink) = Some(sink);
        *lock(&self.sender) = Some(sender);
        self.moving.store(true, Ordering::Release);
        Ok(())
    }

    /// Where the public port puts its parked connections; taken once, so
    /// the channel ends when that server and its connections are done.
    pub fn take_sink(&self) -> Option<mpsc::Sender<Moving>> {
        lock(&self.sink).take()
    }

    /// Blocks until every parked connection was sent (or the deadline of
    /// [`Outgoing::start`] passed) and the new process was told so.
    pub fn wait_sent(&self) {
        if let Some(sender) = lock(&self.sender).take() {
            let _ = sender.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends each parked connection as it comes, then CONNECTIONS_END. Our
/// copy of each socket closes once sent; the new process holds its own.
fn send_all(control: UnixStream, parked: &mpsc::Receiver<Moving>, deadline: Instant) {
    let _ = control.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut channel = pass::Channel::from(control);
    let (mut sent, mut lost) = (0usize, 0usize);
    let mut failure = None;
    loop {
        let (stream, read_ahead) =
            match parked.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(moving) => moving,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!("connections still parking at the drain deadline are closed, not moved");
                    break;
                }
            };
        if failure.is_some() {
            lost += 1;
            continue;
        }
        let record = ParkedRecord { read_ahead }.to_bytes();
        match channel.write(CONNECTIONS, &record, &[stream.as_fd()]) {
            Ok(()) => sent += 1,
            Err(err) => {
                lost += 1;
                failure = Some(err);
            }
        }
    }
    if failure.is_none() {
        failure = channel.write(CONNECTIONS_END, &[], &[]).err();
    }
    match failure {
        None => tracing::info!("moved {sent} keep-alive connection(s) to the new process"),
        Some(err) => tracing::warn!(
            "moved {sent} keep-alive connection(s) to the new process; the control socket failed \
             ({err}), so {lost} more closed instead"
        ),
    }
}

/// In the new process, after the commit: takes the connections the old one
/// sends until CONNECTIONS_END (or until it goes away: an old process of an
/// earlier release sends none), giving each to `serve`.
pub fn receive_all(control: UnixStream, serve: impl Fn(Moving)) {
    let mut channel = pass::Channel::from(control);
    let mut taken = 0usize;
    loop {
        let pass::Received { frame, fds } = match channel.read() {
            Ok(received) => received,
            Err(FrameError::Closed) => break,
            Err(err) => {
                tracing::warn!("the control socket failed while connections moved here: {err}");
                break;
            }
        };
        match frame.kind {
            CONNECTIONS_END => break,
            CONNECTIONS => match ParkedRecord::from_bytes(&frame.payload) {
                Ok(record) if fds.len() == 1 => {
                    let socket = fds.into_iter().next().expect("one descriptor");
                    serve((TcpStream::from(socket), record.read_ahead));
                    taken += 1;
                }
                Ok(_) => tracing::warn!(
                    "a moved connection came with {} sockets instead of 1; closing them",
                    fds.len()
                ),
                Err(err) => tracing::warn!("{err}; closing that connection"),
            },
            other => tracing::warn!(
                "frame kind {other} arrived while connections moved here; ignoring it and its {} socket(s)",
                fds.len()
            ),
        }
    }
    if taken > 0 {
        tracing::info!("took over {taken} keep-alive connection(s) from the old process");
    }
}
