//! One served HTTP/1.1 connection that can stop at a request boundary and be
//! given back as its socket plus the bytes read ahead of that boundary, and
//! be served again from those parts: in this process, or in the next one
//! after an upgrade passed the socket (issue 10).
//!
//! Why not hyper's own `Connection::without_shutdown`: the daemon's
//! connections are `.with_upgrades()` (a `[[socket]]` path takes them over),
//! and `UpgradeableConnection` offers only `graceful_shutdown`, which
//! 1. shuts the socket's write side down when the connection ends (hyper
//!    calls `poll_shutdown` on its IO), so the socket could not go on; and
//! 2. disables keep-alive, so an answer still being computed goes out with
//!    `Connection: close` and a well-behaved client leaves.
//!
//! So: the IO wrapper [`ConnectionIo`] ignores the shutdown once we decided
//! to keep the socket, and `graceful_shutdown` is called only at a request
//! boundary, when no answer's head is still to be written (hyper adds
//! `Connection: close` only while writing a head). There hyper closes an idle
//! connection at once, its write buffer flushed, and
//! `UpgradeableConnection::into_parts` gives back the socket and the bytes
//! read but not parsed (the start of a pipelined next request).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hyper::Request;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::{HEADER_TIMEOUT, Response};

/// What the owner of a served connection wants from it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Go on serving requests.
    Serve,
    /// Answer the request in flight with `Connection: close`, then close
    /// (a shutdown, or an upgrade that forwards).
    Close,
    /// Answer the request in flight as usual (keep-alive), then give the
    /// socket back instead of reading the next request.
    Park,
}

/// How a served connection ended.
#[derive(Debug)]
pub enum Served<S> {
    /// Closed: by the client, an error, [`Ending::Close`], or an answer that
    /// said `Connection: close`.
    Closed,
    /// An HTTP upgrade took it over (a WebSocket session owns it now).
    Upgraded,
    /// Stopped at a request boundary and given back.
    Parked(Parked<S>),
}

/// A connection stopped between two requests: every answer it was due is
/// written; `read_ahead` holds the bytes the client sent after the last
/// request (none, or the start of the next one), to be read before the
/// socket's.
#[derive(Debug)]
pub struct Parked<S> {
    pub stream: S,
    pub read_ahead: Bytes,
}

/// Serves one connection with `handler` (the accept loop's builder: header
/// timeout, keep-alive, upgrades allowed), reading `read_ahead` before the
/// socket, until it ends or `ending` says otherwise. A fresh connection has
/// no read-ahead; a parked one is served again from its parts.
pub async fn serve_connection<S, H, HF>(
    stream: S,
    read_ahead: Bytes,
    handler: H,
    mut ending: watch::Receiver<Ending>,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Response> + Send + 'static,
{
    let shared = Arc::new(Shared::default());
    let io = ConnectionIo { stream, read_ahead, shared: shared.clone() };
    let answers = shared.clone();
    let service = service_fn(move |request| {
        let answering = Answering::new(answers.clone());
        let handler = handler.clone();
        async move {
            let response = handler(request).await;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _answering: answering }))
        }
    });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        // A `[[socket]]` path takes the connection over (`sockets/session.rs`).
        .with_upgrades();

    let mut wanted = Ending::Serve;
    let ended_alone = {
        let mut told = std::pin::pin!(ending.wait_for(|now| *now != Ending::Serve));
        std::future::poll_fn(|cx| {
            if wanted == Ending::Serve {
                match told.as_mut().poll(cx) {
                    Poll::Ready(Ok(now)) => wanted = *now,
                    // Nobody can tell it anything any more: finish.
                    Poll::Ready(Err(_)) => wanted = Ending::Close,
                    Poll::Pending => {}
                }
            }
            // Told to close: before hyper writes another answer's head, so
            // that answer says `Connection: close`.
            if wanted == Ending::Close {
                return Poll::Ready(None);
            }
            if let Poll::Ready(ended) = Pin::new(&mut connection).poll(cx) {
                return Poll::Ready(Some(ended));
            }
            // An answer is counted until hyper dropped its body, which it
            // does while polled above: a count of 0 seen here means every
            // answer's head is written, so keep-alive can be turned off
            // without a `Connection: close` reaching the client.
            match wanted {
                Ending::Serve | Ending::Close => Poll::Pending,
                Ending::Park if shared.answering.load(Ordering::Acquire) == 0 => Poll::Ready(None),
                Ending::Park => Poll::Pending,
            }
        })
        .await
    };
    if let Some(ended) = ended_alone {
        return closed_or_upgraded(ended, connection.into_parts().is_none());
    }
    if wanted == Ending::Park && !shared.wrote.load(Ordering::Acquire) {
        // No answer was ever written, so no request reached the handler:
        // hyper holds at most the start of the first one. It would not
        // close such a connection on `graceful_shutdown` (it waits for that
        // request and answers it with `Connection: close`), and there is
        // nothing to flush: take the parts now. (No parts means upgraded,
        // which takes an answer: not here.)
        return connection.into_parts().map_or(Served::Upgraded, |parts| Served::Parked(parked(parts)));
    }
    if wanted == Ending::Park {
        shared.keep_open.store(true, Ordering::Release);
    }
    Pin::new(&mut connection).graceful_shutdown();
    let ended = (&mut connection).await;
    match (wanted, ended, connection.into_parts()) {
        (Ending::Park, Ok(()), Some(parts)) => Served::Parked(parked(parts)),
        (_, ended, parts) => closed_or_upgraded(ended, parts.is_none()),
    }
}

