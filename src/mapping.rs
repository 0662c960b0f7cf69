//! A flow's mapping: what a record becomes before it is sent.
//!
//! Two optional steps, `map` then `transform`:
//! - [`MapTable`]: the declarative table of the common case, readable by an
//!   operator who does not program. Each entry names a target field (dots
//!   make nesting: `"address.city"`) and where its value comes from: a
//!   source path (dots for nesting, a number indexes an array:
//!   `"lines.0.sku"`), a constant, or a source path with a default. The
//!   record it makes has exactly the listed fields, in the table's order.
//! - [`Transform`]: a jq program, parsed and compiled by jaq when the
//!   configuration loads and run per record: computed fields, filters (no
//!   output: the record is ignored), one record into several.
//!
//! # Invariants
//! - A [`Mapping`] exists only checked: every path is well formed, no
//!   target field is both a value and the parent of another, the program
//!   compiled. Applying it never panics: what can fail at run time (a jq
//!   error, a value JSON cannot hold, too many outputs) is a
//!   [`MappingError`].
//! - A source path that is missing leaves the field out, unless the entry
//!   has a `default`; the default also stands in for a `null`.
//! - A run yields at most [`MAX_OUTPUTS`] records; more is an error.
//! - The program sees no environment: jq's `env` is `{}` and `$ENV` is
//!   not defined (the daemon's environment may hold secrets, and a record
//!   is sent out).
//!
//! A leaf: it knows serde_json and jaq, nothing of sluice.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Ctx, Vars};
use jaq_json::{Num, Val};
use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The most records one run of a transform may yield.
pub const MAX_OUTPUTS: usize = 1000;

/// A flow's `map` and `transform`, both checked; applied in that order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    pub map: Option<MapTable>,
    pub transform: Option<Transform>,
}

/// What went wrong applying a mapping to one record: the delivery fails for
/// good with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the record is not JSON: {0}")]
    NotJson(String),
    #[error("the transform failed: {0}")]
    Runtime(String),
    #[error("the transform yielded more than {MAX_OUTPUTS} records")]
    TooMany,
    #[error("the transform yielded a value that is not JSON: {0}")]
    NotJsonOutput(String),
}

impl Mapping {
    pub fn is_identity(&self) -> bool {
        self.map.is_none() && self.transform.is_none()
    }

    /// The records `record` becomes: none (the transform filtered it out),
    /// one, or several.
    pub fn apply(&self, record: Value) -> Result<Vec<Value>, MappingError> {
        let mapped = match &self.map {
            Some(map) => map.apply(&record),
            None => record,
        };
        match &self.transform {
            Some(transform) => transform.run(&mapped),
            None => Ok(vec![mapped]),
        }
    }

    /// As [`Mapping::apply`], from and to JSON text (a queued payload). An
    /// identity mapping gives the text back as it is.
    pub fn apply_text(&self, payload: &str) -> Result<Vec<String>, MappingError> {
        if self.is_identity() {
            return Ok(vec![payload.to_string()]);
        }
        let not_json = |e: serde_json::Error| MappingError::NotJson(e.to_string());
        // A map reads only the parts of the payload it takes.
        let mapped = match &self.map {
            Some(map) => map.apply_text(payload).map_err(not_json)?,
            None => serde_json::from_str(payload).map_err(not_json)?,
        };
        let outputs = match &self.transform {
            Some(transform) => transform.run(&mapped)?,
            None => vec![mapped],
        };
        Ok(outputs.iter().map(Value::to_string).collect())
    }
}

/// A dotted path, split and checked: no segment is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<String>);

