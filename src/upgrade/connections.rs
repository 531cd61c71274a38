//! Keep-alive HTTP connections of the public port move to an upgrade's new
//! process with their sockets (issue 10). After COMMIT the old process parks
//! each connection at a request boundary (`http::serve`, `http/parked.rs`)
//! and sends it as one CONNECTIONS frame: the socket attached (SCM_RIGHTS),
//! the bytes read ahead of the boundary as its record. The library's end says
//! every connection parked or closed. The new process serves each one like
//! an accepted connection, starting with those bytes.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hotswap_upgrade::handover::AfterCommit;
use hotswap_upgrade::pass;
use hotswap_upgrade::takeover::Arrivals;
use hyper::body::Bytes;

use super::CONNECTIONS;
use crate::calls::lock;
use crate::http::parked::ParkedRecord;

/// A connection on its way between processes: its socket and the bytes
/// read ahead of its request boundary.
pub type Moving = (TcpStream, Bytes);

/// A socket that came from the old process, made a tokio stream of this
/// one's runtime (it arrives blocking, as every passed descriptor does).
pub fn into_tokio(stream: TcpStream) -> io::Result<tokio::net::TcpStream> {
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

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
    pub fn start(&self, control: AfterCommit, deadline: Instant) -> io::Result<()> {
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

/// Sends each parked connection as it comes, then the end. Our copy of
/// each socket closes once sent; the new process holds its own.
fn send_all(mut channel: AfterCommit, parked: &mpsc::Receiver<Moving>, deadline: Instant) {
    let _ = channel.set_write_timeout(WRITE_TIMEOUT);
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
        match channel.send(CONNECTIONS, &record, &[stream.as_fd()]) {
            Ok(()) => sent += 1,
            Err(err) => {
                lost += 1;
                failure = Some(err);
            }
        }
    }
    if failure.is_none() {
        failure = channel.finish().err();
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
/// sends until the end (or until it goes away: an old process of an
/// earlier release sends none), giving each to `serve`.
pub fn receive_all(mut arriving: Arrivals, serve: impl Fn(Moving)) {
    let mut taken = 0usize;
    loop {
        let pass::Received { frame, fds } = match arriving.receive() {
            Ok(Some(received)) => received,
            Ok(None) => break,
            Err(err) => {
                tracing::warn!("the control socket failed while connections moved here: {err}");
                break;
            }
        };
        match frame.kind {
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use super::*;

    /// A loopback connection: (the client's end, the server's end).
    fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (client, listener.accept().unwrap().0)
    }

    fn receive(control: UnixStream) -> Vec<Moving> {
        let taken = Mutex::new(Vec::new());
        receive_all(Arrivals::from(pass::Channel::from(control)), |moving| {
            taken.lock().unwrap().push(moving)
        });
        taken.into_inner().unwrap()
    }

    #[test]
    fn parked_connections_reach_the_new_process_with_their_read_ahead_then_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, server) = connection(&listener);
        let (old, new) = UnixStream::pair().unwrap();
        let outgoing = Outgoing::default();
        outgoing
            .start(AfterCommit::from(pass::Channel::from(old)), Instant::now() + Duration::from_secs(30))
            .unwrap();
        assert!(outgoing.moving());
        let sink = outgoing.take_sink().expect("a sink after start");
        assert!(outgoing.take_sink().is_none(), "taken once");
        sink.send((server, Bytes::from_static(b"GET / HT"))).unwrap();
        // The public port is done: the sender says that was all.
        drop(sink);
        outgoing.wait_sent();
        let mut taken = receive(new);
        assert_eq!(taken.len(), 1);
        let (mut moved, read_ahead) = taken.pop().unwrap();
        assert_eq!(read_ahead, Bytes::from_static(b"GET / HT"));
        moved.write_all(b"served by the new process").unwrap();
        drop(moved);
        let mut seen = String::new();
        client.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "served by the new process");
    }

    #[test]
    fn a_damaged_record_or_a_missing_socket_closes_that_connection_and_the_rest_move() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut damaged_client, damaged) = connection(&listener);
        let (mut good_client, good) = connection(&listener);
        let (old, new) = UnixStream::pair().unwrap();
        let mut channel = pass::Channel::from(old);
        let mut unknown_version = ParkedRecord { read_ahead: Bytes::new() }.to_bytes();
        unknown_version[0] = 99;
        channel.write(CONNECTIONS, &unknown_version, &[damaged.as_fd()]).unwrap();
        let record = ParkedRecord { read_ahead: Bytes::from_static(b"x") }.to_bytes();
        channel.write(CONNECTIONS, &record, &[]).unwrap();
        channel.write(CONNECTIONS, &record, &[good.as_fd()]).unwrap();
        channel.write(hotswap_upgrade::protocol::MOVED_END, &[], &[]).unwrap();
        drop((damaged, good));
        let mut taken = receive(new);
        assert_eq!(taken.len(), 1, "only the connection with a sound record and its socket");
        let (mut moved, read_ahead) = taken.pop().unwrap();
        assert_eq!(read_ahead, Bytes::from_static(b"x"));
        moved.write_all(b"ok").unwrap();
        let mut two = [0u8; 2];
        good_client.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ok");
        // Every copy of the damaged one's socket is closed: its client reads the end.
        assert_eq!(damaged_client.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn an_old_process_of_an_earlier_release_sends_no_connections() {
        let (old, new) = UnixStream::pair().unwrap();
        drop(old);
        assert!(receive(new).is_empty());
    }
}
