//! Frames on the upgrade control channel.
//!
//! ```text
//! "HSUP" | u16 protocol version | u16 kind | u32 payload length | payload
//! ```
//!
//! All integers little-endian. A frame whose magic or version differs, or
//! whose length passes [`MAX_PAYLOAD`], is refused before its payload is
//! read, so a peer of another version (or garbage) cannot make the reader
//! allocate without bound.
//!
//! Kind [`WITH_DESCRIPTORS`] is reserved: it wraps a frame that travels with
//! file descriptors ([`crate::pass`]), so [`write()`] refuses it.

use std::io::{self, Read, Write};

pub const MAGIC: [u8; 4] = *b"HSUP";
/// Version of the frame layout and of the meaning of its kinds.
pub const VERSION: u16 = 1;
/// The largest payload a frame may carry (one module's state travels in one frame).
pub const MAX_PAYLOAD: u32 = 1 << 30;

/// The kind of a frame that carries file descriptors: its payload is
/// `u32 descriptor count | u16 kind | payload` (see [`crate::pass`]).
pub const WITH_DESCRIPTORS: u16 = u16::MAX;

pub(crate) const HEADER: usize = 12;

/// One frame: what it is, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the channel between frames.
    Closed,
    BadMagic([u8; 4]),
    Version {
        theirs: u16,
        ours: u16,
    },
    TooLarge {
        length: u32,
        max: u32,
    },
    /// A frame arrived with another number of descriptors than it announced
    /// (a plain frame announces none). Those that arrived were closed.
    Descriptors {
        announced: u32,
        received: usize,
    },
    /// A frame announced more descriptors than one frame may carry.
    TooManyDescriptors {
        announced: u32,
        max: usize,
    },
    /// The kernel dropped descriptors sent with a frame (`MSG_CTRUNC`): they
    /// did not fit the receive buffer, or this process is at its open-file
    /// limit. Those that arrived were closed.
    DescriptorsTruncated {
        received: usize,
    },
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "the other process closed the control channel"),
            FrameError::BadMagic(found) => write!(f, "the control channel sent {found:02x?}, not a frame"),
            FrameError::Version { theirs, ours } => {
                write!(f, "the other process speaks upgrade protocol {theirs}, this one {ours}")
            }
            FrameError::TooLarge { length, max } => {
                write!(f, "a frame of {length} bytes is larger than the limit of {max}")
            }
            FrameError::Descriptors { announced, received } => write!(
                f,
                "a frame announced {announced} file descriptors but {received} arrived with it \
                 (those that arrived were closed)"
            ),
            FrameError::TooManyDescriptors { announced, max } => write!(
                f,
                "a frame announced {announced} file descriptors, more than the limit of {max} per frame"
            ),
            FrameError::DescriptorsTruncated { received } => write!(
                f,
                "the kernel dropped file descriptors sent with a frame: this process may be at its \
                 open-file limit (raise `ulimit -n`) or the other process sent more than 253 at once \
                 ({received} arrived and were closed)"
            ),
            FrameError::Io(err) => write!(f, "the control channel failed: {err}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        FrameError::Io(err)
    }
}

/// Writes one frame. `payload` must not be longer than [`MAX_PAYLOAD`], and
/// `kind` must not be [`WITH_DESCRIPTORS`].
pub fn write(out: &mut impl Write, kind: u16, payload: &[u8]) -> io::Result<()> {
    if kind == WITH_DESCRIPTORS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame kind {kind:#06x} is reserved for frames that carry file descriptors"),
        ));
    }
    out.write_all(&header(kind, payload.len())?)?;
    out.write_all(payload)?;
    out.flush()
}

/// The header of a frame of `kind` whose payload is `length` bytes long.
pub(crate) fn header(kind: u16, length: usize) -> io::Result<[u8; HEADER]> {
    let length = u32::try_from(length).ok().filter(|length| *length <= MAX_PAYLOAD).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a payload of {length} bytes is over the frame limit of {MAX_PAYLOAD}"),
        )
    })?;
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&kind.to_le_bytes());
    header[8..12].copy_from_slice(&length.to_le_bytes());
    Ok(header)
}

/// The kind and payload length a header announces, once its magic, version
/// and length are checked.
pub(crate) fn parse_header(header: &[u8; HEADER]) -> Result<(u16, u32), FrameError> {
    let magic: [u8; 4] = header[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(header[4..6].try_into().expect("2 bytes"));
    if version != VERSION {
        return Err(FrameError::Version { theirs: version, ours: VERSION });
    }
    let kind = u16::from_le_bytes(header[6..8].try_into().expect("2 bytes"));
    let length = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if length > MAX_PAYLOAD {
        return Err(FrameError::TooLarge { length, max: MAX_PAYLOAD });
    }
    Ok((kind, length))
}

/// Reads one frame.
pub fn read(input: &mut impl Read) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER];
    let mut filled = 0;
    while filled < HEADER {
        match input.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    let (kind, length) = parse_header(&header)?;
    // Grow as bytes arrive rather than trusting the length up front.
    let mut payload = Vec::with_capacity((length as usize).min(1 << 20));
    input.take(u64::from(length)).read_to_end(&mut payload)?;
    if payload.len() != length as usize {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Frame { kind, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut wire = Vec::new();
        write(&mut wire, 7, b"state").unwrap();
        write(&mut wire, 8, b"").unwrap();
        let mut input = &wire[..];
        assert_eq!(read(&mut input).unwrap(), Frame { kind: 7, payload: b"state".to_vec() });
        assert_eq!(read(&mut input).unwrap(), Frame { kind: 8, payload: vec![] });
        assert!(matches!(read(&mut input), Err(FrameError::Closed)));
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let mut wire = Vec::new();
        write(&mut wire, 1, b"x").unwrap();

        let mut other_version = wire.clone();
        other_version[4] = 9;
        let error = read(&mut &other_version[..]).unwrap_err();
        assert!(matches!(error, FrameError::Version { theirs: 9, ours: VERSION }), "{error}");
        assert!(error.to_string().contains("protocol 9, this one 1"));

        let mut garbage = wire.clone();
        garbage[0] = b'X';
        assert!(matches!(read(&mut &garbage[..]), Err(FrameError::BadMagic(_))));

        let mut huge = wire.clone();
        huge[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert!(matches!(read(&mut &huge[..]), Err(FrameError::TooLarge { .. })));

        let cut = &wire[..wire.len() - 1];
        assert!(matches!(read(&mut &cut[..]), Err(FrameError::Io(_))));
        let cut_header = &wire[..5];
        assert!(matches!(read(&mut &cut_header[..]), Err(FrameError::Io(_))));

        let error = write(&mut Vec::new(), WITH_DESCRIPTORS, b"x").unwrap_err();
        assert!(error.to_string().contains("reserved for frames that carry file descriptors"), "{error}");
    }
}
