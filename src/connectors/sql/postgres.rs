//! `kind = "postgres"`: PostgreSQL through tokio-postgres (no TLS yet).
//!
//! A run reads in a read-only transaction through a portal, `page_size`
//! rows per fetch. Values are decoded from the binary protocol by column
//! type ([`value`]); a column of a type not listed there fails the run
//! with its name and type.
//!
//! A batch is one transaction, written run by run (records of one set of
//! fields). Where every value goes into its column as PostgreSQL's
//! `json_populate_recordset` would put it ([`copy`]), a run is written by
//! `COPY`: in `insert` mode straight into the table; in `upsert` mode
//! straight into the table too while none of its keys is there yet (a
//! first load), else through a staging table and `INSERT … ON CONFLICT`
//! ([`PgTarget::copy`]). Any other run is written by one statement,
//! `INSERT … SELECT … FROM json_populate_recordset(NULL::table, $1)` given
//! the payloads as they came, joined into one JSON array, so PostgreSQL
//! converts the JSON to the column types and names a bad value itself. A
//! record is read only for its field names and key values
//! ([`super::Shape`]). `json`, not `jsonb`: PostgreSQL then takes the text
//! apart once, without building and sorting a binary document first.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{Client, NoTls};

use super::copy::{self, ColumnKind};
use super::{
    checkpoint_text, hex, runs, shapes, Cutter, Dialect, PageResult, Shape, SqlConfig, WriteMode,
};
use crate::connectors::{
    Delivered, Delivery, DeliveryError, FailureClass, ReadRequest, SourceError, SourceRecord,
    Target,
};
use crate::model::RunMode;
use crate::redact;

const Q: Dialect = Dialect::Postgres;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection, with the password from `password_env`; the
/// connection's task runs until the client is dropped.
async fn connect(config: &SqlConfig) -> Result<Client, DeliveryError> {
    let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| DeliveryError {
        class: FailureClass::Unreachable,
        message: format!("{}: {e}", redact::url(&config.url)),
        retry_after: None,
    })?;
    if let Some(password) = config.password()? {
        pg.password(password);
    }
    pg.connect_timeout(CONNECT_TIMEOUT);
    pg.application_name("sluice");
    let (client, connection) = pg
        .connect(NoTls)
        .await
        .map_err(|e| failure(&config.url, &e, true))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// A PostgreSQL error as a failure class: a bad record (SQLSTATE classes
/// 22, 23, 42) is rejected, refused credentials (28) unauthorized, a
/// connection that cannot be made unreachable, one lost on the way a
/// request without an answer, anything else (deadlock, serialization,
/// too many connections, shutdown) intermittent.
fn failure(url: &str, e: &tokio_postgres::Error, connecting: bool) -> DeliveryError {
    let class = match e.code().map(SqlState::code) {
        Some(code) => classify(code),
        None if connecting => FailureClass::Unreachable,
        None => FailureClass::NoAnswer,
    };
    let message = match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                write!(m, ": {d}").ok();
            }
            m
        }
        None => redact::urls_in(&e.to_string()),
    };
    DeliveryError {
        class,
        message: format!("postgres {}: {message}", redact::url(url)),
        retry_after: None,
    }
}

/// The failure class of a SQLSTATE.
pub fn classify(code: &str) -> FailureClass {
    match &code[..2.min(code.len())] {
        "22" | "23" | "42" => FailureClass::Rejected,
        "28" => FailureClass::Unauthorized,
        // connection_exception; cannot_connect_now, admin/crash shutdown.
        "08" => FailureClass::Unreachable,
        "57" if code.starts_with("57P") => FailureClass::Unreachable,
        _ => FailureClass::Intermittent,
    }
}

/// `SELECT 1` on a new connection.
pub async fn probe(config: &SqlConfig) -> Result<String, DeliveryError> {
    let client = connect(config).await?;
    select_1(config, &client).await
}

