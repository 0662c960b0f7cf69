//! `kind = "postgres"` and `kind = "mysql"`: a database table (or, for a
//! source, a query) read page by page, and a table written one database
//! transaction per batch. Both kinds take the same keys ([`SqlConfig`]);
//! [`postgres`] and [`mysql`] speak to their server.
//!
//! # Design constraints
//! - A source never holds a table in memory: a reader task keeps the result
//!   open on the server (PostgreSQL: a portal in a read-only transaction,
//!   fetched `page_size` rows at a time; MySQL: a streamed result read row by
//!   row) and hands the run one page at a time through a channel of one
//!   page, so at most about three pages are in memory.
//! - Rows come in cursor order (rows without a cursor first), then key
//!   order; a page never ends inside a run of equal cursors ([`Cutter`]).
//! - 'Send Changed' compares the checkpoint in the database, in the cursor
//!   column's own type, never as text in sluice.
//! - A batch is one database transaction: all of it is written, or none.
//!   `upsert` and `delete` are idempotent, so a batch sent again after a
//!   crash changes nothing; `insert` is not.
//! - The password comes from `password_env` only, and no message carries
//!   it; URLs are shown through [`crate::redact::url`].

mod copy;
pub mod mysql;
pub mod postgres;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    page_len, Cursor, DeliveryError, FailureClass, KeyProblem, Pages, SourceError, SourceRecord,
};
use crate::duration::duration_opt;
use crate::redact;

/// The settings of a `postgres` or `mysql` endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// `postgres://user@host:port/db` or `mysql://user@host:port/db`,
    /// without a password.
    pub url: String,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The table read (with the flow's cursor and key) or written;
    /// `schema.table` is allowed.
    pub table: Option<String>,
    /// For a source instead of `table`: a query whose `$cursor` (PostgreSQL)
    /// or `?` (MySQL) is the checkpoint, NULL on 'Send All' and before the
    /// first checkpoint.
    pub query: Option<String>,
    /// Rows per page when read.
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// A pause between pages when read.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub pace: Option<Duration>,
    /// The columns a written row is found by (the conflict key).
    #[serde(default)]
    pub key: Vec<String>,
    /// How records are written.
    #[serde(default)]
    pub mode: WriteMode,
    /// Records per database transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_page() -> usize {
    1000
}

fn default_batch() -> usize {
    500
}

/// How a target writes a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Insert, or update the row of the same key.
    #[default]
    Upsert,
    /// Insert only: a row of the same key is a rejected record.
    Insert,
    /// Delete the row of the record's key.
    Delete,
}

/// A table or query read by a run: the read runs on a task of its own
/// (the server's dialect's `read`), handing pages over one at a time.
pub struct SqlSource {
    config: SqlConfig,
    dialect: Dialect,
}

impl SqlSource {
    pub fn new(config: &SqlConfig, dialect: Dialect) -> SqlSource {
        SqlSource {
            config: config.clone(),
            dialect,
        }
    }
}

#[async_trait]
impl super::Source for SqlSource {
    async fn open(&self, req: super::ReadRequest) -> Result<Box<dyn Pages>, SourceError> {
        let config = self.config.clone();
        let dialect = self.dialect;
        Ok(Box::new(ChannelPages::spawn(move |tx| async move {
            let read = match dialect {
                Dialect::Postgres => postgres::read(&config, &req, &tx).await,
                Dialect::Mysql => mysql::read(&config, &req, &tx).await,
            };
            if let Err(e) = read {
                // The run is gone if the send fails: nothing to tell.
                tx.send(Err(e)).await.ok();
            }
        })))
    }

    fn pace(&self) -> Duration {
        self.config.pace()
    }
}

