//! Traces the shape of a type from its `Deserialize` impl: a deserializer
//! that hands the impl made-up values and records what it asked for.
//!
//! One pass reads one value, so it sees one variant of each enum. Passes
//! repeat, each picking at every enum a variant not seen there yet (or one
//! whose inside is not fully seen), until every variant of every enum at
//! every position is known.
//!
//! A type that contains itself (through an `Option`, a `Vec`, a `Box` in an
//! enum) would be read forever: a container met again inside itself is
//! recorded as [`Format::Recursive`], and its value is made up without
//! recording (`fill::Filler`): `None`, empty sequences and maps, and the first
//! variant of each enum, which must therefore end the recursion (as `Nil`
//! does in `enum List { Nil, Cons(u32, Box<List>) }`).
//!
//! The tracer says it is not human-readable, as postcard does, so types that
//! serialize differently for people (addresses, times) are traced in the
//! form postcard writes.

use std::fmt;

use serde::de::value::U32Deserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::fill::{Filler, FillerSeq, FillerVariant};
use super::{Body, Field, Format, Variant, container};

/// Passes before giving up: each pass sees at least one new variant, so
/// this bounds the number of enum variants in a state type's tree.
const MAX_PASSES: usize = 4096;

/// Why a type's shape could not be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceError(pub(super) String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        TraceError(message.to_string())
    }
}

/// The shape of `T`, every enum variant explored.
pub(crate) fn trace<T: DeserializeOwned>() -> Result<Format, TraceError> {
    let mut known: Option<Format> = None;
    for _ in 0..MAX_PASSES {
        let mut tracer = Tracer { stack: Vec::new() };
        let mut fresh = Format::Unit;
        T::deserialize(Probe { tracer: &mut tracer, known: known.as_ref(), out: &mut fresh })?;
        let merged = match known.take() {
            None => fresh,
            Some(mut merged) => {
                merge(&mut merged, fresh);
                merged
            }
        };
        if complete(&merged) {
            return Ok(merged);
        }
        known = Some(merged);
    }
    Err(TraceError(format!("its enums have more than {MAX_PASSES} variants in all")))
}

/// A container being read, to notice when it is met again inside itself.
/// serde gives only the short name, so the member names are part of it:
/// two different types with one name and the same members are rare, and
/// mistaking one for the other only stops the trace early.
#[derive(PartialEq, Eq)]
struct Identity {
    name: &'static str,
    members: &'static [&'static str],
    kind: &'static str,
}

struct Tracer {
    stack: Vec<Identity>,
}

impl Tracer {
    fn enters(&self, identity: &Identity) -> bool {
        !self.stack.contains(identity)
    }

    /// Where the trace is, for an error: `State > Inner`.
    fn unsupported(&self, what: &str) -> TraceError {
        let place = self.stack.iter().map(|entry| entry.name).collect::<Vec<_>>().join(" > ");
        let place = if place.is_empty() { String::new() } else { format!(" (in `{place}`)") };
        TraceError(format!(
            "it uses {what}{place}, which the snapshot codec (postcard) cannot decode: \
             untagged or flattened types and self-describing values (like serde_json::Value) \
             need to be replaced by plain structs and enums"
        ))
    }
}

/// Reads one value at one position, recording its format into `out`.
/// `known` is what earlier passes recorded at this position.
struct Probe<'a> {
    tracer: &'a mut Tracer,
    known: Option<&'a Format>,
    out: &'a mut Format,
}