async fn select_1(config: &SqlConfig, client: &Client) -> Result<String, DeliveryError> {
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| failure(&config.url, &e, false))?;
    Ok(format!("{} answered SELECT 1", redact::url(&config.url)))
}

/// The bytes of a value as sent, for any type: decoded by [`value`].
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// RFC 3339 in UTC with microseconds, always six digits: text that sorts
/// in time order.
pub fn rfc3339(t: &NaiveDateTime) -> String {
    match (date(&t.date()), clock(&t.time())) {
        (Some(d), Some(c)) => format!("{d}T{c}Z"),
        _ => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    }
}

/// `YYYY-MM-DD`, written out rather than through a format string (read
/// anew each call: a good part of a row's cost); `None` for a year that
/// is not four digits, which chrono writes.
fn date(d: &NaiveDate) -> Option<String> {
    use chrono::Datelike;
    (0..=9999).contains(&d.year()).then(|| {
        let mut s = String::with_capacity(10);
        write!(s, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()).ok();
        s
    })
}

/// `HH:MM:SS.ffffff`, written out; `None` for a leap second, which chrono
/// writes.
fn clock(t: &NaiveTime) -> Option<String> {
    use chrono::Timelike;
    (t.nanosecond() < 1_000_000_000).then(|| {
        let mut s = String::with_capacity(15);
        write!(
            s,
            "{:02}:{:02}:{:02}.{:06}",
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 1000
        )
        .ok();
        s
    })
}

/// A value of type `ty` (binary form) as JSON; an error for a type sluice
/// does not read.
fn value(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => i16::from_sql(ty, raw)?.into(),
        Type::INT4 => i32::from_sql(ty, raw)?.into(),
        Type::INT8 => i64::from_sql(ty, raw)?.into(),
        Type::OID => u32::from_sql(ty, raw)?.into(),
        Type::FLOAT4 => float(f32::from_sql(ty, raw)?.into()),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            Value::String(String::from_sql(ty, raw)?)
        }
        Type::TIMESTAMPTZ => {
            Value::String(rfc3339(&DateTime::<Utc>::from_sql(ty, raw)?.naive_utc()))
        }
        Type::TIMESTAMP => Value::String(rfc3339(&NaiveDateTime::from_sql(ty, raw)?)),
        Type::DATE => {
            let d = NaiveDate::from_sql(ty, raw)?;
            Value::String(date(&d).unwrap_or_else(|| d.format("%Y-%m-%d").to_string()))
        }
        Type::TIME => {
            let t = NaiveTime::from_sql(ty, raw)?;
            Value::String(clock(&t).unwrap_or_else(|| t.format("%H:%M:%S%.6f").to_string()))
        }
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::UUID => Value::String(uuid(raw)?),
        Type::BYTEA => Value::String(hex(raw)),
        _ => match ty.kind() {
            Kind::Array(member) => {
                let items = Vec::<Option<Raw>>::from_sql(ty, raw)?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(match item {
                        None => Value::Null,
                        Some(Raw(r)) => value(member, r)?,
                    });
                }
                Value::Array(out)
            }
            // Enum labels and citext travel as their text.
            Kind::Enum(_) => Value::String(std::str::from_utf8(raw)?.to_string()),
            Kind::Simple if ty.name() == "citext" => {
                Value::String(std::str::from_utf8(raw)?.to_string())
            }
            Kind::Domain(inner) => value(inner, raw)?,
            _ => return Err(format!("type {} is not read by sluice", ty.name()).into()),
        },
    })
}

fn uuid(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("a uuid of other than 16 bytes".into());
    }
    let h = hex(raw);
    let h = &h[2..];
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// NUMERIC's binary form (base-10000 digits) as exact decimal text.
fn numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(8 + 2 * i)?);
    }
    let digit = |i: i64| -> u16 {
        if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                write!(s, "{}", digit(i)).ok();
            } else {
                write!(s, "{:04}", digit(i)).ok();
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            write!(frac, "{:04}", digit(i)).ok();
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Ok(s)
}