/// Which server a [`SqlConfig`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    fn schemes(self) -> &'static [&'static str] {
        match self {
            Dialect::Postgres => &["postgres", "postgresql"],
            Dialect::Mysql => &["mysql", "mariadb"],
        }
    }

    /// `name` quoted as an identifier (`schema.table` quoted part by part
    /// when `dotted`).
    pub fn quote(self, name: &str) -> String {
        let q = match self {
            Dialect::Postgres => '"',
            Dialect::Mysql => '`',
        };
        let one = |part: &str| {
            let mut s = String::with_capacity(part.len() + 2);
            s.push(q);
            for c in part.chars() {
                if c == q {
                    s.push(q);
                }
                s.push(c);
            }
            s.push(q);
            s
        };
        one(name)
    }

    /// A table name, `schema.table` quoted part by part.
    pub fn quote_table(self, name: &str) -> String {
        name.split('.')
            .map(|p| self.quote(p))
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// A name of the configuration that is put into SQL: letters, digits and
/// `_`, not starting with a digit.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SqlConfig {
    pub fn validate(&self, dialect: Dialect) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if !dialect.schemes().contains(&url.scheme()) => problems.push((
                "url".into(),
                format!(
                    "scheme '{}' is not supported (use {})",
                    url.scheme(),
                    dialect.schemes().join(" or ")
                ),
            )),
            Ok(url) if url.password().is_some() => problems.push((
                "url".into(),
                format!(
                    "'{}' carries a password: give the name of an environment variable \
                     holding it in password_env instead",
                    redact::url(&self.url)
                ),
            )),
            Ok(url) if !url.has_host() || url.host_str() == Some("") => {
                problems.push(("url".into(), "names no host".into()))
            }
            Ok(_) => {}
            Err(e) => problems.push((
                "url".into(),
                format!("'{}' is not a URL: {e}", redact::url(&self.url)),
            )),
        }
        if self
            .password_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            problems.push(("password_env".into(), "must not be empty".into()));
        }
        match (&self.table, &self.query) {
            (Some(_), Some(_)) => problems.push((
                "query".into(),
                "give either table or query, not both".into(),
            )),
            (None, None) => problems.push((
                "table".into(),
                "missing: the table to read or write (or, for a source, a query)".into(),
            )),
            (Some(t), None) if !t.split('.').all(is_identifier) || t.split('.').count() > 2 => {
                problems.push((
                    "table".into(),
                    format!("'{t}' is not a table name (letters, digits, _; schema.table)"),
                ))
            }
            (None, Some(q)) if q.trim().is_empty() => {
                problems.push(("query".into(), "must not be empty".into()))
            }
            _ => {}
        }
        for k in &self.key {
            if !is_identifier(k) {
                problems.push((
                    "key".into(),
                    format!("'{k}' is not a column name (letters, digits, _)"),
                ));
            }
        }
        if self.table.is_some() && self.key.is_empty() && self.mode == WriteMode::Delete {
            problems.push((
                "key".into(),
                "missing: mode = \"delete\" finds rows by their key columns".into(),
            ));
        }
        if self.query.is_some() && (!self.key.is_empty() || self.mode != WriteMode::default()) {
            problems.push((
                "query".into(),
                "an endpoint with a query is only read from: key and mode are for a table \
                 written to"
                    .into(),
            ));
        }
        if self.page_size == 0 {
            problems.push(("page_size".into(), "must be at least 1".into()));
        }
        if self.batch == 0 || self.batch > 10_000 {
            problems.push(("batch".into(), "must be between 1 and 10000".into()));
        }
        problems
    }

    /// The password from `password_env`, if one is configured.
    pub fn password(&self) -> Result<Option<String>, DeliveryError> {
        super::password_from_env(self.password_env.as_deref())
    }

    pub fn pace(&self) -> Duration {
        self.pace.unwrap_or_default()
    }
}

/// The checkpoint as the text the database compares in the cursor column's
/// type: a whole number without `.0`, text as it is.
pub fn checkpoint_text(c: &Cursor) -> String {
    match c {
        Cursor::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => format!("{}", *n as i64),
        Cursor::Number(n) => n.to_string(),
        Cursor::Text(s) => s.clone(),
    }
}

/// A row read, as a record of the run: its key and cursor from the flow's
/// fields.
pub fn source_record(
    record: serde_json::Map<String, serde_json::Value>,
    key_field: Option<&str>,
    cursor_field: Option<&str>,
) -> SourceRecord {
    let key = key_field
        .and_then(|f| record.get(f))
        .and_then(crate::connectors::key_text);
    let cursor = cursor_field
        .and_then(|f| record.get(f))
        .and_then(Cursor::from_json);
    SourceRecord {
        key,
        cursor,
        payload: serde_json::Value::Object(record).to_string(),
    }
}

/// Rows read ahead, cut into pages that never end inside a run of equal
/// cursors: a page is given only once the row after it is known (or the
/// result is over).
pub struct Cutter {
    rows: VecDeque<SourceRecord>,
    page_size: usize,
}

