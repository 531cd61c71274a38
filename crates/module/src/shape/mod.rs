//! The shape of a state type: its structure as its `Deserialize` impl reads
//! it (struct fields in order and by name, enum variants by index and name,
//! the format of every value), stored in each typed snapshot beside the
//! payload.
//!
//! postcard, the snapshot codec, is positional: it writes no field names, no
//! type tags, and decodes a reordered or retyped struct into garbage without
//! an error. The shape is what lets a new version see that a snapshot was
//! written by a different layout and refuse it, naming the field
//! ([`compat`]), instead of misreading it.
//!
//! These types are this SDK's own, so the bytes on disk depend on nothing
//! but this file: every enum here is encoded by variant index, so variants
//! are only ever appended, never reordered or removed.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The methods that read a single value the same way in both of the
/// tracer's deserializers (`trace::Probe`, `fill::Filler`).
/// Numbers are made up as 1 so `NonZero` types accept them.
macro_rules! leaves {
    () => {
        leaves! {
            deserialize_bool => Bool, visit_bool(false);
            deserialize_i8 => I8, visit_i8(1);
            deserialize_i16 => I16, visit_i16(1);
            deserialize_i32 => I32, visit_i32(1);
            deserialize_i64 => I64, visit_i64(1);
            deserialize_i128 => I128, visit_i128(1);
            deserialize_u8 => U8, visit_u8(1);
            deserialize_u16 => U16, visit_u16(1);
            deserialize_u32 => U32, visit_u32(1);
            deserialize_u64 => U64, visit_u64(1);
            deserialize_u128 => U128, visit_u128(1);
            deserialize_f32 => F32, visit_f32(1.0);
            deserialize_f64 => F64, visit_f64(1.0);
            deserialize_char => Char, visit_char('a');
            deserialize_str => Str, visit_str("");
            deserialize_string => Str, visit_string(String::new());
            deserialize_bytes => Bytes, visit_bytes(&[]);
            deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
            deserialize_unit => Unit, visit_unit();
        }

        fn is_human_readable(&self) -> bool {
            false
        }

        fn deserialize_unit_struct<V: Visitor<'de>>(
            mut self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, $crate::shape::trace::TraceError> {
            self.record($crate::shape::container(name, $crate::shape::Body::Unit));
            visitor.visit_unit()
        }
    };
    ($($method:ident => $format:ident, $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, $crate::shape::trace::TraceError> {
            self.record($crate::shape::Format::$format);
            visitor.$visit($($value)?)
        }
    )*};
}

pub(crate) mod compat;
mod fill;
pub(crate) mod trace;

/// The format of one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum Format {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Option(Box<Format>),
    Seq(Box<Format>),
    Map(Box<Format>, Box<Format>),
    /// A tuple or a fixed-size array (serde reads `[T; N]` as a tuple).
    Tuple(Vec<Format>),
    /// A named type: a struct or an enum.
    Container(Box<Container>),
    /// A container that encloses this position, reached again: a recursive
    /// type. Its shape is the one recorded where it was first entered.
    Recursive(String),
}

/// Nesting of a stored shape beyond which it is refused: a snapshot is read
/// from disk or another process, and a shape nested a million deep would
/// overflow the stack while it is decoded (an abort, not a panic). State
/// types are nowhere near this deep.
const MAX_DEPTH: u32 = 200;

thread_local! {
    /// How deep the shape being decoded on this thread is. A `Cell<u32>`
    /// has no destructor, so it does not keep the library mapped.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Counts one level of nesting while it lives.
struct Level;

impl Level {
    fn enter<E: serde::de::Error>() -> Result<Level, E> {
        let depth = DEPTH.with(|depth| {
            depth.set(depth.get() + 1);
            depth.get()
        });
        let level = Level;
        if depth > MAX_DEPTH {
            return Err(E::custom(format_args!("the shape is nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(level)
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Format, D::Error> {
        let _level = Level::enter()?;
        FormatRepr::deserialize(deserializer)
    }
}

/// How `Format` is decoded, variant for variant; every nested `Format` goes
/// back through the depth check above.
#[derive(Deserialize)]
#[serde(remote = "Format")]
enum FormatRepr {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Option(Box<Format>),
    Seq(Box<Format>),
    Map(Box<Format>, Box<Format>),
    Tuple(Vec<Format>),
    Container(Box<Container>),
    Recursive(String),
}

/// A named type, as serde names it (the name without its module path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    Unit,
    Newtype(Format),
    Tuple(Vec<Format>),
    Struct(Vec<Field>),
    /// Variants in index order (postcard writes the index).
    Enum(Vec<Variant>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Variant {
    pub(crate) name: String,
    /// `None` only while tracing, for a variant not explored yet: a traced
    /// shape has every variant's body.
    pub(crate) body: Option<Body>,
}

fn container(name: &str, body: Body) -> Format {
    Format::Container(Box::new(Container { name: name.to_owned(), body }))
}

/// What a person calls the type in a message: its name for a container,
/// Rust-like spelling for the rest.
impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Format::Unit => "()",
            Format::Bool => "bool",
            Format::I8 => "i8",
            Format::I16 => "i16",
            Format::I32 => "i32",
            Format::I64 => "i64",
            Format::I128 => "i128",
            Format::U8 => "u8",
            Format::U16 => "u16",
            Format::U32 => "u32",
            Format::U64 => "u64",
            Format::U128 => "u128",
            Format::F32 => "f32",
            Format::F64 => "f64",
            Format::Char => "char",
            Format::Str => "String",
            Format::Bytes => "bytes",
            Format::Option(inner) => return write!(f, "Option<{inner}>"),
            Format::Seq(inner) => return write!(f, "Vec<{inner}>"),
            Format::Map(key, value) => return write!(f, "Map<{key}, {value}>"),
            Format::Tuple(items) => {
                f.write_str("(")?;
                for (at, item) in items.iter().enumerate() {
                    if at > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                return f.write_str(")");
            }
            Format::Container(container) => &container.name,
            Format::Recursive(name) => name,
        };
        f.write_str(name)
    }
}

impl Body {
    /// The kind of type, for a message about a changed kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Body::Unit => "a unit struct",
            Body::Newtype(_) => "a newtype struct",
            Body::Tuple(_) => "a tuple struct",
            Body::Struct(_) => "a struct",
            Body::Enum(_) => "an enum",
        }
    }
}
