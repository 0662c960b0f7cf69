//! `kind = "mysql"`: MySQL and MariaDB through mysql_async (no TLS yet).
//!
//! Every connection sets its session's `time_zone` to UTC (TIMESTAMP
//! columns are read and written in UTC; DATETIME columns, which have no
//! zone, are taken as UTC) and adds `STRICT_ALL_TABLES` to its `sql_mode`,
//! so a bad value is refused rather than silently cut. A run reads a
//! prepared statement's streamed result row by row. A batch is one
//! transaction of multi-row `INSERT … [ON DUPLICATE KEY UPDATE]` or
//! `DELETE … WHERE key IN (…)` statements.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Row, TxOpts};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{hex, objects, runs, source_record, Cutter, Dialect, PageResult, SqlConfig, WriteMode};
use crate::connectors::{
    Cursor, Delivered, Delivery, DeliveryError, FailureClass, ReadRequest, SourceError, Target,
};
use crate::model::RunMode;
use crate::redact;

const Q: Dialect = Dialect::Mysql;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most placeholders in one statement (the protocol's limit is 65535).
const MAX_PARAMS: usize = 60_000;

/// The character set number of binary strings (BINARY, VARBINARY, BLOB).
const BINARY_CHARSET: u16 = 63;

async fn connect(config: &SqlConfig) -> Result<Conn, DeliveryError> {
    let url = match config.url.strip_prefix("mariadb://") {
        Some(rest) => Cow::Owned(format!("mysql://{rest}")),
        None => Cow::Borrowed(config.url.as_str()),
    };
    let opts = Opts::from_url(&url).map_err(|e| DeliveryError {
        class: FailureClass::Unreachable,
        message: format!("mysql {}: {e}", redact::url(&config.url)),
        retry_after: None,
    })?;
    // prefer_socket off: on 127.0.0.1 the driver would otherwise switch to
    // the server's Unix socket, around the address configured.
    let mut opts = OptsBuilder::from_opts(opts).prefer_socket(false).init(vec![
        "SET time_zone = '+00:00'",
        "SET sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')",
    ]);
    if let Some(password) = config.password()? {
        opts = opts.pass(Some(password));
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(failure(&config.url, &e, true)),
        Err(_) => Err(DeliveryError {
            class: FailureClass::NoAnswer,
            message: format!(
                "mysql {}: no connection within {}s",
                redact::url(&config.url),
                CONNECT_TIMEOUT.as_secs()
            ),
            retry_after: None,
        }),
    }
}

/// A MySQL error as a failure class: a bad record (SQLSTATE classes 22,
/// 23, 42 and the value errors MySQL files under HY000) is rejected,
/// refused credentials (1045, 1044, 1698) unauthorized, a connection that
/// cannot be made unreachable, one lost on the way a request without an
/// answer, anything else (deadlock, lock wait, too many connections)
/// intermittent.
fn failure(url: &str, e: &mysql_async::Error, connecting: bool) -> DeliveryError {
    let lost = if connecting {
        FailureClass::Unreachable
    } else {
        FailureClass::NoAnswer
    };
    let (class, message) = match e {
        mysql_async::Error::Server(s) => (
            classify(s.code, &s.state),
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
        ),
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => (lost, e.to_string()),
        other => (FailureClass::Intermittent, other.to_string()),
    };
    DeliveryError {
        class,
        message: format!("mysql {}: {}", redact::url(url), redact::urls_in(&message)),
        retry_after: None,
    }
}

/// The failure class of a server error.
pub fn classify(code: u16, state: &str) -> FailureClass {
    match code {
        1044 | 1045 | 1698 => return FailureClass::Unauthorized,
        // Shutting down, gone away, lost.
        1053 | 2006 | 2013 => return FailureClass::Unreachable,
        // Value and constraint errors filed under HY000 or 01000.
        1048 | 1054 | 1062 | 1146 | 1264 | 1265 | 1292 | 1364 | 1366 | 1406 | 1451 | 1452 => {
            return FailureClass::Rejected
        }
        _ => {}
    }
    match &state[..2.min(state.len())] {
        "22" | "23" | "42" => FailureClass::Rejected,
        "28" => FailureClass::Unauthorized,
        "08" => FailureClass::Unreachable,
        _ => FailureClass::Intermittent,
    }
}

pub async fn probe(config: &SqlConfig) -> Result<String, DeliveryError> {
    let mut conn = connect(config).await?;
    let answer = select_1(config, &mut conn).await;
    conn.disconnect().await.ok();
    answer
}

async fn select_1(config: &SqlConfig, conn: &mut Conn) -> Result<String, DeliveryError> {
    conn.query_drop("SELECT 1")
        .await
        .map_err(|e| failure(&config.url, &e, false))?;
    Ok(format!("{} answered SELECT 1", redact::url(&config.url)))
}

/// A string as MySQL reads a date and time: an RFC 3339 timestamp becomes
/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (the session's zone), anything else
/// stays as it is.
pub fn mysql_text(s: &str) -> Cow<'_, str> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Cow::Owned(
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string(),
        ),
        Err(_) => Cow::Borrowed(s),
    }
}