impl Cutter {
    pub fn new(page_size: usize) -> Cutter {
        Cutter {
            rows: VecDeque::new(),
            page_size: page_size.max(1),
        }
    }

    pub fn push(&mut self, record: SourceRecord) {
        self.rows.push_back(record);
    }

    /// Whether enough rows are held to try to cut a page.
    pub fn full(&self) -> bool {
        self.rows.len() > self.page_size
    }

    /// The next page, if one can be cut: `done` says no more rows come.
    pub fn page(&mut self, done: bool) -> Option<Vec<SourceRecord>> {
        if self.rows.is_empty() {
            return None;
        }
        let len = page_len(self.rows.make_contiguous(), self.page_size);
        if len < self.rows.len() || done {
            Some(self.rows.drain(..len).collect())
        } else {
            None
        }
    }
}

/// What a reader task sends: a page, or why the read failed.
pub type PageResult = Result<Vec<SourceRecord>, SourceError>;

/// The pages a reader task sends. Dropping it (a halted run) ends the task,
/// and with it the server-side result and its connection.
pub struct ChannelPages {
    rx: mpsc::Receiver<PageResult>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ChannelPages {
    /// Runs `read` on its own task with a channel of one page: the reader
    /// is at most one page ahead of the run.
    pub fn spawn<F, Fut>(read: F) -> ChannelPages
    where
        F: FnOnce(mpsc::Sender<PageResult>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(read(tx));
        ChannelPages {
            rx,
            task: Some(task),
        }
    }
}

#[async_trait]
impl Pages for ChannelPages {
    async fn next(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        match self.rx.recv().await {
            Some(page) => page.map(Some),
            None => match self.task.take() {
                // The reader ended without an error: everything is read,
                // unless it panicked.
                Some(task) => match task.await {
                    Ok(()) => Ok(None),
                    Err(e) => Err(SourceError {
                        message: format!("the reader stopped: {e}"),
                    }),
                },
                None => Ok(None),
            },
        }
    }
}

impl Drop for ChannelPages {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Bytes as text: `\x` followed by lowercase hex (PostgreSQL's own form of
/// a bytea, so a PostgreSQL target takes it back as the same bytes).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The records of a batch as JSON objects, each with the names of its
/// top-level fields; a record that is not an object is refused.
pub fn objects(
    payloads: impl Iterator<Item = impl AsRef<str>>,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, DeliveryError> {
    payloads
        .map(|p| match serde_json::from_str(p.as_ref()) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(DeliveryError {
                class: FailureClass::Rejected,
                message: "a record written to a table must be a JSON object".into(),
                retry_after: None,
            }),
        })
        .collect()
}

/// What cutting a batch into runs needs of a record: its set of fields and
/// the value of a key column.
pub trait Fields {
    /// Whether `other` has the same set of fields.
    fn same_fields(&self, other: &Self) -> bool;
    /// The value of field `name`, if the record has it.
    fn field(&self, name: &str) -> Option<&serde_json::Value>;
}

impl Fields for serde_json::Map<String, serde_json::Value> {
    fn same_fields(&self, other: &Self) -> bool {
        self.len() == other.len() && self.keys().all(|k| other.contains_key(k))
    }

    fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.get(name)
    }
}

/// A record's shape, read without building the record: the names of its
/// top-level fields in the order they come, and the values of the key
/// columns. A target that hands PostgreSQL the payload text as it came
/// needs no more (a record of 10 fields costs a scan of its text and a few
/// small strings, instead of a map of every value).
#[derive(Debug)]
pub struct Shape<'a> {
    pub fields: Vec<std::borrow::Cow<'a, str>>,
    /// The key columns' values, by the endpoint's `key` order.
    key: Vec<Option<serde_json::Value>>,
    key_names: &'a [String],
}

impl Fields for Shape<'_> {
    fn same_fields(&self, other: &Self) -> bool {
        // Records from one source come with their fields in one order:
        // compared in order first, as sets only when that differs.
        self.fields == other.fields
            || (self.fields.len() == other.fields.len()
                && self.fields.iter().all(|f| other.fields.contains(f)))
    }

