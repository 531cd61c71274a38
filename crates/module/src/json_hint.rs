//! An example of the JSON a type decodes from, for the refusal of a payload
//! that does not decode (`send JSON like {"amount": .., "note": ..}`).
//!
//! It asks the type's own `Deserialize` impl: a [`Probe`] deserializer
//! answers the first thing the impl asks for with an error that describes
//! it. A derived struct asks for a struct with its field names; a number
//! asks for a number. Types whose impl asks for anything (untagged enums,
//! hand-written impls) get no example rather than a wrong one.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// What JSON `T` decodes from, shortly; `None` where that cannot be told.
pub(crate) fn example<T: DeserializeOwned>() -> Option<String> {
    match T::deserialize(Probe) {
        Err(Hint(Some(example))) => Some(example),
        _ => None,
    }
}

/// The error the probe answers with: the example, or `None` for "unknown"
/// (also what a `Deserialize` impl's own custom error becomes).
#[derive(Debug)]
struct Hint(Option<String>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("no example"))
    }
}

impl std::error::Error for Hint {}

impl de::Error for Hint {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Hint(None)
    }
}

fn hint<T>(text: impl Into<String>) -> Result<T, Hint> {
    Err(Hint(Some(text.into())))
}

struct Probe;

/// Deserializer methods that only answer with a fixed example.
macro_rules! answer {
    ($($method:ident => $example:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Hint> {
                hint($example)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Probe {
    type Error = Hint;

    answer! {
        deserialize_bool => "true";
        deserialize_i8 => "0";
        deserialize_i16 => "0";
        deserialize_i32 => "0";
        deserialize_i64 => "0";
        deserialize_i128 => "0";
        deserialize_u8 => "0";
        deserialize_u16 => "0";
        deserialize_u32 => "0";
        deserialize_u64 => "0";
        deserialize_u128 => "0";
        deserialize_f32 => "0.0";
        deserialize_f64 => "0.0";
        deserialize_char => "\"x\"";
        deserialize_str => "\"..\"";
        deserialize_string => "\"..\"";
        deserialize_bytes => "[..]";
        deserialize_byte_buf => "[..]";
        deserialize_unit => "null";
        deserialize_seq => "[..]";
        deserialize_map => "{..}";
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Hint> {
        Err(Hint(None))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Hint> {
        Err(Hint(None))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Hint> {
        Err(Hint(None))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Hint> {
        // What `Some` holds, which is the informative part; null is implied.
        visitor.visit_some(Probe)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> Result<V::Value, Hint> {
        hint("null")
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Hint> {
        visitor.visit_newtype_struct(Probe)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, _: V) -> Result<V::Value, Hint> {
        hint(tuple(len))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        _: V,
    ) -> Result<V::Value, Hint> {
        hint(tuple(len))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Hint> {
        let fields: Vec<String> = fields.iter().map(|field| format!("{field:?}: ..")).collect();
        hint(format!("{{{}}}", fields.join(", ")))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Hint> {
        // A unit variant is its name as a string; others are {"Variant": ..}.
        // Which is which is not told, so the names are shown as strings.
        let names: Vec<String> = variants.iter().map(|variant| format!("{variant:?}")).collect();
        hint(format!("one of {} (or {{\"Variant\": ..}} for one with data)", names.join(", ")))
    }
}

/// `[.., ..]` for a tuple of `len`.
fn tuple(len: usize) -> String {
    format!("[{}]", vec![".."; len].join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Deposit {
        amount: i64,
        #[serde(default)]
        note: String,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Meters(f64);

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Phase {
        Lobby,
        Playing { round: u32 },
    }

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Loose {
        Number(u32),
        Text(String),
    }

    #[test]
    fn examples_follow_the_types_own_deserialize() {
        assert_eq!(example::<Deposit>().as_deref(), Some(r#"{"amount": .., "note": ..}"#));
        assert_eq!(example::<Option<Deposit>>().as_deref(), Some(r#"{"amount": .., "note": ..}"#));
        assert_eq!(example::<u32>().as_deref(), Some("0"));
        assert_eq!(example::<String>().as_deref(), Some(r#""..""#));
        assert_eq!(example::<Vec<u8>>().as_deref(), Some("[..]"));
        assert_eq!(example::<(u8, String)>().as_deref(), Some("[.., ..]"));
        assert_eq!(example::<Meters>().as_deref(), Some("0.0"));
        assert_eq!(example::<()>().as_deref(), Some("null"));
        assert_eq!(
            example::<Phase>().as_deref(),
            Some(r#"one of "Lobby", "Playing" (or {"Variant": ..} for one with data)"#)
        );
    }

    #[test]
    fn a_type_that_accepts_anything_gets_no_example_rather_than_a_wrong_one() {
        assert_eq!(example::<Loose>(), None);
    }
}
