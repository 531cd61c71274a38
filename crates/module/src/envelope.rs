//! The envelope around a typed module's snapshot: which layout wrote it,
//! with which codec, and the shape of the state type, so that a version
//! that reads it can tell a layout it knows from one it does not.
//!
//! ```text
//! magic    8 bytes  \x89 h o t s w p \n  (a raw snapshot is unlikely to start so)
//! format   u8       1: this layout of the envelope
//! codec    u8       1: postcard 1
//! layout   u32 LE   the module's declared layout number
//! shape    u32 LE length, then the shape (crate::shape, encoded with postcard)
//! payload  the rest: the state, encoded with the codec
//! ```
//!
//! A snapshot that does not start with the magic is *raw*: a module
//! without the typed layer wrote it, and only its bytes ([`Previous::state`])
//! can be read.
//!
//! What may change at one layout number is said on [`Previous::decode`].

use std::sync::{Arc, Mutex, PoisonError};

use postcard::ser_flavors::Flavor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shape::compat::{self, Mismatch};
use crate::shape::{Format, trace};
use crate::{ModuleError, Previous};

const MAGIC: [u8; 8] = *b"\x89hotswp\n";
const FORMAT_VERSION: u8 = 1;
const CODEC_POSTCARD: u8 = 1;
/// Magic, format, codec, layout, shape length.
const HEADER_LEN: usize = 8 + 1 + 1 + 4 + 4;

/// Why a snapshot could not be read as a type, or a state not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The snapshot has no envelope: a module without the typed layer wrote it.
    #[error(
        "the snapshot of {name} {version} is raw (its module does not use the typed layer), so it has no \
         layout or shape to decode by: read its bytes with `previous.state()`"
    )]
    Raw { name: String, version: String },

    /// The snapshot starts like an envelope but is cut short or inconsistent.
    #[error("the snapshot of {name} {version} has a damaged envelope: {problem}")]
    Damaged { name: String, version: String, problem: String },

    /// A newer SDK wrote the envelope, in a format or codec this one does not know.
    #[error(
        "the snapshot of {name} {version} has envelope format {format} with codec {codec}; this \
         hotswap-module {sdk} reads format {FORMAT_VERSION} with codec {CODEC_POSTCARD} (postcard 1): \
         build this version with the hotswap-module that {name} {version} was built with, or a newer one"
    )]
    Unsupported { name: String, version: String, format: u8, codec: u8, sdk: &'static str },

    /// The snapshot's shape cannot be read as the type asked for.
    #[error(
        "cannot read the snapshot of {name} {version} (layout {layout}) as `{target}`: {mismatch}; {fix}"
    )]
    Incompatible {
        name: String,
        version: String,
        layout: u32,
        target: String,
        mismatch: Box<Mismatch>,
        fix: String,
    },

    /// The shapes agree but the payload does not decode: a damaged snapshot.
    #[error("cannot decode the snapshot of {name} {version} (layout {layout}) as `{target}`: {problem}")]
    Undecodable { name: String, version: String, layout: u32, target: String, problem: String },

    /// The state type's shape cannot be traced from its `Deserialize` impl.
    #[error("cannot take the shape of the state type `{target}`: {problem}")]
    Untraceable { target: &'static str, problem: String },

    /// The state did not encode.
    #[error("cannot encode the state `{target}`: {problem}")]
    Unencodable { target: &'static str, problem: String },
}

/// A parsed envelope, borrowing the snapshot.
#[derive(Debug, Clone, Copy)]
struct Envelope<'a> {
    layout: u32,
    shape: &'a [u8],
    payload: &'a [u8],
}

/// What is wrong with bytes that start with the magic.
enum Damage {
    Problem(String),
    Unsupported { format: u8, codec: u8 },
}

