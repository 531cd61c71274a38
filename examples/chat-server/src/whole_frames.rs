//! The stream under each WebSocket session: hands tungstenite the HTTP
//! request head, then one whole frame at a time, and keeps every other byte
//! it read from the socket.
//!
//! Why: tokio-tungstenite reads ahead into a buffer of its own that cannot be
//! taken out, so bytes it had read could not move to a new process with the
//! connection. Given only whole frames, tungstenite has turned all it was
//! given into a message (or, inside a fragmented message, into fragments it
//! keeps: see [`WholeFrames::in_message`]) by the time it waits for more. So
//! between two messages tungstenite holds nothing, and
//! [`WholeFrames::read_ahead`] is exactly what the client sent that was not
//! processed: a frame cut in two by the upgrade, and whatever came after it.
//!
//! Writing, it takes every byte tungstenite writes at once, and keeps what
//! the socket did not take ([`WholeFrames::write_behind`]): so tungstenite
//! holds nothing of what it was given to send either. A session's writer
//! blocked on a client that does not read is let go by
//! [`WriteStop::stop`] (its flush returns), its unsent bytes left here to
//! move with the connection.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// How much is asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// The longest HTTP request head accepted for the handshake.
const MAX_HEAD: usize = 16 * 1024;

/// A frame over the server's limit, refused from its header: the session
/// closes with 1009.
#[derive(Debug)]
pub struct FrameTooBig {
    pub length: u64,
    pub max: usize,
}

impl std::fmt::Display for FrameTooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a frame of {} bytes is over this server's limit of {} bytes", self.length, self.max)
    }
}

impl std::error::Error for FrameTooBig {}

/// See the module docs.
#[derive(Debug)]
pub struct WholeFrames<S> {
    inner: S,
    /// Read from the socket, not yet handed to tungstenite.
    ahead: Vec<u8>,
    /// Bytes of the frame (or head) being handed that are still to hand.
    handing: usize,
    /// Still before the end of the handshake's request head.
    in_head: bool,
    /// A text or binary frame without FIN was handed, its last fragment not yet.
    in_message: bool,
    max_frame: usize,
    /// Written by tungstenite, not yet taken by the socket.
    behind: Vec<u8>,
    stop: Arc<WriteStop>,
}

/// Lets a flush waiting on the socket return, its bytes kept in
/// [`WholeFrames::write_behind`] (see the module docs).
#[derive(Debug, Default)]
pub struct WriteStop {
    stopped: AtomicBool,
    /// The task whose flush waits on the socket.
    flushing: AtomicWaker,
}

impl WriteStop {
    /// From now on a flush returns at once, whatever the socket did not take.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.flushing.wake();
    }

    /// Flushes write to the socket again (a parked session goes on here).
    pub fn go_on(&self) {
        self.stopped.store(false, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl<S> WholeFrames<S> {
    /// A connection just accepted: its HTTP upgrade request comes first.
    pub fn handshake(inner: S, max_frame: usize) -> Self {
        WholeFrames::new(inner, Vec::new(), Vec::new(), true, max_frame)
    }

    /// A WebSocket connection that goes on, with the bytes that were read
    /// from it and not processed (from [`WholeFrames::read_ahead`]), and
    /// those written to it and not sent (from [`WholeFrames::write_behind`]),
    /// which go out first.
    pub fn resume(inner: S, read_ahead: Vec<u8>, write_behind: Vec<u8>, max_frame: usize) -> Self {
        WholeFrames::new(inner, read_ahead, write_behind, false, max_frame)
    }

    fn new(inner: S, ahead: Vec<u8>, behind: Vec<u8>, in_head: bool, max_frame: usize) -> Self {
        let stop = Arc::default();
        WholeFrames { inner, ahead, handing: 0, in_head, in_message: false, max_frame, behind, stop }
    }

    /// Written (whole frames, or the rest of one) and not yet sent.
    pub fn write_behind(&self) -> &[u8] {
        &self.behind
    }

    /// What lets a flush waiting on this socket return.
    pub fn write_stop(&self) -> Arc<WriteStop> {
        self.stop.clone()
    }

    /// Whether tungstenite holds fragments of a message not yet complete.
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    /// Read from the socket and not yet handed over: between two messages
    /// (not [`in_message`](Self::in_message), tungstenite waiting for the
    /// next), all the client sent that was not processed.
    pub fn read_ahead(&self) -> &[u8] {
        &self.ahead
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many of the first bytes of `ahead` tungstenite may have next (a
    /// whole frame, or the request head); `None` until they all arrived.
    fn next_unit(&mut self) -> io::Result<Option<usize>> {
        if self.in_head {
            let end = self.ahead.windows(4).position(|bytes| bytes == b"\r\n\r\n");
            return match end {
                Some(end) => {
                    self.in_head = false;
                    Ok(Some(end + 4))
                }
                None if self.ahead.len() > MAX_HEAD => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the handshake's request head is over {MAX_HEAD} bytes"),
                )),
                None => Ok(None),
            };
        }
        let mut cursor = Cursor::new(&self.ahead[..]);
        let parsed =
            FrameHeader::parse(&mut cursor).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        let Some((header, length)) = parsed else { return Ok(None) };
        if length > self.max_frame as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                FrameTooBig { length, max: self.max_frame },
            ));
        }
        let total = cursor.position() as usize + length as usize;
        if self.ahead.len() < total {
            return Ok(None);
        }
        match header.opcode {
            OpCode::Data(Data::Continue) => self.in_message &= !header.is_final,
            OpCode::Data(_) => self.in_message = !header.is_final,
            OpCode::Control(_) => {}
        }
        Ok(Some(total))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WholeFrames<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.handing > 0 {
                let count = this.handing.min(buf.remaining());
                buf.put_slice(&this.ahead[..count]);
                this.ahead.drain(..count);
                this.handing -= count;
                return Poll::Ready(Ok(()));
            }
            if let Some(unit) = this.next_unit()? {
                this.handing = unit;
                continue;
            }
            let mut chunk = [0; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // The client went away (with a frame cut short, if any).
            }
            this.ahead.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WholeFrames<S> {
    /// Takes all of `buf`: what the socket does not take now waits behind.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut written = 0;
        if this.behind.is_empty()
            && !this.stop.stopped()
            && let Poll::Ready(result) = Pin::new(&mut this.inner).poll_write(cx, buf)
        {
            written = result?;
        }
        this.behind.extend_from_slice(&buf[written..]);
        Poll::Ready(Ok(buf.len()))
    }

    /// Sends what waits behind, unless stopped ([`WriteStop`]).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.behind.is_empty() {
            // Registered before the check: a stop after it wakes this task.
            this.stop.flushing.register(cx.waker());
            if this.stop.stopped() {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_write(cx, &this.behind))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                written => drop(this.behind.drain(..written)),
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