impl Path {
    /// `"customer.address.city"`; a number indexes an array when the value
    /// there is one (`"lines.0.sku"`).
    pub fn parse(text: &str) -> Result<Path, String> {
        if text.is_empty() {
            return Err("a path is not empty: name a field, with dots for nesting".into());
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "'{text}' is not a path: fields are separated by single dots, none empty"
            ));
        }
        Ok(Path(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, record: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(record, |value, segment| match value {
                Value::Object(fields) => fields.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Where one target field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `"source.path"` or `{ from = "source.path", default = … }`.
    From {
        path: Path,
        /// Stands in when the source is missing or null.
        default: Option<Value>,
    },
    /// `{ value = … }`: always this.
    Value(Value),
}

/// One entry of a `map`: target field ← rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub target: Path,
    pub rule: Rule,
}

/// A checked `map`: no target field is listed twice, nor is one the parent
/// of another (`a` and `a.b`).
#[derive(Debug, Clone, PartialEq)]
pub struct MapTable {
    fields: Vec<Field>,
    /// The source paths of `fields`, as a tree.
    reads: Reads,
}

impl MapTable {
    /// Checks the entries; a problem names the entry's target field.
    pub fn new(fields: Vec<Field>) -> Result<MapTable, (String, String)> {
        for (i, field) in fields.iter().enumerate() {
            for earlier in &fields[..i] {
                let (a, b) = (earlier.target.segments(), field.target.segments());
                let shorter = a.len().min(b.len());
                if a[..shorter] == b[..shorter] {
                    let message = if a.len() == b.len() {
                        format!("target field '{}' is listed twice", field.target)
                    } else {
                        format!(
                            "target fields '{}' and '{}' clash: one would be both a value \
                             and an object",
                            earlier.target, field.target
                        )
                    };
                    return Err((field.target.to_string(), message));
                }
            }
        }
        let mut reads = Reads::default();
        for field in &fields {
            if let Rule::From { path, .. } = &field.rule {
                reads.add(path.segments());
            }
        }
        Ok(MapTable { fields, reads })
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// As [`MapTable::apply`] on the JSON text `payload`, which is read
    /// only where a source path leads (the rest is checked, not kept): the
    /// same record, or the same error, as parsing it whole.
    pub fn apply_text(&self, payload: &str) -> Result<Value, serde_json::Error> {
        let mut reader = serde_json::Deserializer::from_str(payload);
        let record = ReadSeed(&self.reads).deserialize(&mut reader)?;
        reader.end()?;
        Ok(self.apply(&record))
    }

    /// The record with exactly the mapped fields.
    pub fn apply(&self, record: &Value) -> Value {
        let mut out = Map::new();
        for field in &self.fields {
            let value = match &field.rule {
                Rule::Value(v) => Some(v.clone()),
                Rule::From { path, default } => match (path.get(record), default) {
                    (None | Some(Value::Null), Some(d)) => Some(d.clone()),
                    (found, _) => found.cloned(),
                },
            };
            if let Some(value) = value {
                insert(&mut out, field.target.segments(), value);
            }
        }
        Value::Object(out)
    }
}

/// Sets `path` in `object`, making the objects on the way. The table's
/// check keeps a value from standing where an object is wanted; should one
/// be there anyway, it is replaced.
fn insert(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("a checked path has a segment");
    let mut here = object;
    for segment in parents {
        let slot = here
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            unreachable!("just made an object")
        };
        here = next;
    }
    here.insert(last.clone(), value);
}

/// What of a record a map reads: all of it (a source path ends here), or
/// only the named fields (an array's elements by their index) below.
#[derive(Debug, Clone, PartialEq, Default)]
struct Reads {
    whole: bool,
    /// Segment, its meaning as an array index, what is read below it.
    below: Vec<(String, Option<usize>, Reads)>,
}

impl Reads {
    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            self.whole = true;
            return;
        };
        let i = match self.below.iter().position(|(s, _, _)| s == first) {
            Some(i) => i,
            None => {
                self.below
                    .push((first.clone(), first.parse().ok(), Reads::default()));
                self.below.len() - 1
            }
        };
        self.below[i].2.add(rest);
    }
}

/// Reads a value keeping only what [`Reads`] names: other fields are left
/// out, other array elements are `null` (up to the last one read), a
/// scalar not read whole is `null` (no path goes through it either way).
/// Everything is still parsed, so bad JSON fails as it would whole.
struct ReadSeed<'r>(&'r Reads);