impl<'a> Probe<'a> {
    fn known_body(&self) -> Option<&'a Body> {
        match self.known {
            Some(Format::Container(container)) => Some(&container.body),
            _ => None,
        }
    }

    fn record(&mut self, format: Format) {
        *self.out = format;
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = TraceError;

    leaves!();

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(self.tracer.unsupported("`deserialize_any`"))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(self.tracer.unsupported("`deserialize_identifier`"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(self.tracer.unsupported("`deserialize_ignored_any`"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let known = match self.known {
            Some(Format::Option(inner)) => Some(&**inner),
            _ => None,
        };
        let mut inner = Format::Unit;
        let value = visitor.visit_some(Probe { tracer: self.tracer, known, out: &mut inner })?;
        *self.out = Format::Option(Box::new(inner));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let known = match self.known {
            Some(Format::Seq(inner)) => Some(&**inner),
            _ => None,
        };
        // One element: enough to learn its format.
        let mut element = [Format::Unit];
        let value = read_members(self.tracer, vec![known], &mut element, "a sequence", visitor)?;
        let [element] = element;
        *self.out = Format::Seq(Box::new(element));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let known = match self.known {
            Some(Format::Tuple(items)) => items.iter().map(Some).collect(),
            _ => Vec::new(),
        };
        let mut items = vec![Format::Unit; len];
        let value = read_members(self.tracer, known, &mut items, "a tuple", visitor)?;
        *self.out = Format::Tuple(items);
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let (known_key, known_value) = match self.known {
            Some(Format::Map(key, value)) => (Some(&**key), Some(&**value)),
            _ => (None, None),
        };
        let (mut key, mut value) = (Format::Unit, Format::Unit);
        let entry = OneEntry {
            tracer: self.tracer,
            known_key,
            known_value,
            key: &mut key,
            value: &mut value,
            given: false,
        };
        let map = visitor.visit_map(entry)?;
        *self.out = Format::Map(Box::new(key), Box::new(value));
        Ok(map)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let identity = Identity { name, members: &[], kind: "newtype" };
        if !self.tracer.enters(&identity) {
            *self.out = Format::Recursive(name.to_owned());
            return visitor.visit_newtype_struct(Filler { depth: 0, recursive: name });
        }
        let known = match self.known_body() {
            Some(Body::Newtype(inner)) => Some(inner),
            _ => None,
        };
        let mut inner = Format::Unit;
        self.tracer.stack.push(identity);
        let value =
            visitor.visit_newtype_struct(Probe { tracer: &mut *self.tracer, known, out: &mut inner })?;
        self.tracer.stack.pop();
        *self.out = container(name, Body::Newtype(inner));
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let identity = Identity { name, members: &[], kind: "tuple struct" };
        if !self.tracer.enters(&identity) {
            *self.out = Format::Recursive(name.to_owned());
            return visitor.visit_seq(FillerSeq { left: len, filler: Filler { depth: 0, recursive: name } });
        }
        let known = match self.known_body() {
            Some(Body::Tuple(items)) => items.iter().map(Some).collect(),
            _ => Vec::new(),
        };
        let mut items = vec![Format::Unit; len];
        self.tracer.stack.push(identity);
        let value = read_members(&mut *self.tracer, known, &mut items, name, visitor)?;
        self.tracer.stack.pop();
        *self.out = container(name, Body::Tuple(items));
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let identity = Identity { name, members: fields, kind: "struct" };
        if !self.tracer.enters(&identity) {
            *self.out = Format::Recursive(name.to_owned());
            let filler = Filler { depth: 0, recursive: name };
            return visitor.visit_seq(FillerSeq { left: fields.len(), filler });
        }
        let known = match self.known_body() {
            Some(Body::Struct(known)) => known.iter().map(|field| Some(&field.format)).collect(),
            _ => Vec::new(),
        };
        let mut formats = vec![Format::Unit; fields.len()];
        self.tracer.stack.push(identity);
        let value = read_members(&mut *self.tracer, known, &mut formats, name, visitor)?;
        self.tracer.stack.pop();
        let fields =
            fields.iter().zip(formats).map(|(name, format)| Field { name: (*name).to_owned(), format });
        *self.out = container(name, Body::Struct(fields.collect()));
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError(format!("enum `{name}` has no variants, so no value of it can exist")));
        }
        let identity = Identity { name, members: variants, kind: "enum" };
        if !self.tracer.enters(&identity) {
            *self.out = Format::Recursive(name.to_owned());
            return visitor.visit_enum(FillerVariant { filler: Filler { depth: 0, recursive: name } });
        }
        let known: &[Variant] = match self.known_body() {
            Some(Body::Enum(known)) => known,
            _ => &[],
        };
        let index = pick_variant(known, variants.len());
        let mut body = None;
        self.tracer.stack.push(identity);
        let choice = Choice {
            tracer: &mut *self.tracer,
            index,
            known: known.get(index).and_then(|variant| variant.body.as_ref()),
            out: &mut body,
        };
        let value = visitor.visit_enum(choice)?;
        self.tracer.stack.pop();
        let mut list: Vec<Variant> =
            variants.iter().map(|name| Variant { name: (*name).to_owned(), body: None }).collect();
        list[index].body = body;
        *self.out = container(name, Body::Enum(list));
        Ok(value)
    }
}

/// The variant to read at an enum this pass: the first not seen yet, else
/// the first whose inside is not fully seen, else the first.
fn pick_variant(known: &[Variant], count: usize) -> usize {
    let unseen = |at: &usize| known.get(*at).is_none_or(|variant| variant.body.is_none());
    let unfinished = |at: &usize| known[*at].body.as_ref().is_some_and(|body| !body_complete(body));
    (0..count).find(unseen).or_else(|| (0..count).find(unfinished)).unwrap_or(0)
}

/// Reads the members of a sequence, tuple or struct with `visitor`, each by a
/// probe writing into its slot. A `Deserialize` impl that reads fewer than
/// there are slots would leave formats unknown: that is an error.
fn read_members<'de, V: Visitor<'de>>(
    tracer: &mut Tracer,
    known: Vec<Option<&Format>>,
    slots: &mut [Format],
    owner: &str,
    visitor: V,
) -> Result<V::Value, TraceError> {
    let (len, mut read) = (slots.len(), 0);
    let value = visitor.visit_seq(Members { tracer, known, slots: slots.iter_mut(), read: &mut read })?;
    if read < len {
        return Err(TraceError(format!(
            "the `Deserialize` impl of `{owner}` read {read} of its {len} members, so the formats of the \
             others are unknown"
        )));
    }
    Ok(value)
}

struct Members<'a> {
    tracer: &'a mut Tracer,
    known: Vec<Option<&'a Format>>,
    slots: std::slice::IterMut<'a, Format>,
    read: &'a mut usize,
}