/// How a query's rows become records: per column, its name as written in
/// JSON, and whether it is written (a name that comes twice keeps its last
/// column, as a JSON object keeps its last value).
struct Columns {
    /// `"name":` of each column, escaped; `None` for one not written.
    names: Vec<Option<String>>,
    /// The columns of the flow's key and cursor fields.
    key: Option<usize>,
    cursor: Option<usize>,
}

impl Columns {
    fn new(columns: &[tokio_postgres::Column], key: Option<&str>, cursor: Option<&str>) -> Columns {
        let last = |name: &str| columns.iter().rposition(|c| c.name() == name);
        let names = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (last(c.name()) == Some(i)).then(|| {
                    let mut name = serde_json::to_string(c.name()).unwrap_or_default();
                    name.push(':');
                    name
                })
            })
            .collect();
        Columns {
            names,
            key: key.and_then(last),
            cursor: cursor.and_then(last),
        }
    }
}

/// An integer as JSON.
fn number(out: &mut Vec<u8>, n: impl std::fmt::Display) -> std::io::Result<()> {
    std::io::Write::write_fmt(out, format_args!("{n}"))
}

/// A value written as JSON: what [`value`] gives, written directly for the
/// common types (no document is built for a row).
fn write_value(ty: &Type, raw: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
    let quoted = |out: &mut Vec<u8>, text: &str| {
        // Digits, dashes, colons and dots: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    };
    match *ty {
        Type::BOOL => out.extend_from_slice(if bool::from_sql(ty, raw)? {
            b"true"
        } else {
            b"false"
        }),
        Type::INT2 => number(out, i16::from_sql(ty, raw)?)?,
        Type::INT4 => number(out, i32::from_sql(ty, raw)?)?,
        Type::INT8 => number(out, i64::from_sql(ty, raw)?)?,
        Type::NUMERIC => quoted(out, &numeric(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            serde_json::to_writer(&mut *out, <&str>::from_sql(ty, raw)?)?
        }
        Type::TIMESTAMPTZ => quoted(
            out,
            &rfc3339(&DateTime::<Utc>::from_sql(ty, raw)?.naive_utc()),
        ),
        Type::TIMESTAMP => quoted(out, &rfc3339(&NaiveDateTime::from_sql(ty, raw)?)),
        _ => serde_json::to_writer(&mut *out, &value(ty, raw)?)?,
    }
    Ok(())
}

/// A row as a record: its JSON text written column by column, its key and
/// cursor from their columns.
fn row_record(row: &tokio_postgres::Row, columns: &Columns) -> Result<SourceRecord, SourceError> {
    let failed = |i: usize, e: BoxError| {
        let column = &row.columns()[i];
        SourceError {
            message: format!(
                "column '{}' of type {}: {e}",
                column.name(),
                column.type_().name()
            ),
        }
    };
    let raw = |i: usize| {
        row.try_get::<_, Option<Raw>>(i)
            .map_err(|e| failed(i, e.into()))
    };
    let mut out = Vec::with_capacity(64 + 24 * row.len());
    out.push(b'{');
    for (i, name) in columns.names.iter().enumerate() {
        let Some(name) = name else { continue };
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
        match raw(i)? {
            None => out.extend_from_slice(b"null"),
            Some(Raw(r)) => {
                write_value(row.columns()[i].type_(), r, &mut out).map_err(|e| failed(i, e))?
            }
        }
    }
    out.push(b'}');
    let field = |i: Option<usize>| -> Result<Option<Value>, SourceError> {
        let Some(i) = i else { return Ok(None) };
        Ok(Some(match raw(i)? {
            None => Value::Null,
            Some(Raw(r)) => value(row.columns()[i].type_(), r).map_err(|e| failed(i, e))?,
        }))
    };
    Ok(SourceRecord {
        key: field(columns.key)?
            .as_ref()
            .and_then(crate::connectors::key_text),
        cursor: field(columns.cursor)?
            .as_ref()
            .and_then(crate::connectors::Cursor::from_json),
        payload: String::from_utf8(out).map_err(|e| SourceError {
            message: format!("a row written as JSON is not UTF-8: {e}"),
        })?,
    })
}

/// A type's name as SQL, for a cast.
fn type_sql(ty: &Type) -> String {
    format!("{}.{}", Q.quote(ty.schema()), Q.quote(ty.name()))
}

/// Reads what the run captures and sends it page by page.
pub(super) async fn read(
    config: &SqlConfig,
    req: &ReadRequest,
    tx: &mpsc::Sender<PageResult>,
) -> Result<(), SourceError> {
    let failed = |e: tokio_postgres::Error| SourceError {
        message: failure(&config.url, &e, false).message,
    };
    let mut client = connect(config)
        .await
        .map_err(|e| SourceError { message: e.message })?;
    let txn = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(failed)?;
    let checkpoint = match (req.mode, &req.checkpoint) {
        (RunMode::Changed, Some(c)) => Some(checkpoint_text(c)),
        _ => None,
    };
    let cursor = req.cursor_field.as_deref();
    let key = req.key_field.as_deref();
    let mut order = Vec::new();
    if let Some(c) = cursor {
        order.push(format!("{} NULLS FIRST", Q.quote(c)));
    }
    if let Some(k) = key {
        order.push(Q.quote(k));
    }
    let order = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    let (sql, param) = match (&config.table, &config.query) {
        (Some(table), _) => {
            let table = Q.quote_table(table);
            match (cursor, checkpoint) {
                (Some(c), Some(checkpoint)) => {
                    let probe = txn
                        .prepare(&format!("SELECT {} FROM {table} LIMIT 0", Q.quote(c)))
                        .await
                        .map_err(failed)?;
                    let ty = type_sql(probe.columns()[0].type_());
                    (
                        format!(
                            "SELECT * FROM {table} WHERE {} > CAST($1::text AS {ty}){order}",
                            Q.quote(c)
                        ),
                        Some(Some(checkpoint)),
                    )
                }
                _ => (format!("SELECT * FROM {table}{order}"), None),
            }
        }
        (None, Some(query)) if query.contains("$cursor") => {
            // The checkpoint has the type of the cursor column the query
            // gives (found with NULL in its place).
            let probe = txn
                .prepare(&format!(
                    "SELECT * FROM ({}) AS sluice_rows LIMIT 0",
                    query.replace("$cursor", "NULL")
                ))
                .await
                .map_err(failed)?;
            let ty = probe
                .columns()
                .iter()
                .find(|c| Some(c.name()) == cursor)
                .map(|c| type_sql(c.type_()))
                .unwrap_or_else(|| "text".into());
            let query = query.replace("$cursor", &format!("CAST($1::text AS {ty})"));
            (
                format!("SELECT * FROM ({query}) AS sluice_rows{order}"),
                Some(checkpoint),
            )
        }
        (None, Some(query)) => (
            format!("SELECT * FROM ({query}) AS sluice_rows{order}"),
            None,
        ),
        (None, None) => {
            return Err(SourceError {
                message: "no table or query to read".into(),
            })
        }
    };
    let statement = txn.prepare(&sql).await.map_err(failed)?;
    let portal = match &param {
        Some(p) => txn.bind(&statement, &[p]).await,
        None => txn.bind(&statement, &[]).await,
    }
    .map_err(failed)?;
    let page_size = config.page_size.max(1);
    let fetch = i32::try_from(page_size).unwrap_or(i32::MAX);
    let columns = Columns::new(statement.columns(), key, cursor);
    let mut cutter = Cutter::new(page_size);
    loop {
        let rows = txn.query_portal(&portal, fetch).await.map_err(failed)?;
        let done = rows.len() < page_size;
        for row in &rows {
            cutter.push(row_record(row, &columns)?);
        }
        while let Some(page) = cutter.page(done) {
            if tx.send(Ok(page)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

pub struct PgTarget {
    config: SqlConfig,
    table: String,
    /// The connection, kept between batches; dropped after a failure that
    /// may have broken it, and opened again by the next batch.
    client: tokio::sync::Mutex<Option<Conn>>,
}

/// A target's connection and what it learnt of the table.
struct Conn {
    client: Client,
    /// The table's columns by name, with how `COPY` writes each (`None`:
    /// only the JSON statement); read again when a record names a column
    /// not among them.
    columns: Option<HashMap<String, Option<ColumnKind>>>,
    /// Upserts still to write through the staging table before a batch is
    /// again first tried straight into the table (set when a batch met
    /// rows already there).
    staged: u32,
}

/// How many upserts go through the staging table after one met rows
/// already in the table, before the direct way is tried again: a run of
/// changes (every row there) pays a failed COPY once in this many batches.
const STAGED_AFTER_CONFLICT: u32 = 16;

/// The session's staging table of an upsert: the target's columns (types
/// only, no constraints), emptied at each commit.
const STAGE: &str = "pg_temp.sluice_stage";

impl PgTarget {
    pub fn new(config: &SqlConfig) -> PgTarget {
        PgTarget {
            config: config.clone(),
            table: Q.quote_table(config.table.as_deref().unwrap_or_default()),
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection kept, or a new one.
    async fn connection<'a>(
        &self,
        slot: &'a mut Option<Conn>,
    ) -> Result<&'a mut Conn, DeliveryError> {
        let kept = slot.take().filter(|c| !c.client.is_closed());
        let conn = match kept {
            Some(conn) => conn,
            None => Conn {
                client: connect(&self.config).await?,
                columns: None,
                staged: 0,
            },
        };
        Ok(slot.insert(conn))
    }

    /// Reads the table's columns, and makes the staging table of an upsert
    /// anew (a column added since must be in it).
    async fn learn(&self, conn: &mut Conn) -> Result<(), tokio_postgres::Error> {
        let t = &self.table;
        let probe = conn
            .client
            .prepare(&format!("SELECT * FROM {t} LIMIT 0"))
            .await?;
        let columns = probe
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), ColumnKind::of(c.type_())))
            .collect();
        if self.config.mode == WriteMode::Upsert {
            conn.client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {STAGE}; \
                     CREATE TEMP TABLE sluice_stage ON COMMIT DELETE ROWS AS \
                     SELECT * FROM {t} WITH NO DATA"
                ))
                .await?;
        }
        conn.columns = Some(columns);
        Ok(())
    }

    /// The statement writing records with these fields from `rows`: the
    /// JSON statement's records (`None`), or a table holding them.
    fn statement(&self, fields: &[&str], rows: Option<&str>) -> String {
        let t = &self.table;
        let cols: Vec<String> = fields.iter().map(|f| Q.quote(f)).collect();
        let cols = cols.join(", ");
        let rows = match rows {
            Some(table) => table.to_string(),
            None => format!("json_populate_recordset(NULL::{t}, $1::text::json)"),
        };
        match self.config.mode {
            WriteMode::Insert => format!("INSERT INTO {t} ({cols}) SELECT {cols} FROM {rows}"),
            WriteMode::Upsert => {
                let key: Vec<String> = self.config.key.iter().map(|k| Q.quote(k)).collect();
                let set: Vec<String> = fields
                    .iter()
                    .filter(|f| !self.config.key.iter().any(|k| k == *f))
                    .map(|f| format!("{0} = EXCLUDED.{0}", Q.quote(f)))
                    .collect();
                let action = if set.is_empty() {
                    "NOTHING".to_string()
                } else {
                    format!("UPDATE SET {}", set.join(", "))
                };
                format!(
                    "INSERT INTO {t} ({cols}) SELECT {cols} FROM {rows} ON CONFLICT ({}) DO {action}",
                    key.join(", ")
                )
            }
            WriteMode::Delete => {
                let on: Vec<String> = self
                    .config
                    .key
                    .iter()
                    .map(|k| format!("{t}.{0} = r.{0}", Q.quote(k)))
                    .collect();
                format!(
                    "DELETE FROM {t} USING {rows} AS r WHERE {}",
                    on.join(" AND ")
                )
            }
        }
    }

    async fn write(
        &self,
        conn: &mut Conn,
        batch: &[Delivery<'_>],
        records: &[Shape<'_>],
        runs: &[std::ops::Range<usize>],
    ) -> Result<(), tokio_postgres::Error> {
        let fields_of = |run: &std::ops::Range<usize>| -> Vec<&str> {
            match self.config.mode {
                WriteMode::Delete => self.config.key.iter().map(String::as_str).collect(),
                _ => records[run.start].fields.iter().map(|f| &**f).collect(),
            }
        };
        if self.config.mode != WriteMode::Delete {
            let known = |c: &Conn| {
                c.columns.as_ref().is_some_and(|columns| {
                    runs.iter()
                        .all(|run| fields_of(run).iter().all(|f| columns.contains_key(*f)))
                })
            };
            if !known(conn) {
                self.learn(conn).await?;
            }
        }
        let txn = conn.client.transaction().await?;
        for run in runs {
            let fields = fields_of(run);
            let payloads = || batch[run.clone()].iter().map(|d| d.payload);
            // By COPY where it writes what the JSON statement would.
            let kinds: Option<Vec<ColumnKind>> = match (self.config.mode, &conn.columns) {
                (WriteMode::Delete, _) | (_, None) => None,
                (_, Some(columns)) => fields
                    .iter()
                    .map(|f| columns.get(*f).copied().flatten())
                    .collect(),
            };
            if let Some(kinds) = kinds {
                let mut data = Vec::with_capacity(payloads().map(str::len).sum());
                if copy::encode(payloads(), &fields, &kinds, &mut data).is_some() {
                    self.copy(&txn, &fields, data, &mut conn.staged).await?;
                    continue;
                }
            }
            // The records as they came, not as parsed: numbers keep every
            // digit.
            let mut json =
                String::with_capacity(2 + payloads().map(|p| p.len() + 1).sum::<usize>());
            json.push('[');
            for (i, p) in payloads().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(p);
            }
            json.push(']');
            txn.execute(&self.statement(&fields, None), &[&json])
                .await?;
        }
        txn.commit().await
    }

    /// Writes COPY lines of `fields`: straight into the table (`insert`),
    /// or, for an upsert, straight into the table where none of the keys is
    /// there yet (a first load: a COPY costs PostgreSQL a third of what
    /// `INSERT … ON CONFLICT` does) and otherwise into the staging table
    /// and from there by the upsert's statement. The direct COPY is all or
    /// nothing: a key already there (unique violation) rolls it back to
    /// its savepoint, and the same lines are upserted instead — the table
    /// ends as the upsert alone leaves it. `staged` counts down the
    /// batches sent by the staging table after such a miss.
    async fn copy(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        fields: &[&str],
        data: Vec<u8>,
        staged: &mut u32,
    ) -> Result<(), tokio_postgres::Error> {
        let cols: Vec<String> = fields.iter().map(|f| Q.quote(f)).collect();
        let cols = cols.join(", ");
        match self.config.mode {
            WriteMode::Insert => return copy_in(txn, &self.table, &cols, data).await,
            WriteMode::Upsert if *staged == 0 => {
                txn.batch_execute("SAVEPOINT sluice_direct").await?;
                match copy_in(txn, &self.table, &cols, data.clone()).await {
                    Ok(()) => return txn.batch_execute("RELEASE sluice_direct").await,
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        txn.batch_execute("ROLLBACK TO sluice_direct").await?;
                        *staged = STAGED_AFTER_CONFLICT;
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => *staged = staged.saturating_sub(1),
        }
        copy_in(txn, STAGE, &cols, data).await?;
        let upsert = self.statement(fields, Some(STAGE));
        txn.batch_execute(&format!("{upsert}; DELETE FROM {STAGE}"))
            .await
    }
}

/// `COPY into (cols) FROM STDIN` of the text-format lines `data`.
async fn copy_in(
    txn: &tokio_postgres::Transaction<'_>,
    into: &str,
    cols: &str,
    data: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = txn
        .copy_in::<_, std::io::Cursor<Vec<u8>>>(&format!("COPY {into} ({cols}) FROM STDIN"))
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(std::io::Cursor::new(data)).await?;
    sink.as_mut().finish().await.map(drop)
}

#[async_trait]
impl Target for PgTarget {
    fn batch_size(&self) -> usize {
        self.config.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let records = shapes(batch.iter().map(|d| d.payload), &self.config.key)?;
        // Refused before any SQL: no key, no key value.
        let runs = runs(&records, &self.config.key, self.config.mode)?;
        let mut slot = self.client.lock().await;
        let conn = self.connection(&mut slot).await?;
        match self.write(conn, batch, &records, &runs).await {
            Ok(()) => Ok(Delivered::default()),
            Err(e) => {
                let failure = failure(&self.config.url, &e, false);
                if e.code().is_none() || failure.class != FailureClass::Rejected {
                    *slot = None;
                } else {
                    // The table may have changed: learnt again.
                    conn.columns = None;
                }
                Err(failure)
            }
        }
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        let mut slot = self.client.lock().await;
        let conn = self.connection(&mut slot).await?;
        let answer = select_1(&self.config, &conn.client).await;
        if answer.is_err() {
            *slot = None;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(ndigits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((ndigits.len() as u16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for d in ndigits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_are_exact_text() {
        // 12345.6789
        assert_eq!(
            numeric(&numeric_bytes(&[1, 2345, 6789], 1, 0, 4)).unwrap(),
            "12345.6789"
        );
        // -0.0012 (dscale 4)
        assert_eq!(
            numeric(&numeric_bytes(&[12], -1, 0x4000, 4)).unwrap(),
            "-0.0012"
        );
        // 10000000000 (no fraction)
        assert_eq!(
            numeric(&numeric_bytes(&[100], 2, 0, 0)).unwrap(),
            "10000000000"
        );
        assert_eq!(numeric(&numeric_bytes(&[], 0, 0, 2)).unwrap(), "0.00");
        assert_eq!(numeric(&numeric_bytes(&[], 0, 0xC000, 0)).unwrap(), "NaN");
    }

    #[test]
    fn times_are_written_as_chrono_would() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        for t in [
            at("2024-01-01 00:00:00"),
            at("0001-02-03 04:05:06.000007"),
            at("9999-12-31 23:59:59.999999"),
            at("1970-01-01 00:00:00.5"),
        ] {
            assert_eq!(rfc3339(&t), t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
            assert_eq!(date(&t.date()), Some(t.format("%Y-%m-%d").to_string()));
            assert_eq!(clock(&t.time()), Some(t.format("%H:%M:%S%.6f").to_string()));
        }
        let far = NaiveDate::from_ymd_opt(12345, 1, 1).unwrap();
        assert_eq!(date(&far), None);
        assert_eq!(
            rfc3339(&far.and_hms_opt(0, 0, 0).unwrap()),
            "+12345-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn sqlstates_make_classes() {
        assert_eq!(classify("22P02"), FailureClass::Rejected);
        assert_eq!(classify("23505"), FailureClass::Rejected);
        assert_eq!(classify("42703"), FailureClass::Rejected);
        assert_eq!(classify("28P01"), FailureClass::Unauthorized);
        assert_eq!(classify("40P01"), FailureClass::Intermittent);
        assert_eq!(classify("40001"), FailureClass::Intermittent);
        assert_eq!(classify("53300"), FailureClass::Intermittent);
        assert_eq!(classify("57P01"), FailureClass::Unreachable);
        assert_eq!(classify("08006"), FailureClass::Unreachable);
    }
}
