//! The server side of a WebSocket connection, framed here over the raw
//! stream, so what was read but not yet used can be taken out and put back.
//!
//! A session used to be a `tokio_tungstenite::WebSocketStream` over hyper's
//! upgraded connection; neither gives back the bytes it read ahead or the
//! message it was assembling, so a connection could not move to another
//! process (issue 10) without losing them. Here the reader keeps its own
//! buffer and assembly state, and [`WireReader::park`] hands them out as a
//! [`ReadState`] that [`WireReader::resume`] takes back, in this process or
//! the next. tungstenite is used for what it exposes: the frame header parser
//! and the frame formatting.
//!
//! Reading follows RFC 6455 for a server: client frames must be masked and
//! carry no reserved bits (1002 otherwise), control frames are final and at
//! most 125 bytes, a text message is UTF-8 (1007 otherwise), and no frame
//! or message is larger than the limit (`server.max_body`, 1009 otherwise,
//! refused from the header, before its payload is read).
//!
//! Writing: whole frames are appended to a buffer and written out by
//! [`WireWriter::flush`]. The writer can be parked only when that buffer is
//! empty, so a stream handed over always stands between two frames.

use std::io::{self, Cursor};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

// What a session takes with it when an upgrade moves it (`moving.rs`).
pub mod park;
#[cfg(test)]
mod tests;

use park::ReadState;

/// Close codes of RFC 6455 section 7.4.1.
pub mod code {
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
}

/// How much the reader asks the socket for at least, per read.
const READ_CHUNK: usize = 8 * 1024;
/// A control frame's payload at most (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What the client sent: a whole message or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message, checked to be UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// The writer should answer with a pong carrying these bytes.
    Ping(Bytes),
    Pong(Bytes),
    /// The client closes: its code and reason, if it gave them.
    Close(Option<(u16, String)>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum WireError {
    /// The client broke the protocol: close with this code and reason.
    Protocol {
        code: u16,
        reason: String,
    },
    /// The connection ended without a close frame.
    Ended,
    Io(io::Error),
}

impl WireError {
    fn protocol(reason: impl Into<String>) -> WireError {
        WireError::Protocol { code: code::PROTOCOL, reason: reason.into() }
    }
}

/// A text or binary message whose later frames have not arrived yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub text: bool,
    pub bytes: BytesMut,
}

/// Reads messages from a client, one at a time. See the module docs.
#[derive(Debug)]
pub struct WireReader<R> {
    io: R,
    /// Read from the socket, not yet parsed: the start of a frame at most
    /// (whole frames are taken out as soon as they are complete).
    buffer: BytesMut,
    partial: Option<Partial>,
    max_message: usize,
}

impl<R: AsyncRead + Unpin> WireReader<R> {
    /// A reader of `io`, whose first bytes are `read_ahead` (what hyper read
    /// past the upgrade request). No frame or message may exceed `max_message`.
    #[cfg(test)]
    pub fn new(io: R, read_ahead: Bytes, max_message: usize) -> WireReader<R> {
        WireReader::resume(io, ReadState::read_ahead(&read_ahead), max_message)
    }

    /// A reader that goes on where a parked one stopped, on the same stream.
    pub fn resume(io: R, state: ReadState, max_message: usize) -> WireReader<R> {
        WireReader { io, buffer: state.unparsed, partial: state.partial, max_message }
    }