    fn field(&self, name: &str) -> Option<&serde_json::Value> {
        let i = self.key_names.iter().position(|k| k == name)?;
        self.key[i].as_ref()
    }
}

/// Reads a [`Shape`]: a JSON object whose key columns are kept and whose
/// other values are skipped.
struct ShapeSeed<'k>(&'k [String]);

impl<'de: 'k, 'k> serde::de::DeserializeSeed<'de> for ShapeSeed<'k> {
    type Value = Shape<'k>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape<'k>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'k, 'k> serde::de::Visitor<'de> for ShapeSeed<'k> {
    type Value = Shape<'k>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape<'k>, A::Error> {
        let mut shape = Shape {
            fields: Vec::with_capacity(map.size_hint().unwrap_or(16)),
            key: vec![None; self.0.len()],
            key_names: self.0,
        };
        while let Some(name) = map.next_key_seed(FieldName)? {
            match self.0.iter().position(|k| *k == name) {
                Some(i) => shape.key[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            shape.fields.push(name);
        }
        Ok(shape)
    }
}

/// A field name, borrowed from the record's text unless it has escapes
/// (a `Cow` deserialized as such is always a copy).
struct FieldName;

impl<'de> serde::de::DeserializeSeed<'de> for FieldName {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldName {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

/// The shapes of a batch's records (see [`Shape`]); a record that is not a
/// JSON object is refused.
pub fn shapes<'a>(
    payloads: impl Iterator<Item = &'a str>,
    key: &'a [String],
) -> Result<Vec<Shape<'a>>, DeliveryError> {
    use serde::de::DeserializeSeed;
    payloads
        .map(|p| {
            let mut de = serde_json::Deserializer::from_str(p);
            ShapeSeed(key)
                .deserialize(&mut de)
                .and_then(|shape| de.end().map(|()| shape))
                .map_err(|_| DeliveryError {
                    class: FailureClass::Rejected,
                    message: "a record written to a table must be a JSON object".into(),
                    retry_after: None,
                })
        })
        .collect()
}

/// The records cut into runs written by one statement each, in order: a
/// run has one set of fields, and (for `upsert`) no key twice, since one
/// statement cannot both insert and update a row.
pub fn runs<R: Fields>(
    records: &[R],
    key: &[String],
    mode: WriteMode,
) -> Result<Vec<std::ops::Range<usize>>, DeliveryError> {
    if matches!(mode, WriteMode::Upsert | WriteMode::Delete) {
        if key.is_empty() {
            return Err(DeliveryError {
                class: FailureClass::Rejected,
                message: "the endpoint has no key: upsert and delete find rows by the key \
                          columns (key = [\"id\"])"
                    .into(),
                retry_after: None,
            });
        }
        for r in records {
            if let Some(k) = key.iter().find(|k| r.field(k).is_none_or(|v| v.is_null())) {
                return Err(DeliveryError {
                    class: FailureClass::Rejected,
                    message: format!("the record has no value for the key column '{k}'"),
                    retry_after: None,
                });
            }
        }
    }
    if mode == WriteMode::Delete {
        // Only the key columns are used: one statement takes them all.
        return Ok(std::iter::once(0..records.len()).collect());
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut keys = std::collections::HashSet::new();
    for i in 0..records.len() {
        let (a, b) = (&records[start], &records[i]);
        let same_fields = a.same_fields(b);
        let key_of: Vec<String> = key
            .iter()
            .map(|k| b.field(k).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        let repeated = mode == WriteMode::Upsert && keys.contains(&key_of);
        if !same_fields || repeated {
            out.push(start..i);
            start = i;
            keys.clear();
        }
        keys.insert(key_of);
    }
    if start < records.len() {
        out.push(start..records.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(url: &str) -> SqlConfig {
        SqlConfig {
            url: url.into(),
            password_env: None,
            table: Some("customers".into()),
            query: None,
            page_size: 10,
            pace: None,
            key: vec!["id".into()],
            mode: WriteMode::Upsert,
            batch: 10,
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_shown() {
        let p = config("postgres://u:s3cret@h/db").validate(Dialect::Postgres);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "url");
        assert!(!p[0].1.contains("s3cret"), "{}", p[0].1);
        assert!(config("postgres://u@h/db")
            .validate(Dialect::Postgres)
            .is_empty());
        let p = config("postgres://u@h/db").validate(Dialect::Mysql);
        assert_eq!(p[0].0, "url");
    }

    #[test]
    fn validation_names_keys() {
        let mut c = config("mysql://root@h/db");
        c.query = Some("SELECT 1".into());
        c.table = Some("a;drop".into());
        c.batch = 0;
        c.page_size = 0;
        c.key = vec!["x y".into()];
        let keys: Vec<_> = c
            .validate(Dialect::Mysql)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["query", "key", "query", "page_size", "batch"]);
    }

    #[test]
    fn a_page_waits_for_the_row_after_it() {
        let rec = |c: f64| SourceRecord {
            key: None,
            cursor: Some(Cursor::Number(c)),
            payload: "{}".into(),
        };
        let mut cut = Cutter::new(2);
        cut.push(rec(1.0));
        cut.push(rec(2.0));
        assert_eq!(cut.page(false), None, "is the row after 2 also 2?");
        cut.push(rec(2.0));
        assert_eq!(cut.page(false), None);
        cut.push(rec(3.0));
        assert_eq!(cut.page(false).map(|p| p.len()), Some(3));
        assert_eq!(cut.page(false), None);
        assert_eq!(cut.page(true).map(|p| p.len()), Some(1));
    }

    #[test]
    fn checkpoints_are_bound_as_the_database_reads_them() {
        assert_eq!(checkpoint_text(&Cursor::Number(42.0)), "42");
        assert_eq!(checkpoint_text(&Cursor::Number(1.5)), "1.5");
        assert_eq!(
            checkpoint_text(&Cursor::Text("2024-01-01T00:00:00.000001Z".into())),
            "2024-01-01T00:00:00.000001Z"
        );
    }

    #[test]
    fn runs_split_on_fields_and_repeated_keys() {
        let recs: Vec<_> = [
            json!({"id": 1, "a": 1}),
            json!({"id": 2, "a": 1}),
            json!({"id": 1, "a": 2}),
            json!({"id": 3}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let key = vec!["id".to_string()];
        let lens: Vec<_> = runs(&recs, &key, WriteMode::Upsert)
            .unwrap()
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(lens, [2, 1, 1]);
        let lens: Vec<_> = runs(&recs, &key, WriteMode::Insert)
            .unwrap()
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(lens, [3, 1]);
        let missing = [json!({"a": 1}).as_object().unwrap().clone()];
        let e = runs(&missing, &key, WriteMode::Upsert).unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected);
    }

    #[test]
    fn shapes_keep_field_names_and_keys_only() {
        let key = vec!["id".to_string()];
        let payloads = [
            r#"{"id": 1, "a": {"x": [1, 2]}, "b": "t\u00e9"}"#,
            r#"{"b": null, "a": 2, "id": "k"}"#,
            r#"{"id": null, "a": 1, "b": 1}"#,
        ];
        let s = shapes(payloads.iter().copied(), &key).unwrap();
        assert_eq!(s[0].fields, ["id", "a", "b"]);
        assert!(
            s[0].fields
                .iter()
                .all(|f| matches!(f, std::borrow::Cow::Borrowed(_))),
            "names without escapes are read in place, not copied"
        );
        let escaped = shapes(std::iter::once(r#"{"\u0069d": 5}"#), &key).unwrap();
        assert_eq!(escaped[0].fields, ["id"]);
        assert_eq!(escaped[0].field("id"), Some(&json!(5)));
        assert!(s[0].same_fields(&s[1]), "the same set in another order");
        assert_eq!(s[1].field("id"), Some(&json!("k")));
        assert_eq!(s[0].field("a"), None, "only key columns are kept");
        let one_run = runs(&s[..2], &key, WriteMode::Upsert).unwrap();
        assert_eq!((one_run.len(), one_run[0].clone()), (1, 0..2));
        let e = runs(&s, &key, WriteMode::Upsert).unwrap_err();
        assert!(e.message.contains("'id'"), "{}", e.message);
        for bad in ["[1]", "3", "{\"a\": 1} x", "{\"a\": "] {
            let e = shapes(std::iter::once(bad), &key).unwrap_err();
            assert_eq!(e.class, FailureClass::Rejected, "{bad}");
        }
    }

    #[test]
    fn bytes_are_hex() {
        assert_eq!(hex(&[0xde, 0xad, 0x01]), "\\xdead01");
    }
}
