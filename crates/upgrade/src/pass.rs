//! A control channel that carries frames *and* file descriptors
//! (`SCM_RIGHTS`), so an upgrade can hand each open connection to the new
//! process together with a record of its user-space state.
//!
//! The frames are [`crate::frame`]'s. A frame without descriptors is written
//! byte for byte as [`frame::write`] writes it; a frame with descriptors is
//! wrapped in a frame of kind [`WITH_DESCRIPTORS`]:
//!
//! ```text
//! header(kind = WITH_DESCRIPTORS, length = 6 + n) | u32 descriptor count | u16 kind | payload (n bytes)
//! ```
//!
//! The descriptors ride on the first 18 bytes (header and envelope), at most
//! [`SCM_MAX_FD`] (253, the kernel's limit) per `sendmsg`; more go in
//! several messages, one byte each, which the reader does not see. One frame
//! carries at most [`MAX_DESCRIPTORS`]; `write` refuses more before sending
//! anything (send them in several frames).
//!
//! Guarantees, and the tests in `pass/tests.rs` that attack them:
//!
//! * A passed connection is the same socket: bytes its client sent before
//!   the pass are read by the receiver, none lost, and it keeps working —
//!   `a_passed_tcp_connection_keeps_its_unread_bytes`, and across a process
//!   boundary `a_connection_crosses_a_process_boundary`.
//! * Every read is a `recvmsg`, so no descriptor is silently dropped;
//!   received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) —
//!   `a_thousand_descriptors_travel_in_one_frame`.
//! * A frame whose descriptors differ from what it announced (fewer, more,
//!   or any with a plain frame) is [`FrameError::Descriptors`] naming both
//!   counts; descriptors the kernel had to drop (`MSG_CTRUNC`) are
//!   [`FrameError::DescriptorsTruncated`]; an announcement over the limit is
//!   [`FrameError::TooManyDescriptors`]. In each case the whole frame is read
//!   first (the channel stays at a frame boundary) and every descriptor that
//!   arrived is closed — `fewer_descriptors_than_announced_are_refused_and_closed`,
//!   `an_unannounced_descriptor_is_refused_and_closed`,
//!   `descriptors_the_kernel_truncated_are_refused_and_closed`,
//!   `an_announcement_over_the_limit_is_refused`.
//! * The peer closing between frames is [`FrameError::Closed`]; in the middle
//!   of one, an `UnexpectedEof` that says where, with what arrived closed —
//!   `the_peer_closing_mid_frame_is_a_clear_error`.
//! * Plain frames cross both ways between [`Channel`] and [`frame`], and the
//!   socket's read and write timeouts apply as they do to [`frame::read`] —
//!   `plain_frames_cross_between_channel_and_frame`, `a_read_timeout_still_ends_a_read`.
//! * `write` refuses a reserved kind or too many descriptors before sending a
//!   byte — `what_write_refuses_sends_nothing`.
//!
//! Like [`frame::read`], a read stopped by an I/O error or timeout in the
//! middle of a frame leaves the channel in that frame: give it up.
//! [`Channel`] reads exactly the bytes of one frame, never ahead, so
//! [`Channel::into_inner`] loses nothing.

mod ancillary;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub use ancillary::SCM_MAX_FD;

use crate::frame::{self, Frame, FrameError, HEADER, WITH_DESCRIPTORS};

/// The most descriptors one frame carries.
pub const MAX_DESCRIPTORS: usize = 4096;

/// Bytes after the header of a [`WITH_DESCRIPTORS`] frame: count and kind.
const ENVELOPE: usize = 6;
/// The bytes the descriptors ride on.
const PREFIX: usize = HEADER + ENVELOPE;
// Every message of descriptors but the last rides on one byte of the prefix.
const _: () = assert!(MAX_DESCRIPTORS.div_ceil(SCM_MAX_FD) <= PREFIX);

/// A frame and the descriptors that came with it.
#[derive(Debug)]
pub struct Received {
    pub frame: Frame,
    pub fds: Vec<OwnedFd>,
}

/// A Unix stream socket that carries frames with descriptors.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    /// Control-message buffer for one `recvmsg`, with room for
    /// [`SCM_MAX_FD`] descriptors (fewer in a test of truncation).
    control: Vec<usize>,
}

impl From<UnixStream> for Channel {
    fn from(stream: UnixStream) -> Self {
        Channel::with_room_for(stream, SCM_MAX_FD)
    }
}

impl Channel {
    fn with_room_for(stream: UnixStream, fds_per_read: usize) -> Self {
        Channel { stream, control: ancillary::control_buffer(fds_per_read) }
    }

    /// The socket, for its timeouts.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }

    /// The socket back. Nothing is lost: the channel never reads ahead.
    pub fn into_inner(self) -> UnixStream {
        self.stream
    }

