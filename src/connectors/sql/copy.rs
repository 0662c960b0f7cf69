//! Records as the text of PostgreSQL's `COPY … FROM STDIN`, for a target
//! that writes a batch by `COPY` instead of `json_populate_recordset`.
//!
//! The database then parses each value once with its type's input function
//! and never a JSON document: about half of its time a row. What a record
//! becomes must be what `json_populate_recordset` makes of it, so only the
//! cases where the two agree are copied; for any other the caller falls
//! back to the JSON statement:
//! - a JSON string is its text (unescaped), a number or `true`/`false` its
//!   text as written, `null` is NULL;
//! - an object or an array is its JSON text in a `json`, `jsonb` or text
//!   column and is not copied into any other (an array column, say);
//! - a column of a type not listed in [`ColumnKind::of`] is not copied.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use tokio_postgres::types::{Kind, Type};

/// How a JSON value becomes the text of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `json`, `jsonb`: the value's JSON text.
    Json,
    /// Text types: a string's text, anything else its JSON text.
    Text,
    /// Numbers, booleans, times, ids, bytes: a string's text or a number's
    /// or boolean's; an object or array is not copied.
    Scalar,
}

impl ColumnKind {
    /// The kind of a column of type `ty`; `None` for a type written only by
    /// the JSON statement.
    pub fn of(ty: &Type) -> Option<ColumnKind> {
        Some(match *ty {
            Type::JSON | Type::JSONB => ColumnKind::Json,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => ColumnKind::Text,
            Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::DATE
            | Type::TIME
            | Type::TIMETZ
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::INTERVAL
            | Type::UUID
            | Type::BYTEA => ColumnKind::Scalar,
            _ => match ty.kind() {
                Kind::Enum(_) => ColumnKind::Scalar,
                _ => return None,
            },
        })
    }
}

/// A record's top-level fields, each with its value's text as written.
struct Record<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> DeserializeSeed<'de> for &mut Record<'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Record<'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.clear();
        while let Some(name) = map.next_key_seed(super::FieldName)? {
            let value: &'de RawValue = map.next_value()?;
            // A name that comes twice keeps its last value.
            match self.0.iter_mut().find(|(n, _)| *n == name) {
                Some(field) => field.1 = value,
                None => self.0.push((name, value)),
            }
        }
        Ok(())
    }
}

/// Appends `text` escaped for COPY's text format.
fn escaped(text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// Appends one value; `None` if it is not copied into a column of `kind`.
fn value(raw: &RawValue, kind: ColumnKind, out: &mut Vec<u8>) -> Option<()> {
    let text = raw.get();
    match (text.as_bytes().first()?, kind) {
        (b'n', _) => out.extend_from_slice(b"\\N"),
        (b'"', ColumnKind::Json) => escaped(text, out),
        (b'"', _) => {
            let mut de = serde_json::Deserializer::from_str(text);
            escaped(&super::FieldName.deserialize(&mut de).ok()?, out);
        }
        (b'{' | b'[', ColumnKind::Scalar) => return None,
        _ => escaped(text, out),
    }
    Some(())
}

/// Appends the records as COPY lines of the columns `fields` (of kinds
/// `kinds`); `None` if one of them is not copied as the JSON statement
/// would write it (then nothing is to be used of `out`).
pub fn encode<'a>(
    payloads: impl Iterator<Item = &'a str>,
    fields: &[&str],
    kinds: &[ColumnKind],
    out: &mut Vec<u8>,
) -> Option<()> {
    let mut record = Record(Vec::with_capacity(fields.len()));
    for payload in payloads {
        let mut de = serde_json::Deserializer::from_str(payload);
        (&mut record).deserialize(&mut de).ok()?;
        if record.0.len() != fields.len() {
            return None;
        }
        for (i, (field, kind)) in fields.iter().zip(kinds).enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            // Records of a run have one set of fields, mostly in one order.
            let found = match record.0.get(i) {
                Some((name, raw)) if name == field => Some(*raw),
                _ => record.0.iter().find(|(n, _)| n == field).map(|(_, r)| *r),
            };
            value(found?, *kind, out)?;
        }
        out.push(b'\n');
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(payloads: &[&str], fields: &[&str], kinds: &[ColumnKind]) -> Option<String> {
        let mut out = Vec::new();
        encode(payloads.iter().copied(), fields, kinds, &mut out)?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn values_are_written_as_the_json_statement_reads_them() {
        use ColumnKind::*;
        let fields = ["id", "name", "doc", "price", "on"];
        let kinds = [Scalar, Text, Json, Scalar, Scalar];
        assert_eq!(
            copy(
                &[
                    r#"{"id": 1, "name": "a\tb\\c\nd\u00e9", "doc": {"x": [1, "y"]}, "price": 12345678901234567890.000001, "on": true}"#,
                    // Another order, nulls, a JSON string in a json column.
                    r#"{"on": null, "price": "1.5", "doc": "s", "name": null, "id": "2"}"#,
                ],
                &fields,
                &kinds
            )
            .unwrap(),
            "1\ta\\tb\\\\c\\nd\u{e9}\t{\"x\": [1, \"y\"]}\t12345678901234567890.000001\ttrue\n\
             2\t\\N\t\"s\"\t1.5\t\\N\n"
        );
        // An object in a text column is its JSON text.
        assert_eq!(
            copy(&[r#"{"name": {"a": 1}}"#], &["name"], &[Text]).unwrap(),
            "{\"a\": 1}\n"
        );
    }

    #[test]
    fn what_copy_would_write_otherwise_is_left_to_the_json_statement() {
        use ColumnKind::*;
        // An array for a scalar column (an int[] column is not Scalar, and
        // an int column refuses it in both).
        assert_eq!(copy(&[r#"{"n": [1, 2]}"#], &["n"], &[Scalar]), None);
        // A field missing or extra, or not an object.
        assert_eq!(copy(&[r#"{"a": 1}"#], &["a", "b"], &[Scalar, Scalar]), None);
        assert_eq!(
            copy(&[r#"{"a": 1, "c": 2}"#], &["a", "b"], &[Scalar, Scalar]),
            None
        );
        assert_eq!(copy(&["[1]"], &["a"], &[Scalar]), None);
        assert_eq!(ColumnKind::of(&Type::INT4_ARRAY), None);
        assert_eq!(ColumnKind::of(&Type::JSONB), Some(Json));
    }
}