fn closed_or_upgraded<S>(ended: hyper::Result<()>, upgraded: bool) -> Served<S> {
    match ended {
        Ok(()) if upgraded => Served::Upgraded,
        Ok(()) => Served::Closed,
        Err(err) => {
            tracing::debug!("connection ended: {err}");
            Served::Closed
        }
    }
}

/// The socket and what was read from it but not parsed: hyper's buffer,
/// then whatever of an earlier read-ahead hyper had not taken yet.
fn parked<S, Svc>(parts: http1::Parts<TokioIo<ConnectionIo<S>>, Svc>) -> Parked<S> {
    let (stream, rest) = parts.io.into_inner().into_parts();
    Parked { stream, read_ahead: read_ahead(parts.read_buf, rest) }
}

/// What a connection read and did not use, in order: hyper's buffer, then
/// what it had not given hyper yet (copied only when both hold bytes).
pub fn read_ahead(read_buf: Bytes, not_given: Bytes) -> Bytes {
    match (read_buf.is_empty(), not_given.is_empty()) {
        (_, true) => read_buf,
        (true, false) => not_given,
        (false, false) => [read_buf, not_given].concat().into(),
    }
}

/// What a connection's IO and its service share with the code serving it.
#[derive(Debug, Default)]
struct Shared {
    /// Requests whose answer hyper has not finished writing.
    answering: AtomicUsize,
    /// hyper tried to write to the socket (an answer, a `100 Continue`, an
    /// error page).
    wrote: AtomicBool,
    /// The socket is being parked: hyper's shutdown must leave it open.
    keep_open: AtomicBool,
}

/// Counts one request from the handler's call until hyper drops its answer's body.
struct Answering(Arc<Shared>);

impl Answering {
    fn new(shared: Arc<Shared>) -> Answering {
        shared.answering.fetch_add(1, Ordering::AcqRel);
        Answering(shared)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted while hyper writes it.
struct Tracked<B> {
    body: B,
    _answering: Answering,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket of a served connection: yields the bytes read ahead (by this
/// process before it parked the connection, or by the previous one) before
/// the socket's, and leaves the socket open when hyper ends a connection
/// that is being parked. A WebSocket session's `Upgraded` wraps this type
/// (`Upgraded::downcast::<TokioIo<ConnectionIo<S>>>`).
#[derive(Debug)]
pub struct ConnectionIo<S> {
    stream: S,
    read_ahead: Bytes,
    shared: Arc<Shared>,
}

impl<S> ConnectionIo<S> {
    /// The socket and the read-ahead bytes not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.stream, self.read_ahead)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnectionIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_ahead.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let take = self.read_ahead.len().min(buf.remaining());
        buf.put_slice(&self.read_ahead.split_to(take));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnectionIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.shared.wrote.store(true, Ordering::Release);
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.shared.wrote.store(true, Ordering::Release);
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.keep_open.load(Ordering::Acquire) {
            // hyper flushed its buffer before asking: everything is written.
            return Pin::new(&mut self.stream).poll_flush(cx);
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What the next process needs, besides the socket, to serve a parked
/// connection: the bytes read ahead. Encoded as a version byte, the length
/// (u32, little-endian) and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRecord {
    pub read_ahead: Bytes,
}

impl ParkedRecord {
    pub const VERSION: u8 = 1;

    pub fn to_bytes(&self) -> Vec<u8> {
        let length = u32::try_from(self.read_ahead.len()).expect("hyper's read buffer is far below 4 GiB");
        let mut bytes = Vec::with_capacity(5 + self.read_ahead.len());
        bytes.push(Self::VERSION);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&self.read_ahead);
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ParkedRecord, RecordError> {
        let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        if version != Self::VERSION {
            return Err(RecordError::Version { theirs: version, ours: Self::VERSION });
        }
        let (length, read_ahead) = rest
            .split_first_chunk::<4>()
            .ok_or(RecordError::Length { declared: None, actual: rest.len() })?;
        let declared = u32::from_le_bytes(*length);
        if declared as usize != read_ahead.len() {
            return Err(RecordError::Length { declared: Some(declared), actual: read_ahead.len() });
        }
        Ok(ParkedRecord { read_ahead: Bytes::copy_from_slice(read_ahead) })
    }
}

/// Why a parked connection's record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    Empty,
    Version {
        theirs: u8,
        ours: u8,
    },
    /// `declared` is `None` when the record ends inside the length itself.
    Length {
        declared: Option<u32>,
        actual: usize,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => f.write_str("the record of a parked HTTP connection is empty"),
            RecordError::Version { theirs, ours } => write!(
                f,
                "the record of a parked HTTP connection has version {theirs}, this process reads \
                 version {ours}; upgrade between builds that agree on it"
            ),
            RecordError::Length { declared: None, actual } => write!(
                f,
                "the record of a parked HTTP connection ends after {actual} byte(s) of its 4-byte \
                 length; it was cut short in transit"
            ),
            RecordError::Length { declared: Some(declared), actual } => write!(
                f,
                "the record of a parked HTTP connection declares {declared} read-ahead byte(s) but \
                 carries {actual}; it was cut short or padded in transit"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

#[cfg(test)]
mod tests;