    /// Writes one frame with `fds` attached (the caller keeps its copies).
    /// Without descriptors the bytes are exactly [`frame::write`]'s.
    pub fn write(&mut self, kind: u16, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.is_empty() {
            return frame::write(&mut self.stream, kind, payload);
        }
        if kind == WITH_DESCRIPTORS {
            return Err(invalid(format!(
                "frame kind {kind:#06x} is reserved for the envelope of frames that carry file descriptors"
            )));
        }
        if fds.len() > MAX_DESCRIPTORS {
            return Err(invalid(format!(
                "{} file descriptors in one frame, more than the limit of {MAX_DESCRIPTORS}: \
                 send them in several frames",
                fds.len()
            )));
        }
        let mut prefix = [0u8; PREFIX];
        prefix[..HEADER].copy_from_slice(&frame::header(WITH_DESCRIPTORS, ENVELOPE + payload.len())?);
        let count = u32::try_from(fds.len()).expect("at most MAX_DESCRIPTORS");
        prefix[HEADER..HEADER + 4].copy_from_slice(&count.to_le_bytes());
        prefix[HEADER + 4..].copy_from_slice(&kind.to_le_bytes());

        let messages = fds.len().div_ceil(SCM_MAX_FD);
        let mut sent = 0;
        for (index, chunk) in fds.chunks(SCM_MAX_FD).enumerate() {
            // One byte per message, the last takes the rest of the prefix.
            let end = if index + 1 == messages { PREFIX } else { sent + 1 };
            sent += ancillary::send(self.stream.as_fd(), &prefix[sent..end], chunk)?;
        }
        self.stream.write_all(&prefix[sent..])?;
        self.stream.write_all(payload)?;
        self.stream.flush()
    }

    /// Reads one frame and the descriptors that came with it.
    pub fn read(&mut self) -> Result<Received, FrameError> {
        let mut arriving = Arriving::default();
        let mut header = [0u8; HEADER];
        self.fill(&mut header, Part::Header, &mut arriving)?;
        let (kind, length) = frame::parse_header(&header)?;
        let (kind, announced, length) = if kind == WITH_DESCRIPTORS {
            let mut envelope = [0u8; ENVELOPE];
            let Some(length) = (length as usize).checked_sub(ENVELOPE) else {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a frame with file descriptors has {length} bytes, \
                         fewer than the {ENVELOPE} of its count and kind"
                    ),
                )));
            };
            self.fill(&mut envelope, Part::Envelope, &mut arriving)?;
            let announced = u32::from_le_bytes(envelope[..4].try_into().expect("4 bytes"));
            (u16::from_le_bytes(envelope[4..].try_into().expect("2 bytes")), announced, length)
        } else {
            (kind, 0, length as usize)
        };
        // Grow as bytes arrive rather than trusting the length up front.
        let mut payload = Vec::new();
        while payload.len() < length {
            let start = payload.len();
            payload.resize(length.min(start.max(1 << 16) * 2), 0);
            self.fill(&mut payload[start..], Part::Payload, &mut arriving)?;
        }
        let fds = arriving.check(announced)?;
        Ok(Received { frame: Frame { kind, payload }, fds })
    }

    /// Fills `buffer`, collecting descriptors on the way.
    fn fill(&mut self, buffer: &mut [u8], part: Part, arriving: &mut Arriving) -> Result<(), FrameError> {
        let mut filled = 0;
        while filled < buffer.len() {
            let before = arriving.fds.len();
            let arrived = ancillary::receive(
                self.stream.as_fd(),
                &mut buffer[filled..],
                &mut self.control,
                &mut arriving.fds,
            )?;
            arriving.took(before, arrived.truncated);
            if arrived.bytes == 0 {
                if filled == 0 && part == Part::Header {
                    return Err(FrameError::Closed);
                }
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the other process closed the control channel in the middle of a frame: \
                         {filled} of the {} bytes of its {} arrived",
                        buffer.len(),
                        part.name()
                    ),
                )));
            }
            filled += arrived.bytes;
        }
        Ok(())
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    Envelope,
    Payload,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Header => "header",
            Part::Envelope => "descriptor count and kind",
            Part::Payload => "payload",
        }
    }
}

/// The descriptors of the frame being read. At most [`MAX_DESCRIPTORS`] are
/// kept open (plus one message's worth); any beyond are counted and closed
/// at once, so a peer cannot fill this process's descriptor table.
#[derive(Debug, Default)]
struct Arriving {
    fds: Vec<OwnedFd>,
    received: usize,
    truncated: bool,
}

impl Arriving {
    /// Counts what one `recvmsg` added to `fds` (which held `before`).
    fn took(&mut self, before: usize, truncated: bool) {
        self.truncated |= truncated;
        self.received += self.fds.len() - before;
        self.fds.truncate(MAX_DESCRIPTORS);
    }

    /// The descriptors, if they are what the frame announced. Otherwise the
    /// error, and they are closed as `self` drops.
    fn check(self, announced: u32) -> Result<Vec<OwnedFd>, FrameError> {
        if self.truncated {
            return Err(FrameError::DescriptorsTruncated { received: self.received });
        }
        if announced as usize > MAX_DESCRIPTORS {
            return Err(FrameError::TooManyDescriptors { announced, max: MAX_DESCRIPTORS });
        }
        if self.received != announced as usize {
            return Err(FrameError::Descriptors { announced, received: self.received });
        }
        Ok(self.fds)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
