//! The writer thread: the only place that writes to a site's data file.
//!
//! It owns the write connection. Writes reach it through a channel, in the
//! order they were sent; it takes every write waiting there (up to
//! [`MAX_GROUP`]) and runs them one after the other in ONE SQLite
//! transaction, each inside its own savepoint so that a write that fails is
//! undone alone. After the commit it publishes the new queued counts and
//! answers each caller. A caller is never answered before the commit that
//! holds its write.
//!
//! The bookkeeping of each queue (`queues` row: last sequence number, queued
//! count, floor) is cached here, loaded lazily, and written back in the same
//! transaction as the change it accounts for. A write that fails drops what
//! it loaded from the cache; a commit that fails drops the whole cache, so
//! the cache never holds anything the file does not.
//!
//! A disk without space fails a write's statement or, more often, the
//! commit (the WAL cannot grow). SQLite may then have rolled the whole
//! transaction back by itself; either way every write of the group is
//! answered [`StoreError::Full`] and nothing of the group stays. The writer
//! publishes the change when it happens (the first refusal, the first
//! commit after them) as [`Space`], and says nothing itself: the site log
//! says it, once.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, watch};

use super::{classify, Synchronous};
use crate::model::{now_millis, Millis};
use crate::store::{Result, Space, StoreError};

/// Largest number of writes committed together: bounds a group's latency
/// and the size of its transaction.
pub(super) const MAX_GROUP: usize = 128;

/// Queued counts per integration, as of the last commit.
pub(super) type Counts = Arc<Mutex<HashMap<String, i64>>>;

pub(super) enum Msg {
    Write(Box<dyn Job>),
    /// A read connection of a store being dropped: closed here, before the
    /// write connection, so the last close (which checkpoints the WAL) never
    /// runs on an async thread.
    Close(Connection),
}

/// One write waiting for the writer thread.
pub(super) trait Job: Send {
    /// Whether its commit must reach the disk before it is answered.
    fn durable(&self) -> bool;
    /// Runs the write inside the open transaction; `false` if it failed (its
    /// savepoint is then rolled back).
    fn run(&mut self, ctx: &mut Ctx<'_>) -> bool;
    /// Its own error, if it failed.
    fn failure(&self) -> Option<StoreError>;
    /// Answers the caller once its transaction ended: `Ok` if it committed.
    fn answer(self: Box<Self>, ended: Result<()>);
}

/// A write and the caller waiting for its result.
pub(super) struct Pending<T, F> {
    durable: bool,
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Pending<T, F> {
    pub(super) fn new(durable: bool, work: F, reply: oneshot::Sender<Result<T>>) -> Self {
        Pending {
            durable,
            work: Some(work),
            result: None,
            reply,
        }
    }
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A bug in one write must not take the writer thread (and with it
        // every later write) down.
        let result = match panic::catch_unwind(AssertUnwindSafe(|| work(ctx))) {
            Ok(result) => result.map_err(|e| classify(e, ctx.file)),
            Err(_) => Err(StoreError::Io(std::io::Error::other(
                "store: a write panicked; it was undone",
            ))),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn failure(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) => Some(replicate(e)),
            _ => None,
        }
    }

    fn answer(self: Box<Self>, ended: Result<()>) {
        let out = match (ended, self.result) {
            (Ok(()), Some(result)) => result,
            // Its own error says more than the group's.
            (Err(_), Some(Err(own))) => Err(own),
            (Err(group), _) => Err(group),
            (Ok(()), None) => Err(StoreError::Closed),
        };
        // The caller may have given up waiting; the write stands either way.
        let _gone = self.reply.send(out);
    }
}

/// The bookkeeping of one integration's queue (its `queues` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Queue {
    /// Highest sequence number given out.
    pub last_seq: i64,
    /// Transactions in state Queued.
    pub queued: i64,
    /// Lowest Queued seq minus one; `last_seq` when none is Queued.
    pub floor: i64,
}

/// What a write sees of the writer: the connection, inside the open
/// transaction and the write's savepoint, and the queues' bookkeeping.
pub(super) struct Ctx<'a> {
    pub conn: &'a Connection,
    /// The data file, for errors that name it.
    file: &'a Path,
    queues: &'a mut HashMap<String, Queue>,
    /// Integrations whose bookkeeping this write loaded or changed.
    touched: Vec<String>,
}