impl<'de> DeserializeSeed<'de> for ReadSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for ReadSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let last = self.0.below.iter().filter_map(|(_, i, _)| *i).max();
        let mut kept = Vec::new();
        for index in 0.. {
            let wanted: Vec<&Reads> = match last {
                Some(last) if index <= last => self
                    .0
                    .below
                    .iter()
                    .filter(|(_, i, _)| *i == Some(index))
                    .map(|(_, _, r)| r)
                    .collect(),
                _ => Vec::new(),
            };
            let item = match wanted.as_slice() {
                [] => items.next_element::<Skip>()?.map(|_| Value::Null),
                [one] => items.next_element_seed(ReadSeed(one))?,
                // "0" and "00" both index 0: keep it whole.
                _ => items.next_element::<Value>()?,
            };
            match item {
                Some(item) if last.is_some_and(|last| index <= last) => kept.push(item),
                Some(_) => {}
                None => break,
            }
        }
        Ok(Value::Array(kept))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(found) = fields.next_key_seed(KeySeed(self.0))? {
            match found {
                Some(i) => {
                    let (name, _, reads) = &self.0.below[i];
                    kept.insert(name.clone(), fields.next_value_seed(ReadSeed(reads))?);
                }
                None => {
                    fields.next_value::<Skip>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

/// A field name: the index of the entry of `below` it is, if any.
struct KeySeed<'r>(&'r Reads);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.below.iter().position(|(s, _, _)| s == key))
    }
}

/// A value parsed (numbers in range, strings well escaped) and dropped;
/// unlike `IgnoredAny`, it refuses what parsing to a `Value` refuses.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Skip, A::Error> {
        while items.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Skip, A::Error> {
        while fields.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

type Filter = jaq_core::Filter<data::JustLut<Val>>;

// A configuration is shared by the daemon's tasks: a compiled program must
// be too (jaq's values are not, and never leave `Transform::run`).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Transform>();
};

/// A compiled jq program. Equal when the program text is (what a reload
/// compares).
#[derive(Clone)]
pub struct Transform {
    code: String,
    filter: Arc<Filter>,
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Transform").field(&self.code).finish()
    }
}

impl PartialEq for Transform {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
    }
}

impl Transform {
    /// Parses and compiles `code`; the error is jaq's, with the line and
    /// column in the program when it has one.
    pub fn compile(code: &str) -> Result<Transform, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs().filter(|(name, _, _)| *name != "env"))
            .chain(jaq_json::funs())
            .chain([jaq_core::native::run((
                "env",
                jaq_core::native::v(0),
                |_| Box::new(std::iter::once(Ok(Val::obj(Default::default())))),
            ))]);
        let arena = Arena::default();
        let loader = Loader::new(defs);
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| load_errors(code, errors))?;
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let mut messages = Vec::new();
                for (_, undefined) in errors {
                    for (name, what) in undefined {
                        messages.push(format!(
                            "undefined {} '{name}' ({})",
                            what.as_str(),
                            at(code, name)
                        ));
                    }
                }
                messages.join("; ")
            })?;
        Ok(Transform {
            code: code.to_string(),
            filter: Arc::new(filter),
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// Runs the program on one record: its outputs, at most
    /// [`MAX_OUTPUTS`].
    pub fn run(&self, record: &Value) -> Result<Vec<Value>, MappingError> {
        let input = to_jaq(record);
        let filter = &*self.filter;
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for output in filter.id.run((ctx, input)) {
            if out.len() == MAX_OUTPUTS {
                return Err(MappingError::TooMany);
            }
            let value = output.map_err(|exn| match exn.get_err() {
                Ok(error) => MappingError::Runtime(unquote(error.to_string())),
                Err(_) => MappingError::Runtime("the program halted".into()),
            })?;
            let json = from_jaq(&value)
                .ok_or_else(|| MappingError::NotJsonOutput(truncate(&value.to_string())))?;
            out.push(json);
        }
        Ok(out)
    }
}

/// `value` as jaq's value, built directly (no text between). A float is
/// `Num::Float`: with serde_json's `float_roundtrip` that is the number
/// jaq's own reading of the text would give, compares, hashes and prints
/// the same.
fn to_jaq(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Value::Array(items) => Val::Arr(jaq_json::Rc::new(items.iter().map(to_jaq).collect())),
        Value::Object(fields) => {
            let mut map = jaq_json::Map::with_capacity_and_hasher(fields.len(), Default::default());
            for (k, v) in fields {
                map.insert(Val::utf8_str(k.clone().into_bytes()), to_jaq(v));
            }
            Val::obj(map)
        }
    }
}

