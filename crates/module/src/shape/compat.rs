//! Whether a snapshot written with one shape can be read as another: the
//! rule behind "a layout change is refused, never misread".
//!
//! The stored shape must be readable as the wanted one, position by
//! position, as postcard reads it:
//! * a struct has the same fields, in the same order, with the same names;
//! * every variant the stored enum has exists in the wanted enum at the same
//!   index, with the same name and a readable body (variants may be appended);
//! * every other format is the same (`u16` is not `u32`, a struct is not a
//!   tuple struct). Type names are not compared: a migration reads the old
//!   layout into a struct of another name.
//!
//! The first difference is reported with its path from the root.

use std::fmt;

use super::{Body, Field, Format, Variant};

/// The first place where a stored shape cannot be read as the wanted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Where, from the root type: `State.pos.x`, `State.log[]`, `Phase::Ended.winner`.
    pub path: String,
    /// What differs there.
    pub change: Change,
}

/// What differs between the snapshot's shape and the type that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The reading type has `field` (written `Owner.field`) where the
    /// snapshot has no such field.
    FieldNew { field: String },
    /// The snapshot has `field`; the reading type has no such field.
    FieldGone { field: String },
    /// At one position the snapshot has `was` and the reading type `now`,
    /// and neither has the other's: a rename, or a field removed and one added.
    FieldRenamed { was: String, now: String },
    /// Both have `field`, at different positions: the fields were reordered.
    /// At its position in the reading type the snapshot has `found`.
    FieldMoved { field: String, found: String },
    /// The format changed: `u32` to `String`, `u16` to `u8`, a struct to an
    /// enum. `field` (`Owner.field`) is the struct field that holds it, if any.
    FormatChanged { field: Option<String>, was: String, now: String },
    /// The snapshot's enum has variant `index` `variant`; the reading type's
    /// enum has none at that index (`now` is `None`) or another (`now`).
    VariantGone { enum_name: String, index: usize, variant: String, now: Option<String> },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = match &self.change {
            Change::FieldNew { field } => {
                write!(f, "field `{field}` is new (the snapshot has no such field)")?;
                field
            }
            Change::FieldGone { field } => {
                write!(f, "field `{field}` is gone (the snapshot has it, this version does not)")?;
                field
            }
            Change::FieldRenamed { was, now } => {
                write!(
                    f,
                    "field `{now}` is new and `{was}` is gone (renamed, or one removed and one added)"
                )?;
                now
            }
            Change::FieldMoved { field, found } => {
                write!(
                    f,
                    "field `{field}` is out of place: the snapshot has `{found}` there (fields reordered)"
                )?;
                field
            }
            Change::FormatChanged { field: Some(field), was, now } => {
                write!(f, "field `{field}` was {was}, is now {now}")?;
                field
            }
            Change::FormatChanged { field: None, was, now } => {
                return write!(f, "`{}` was {was}, is now {now}", self.path);
            }
            Change::VariantGone { enum_name, index, variant, now } => {
                write!(f, "enum `{enum_name}` variant {index} `{variant}` is gone")?;
                if let Some(now) = now {
                    write!(f, " (this version has `{now}` at index {index})")?;
                }
                enum_name
            }
        };
        // The short name says which type; the path says where it is, when
        // that is not the same thing.
        if !self.path.starts_with(subject.as_str()) {
            write!(f, " (at `{}`)", self.path)?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// Checks that what `stored` describes can be read as `wanted`.
pub(crate) fn check(stored: &Format, wanted: &Format) -> Result<(), Mismatch> {
    let mut path = String::new();
    match wanted {
        Format::Container(container) => path.push_str(&container.name),
        other => path.push_str(&other.to_string()),
    }
    format(stored, wanted, &mut path)
}

fn format(stored: &Format, wanted: &Format, path: &mut String) -> Result<(), Mismatch> {
    match (stored, wanted) {
        (Format::Option(stored), Format::Option(wanted)) => {
            nested(path, "?", |path| format(stored, wanted, path))
        }
        (Format::Seq(stored), Format::Seq(wanted)) => nested(path, "[]", |path| format(stored, wanted, path)),
        (Format::Map(stored_key, stored_value), Format::Map(wanted_key, wanted_value)) => {
            nested(path, "{key}", |path| format(stored_key, wanted_key, path))?;
            nested(path, "{value}", |path| format(stored_value, wanted_value, path))
        }
        (Format::Tuple(stored), Format::Tuple(wanted)) if stored.len() == wanted.len() => {
            for (at, (stored, wanted)) in stored.iter().zip(wanted).enumerate() {
                nested(path, &format!(".{at}"), |path| format(stored, wanted, path))?;
            }
            Ok(())
        }
        (Format::Container(stored), Format::Container(wanted)) => {
            body(&stored.body, &wanted.body, &wanted.name, path).map_err(|mismatch| match mismatch.change {
                // A changed kind reads better with the type names.
                Change::FormatChanged { field: None, .. } if mismatch.path == *path => Mismatch {
                    path: mismatch.path,
                    change: Change::FormatChanged {
                        field: None,
                        was: format!("{} ({})", stored.name, stored.body.kind()),
                        now: format!("{} ({})", wanted.name, wanted.body.kind()),
                    },
                },
                _ => mismatch,
            })
        }
        // Both reached a type that contains itself at the same place: its
        // shape was compared where it was first entered.
        (Format::Recursive(_), Format::Recursive(_)) => Ok(()),
        (stored, wanted) if stored == wanted => Ok(()),
        (stored, wanted) => Err(changed(path, stored, wanted)),
    }
}

fn changed(path: &str, was: impl fmt::Display, now: impl fmt::Display) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        change: Change::FormatChanged { field: None, was: was.to_string(), now: now.to_string() },
    }
}