    /// The next message or control frame.
    ///
    /// Cancel-safe: it waits only in a socket read, and a frame leaves the
    /// buffer only once it is whole and handled in the same poll, so a
    /// dropped call loses nothing and the next call goes on from there.
    pub async fn next(&mut self) -> Result<Received, WireError> {
        loop {
            if let Some(received) = self.parse()? {
                return Ok(received);
            }
            // Room for the rest of a large frame grows with the buffer, so
            // a frame of n bytes takes O(log n) reallocations.
            self.buffer.reserve(READ_CHUNK.max(self.buffer.len().min(self.max_message)));
            match self.io.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(WireError::Ended),
                Ok(_) => {}
                Err(err) => return Err(WireError::Io(err)),
            }
        }
    }

    /// Takes the whole frames out of the buffer until one makes a message
    /// or a control frame to hand out; `None` if more bytes are needed.
    fn parse(&mut self) -> Result<Option<Received>, WireError> {
        loop {
            let mut cursor = Cursor::new(&self.buffer[..]);
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|err| WireError::protocol(format!("a bad frame header: {err}")))?;
            let Some((header, length)) = parsed else { return Ok(None) };
            let header_length = cursor.position() as usize;
            self.check(&header, length)?;
            // `check` bounded `length` by `max_message`, a usize.
            let length = length as usize;
            if self.buffer.len() < header_length + length {
                return Ok(None);
            }
            self.buffer.advance(header_length);
            let mut payload = self.buffer.split_to(length);
            if let Some(mask) = header.mask {
                unmask(&mut payload, mask);
            }
            if let Some(received) = self.take_frame(&header, payload)? {
                return Ok(Some(received));
            }
        }
    }

    /// Refuses a frame from its header alone, before its payload is read.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<(), WireError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WireError::protocol("a frame has reserved bits set, but no extension was agreed"));
        }
        if header.mask.is_none() {
            return Err(WireError::protocol(
                "a client frame is not masked; RFC 6455 asks clients to mask every frame",
            ));
        }
        let control = matches!(header.opcode, OpCode::Control(_));
        if control && (!header.is_final || length > MAX_CONTROL_PAYLOAD) {
            return Err(WireError::protocol(format!(
                "a control frame must be final and carry at most {MAX_CONTROL_PAYLOAD} bytes; this one \
                 is {}final with {length} bytes",
                if header.is_final { "" } else { "not " },
            )));
        }
        let so_far = self.partial.as_ref().map_or(0, |partial| partial.bytes.len()) as u64;
        let message = if control { length } else { so_far + length };
        if message > self.max_message as u64 {
            return Err(WireError::Protocol {
                code: code::TOO_BIG,
                reason: format!(
                    "a message of {message} bytes or more is over the limit of {} bytes (server.max_body)",
                    self.max_message
                ),
            });
        }
        Ok(())
    }

    /// Handles one whole, unmasked frame: a message when it completes one.
    fn take_frame(&mut self, header: &FrameHeader, payload: BytesMut) -> Result<Option<Received>, WireError> {
        let first = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Received::Ping(payload.freeze()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Received::Pong(payload.freeze()))),
            OpCode::Control(Control::Close) => {
                return close_of(payload).map(|close| Some(Received::Close(close)));
            }
            OpCode::Data(Data::Text) => Some(true),
            OpCode::Data(Data::Binary) => Some(false),
            OpCode::Data(Data::Continue) => None,
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                // FrameHeader::parse refuses these already.
                return Err(WireError::protocol(format!(
                    "a frame with the reserved opcode {:?}",
                    header.opcode
                )));
            }
        };
        let partial = match (first, self.partial.take()) {
            (None, Some(mut partial)) => {
                partial.bytes.unsplit(payload);
                partial
            }
            (None, None) => {
                return Err(WireError::protocol("a continuation frame came with no message to continue"));
            }
            (Some(_), Some(_)) => {
                return Err(WireError::protocol(
                    "a new message began before the fragmented one before it was finished",
                ));
            }
            (Some(text), None) => Partial { text, bytes: payload },
        };
        if !header.is_final {
            self.partial = Some(partial);
            return Ok(None);
        }
        let bytes = partial.bytes.freeze();
        if !partial.text {
            return Ok(Some(Received::Binary(bytes)));
        }
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Some(Received::Text(bytes))),
            Err(err) => Err(WireError::Protocol {
                code: code::INVALID_DATA,
                reason: format!("a text message is not UTF-8: {err}"),
            }),
        }
    }
}

/// The code and reason of a client's close frame.
fn close_of(payload: BytesMut) -> Result<Option<(u16, String)>, WireError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WireError::protocol("a close frame of one byte: a code takes two")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // 1004-1006 and 1015 are never sent; 1016-2999 are not assigned.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(WireError::protocol(format!(
                    "the close code {code} is not one an endpoint may send (1000-1003, 1007-1014, 3000-4999)"
                )));
            }
            match String::from_utf8(payload[2..].to_vec()) {
                Ok(reason) => Ok(Some((code, reason))),
                Err(err) => Err(WireError::Protocol {
                    code: code::INVALID_DATA,
                    reason: format!("a close reason is not UTF-8: {}", err.utf8_error()),
                }),
            }
        }
    }
}

/// Unmasks a client frame's payload in place (RFC 6455 section 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Writes whole frames to a client. See the module docs.
#[derive(Debug)]
pub struct WireWriter<W> {
    io: W,
    /// Whole frames, formatted; `out[..written]` already went out.
    out: Vec<u8>,
    written: usize,
}

impl<W: AsyncWrite + Unpin> WireWriter<W> {
    #[cfg(test)]
    pub fn new(io: W) -> WireWriter<W> {
        WireWriter { io, out: Vec::new(), written: 0 }
    }

    /// Appends `message` as one unmasked frame; [`WireWriter::flush`] sends it.
    pub fn queue(&mut self, message: Message) {
        let frame = match message {
            Message::Text(text) => Frame::message(text, OpCode::Data(Data::Text), true),
            Message::Binary(bytes) => Frame::message(bytes, OpCode::Data(Data::Binary), true),
            Message::Ping(bytes) => Frame::ping(bytes),
            Message::Pong(bytes) => Frame::pong(bytes),
            Message::Close(close) => Frame::close(close),
            Message::Frame(frame) => frame,
        };
        frame.format(&mut self.out).expect("writing to a Vec cannot fail");
    }

    /// Appends a close frame with `close`'s code and reason.
    pub fn queue_close(&mut self, close: CloseFrame) {
        self.queue(Message::Close(Some(close)));
    }

    /// Writes out everything queued.
    ///
    /// Cancel-safe: what a cancelled call wrote is remembered, and the next
    /// call goes on from there, so frames never interleave or repeat.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            let wrote = self.io.write(&self.out[self.written..]).await?;
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += wrote;
        }
        self.out.clear();
        self.written = 0;
        self.io.flush().await
    }

    /// Shuts the sending side of the stream (after a close frame went out).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}
