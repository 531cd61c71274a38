//! Parking: a reader hands out what it read but did not use, a writer
//! hands out its stream only between two frames, and the read state
//! travels as bytes (to another process, issue 10).

use bytes::BytesMut;

use super::{Partial, WireReader, WireWriter};
use crate::sockets::record;

/// What a parked reader had read but not handed out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    /// Bytes read from the socket and not yet parsed, in order: they come
    /// before anything still in the socket.
    pub unparsed: BytesMut,
    /// The fragmented message assembled so far.
    pub partial: Option<Partial>,
}

impl ReadState {
    /// The state of a reader that has parsed nothing yet: `read_ahead` (what
    /// hyper read past the upgrade request) comes first.
    pub fn read_ahead(read_ahead: &[u8]) -> ReadState {
        ReadState { unparsed: BytesMut::from(read_ahead), partial: None }
    }
}

impl<R> WireReader<R> {
    /// Stops reading: the stream and what was read from it but not handed out.
    pub fn park(self) -> (R, ReadState) {
        (self.io, ReadState { unparsed: self.buffer, partial: self.partial })
    }
}

impl<W> WireWriter<W> {
    /// The stream, and the bytes queued but not yet written (whole frames,
    /// the first perhaps begun: a client that stopped reading holds the
    /// writer inside a frame). Written first by a writer resumed from them,
    /// they go on exactly where this one stopped.
    pub fn park(self) -> (W, Vec<u8>) {
        let mut out = self.out;
        out.drain(..self.written);
        (self.io, out)
    }

    /// A writer that goes on where a parked one stopped: `unwritten` first.
    pub fn resume(io: W, unwritten: Vec<u8>) -> WireWriter<W> {
        WireWriter { io, out: unwritten, written: 0 }
    }
}

/// The version of [`ReadState::to_bytes`]'s layout.
const READ_STATE_VERSION: u8 = 1;

/// A [`ReadState`] that could not be read back.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadStateError(String);

impl std::fmt::Display for ReadStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read a WebSocket read state: {}", self.0)
    }
}

impl std::error::Error for ReadStateError {}

impl ReadState {
    /// Version byte, then the partial message (0 none, 1 text, 2 binary,
    /// and its length-prefixed bytes), then the unparsed bytes
    /// (length-prefixed). Lengths are u64, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let partial_length = self.partial.as_ref().map_or(0, |partial| 8 + partial.bytes.len());
        let mut out = Vec::with_capacity(2 + partial_length + 8 + self.unparsed.len());
        out.push(READ_STATE_VERSION);
        match &self.partial {
            None => out.push(0),
            Some(partial) => {
                out.push(if partial.text { 1 } else { 2 });
                record::put_bytes(&mut out, &partial.bytes);
            }
        }
        record::put_bytes(&mut out, &self.unparsed);
        out
    }

    /// Reads what [`ReadState::to_bytes`] wrote; refuses another version
    /// and anything cut short or with bytes left over.
    pub fn from_bytes(bytes: &[u8]) -> Result<ReadState, ReadStateError> {
        let mut rest = bytes;
        let version = record::take(&mut rest, 1, "the version byte").map_err(cut_short)?[0];
        if version != READ_STATE_VERSION {
            return Err(ReadStateError(format!(
                "it has layout version {version}, this build reads version {READ_STATE_VERSION}; \
                 hand over between builds that share it"
            )));
        }
        let partial = match record::take(&mut rest, 1, "the partial message's kind").map_err(cut_short)?[0] {
            0 => None,
            kind @ (1 | 2) => {
                let bytes = record::take_sized(&mut rest, "the partial message").map_err(cut_short)?;
                Some(Partial { text: kind == 1, bytes: BytesMut::from(bytes) })
            }
            other => {
                return Err(ReadStateError(format!(
                    "the partial message's kind is {other}; 0 (none), 1 (text) or 2 (binary) were expected"
                )));
            }
        };
        let unparsed =
            BytesMut::from(record::take_sized(&mut rest, "the unparsed bytes").map_err(cut_short)?);
        if !rest.is_empty() {
            return Err(ReadStateError(format!("{} bytes are left over after its end", rest.len())));
        }
        Ok(ReadState { unparsed, partial })
    }
}

/// What [`record`] says is wrong, said of the read state.
fn cut_short(error: String) -> ReadStateError {
    ReadStateError(format!("it {error}"))
}