impl<'de> SeqAccess<'de> for Members<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        let Some(out) = self.slots.next() else { return Ok(None) };
        let known = self.known.get(*self.read).copied().flatten();
        *self.read += 1;
        seed.deserialize(Probe { tracer: &mut *self.tracer, known, out }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.slots.len())
    }
}

/// One entry of a map, read by probes.
struct OneEntry<'a> {
    tracer: &'a mut Tracer,
    known_key: Option<&'a Format>,
    known_value: Option<&'a Format>,
    key: &'a mut Format,
    value: &'a mut Format,
    given: bool,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = TraceError;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        if std::mem::replace(&mut self.given, true) {
            return Ok(None);
        }
        let probe = Probe { tracer: &mut *self.tracer, known: self.known_key, out: &mut *self.key };
        seed.deserialize(probe).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, TraceError> {
        seed.deserialize(Probe { tracer: &mut *self.tracer, known: self.known_value, out: &mut *self.value })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(!self.given))
    }
}

/// The variant a pass reads at an enum, recording its body.
struct Choice<'a> {
    tracer: &'a mut Tracer,
    index: usize,
    known: Option<&'a Body>,
    out: &'a mut Option<Body>,
}

impl<'de> EnumAccess<'de> for Choice<'_> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), TraceError> {
        // By index, as postcard reads it.
        let index =
            u32::try_from(self.index).map_err(|_| TraceError("an enum has too many variants".into()))?;
        let value = seed.deserialize(U32Deserializer::<TraceError>::new(index))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Choice<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.out = Some(Body::Unit);
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        let known = match self.known {
            Some(Body::Newtype(inner)) => Some(inner),
            _ => None,
        };
        let mut inner = Format::Unit;
        let value = seed.deserialize(Probe { tracer: self.tracer, known, out: &mut inner })?;
        *self.out = Some(Body::Newtype(inner));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let known = match self.known {
            Some(Body::Tuple(items)) => items.iter().map(Some).collect(),
            _ => Vec::new(),
        };
        let mut items = vec![Format::Unit; len];
        let value = read_members(self.tracer, known, &mut items, "a tuple variant", visitor)?;
        *self.out = Some(Body::Tuple(items));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let known = match self.known {
            Some(Body::Struct(known)) => known.iter().map(|field| Some(&field.format)).collect(),
            _ => Vec::new(),
        };
        let mut formats = vec![Format::Unit; fields.len()];
        let value = read_members(self.tracer, known, &mut formats, "a struct variant", visitor)?;
        let fields =
            fields.iter().zip(formats).map(|(name, format)| Field { name: (*name).to_owned(), format });
        *self.out = Some(Body::Struct(fields.collect()));
        Ok(value)
    }
}

/// Adds what a pass saw to what earlier passes saw at the same positions.
fn merge(into: &mut Format, from: Format) {
    match (into, from) {
        (Format::Option(into), Format::Option(from)) | (Format::Seq(into), Format::Seq(from)) => {
            merge(into, *from)
        }
        (Format::Map(key, value), Format::Map(from_key, from_value)) => {
            merge(key, *from_key);
            merge(value, *from_value);
        }
        (Format::Tuple(into), Format::Tuple(from)) => {
            into.iter_mut().zip(from).for_each(|(a, b)| merge(a, b))
        }
        (Format::Container(into), Format::Container(from)) => merge_body(&mut into.body, from.body),
        _ => {}
    }
}

fn merge_body(into: &mut Body, from: Body) {
    match (into, from) {
        (Body::Newtype(into), Body::Newtype(from)) => merge(into, from),
        (Body::Tuple(into), Body::Tuple(from)) => into.iter_mut().zip(from).for_each(|(a, b)| merge(a, b)),
        (Body::Struct(into), Body::Struct(from)) => {
            into.iter_mut().zip(from).for_each(|(a, b)| merge(&mut a.format, b.format));
        }
        (Body::Enum(into), Body::Enum(from)) => {
            for (into, from) in into.iter_mut().zip(from) {
                match (&mut into.body, from.body) {
                    (None, Some(body)) => into.body = Some(body),
                    (Some(into), Some(body)) => merge_body(into, body),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Every variant of every enum inside `format` has been seen.
pub(crate) fn complete(format: &Format) -> bool {
    match format {
        Format::Option(inner) | Format::Seq(inner) => complete(inner),
        Format::Map(key, value) => complete(key) && complete(value),
        Format::Tuple(items) => items.iter().all(complete),
        Format::Container(container) => body_complete(&container.body),
        _ => true,
    }
}

fn body_complete(body: &Body) -> bool {
    match body {
        Body::Unit => true,
        Body::Newtype(inner) => complete(inner),
        Body::Tuple(items) => items.iter().all(complete),
        Body::Struct(fields) => fields.iter().all(|field| complete(&field.format)),
        Body::Enum(variants) => {
            variants.iter().all(|variant| variant.body.as_ref().is_some_and(body_complete))
        }
    }
}