/// Runs `check` with `segment` added to `path`, then takes it off again.
fn nested(
    path: &mut String,
    segment: &str,
    check: impl FnOnce(&mut String) -> Result<(), Mismatch>,
) -> Result<(), Mismatch> {
    let len = path.len();
    path.push_str(segment);
    check(path)?;
    path.truncate(len);
    Ok(())
}

/// `owner` names the type in field messages (`Pos.x`, `Phase::Ended.winner`).
fn body(stored: &Body, wanted: &Body, owner: &str, path: &mut String) -> Result<(), Mismatch> {
    match (stored, wanted) {
        (Body::Unit, Body::Unit) => Ok(()),
        (Body::Newtype(stored), Body::Newtype(wanted)) => {
            nested(path, ".0", |path| format(stored, wanted, path))
        }
        (Body::Tuple(stored), Body::Tuple(wanted)) => {
            let named = |items: &[Format]| -> Vec<Field> {
                let field =
                    |(at, format): (usize, &Format)| Field { name: at.to_string(), format: format.clone() };
                items.iter().enumerate().map(field).collect()
            };
            fields(&named(stored), &named(wanted), owner, path)
        }
        (Body::Struct(stored), Body::Struct(wanted)) => fields(stored, wanted, owner, path),
        (Body::Enum(stored), Body::Enum(wanted)) => variants(stored, wanted, owner, path),
        (stored, wanted) => Err(changed(path, stored.kind(), wanted.kind())),
    }
}

fn fields(stored: &[Field], wanted: &[Field], owner: &str, path: &mut String) -> Result<(), Mismatch> {
    let named = |name: &str| format!("{owner}.{name}");
    for at in 0..stored.len().max(wanted.len()) {
        let change = match (stored.get(at), wanted.get(at)) {
            (Some(stored), Some(wanted)) if stored.name == wanted.name => {
                let field = |path: &mut String| format(&stored.format, &wanted.format, path);
                nested(path, &format!(".{}", wanted.name), field).map_err(|mismatch| {
                    in_field(mismatch, named(&wanted.name), &stored.format, &wanted.format)
                })?;
                continue;
            }
            (Some(old), Some(new)) => {
                let old_kept = wanted.iter().any(|field| field.name == old.name);
                let new_known = stored.iter().any(|field| field.name == new.name);
                match (old_kept, new_known) {
                    (false, false) => Change::FieldRenamed { was: named(&old.name), now: named(&new.name) },
                    (true, false) => Change::FieldNew { field: named(&new.name) },
                    (false, true) => Change::FieldGone { field: named(&old.name) },
                    (true, true) => Change::FieldMoved { field: named(&new.name), found: named(&old.name) },
                }
            }
            (None, Some(new)) => Change::FieldNew { field: named(&new.name) },
            (Some(old), None) => Change::FieldGone { field: named(&old.name) },
            (None, None) => unreachable!("`at` is below the longer length"),
        };
        let name = match &change {
            Change::FieldGone { field } => field,
            Change::FieldNew { field }
            | Change::FieldRenamed { now: field, .. }
            | Change::FieldMoved { field, .. } => field,
            _ => unreachable!("only field changes are made above"),
        };
        let field = name.rsplit('.').next().unwrap_or(name);
        return Err(Mismatch { path: format!("{path}.{field}"), change });
    }
    Ok(())
}

/// Names the struct field that holds a changed format, and when the field's
/// own format is not a named type, shows the whole of it (`Vec<(u32, u32)>`,
/// is now `Vec<(u32, u16)>`) rather than the innermost part.
fn in_field(mismatch: Mismatch, field: String, stored: &Format, wanted: &Format) -> Mismatch {
    match mismatch.change {
        Change::FormatChanged { field: None, was, now } => {
            let whole = !matches!(stored, Format::Container(_)) && !matches!(wanted, Format::Container(_));
            let (was, now) = if whole { (stored.to_string(), wanted.to_string()) } else { (was, now) };
            Mismatch { path: mismatch.path, change: Change::FormatChanged { field: Some(field), was, now } }
        }
        _ => mismatch,
    }
}

fn variants(stored: &[Variant], wanted: &[Variant], owner: &str, path: &mut String) -> Result<(), Mismatch> {
    for (index, old) in stored.iter().enumerate() {
        let gone = |now: Option<&Variant>| Mismatch {
            path: format!("{path}::{}", old.name),
            change: Change::VariantGone {
                enum_name: owner.to_owned(),
                index,
                variant: old.name.clone(),
                now: now.map(|variant| variant.name.clone()),
            },
        };
        let new = match wanted.get(index) {
            Some(new) if new.name == old.name => new,
            other => return Err(gone(other)),
        };
        let inner = format!("{owner}::{}", old.name);
        nested(path, &format!("::{}", old.name), |path| match (&old.body, &new.body) {
            (Some(stored), Some(wanted)) => body(stored, wanted, &inner, path),
            (None, None) => Ok(()),
            // Only a damaged shape has a variant without a body.
            (stored, wanted) => Err(changed(path, describe(stored), describe(wanted))),
        })?;
    }
    Ok(())
}

fn describe(body: &Option<Body>) -> &'static str {
    body.as_ref().map_or("an unknown variant", Body::kind)
}