/// What a target column takes, beyond what MySQL converts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Date and time: RFC 3339 text is turned into MySQL's form.
    Time,
    /// Bytes: `\x` hex text (as sources give bytes) is turned into bytes.
    Bytes,
    Other,
}

/// The columns of the target table that need a conversion, by name.
type Columns = std::collections::HashMap<String, Takes>;

async fn columns(conn: &mut Conn, table: &str) -> Result<Columns, mysql_async::Error> {
    let statement = conn.prep(format!("SELECT * FROM {table} LIMIT 0")).await?;
    let mut out = Columns::new();
    for c in statement.columns().iter() {
        let takes = match c.column_type() {
            ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_TIMESTAMP2
            | ColumnType::MYSQL_TYPE_DATE => Takes::Time,
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => Takes::Other,
            _ if c.character_set() == BINARY_CHARSET
                && !c.flags().contains(ColumnFlags::NUM_FLAG) =>
            {
                Takes::Bytes
            }
            _ => Takes::Other,
        };
        if takes != Takes::Other {
            out.insert(c.name_str().into_owned(), takes);
        }
    }
    Ok(out)
}

/// `\x` followed by hex digits, as bytes.
fn unhex(s: &str) -> Option<Vec<u8>> {
    let h = s.strip_prefix("\\x")?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A JSON value as a statement parameter for a column that takes `takes`.
fn param(v: &Value, takes: Takes) -> mysql_async::Value {
    use mysql_async::Value as M;
    match v {
        Value::String(s) if takes == Takes::Time => {
            M::Bytes(mysql_text(s).into_owned().into_bytes())
        }
        Value::String(s) if takes == Takes::Bytes => {
            M::Bytes(unhex(s).unwrap_or_else(|| s.clone().into_bytes()))
        }
        Value::Null => M::NULL,
        Value::Bool(b) => M::Int(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => M::Int(i),
            (None, Some(u)) => M::UInt(u),
            _ => M::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => M::Bytes(s.clone().into_bytes()),
        other => M::Bytes(other.to_string().into_bytes()),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// A value read (binary protocol) as JSON, by its column's type.
fn value(column: &mysql_async::Column, v: mysql_async::Value) -> Result<Value, String> {
    use mysql_async::Value as M;
    let ty = column.column_type();
    Ok(match v {
        M::NULL => Value::Null,
        M::Int(i) if ty == ColumnType::MYSQL_TYPE_TINY && column.column_length() == 1 => {
            Value::Bool(i != 0)
        }
        M::Int(i) => i.into(),
        M::UInt(u) => u.into(),
        M::Float(f) => float(f.into()),
        M::Double(f) => float(f),
        M::Date(y, mo, d, h, mi, s, us) => match ty {
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => {
                Value::String(format!("{y:04}-{mo:02}-{d:02}"))
            }
            _ => Value::String(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z"
            )),
        },
        M::Time(neg, days, h, mi, s, us) => Value::String(format!(
            "{}{:02}:{mi:02}:{s:02}.{us:06}",
            if neg { "-" } else { "" },
            u32::from(h) + days * 24
        )),
        M::Bytes(b) => match ty {
            ColumnType::MYSQL_TYPE_JSON => {
                serde_json::from_slice(&b).map_err(|e| format!("not JSON: {e}"))?
            }
            ColumnType::MYSQL_TYPE_GEOMETRY => {
                return Err("type GEOMETRY is not read by sluice".into())
            }
            ColumnType::MYSQL_TYPE_BIT => Value::String(hex(&b)),
            _ if column.character_set() == BINARY_CHARSET
                && !matches!(
                    ty,
                    ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL
                )
                && !column.flags().contains(ColumnFlags::NUM_FLAG) =>
            {
                Value::String(hex(&b))
            }
            _ => Value::String(String::from_utf8(b).map_err(|_| "text that is not UTF-8")?),
        },
    })
}

fn row_object(mut row: Row) -> Result<Map<String, Value>, SourceError> {
    let columns = row.columns();
    let mut map = Map::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let raw = row
            .take::<mysql_async::Value, _>(i)
            .unwrap_or(mysql_async::Value::NULL);
        let v = value(column, raw).map_err(|e| SourceError {
            message: format!(
                "column '{}' of type {:?}: {e}",
                column.name_str(),
                column.column_type()
            ),
        })?;
        map.insert(column.name_str().into_owned(), v);
    }
    Ok(map)
}

/// The checkpoint as a parameter compared with the cursor column.
fn checkpoint_param(c: &Cursor) -> mysql_async::Value {
    match c {
        Cursor::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            mysql_async::Value::Int(*n as i64)
        }
        Cursor::Number(n) => mysql_async::Value::Double(*n),
        Cursor::Text(s) => mysql_async::Value::Bytes(mysql_text(s).into_owned().into_bytes()),
    }
}

/// Reads what the run captures and sends it page by page.
pub(super) async fn read(
    config: &SqlConfig,
    req: &ReadRequest,
    tx: &mpsc::Sender<PageResult>,
) -> Result<(), SourceError> {
    let failed = |e: mysql_async::Error| SourceError {
        message: failure(&config.url, &e, false).message,
    };
    let mut conn = connect(config)
        .await
        .map_err(|e| SourceError { message: e.message })?;
    let checkpoint = match (req.mode, &req.checkpoint) {
        (RunMode::Changed, Some(c)) => Some(checkpoint_param(c)),
        _ => None,
    };
    let cursor = req.cursor_field.as_deref();
    let key = req.key_field.as_deref();
    // NULLs sort first in MySQL's ascending order.
    let order: Vec<String> = cursor.into_iter().chain(key).map(|c| Q.quote(c)).collect();
    let order = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    let (sql, wants) = match (&config.table, &config.query) {
        (Some(table), _) => {
            let table = Q.quote_table(table);
            match (cursor, &checkpoint) {
                (Some(c), Some(_)) => (
                    format!("SELECT * FROM {table} WHERE {} > ?{order}", Q.quote(c)),
                    true,
                ),
                _ => (format!("SELECT * FROM {table}{order}"), false),
            }
        }
        (None, Some(query)) => (
            format!("SELECT * FROM ({query}) AS sluice_rows{order}"),
            true,
        ),
        (None, None) => {
            return Err(SourceError {
                message: "no table or query to read".into(),
            })
        }
    };
    let statement = conn.prep(sql).await.map_err(failed)?;
    let params = if wants && statement.num_params() > 0 {
        let p = checkpoint.unwrap_or(mysql_async::Value::NULL);
        Params::Positional(vec![p; statement.num_params() as usize])
    } else {
        Params::Empty
    };
    let mut result = conn.exec_iter(&statement, params).await.map_err(failed)?;
    let mut cutter = Cutter::new(config.page_size);
    while let Some(row) = result.next().await.map_err(failed)? {
        cutter.push(source_record(row_object(row)?, key, cursor));
        if cutter.full() {
            while let Some(page) = cutter.page(false) {
                if tx.send(Ok(page)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    while let Some(page) = cutter.page(true) {
        if tx.send(Ok(page)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

pub struct MysqlTarget {
    config: SqlConfig,
    table: String,
    /// The connection, kept between batches; dropped after a failure that
    /// may have broken it, and opened again by the next batch.
    conn: tokio::sync::Mutex<Option<(Conn, Columns)>>,
}

impl MysqlTarget {
    pub fn new(config: &SqlConfig) -> MysqlTarget {
        MysqlTarget {
            config: config.clone(),
            table: Q.quote_table(config.table.as_deref().unwrap_or_default()),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The statements (SQL and parameters) writing one run of records.
    fn statements(
        &self,
        run: &[Map<String, Value>],
        columns: &Columns,
    ) -> Vec<(String, Vec<mysql_async::Value>)> {
        let takes = |f: &str| columns.get(f).copied().unwrap_or(Takes::Other);
        let t = &self.table;
        let key = &self.config.key;
        let mut out = Vec::new();
        if self.config.mode == WriteMode::Delete {
            let per = (MAX_PARAMS / key.len().max(1)).max(1);
            for chunk in run.chunks(per) {
                let cols: Vec<String> = key.iter().map(|k| Q.quote(k)).collect();
                let one = format!("({})", vec!["?"; key.len()].join(", "));
                let sql = format!(
                    "DELETE FROM {t} WHERE ({}) IN ({})",
                    cols.join(", "),
                    vec![one; chunk.len()].join(", ")
                );
                let params = chunk
                    .iter()
                    .flat_map(|r| key.iter().map(|k| param(&r[k], takes(k))))
                    .collect();
                out.push((sql, params));
            }
            return out;
        }
        let fields: Vec<&String> = run[0].keys().collect();
        let cols: Vec<String> = fields.iter().map(|f| Q.quote(f)).collect();
        let update: Vec<String> = fields
            .iter()
            .filter(|f| !key.contains(f))
            .map(|f| format!("{0} = VALUES({0})", Q.quote(f)))
            .collect();
        let tail = match self.config.mode {
            WriteMode::Upsert if update.is_empty() => {
                // Every column is a key column: the row is there, or is
                // put there.
                let k = Q.quote(&key[0]);
                format!(" ON DUPLICATE KEY UPDATE {k} = {k}")
            }
            WriteMode::Upsert => format!(" ON DUPLICATE KEY UPDATE {}", update.join(", ")),
            _ => String::new(),
        };
        let one = format!("({})", vec!["?"; fields.len()].join(", "));
        let per = (MAX_PARAMS / fields.len().max(1)).max(1);
        for chunk in run.chunks(per) {
            let sql = format!(
                "INSERT INTO {t} ({}) VALUES {}{tail}",
                cols.join(", "),
                vec![one.as_str(); chunk.len()].join(", ")
            );
            let params = chunk
                .iter()
                .flat_map(|r| fields.iter().map(|f| param(&r[*f], takes(f))))
                .collect();
            out.push((sql, params));
        }
        out
    }

    async fn write(
        &self,
        conn: &mut Conn,
        columns: &Columns,
        records: &[Map<String, Value>],
        runs: &[std::ops::Range<usize>],
    ) -> Result<(), mysql_async::Error> {
        let mut txn = conn.start_transaction(TxOpts::default()).await?;
        for run in runs {
            for (sql, params) in self.statements(&records[run.clone()], columns) {
                txn.exec_drop(sql, Params::Positional(params)).await?;
            }
        }
        txn.commit().await
    }
}

#[async_trait]
impl Target for MysqlTarget {
    fn batch_size(&self) -> usize {
        self.config.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let records = objects(batch.iter().map(|d| d.payload))?;
        let runs = runs(&records, &self.config.key, self.config.mode)?;
        let mut slot = self.conn.lock().await;
        let (conn, columns) = match slot.take() {
            Some(open) => open,
            None => {
                let mut conn = connect(&self.config).await?;
                let columns = columns(&mut conn, &self.table)
                    .await
                    .map_err(|e| failure(&self.config.url, &e, false))?;
                (conn, columns)
            }
        };
        let (conn, columns) = slot.insert((conn, columns));
        match self.write(conn, columns, &records, &runs).await {
            Ok(()) => Ok(Delivered::default()),
            Err(e) => {
                // The table may be being changed (a refused row): its
                // columns are read again with the next connection.
                *slot = None;
                Err(failure(&self.config.url, &e, false))
            }
        }
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        let mut slot = self.conn.lock().await;
        match slot.as_mut() {
            Some((conn, _)) => {
                let answer = select_1(&self.config, conn).await;
                if answer.is_err() {
                    *slot = None;
                }
                answer
            }
            None => probe(&self.config).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_in_the_session_zone() {
        assert_eq!(
            mysql_text("2024-03-01T12:00:00.123456+02:00"),
            "2024-03-01 10:00:00.123456"
        );
        assert_eq!(mysql_text("plain text"), "plain text");
    }

    #[test]
    fn server_errors_make_classes() {
        assert_eq!(classify(1045, "28000"), FailureClass::Unauthorized);
        assert_eq!(classify(1366, "HY000"), FailureClass::Rejected);
        assert_eq!(classify(1062, "23000"), FailureClass::Rejected);
        assert_eq!(classify(1213, "40001"), FailureClass::Intermittent);
        assert_eq!(classify(1040, "HY000"), FailureClass::Intermittent);
        assert_eq!(classify(1054, "42S22"), FailureClass::Rejected);
    }
}