impl Ctx<'_> {
    /// The bookkeeping of `integration`'s queue as of this point of the
    /// transaction. Call it before changing the integration's transactions.
    pub fn queue(&mut self, integration: &str) -> Result<Queue> {
        if !self.touched.iter().any(|t| t == integration) {
            self.touched.push(integration.to_owned());
        }
        if let Some(q) = self.queues.get(integration) {
            return Ok(*q);
        }
        let q = load_queue(self.conn, integration)?;
        self.queues.insert(integration.to_owned(), q);
        Ok(q)
    }

    /// Writes the bookkeeping back, in the open transaction.
    pub fn set_queue(&mut self, integration: &str, q: Queue) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO queues (integration, last_seq, queued, floor) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (integration) DO UPDATE SET
                   last_seq = excluded.last_seq, queued = excluded.queued, floor = excluded.floor",
            )?
            .execute(params![integration, q.last_seq, q.queued, q.floor])?;
        match self.queues.get_mut(integration) {
            Some(cached) => *cached = q,
            None => {
                self.queues.insert(integration.to_owned(), q);
            }
        }
        if !self.touched.iter().any(|t| t == integration) {
            self.touched.push(integration.to_owned());
        }
        Ok(())
    }

    /// Moves the floor of `q` up to just below the first Queued transaction
    /// with `seq > from` (to `last_seq` when there is none). Called when the
    /// transaction just above the floor stopped being Queued, so the floor
    /// stays exact; each row is walked over at most once in its life.
    pub fn raise_floor(&self, integration: &str, q: &mut Queue, from: i64) -> Result<()> {
        let from = from.max(q.floor).min(q.last_seq);
        let next: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT seq FROM transactions
                 WHERE integration = ?1 AND seq > ?2 AND state = 0 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![integration, from], |r| r.get(0))
            .optional()?;
        q.floor = match next {
            Some(seq) => seq - 1,
            None => q.last_seq,
        };
        Ok(())
    }
}

/// Reads an integration's `queues` row. An integration without one has
/// never queued; should its transactions exist anyway, the row is rebuilt
/// from them.
fn load_queue(conn: &Connection, integration: &str) -> Result<Queue> {
    let row: Option<(i64, i64, i64)> = conn
        .prepare_cached("SELECT last_seq, queued, floor FROM queues WHERE integration = ?1")?
        .query_row([integration], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let q = match row {
        Some((last_seq, queued, floor)) => Queue {
            last_seq,
            queued,
            floor,
        },
        None => {
            let (last_seq, queued, first): (i64, i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq), 0), COALESCE(SUM(state = 0), 0),
                            MIN(CASE WHEN state = 0 THEN seq END)
                     FROM transactions WHERE integration = ?1",
                )?
                .query_row([integration], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Queue {
                last_seq,
                queued,
                floor: first.map_or(last_seq, |s| s - 1),
            }
        }
    };
    if q.last_seq < 0 || q.queued < 0 || q.floor < 0 || q.floor > q.last_seq {
        return Err(StoreError::Corrupt(format!(
            "impossible queue bookkeeping for '{integration}': {q:?}"
        )));
    }
    Ok(q)
}

/// The writer thread's body: runs until every sender is gone.
pub(super) fn run(
    conn: Connection,
    jobs: mpsc::Receiver<Msg>,
    counts: Counts,
    sync: Synchronous,
    file: PathBuf,
    space: watch::Sender<Space>,
) {
    let mut writer = Writer {
        conn,
        counts,
        queues: HashMap::new(),
        full: sync == Synchronous::Full,
        syncing_fully: sync == Synchronous::Full,
        file,
        space,
        out_of_space: None,
    };
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Ok(msg) = jobs.recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(job) => group.push(job),
                Msg::Close(conn) => drop(conn),
            }
            if group.len() < MAX_GROUP {
                next = jobs.try_recv().ok();
            }
        }
        if !group.is_empty() {
            writer.commit(&mut group);
        }
    }
}

struct Writer {
    conn: Connection,
    counts: Counts,
    queues: HashMap<String, Queue>,
    /// `synchronous = FULL` was asked for.
    full: bool,
    /// What the connection is set to now.
    syncing_fully: bool,
    file: PathBuf,
    /// Published at each change of `out_of_space`.
    space: watch::Sender<Space>,
    /// Since when writes have been refused for lack of space, and how many.
    out_of_space: Option<(Millis, u64)>,
}