/// The envelope of `bytes`, `None` for a raw snapshot.
fn parse(bytes: &[u8]) -> Result<Option<Envelope<'_>>, Damage> {
    if !bytes.starts_with(&MAGIC) {
        return Ok(None);
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(Damage::Problem(format!(
            "{} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    let (format, codec) = (header[8], header[9]);
    if (format, codec) != (FORMAT_VERSION, CODEC_POSTCARD) {
        return Err(Damage::Unsupported { format, codec });
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (layout, shape_len) = (word(10), word(14) as usize);
    let rest = &bytes[HEADER_LEN..];
    if shape_len > rest.len() {
        return Err(Damage::Problem(format!(
            "its shape is {shape_len} bytes long but only {} bytes follow the header",
            rest.len()
        )));
    }
    let (shape, payload) = rest.split_at(shape_len);
    Ok(Some(Envelope { layout, shape, payload }))
}

/// A state type's shape, traced once and kept encoded for every snapshot.
#[derive(Debug)]
struct TypeShape {
    format: Format,
    bytes: Vec<u8>,
    /// The root's name, for messages: `State`.
    name: String,
}

/// The shape of each state type of this module version, by type name.
///
/// A `static` inside a generic function is one for all its instances, so
/// the cache is keyed by `type_name` (a module has one state type, a few
/// more for migrations; the scan is short). It costs the encoded shape (a
/// few hundred bytes per type) per loaded module version, and a version's
/// statics are never freed: unloading the library does not run
/// destructors of statics, so each version loaded leaves this much behind.
/// No `thread_local!` here: one with a destructor keeps the library mapped.
static SHAPES: Mutex<Vec<(&'static str, Arc<TypeShape>)>> = Mutex::new(Vec::new());

fn shape_of<T: DeserializeOwned>() -> Result<Arc<TypeShape>, EnvelopeError> {
    let target = std::any::type_name::<T>();
    // A panic in a `Deserialize` impl while tracing leaves the list as it was.
    let mut shapes = SHAPES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, shape)) = shapes.iter().find(|(name, _)| *name == target) {
        return Ok(Arc::clone(shape));
    }
    let untraceable = |problem: String| EnvelopeError::Untraceable { target, problem };
    let format = trace::trace::<T>().map_err(|error| untraceable(error.to_string()))?;
    let bytes = postcard::to_allocvec(&format).map_err(|error| untraceable(error.to_string()))?;
    let name = match &format {
        Format::Container(container) => container.name.clone(),
        other => other.to_string(),
    };
    let shape = Arc::new(TypeShape { format, bytes, name });
    shapes.push((target, Arc::clone(&shape)));
    Ok(shape)
}

/// A postcard output that appends to a caller's `Vec`, so a snapshot is
/// written in one buffer with its header.
struct Append<'a>(&'a mut Vec<u8>);

impl Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `state`'s snapshot to `into`: envelope, shape, payload.
pub(crate) fn encode<T: Serialize + DeserializeOwned>(
    state: &T,
    layout: u32,
    into: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    let shape = shape_of::<T>()?;
    let shape_len = u32::try_from(shape.bytes.len()).map_err(|_| EnvelopeError::Untraceable {
        target: std::any::type_name::<T>(),
        problem: format!("its shape is {} bytes, more than an envelope holds", shape.bytes.len()),
    })?;
    let start = into.len();
    into.reserve(HEADER_LEN + shape.bytes.len());
    into.extend_from_slice(&MAGIC);
    into.extend_from_slice(&[FORMAT_VERSION, CODEC_POSTCARD]);
    into.extend_from_slice(&layout.to_le_bytes());
    into.extend_from_slice(&shape_len.to_le_bytes());
    into.extend_from_slice(&shape.bytes);
    postcard::serialize_with_flavor(state, Append(into)).map_err(|error| {
        into.truncate(start);
        EnvelopeError::Unencodable { target: std::any::type_name::<T>(), problem: error.to_string() }
    })
}

/// What to tell a person whose read was refused.
#[derive(Clone, Copy)]
enum Fix {
    /// The typed layer restored a snapshot of its own layout number.
    BumpLayout,
    /// A migration decoded an older layout.
    DeclareOldLayout,
}

impl Fix {
    fn advice(self, layout: u32, previous: &Previous<'_>) -> String {
        match self {
            Fix::BumpLayout => format!(
                "a layout change needs a new layout number: set `layout = {}` and read layout {layout} in \
                 `migrate`",
                layout.saturating_add(1)
            ),
            Fix::DeclareOldLayout => format!(
                "declare the type that `migrate` decodes exactly as {} {} declared its state",
                previous.name(),
                previous.version()
            ),
        }
    }
}

impl<'a> Previous<'a> {
    /// The layout number the previous version declared, if its snapshot has
    /// an envelope (it used the typed layer); `None` for a raw snapshot,
    /// whose bytes only [`Previous::state`] reads.
    pub fn layout(&self) -> Option<u32> {
        match parse(self.state) {
            Ok(Some(envelope)) => Some(envelope.layout),
            _ => None,
        }
    }

    /// The encoded state inside the envelope; the whole snapshot for a raw one.
    pub fn payload(&self) -> &'a [u8] {
        match parse(self.state) {
            Ok(Some(envelope)) => envelope.payload,
            _ => self.state,
        }
    }

    /// Decodes the previous version's state as `T`, after checking that the
    /// snapshot's shape can be read as `T`'s: a `T` declared differently
    /// from the state that was written is refused, naming the field, rather
    /// than misread.
    ///
    /// # When a snapshot can be read as a type
    ///
    /// The snapshot carries the shape of the state type that wrote it, and
    /// it must be readable as `T`:
    /// * a struct has the same fields, in the same order, with the same
    ///   names: none added, removed, renamed or moved;
    /// * every variant of a stored enum exists in `T`'s enum at the same
    ///   index, with the same name and the same shape inside (variants may
    ///   be appended, not removed or reordered);
    /// * every other format is the same: `u32` stays `u32`, `Vec<u16>` stays
    ///   `Vec<u16>`, a struct stays a struct. Type names do not matter, so a
    ///   migration may read the old layout into a struct named for it
    ///   (`LedgerV1`).
    ///
    /// Anything else is refused ([`EnvelopeError::Incompatible`]) with the
    /// first difference, its path and both sides ("field `Player.score` was
    /// u32, is now String"). The same rule holds when the typed layer
    /// restores a snapshot of its own layout number: a state type changed
    /// without a new layout number is refused, never misread.
    ///
    /// Also refused: a raw snapshot ([`EnvelopeError::Raw`]: read
    /// [`Previous::state`]) and a damaged one.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        let envelope = self.envelope()?.ok_or_else(|| EnvelopeError::Raw {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
        })?;
        self.decode_checked(envelope, Fix::DeclareOldLayout)
    }

    fn envelope(&self) -> Result<Option<Envelope<'a>>, EnvelopeError> {
        parse(self.state).map_err(|damage| {
            let (name, version) = (self.name.to_owned(), self.version.to_owned());
            match damage {
                Damage::Problem(problem) => EnvelopeError::Damaged { name, version, problem },
                Damage::Unsupported { format, codec } => EnvelopeError::Unsupported {
                    name,
                    version,
                    format,
                    codec,
                    sdk: env!("CARGO_PKG_VERSION"),
                },
            }
        })
    }

    fn decode_checked<T: DeserializeOwned>(
        &self,
        envelope: Envelope<'_>,
        fix: Fix,
    ) -> Result<T, EnvelopeError> {
        let wanted = shape_of::<T>()?;
        let layout = envelope.layout;
        let (name, version) = (self.name.to_owned(), self.version.to_owned());
        // Equal bytes are equal shapes: no need to decode the stored one.
        if envelope.shape != wanted.bytes.as_slice() {
            let stored: Format =
                postcard::from_bytes(envelope.shape).map_err(|error| EnvelopeError::Damaged {
                    name: name.clone(),
                    version: version.clone(),
                    problem: format!("its shape does not decode ({error})"),
                })?;
            compat::check(&stored, &wanted.format).map_err(|mismatch| EnvelopeError::Incompatible {
                name: name.clone(),
                version: version.clone(),
                layout,
                target: wanted.name.clone(),
                mismatch: Box::new(mismatch),
                fix: fix.advice(layout, self),
            })?;
        }
        let undecodable = |problem: String| EnvelopeError::Undecodable {
            name: name.clone(),
            version: version.clone(),
            layout,
            target: wanted.name.clone(),
            problem,
        };
        let (state, rest) = postcard::take_from_bytes::<T>(envelope.payload)
            .map_err(|error| undecodable(format!("{error} (the snapshot is damaged)")))?;
        // Bytes left over mean the payload was not written as this shape.
        if !rest.is_empty() {
            return Err(undecodable(format!("{} bytes are left over after the state", rest.len())));
        }
        Ok(state)
    }
}

/// Restores a typed module's state: fresh (`None`) is `T::default()`; a
/// snapshot of this `layout` is decoded after its shape is checked against
/// `T`'s; a snapshot of another layout, or a raw one, goes to `migrate`.
pub(crate) fn restore<T: DeserializeOwned + Default>(
    previous: Option<Previous<'_>>,
    layout: u32,
    migrate: impl FnOnce(Previous<'_>) -> Result<T, ModuleError>,
) -> Result<T, ModuleError> {
    let refuse = |error: EnvelopeError| ModuleError::new(error.to_string());
    let Some(previous) = previous else {
        // Traced now, so a state type that cannot be traced is refused when
        // the host loads the version (it starts a fresh instance to check),
        // not at its first snapshot.
        shape_of::<T>().map_err(refuse)?;
        return Ok(T::default());
    };
    match previous.envelope().map_err(refuse)? {
        Some(envelope) if envelope.layout == layout => {
            previous.decode_checked(envelope, Fix::BumpLayout).map_err(refuse)
        }
        _ => migrate(previous),
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