/// jaq's `value` as JSON, if JSON can hold it: not NaN nor an infinity,
/// not a byte string, no key that is not a string. What reading jaq's text
/// with serde_json would give: invalid UTF-8 becomes U+FFFD, a later
/// duplicate key wins, an integer too large for 64 bits or a decimal is
/// read as serde_json reads its text.
fn from_jaq(value: &Val) -> Option<Value> {
    Some(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => Value::Number(serde_json::Number::from_f64(*f)?),
        Val::Num(n @ (Num::BigInt(_) | Num::Dec(_))) => {
            Value::Number(serde_json::from_str(&n.to_string()).ok()?)
        }
        Val::BStr(_) => return None,
        Val::TStr(bytes) => Value::String(utf8(bytes)),
        Val::Arr(items) => Value::Array(items.iter().map(from_jaq).collect::<Option<_>>()?),
        Val::Obj(fields) => {
            let mut map = Map::new();
            for (k, v) in fields.iter() {
                let Val::TStr(key) = k else { return None };
                map.insert(utf8(key), from_jaq(v)?);
            }
            Value::Object(map)
        }
    })
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lexer's and the parser's errors, each with where it stands.
fn load_errors(code: &str, errors: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::{lex, Error};
    let mut messages = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(io) => {
                messages.extend(io.into_iter().map(|(path, e)| format!("{path}: {e}")))
            }
            Error::Lex(lexed) => {
                for (expect, part) in lexed {
                    let wanted = match expect {
                        lex::Expect::Delim(open) => format!("the closing of '{open}'"),
                        other => other.as_str().to_string(),
                    };
                    messages.push(format!("expected {wanted} ({})", at(code, part)));
                }
            }
            Error::Parse(parsed) => {
                for (expect, found) in parsed {
                    let found = if found.is_empty() {
                        "found the end of the program".to_string()
                    } else {
                        let token: String = found.chars().take(20).collect();
                        format!("found '{token}' ({})", at(code, found))
                    };
                    messages.push(format!("expected {}, {found}", expect.as_str()));
                }
            }
        }
    }
    messages.join("; ")
}

