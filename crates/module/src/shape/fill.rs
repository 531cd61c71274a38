//! Made-up values inside a recursive type, recording nothing: the tracer
//! meets a container again inside itself and still has to hand its
//! `Deserialize` impl a value. `None`, empty sequences and maps, and the
//! first variant of each enum end the recursion.

use serde::de::value::U32Deserializer;
use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::Format;
use super::trace::TraceError;

/// Nesting of made-up values inside a recursive type before giving up.
const MAX_FILL_DEPTH: usize = 64;

/// Makes up a value without recording anything, inside a recursive type.
pub(super) struct Filler {
    pub(super) depth: usize,
    pub(super) recursive: &'static str,
}

impl Filler {
    fn deeper(&self) -> Result<Filler, TraceError> {
        if self.depth >= MAX_FILL_DEPTH {
            return Err(TraceError(format!(
                "`{}` contains itself, and making up a value of it did not end: the first variant of \
                 each enum on the way must end the recursion (as `Nil` does in \
                 `enum List {{ Nil, Cons(u32, Box<List>) }}`)",
                self.recursive
            )));
        }
        Ok(Filler { depth: self.depth + 1, recursive: self.recursive })
    }

    fn record(&mut self, _format: Format) {}
}

impl<'de> de::Deserializer<'de> for Filler {
    type Error = TraceError;

    leaves!();

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError(format!("`{}` uses `deserialize_any`, which postcard cannot decode", self.recursive)))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_none()
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: 0, filler: self })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: len, filler: self.deeper()? })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_map(FillerSeq { left: 0, filler: self })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_newtype_struct(self.deeper()?)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: len, filler: self.deeper()? })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: fields.len(), filler: self.deeper()? })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_enum(FillerVariant { filler: self.deeper()? })
    }
}

/// `left` made-up elements (or map entries, when `left` is 0).
pub(super) struct FillerSeq {
    pub(super) left: usize,
    pub(super) filler: Filler,
}

impl FillerSeq {
    fn next(&mut self) -> Option<Filler> {
        self.left = self.left.checked_sub(1)?;
        Some(Filler { depth: self.filler.depth, recursive: self.filler.recursive })
    }
}

impl<'de> SeqAccess<'de> for FillerSeq {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        self.next().map(|filler| seed.deserialize(filler)).transpose()
    }
}

impl<'de> MapAccess<'de> for FillerSeq {
    type Error = TraceError;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, _seed: S) -> Result<Option<S::Value>, TraceError> {
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, TraceError> {
        seed.deserialize(Filler { depth: self.filler.depth, recursive: self.filler.recursive })
    }
}

/// The first variant of an enum, made up.
pub(super) struct FillerVariant {
    pub(super) filler: Filler,
}

impl<'de> EnumAccess<'de> for FillerVariant {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), TraceError> {
        Ok((seed.deserialize(U32Deserializer::<TraceError>::new(0))?, self))
    }
}

impl<'de> VariantAccess<'de> for FillerVariant {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        seed.deserialize(self.filler)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: len, filler: self.filler })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_seq(FillerSeq { left: fields.len(), filler: self.filler })
    }
}