impl Writer {
    /// Runs `group` in one transaction and answers each write.
    fn commit(&mut self, group: &mut Vec<Box<dyn Job>>) {
        // A group of acks alone commits without waiting for the disk; the
        // next durable commit takes them to the disk with it.
        let want_full = self.full && group.iter().any(|j| j.durable());
        if want_full != self.syncing_fully {
            let level = if want_full { "FULL" } else { "NORMAL" };
            match self.conn.pragma_update(None, "synchronous", level) {
                Ok(()) => self.syncing_fully = want_full,
                Err(e) => tracing::error!("store: cannot set synchronous = {level}: {e}"),
            }
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = classify(StoreError::from(e), &self.file);
            if e.is_disk_full() {
                self.note_space(group.len());
            }
            for job in group.drain(..) {
                job.answer(Err(replicate(&e)));
            }
            return;
        }
        let mut changed: Vec<String> = Vec::new();
        let mut broken: Option<StoreError> = None;
        for job in group.iter_mut() {
            if let Err(e) = self.exec("SAVEPOINT job") {
                broken = Some(e);
                break;
            }
            let mut ctx = Ctx {
                conn: &self.conn,
                file: &self.file,
                queues: &mut self.queues,
                touched: Vec::new(),
            };
            let ok = job.run(&mut ctx);
            let touched = ctx.touched;
            let end = if ok {
                self.exec("RELEASE job")
            } else if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (it may, on
                // SQLITE_FULL or an I/O error): the group ends with the
                // write's own error.
                Err(job.failure().unwrap_or_else(|| {
                    StoreError::Io(std::io::Error::other(
                        "store: the transaction was rolled back",
                    ))
                }))
            } else {
                for t in &touched {
                    self.queues.remove(t);
                }
                self.exec("ROLLBACK TO job")
                    .and_then(|()| self.exec("RELEASE job"))
            };
            if let Err(e) = end {
                broken = Some(e);
                break;
            }
            if ok {
                changed.extend(touched);
            }
        }
        let ended = match broken {
            Some(e) => Err(e),
            None => self.exec("COMMIT"),
        };
        match &ended {
            Ok(()) => {
                let mut counts = self.counts.lock();
                for name in changed {
                    if let Some(q) = self.queues.get(&name) {
                        counts.insert(name, q.queued);
                    }
                }
            }
            Err(e) => {
                // A full disk is said once, by whoever follows `space`.
                if !e.is_disk_full() {
                    tracing::error!("store: a group of writes was rolled back: {e}");
                }
                if !self.conn.is_autocommit() {
                    if let Err(e) = self.exec("ROLLBACK") {
                        tracing::error!("store: cannot roll back: {e}");
                    }
                }
                self.queues.clear();
            }
        }
        let refused = match &ended {
            Err(e) if e.is_disk_full() => group.len(),
            _ => group
                .iter()
                .filter(|j| j.failure().is_some_and(|e| e.is_disk_full()))
                .count(),
        };
        if refused > 0 {
            self.note_space(refused);
        } else if ended.is_ok() {
            self.note_writable();
        }
        // A write that failed on its own answers with its own error.
        for job in group.drain(..) {
            job.answer(match &ended {
                Ok(()) => Ok(()),
                Err(e) => Err(replicate(e)),
            });
        }
    }

    fn exec(&self, sql: &str) -> Result<()> {
        let run = || -> Result<()> {
            self.conn.prepare_cached(sql)?.execute([])?;
            Ok(())
        };
        run().map_err(|e| classify(e, &self.file))
    }

    /// `refused` writes were refused for lack of space: the disk is full
    /// (from now, if it was not already).
    fn note_space(&mut self, refused: usize) {
        let refused = refused as u64;
        match &mut self.out_of_space {
            Some((_, n)) => *n += refused,
            None => {
                let since = now_millis();
                self.out_of_space = Some((since, refused));
                self.space.send_replace(Space::Full {
                    file: self.file.clone(),
                    since,
                });
            }
        }
    }

    /// A commit went through: the disk takes writes (again).
    fn note_writable(&mut self) {
        if let Some((since, refused)) = self.out_of_space.take() {
            self.space.send_replace(Space::Recovered {
                file: self.file.clone(),
                since,
                until: now_millis(),
                refused,
            });
        }
    }
}

/// One error of a whole group, for each of its callers.
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg)) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
        }
        StoreError::Closed => StoreError::Closed,
        StoreError::Corrupt(msg) => StoreError::Corrupt(msg.clone()),
        StoreError::Full { file } => StoreError::Full { file: file.clone() },
        other => StoreError::Io(std::io::Error::other(other.to_string())),
    }
}