/// `line L, column C` of `part` (a slice of `code`) in the program.
fn at(code: &str, part: &str) -> String {
    let offset = jaq_core::load::span(code, part).start.min(code.len());
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// `error("text")` shows as `text`, not as the JSON string `"text"`.
fn unquote(text: String) -> String {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::String(s)) => s,
        _ => text,
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from(path: &str) -> Rule {
        Rule::From {
            path: Path::parse(path).unwrap(),
            default: None,
        }
    }

    fn field(target: &str, rule: Rule) -> Field {
        Field {
            target: Path::parse(target).unwrap(),
            rule,
        }
    }

    fn table() -> MapTable {
        MapTable::new(vec![
            field("contact_id", from("id")),
            field("city", from("address.city")),
            field("country", Rule::Value(json!("NZ"))),
            field(
                "tier",
                Rule::From {
                    path: Path::parse("level").unwrap(),
                    default: Some(json!("basic")),
                },
            ),
            field("billing.zip", from("address.zip")),
            field("first_sku", from("lines.0.sku")),
        ])
        .unwrap()
    }

    #[test]
    fn a_map_renames_copies_nested_fields_sets_constants_and_defaults() {
        let record = json!({
            "id": 7, "name": "dropped", "level": null,
            "address": {"city": "Wellington", "zip": "6011"},
            "lines": [{"sku": "A1"}]
        });
        assert_eq!(
            table().apply(&record),
            json!({
                "contact_id": 7, "city": "Wellington", "country": "NZ", "tier": "basic",
                "billing": {"zip": "6011"}, "first_sku": "A1"
            })
        );
    }

    #[test]
    fn a_missing_source_leaves_the_field_out() {
        let out = table().apply(&json!({"level": "gold"}));
        assert_eq!(out, json!({"country": "NZ", "tier": "gold"}));
        // Not an object at all: only constants and defaults.
        let out = table().apply(&json!([1, 2]));
        assert_eq!(out, json!({"country": "NZ", "tier": "basic"}));
    }

    #[test]
    fn reading_only_the_mapped_paths_is_reading_it_whole() {
        let tables = [
            table(),
            MapTable::new(vec![
                field("a", from("lines.0")),
                field("b", from("lines.00.sku")),
                field("c", from("lines.2.sku")),
                field("d", from("lines")),
                field("e", from("lines.1.sku.x")),
                field("f", from("address.zip.0")),
            ])
            .unwrap(),
        ];
        let payloads = [
            r#"{"id": 7, "level": null, "address": {"city": "W", "zip": "6011"},
                "lines": [{"sku": "A1"}, {"sku": "B2"}, {"sku": "C3"}, 4], "id": 8}"#,
            r#"{"lines": [1], "address": [{"city": 1}], "level": "gold"}"#,
            r#"{"lines": {"0": {"sku": "k"}, "2": {"sku": "m"}}, "x": [1, {"y": 2}]}"#,
            "[1, 2]",
            "\"text\"",
            "null",
            r#"{"x": 1e400}"#,
            r#"{"x": "\q"}"#,
            r#"{"x": [1, 2}"#,
            r#"{"id": 1} trailing"#,
            "",
        ];
        for table in &tables {
            for payload in payloads {
                let whole = serde_json::from_str::<Value>(payload).map(|v| table.apply(&v));
                let read = table.apply_text(payload);
                match (whole, read) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{payload}"),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{payload}"),
                    (a, b) => panic!("{payload}: {a:?} but {b:?}"),
                }
            }
        }
    }

    /// What `run` did before it converted directly: through text both ways.
    fn run_through_text(t: &Transform, record: &Value) -> Result<Vec<Value>, MappingError> {
        let input = jaq_json::read::parse_single(record.to_string().as_bytes()).unwrap();
        let filter = &*t.filter;
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for output in filter.id.run((ctx, input)) {
            let value = output.map_err(|exn| match exn.get_err() {
                Ok(error) => MappingError::Runtime(unquote(error.to_string())),
                Err(_) => MappingError::Runtime("the program halted".into()),
            })?;
            let text = value.to_string();
            out.push(
                serde_json::from_str(&text)
                    .map_err(|_| MappingError::NotJsonOutput(truncate(&text)))?,
            );
        }
        Ok(out)
    }

    #[test]
    fn jaq_values_convert_as_their_text_would() {
        let record = json!({"a": [1, {"z": 2, "y": null}], "b": 0.1, "c": "s\u{7f}\n",
            "d": u64::MAX, "e": -1.25e-300, "f": -7, "g": 3.0, "h": true});
        let programs = [
            ".",
            "[.[] | tostring]",
            "{(.c): 1} + {k: keys_unsorted}",
            "-0.0, 3.0, 1.5, 12345678901234567890123, -12345678901234567890123",
            ".d + 1, .b * 3, (.g | tojson), .e / 7",
            "\"1.50\" | tonumber",
            "[to_entries[] | .key]",
            "nan",
            "[infinite]",
            "\"a\" | tobytes",
            "{(1): 2}",
        ];
        for program in programs {
            let t = Transform::compile(program).unwrap();
            assert_eq!(t.run(&record), run_through_text(&t, &record), "{program}");
        }
    }

    #[test]
    fn bad_paths_and_clashing_targets_are_refused() {
        for bad in ["", ".a", "a.", "a..b"] {
            assert!(Path::parse(bad).is_err(), "{bad:?}");
        }
        let clash = MapTable::new(vec![field("a", from("x")), field("a.b", from("y"))]);
        assert_eq!(clash.unwrap_err().0, "a.b");
        let twice = MapTable::new(vec![field("a.b", from("x")), field("a.b", from("y"))]);
        assert!(twice.unwrap_err().1.contains("twice"));
        assert!(MapTable::new(vec![field("a.b", from("x")), field("a.c", from("y"))]).is_ok());
    }

    #[test]
    fn a_transform_computes_filters_and_splits() {
        let t = Transform::compile(".total = (.qty * .price) | select(.total > 0)").unwrap();
        assert_eq!(
            t.run(&json!({"qty": 2, "price": 1.5})).unwrap(),
            vec![json!({"qty": 2, "price": 1.5, "total": 3.0})]
        );
        assert_eq!(
            t.run(&json!({"qty": 0, "price": 1})).unwrap(),
            Vec::<Value>::new()
        );
        let split = Transform::compile(".lines[] | {sku}").unwrap();
        assert_eq!(
            split
                .run(&json!({"lines": [{"sku": "a"}, {"sku": "b"}]}))
                .unwrap(),
            vec![json!({"sku": "a"}), json!({"sku": "b"})]
        );
    }

    #[test]
    fn map_runs_before_transform() {
        let mapping = Mapping {
            map: Some(table()),
            transform: Some(Transform::compile("select(.tier == \"gold\")").unwrap()),
        };
        assert_eq!(
            mapping.apply(json!({"level": "basic"})).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(mapping.apply(json!({"level": "gold"})).unwrap().len(), 1);
        let text = mapping.apply_text(r#"{"id": 1, "level": "gold"}"#).unwrap();
        assert_eq!(
            text,
            vec![r#"{"contact_id":1,"country":"NZ","tier":"gold"}"#]
        );
        assert!(matches!(
            mapping.apply_text("not json"),
            Err(MappingError::NotJson(_))
        ));
        let identity = Mapping::default();
        assert_eq!(
            identity.apply_text("{ \"a\" : 1 }").unwrap(),
            vec!["{ \"a\" : 1 }"]
        );
    }

    #[test]
    fn syntax_errors_name_where_they_are() {
        let e = Transform::compile(".a | \n  .b +").unwrap_err();
        assert!(e.contains("expected"), "{e}");
        let e = Transform::compile("(.a").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = Transform::compile(".a | nosuchfilter").unwrap_err();
        assert!(e.contains("undefined filter 'nosuchfilter'"), "{e}");
        assert!(e.contains("line 1, column 6"), "{e}");
        let e = Transform::compile("{\"a").unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn run_time_failures_are_errors_not_panics() {
        let t = Transform::compile(".a + 1").unwrap();
        assert!(matches!(
            t.run(&json!({"a": "x"})),
            Err(MappingError::Runtime(_))
        ));
        let t = Transform::compile("error(\"no customer\")").unwrap();
        assert_eq!(
            t.run(&json!({})),
            Err(MappingError::Runtime("no customer".into()))
        );
        let t = Transform::compile("halt").unwrap();
        assert!(t.run(&json!({})).is_err());
        let t = Transform::compile("range(2000)").unwrap();
        assert_eq!(t.run(&json!({})), Err(MappingError::TooMany));
        let t = Transform::compile("repeat(1)").unwrap();
        assert_eq!(t.run(&json!({})), Err(MappingError::TooMany));
    }

    #[test]
    fn the_environment_is_not_visible() {
        let t = Transform::compile("{e: env}").unwrap();
        assert_eq!(t.run(&json!({})).unwrap(), vec![json!({"e": {}})]);
        assert!(Transform::compile("$ENV").is_err());
    }
}
