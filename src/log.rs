//! The site log, in seed 000's format: `08-Jul-2014 15:04:46 (4) : message`.
//!
//! Each line has a verbosity level (lower = more important); a site keeps the
//! lines at or below its `log_level`. A kept line goes, from this one place,
//! to the site's store (for `GET …/log`), to its plain-text log file, to the
//! live subscribers (`…/log/stream`, `sluice log --follow`) and to the
//! daemon's own tracing output.
//!
//! # A full disk
//! When the site's data file stops taking writes for lack of space
//! ([`Space`]), the log says so ONCE — on the daemon's output, to live
//! subscribers, and in the stored log and the log file as soon as they can
//! be written — and once more when writes go through again: for how long
//! it was full, how many writes were refused and how many log lines could
//! not be stored (those are missing from the stored log; the daemon's
//! output has them). A line that cannot be stored is not reported line by
//! line. The same holds for the log file: a failure to write it is said
//! once, and once when it is written again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::model::{now_millis, Millis};
use crate::store::{LogEntry, Space, Store};

/// Seed 000's levels as sluice uses them.
pub mod level {
    /// Something failed and needs a person.
    pub const ERROR: u8 = 2;
    /// Work being done ("Getting data...").
    pub const WORK: u8 = 3;
    /// State changes: threads started/stopped, site started/stopped.
    pub const INFO: u8 = 4;
    /// Per-run and per-batch detail.
    pub const DETAIL: u8 = 6;
    /// Chatter ("Checking for trigger command...").
    pub const TRACE: u8 = 7;
}

/// How long writes must go through after a full disk before the log says
/// it is writable again: refusals within it are the same spell (a nearly
/// full disk flaps), said once.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

pub struct SiteLog {
    site: String,
    keep_level: std::sync::atomic::AtomicU8,
    store: Arc<dyn Store>,
    file: Mutex<Option<std::fs::File>>,
    path: PathBuf,
    live: broadcast::Sender<LogEntry>,
    /// Held from storing a line until it is broadcast, so readers of the
    /// live stream (and the log file) get lines in id order even when
    /// workers write at once.
    in_order: tokio::sync::Mutex<()>,
    /// While the data file's disk is full: the line that said so, to be
    /// stored once it can be, and whether the log file took it.
    full: Mutex<Option<(LogEntry, bool)>>,
    /// Lines that could not be stored for lack of space, since the disk
    /// was last said to be full.
    dropped: AtomicU64,
    /// The log file could not be written (said once, until it can be).
    file_failing: AtomicBool,
}

impl SiteLog {
    pub fn open(site: &str, keep_level: u8, store: Arc<dyn Store>, path: &Path) -> SiteLog {
        let file = open_append(path);
        if let Err(e) = &file {
            tracing::warn!(site, path = %path.display(), "cannot open the site log file: {e}");
        }
        SiteLog {
            site: site.to_string(),
            keep_level: std::sync::atomic::AtomicU8::new(keep_level),
            store,
            file: Mutex::new(file.ok()),
            path: path.to_path_buf(),
            live: broadcast::channel(1024).0,
            in_order: tokio::sync::Mutex::new(()),
            full: Mutex::new(None),
            dropped: AtomicU64::new(0),
            file_failing: AtomicBool::new(false),
        }
    }

    /// Says when the site's data file's disk becomes full and when it takes
    /// writes again, for as long as the log and its store live. Call once,
    /// inside the runtime.
    ///
    /// A disk that is nearly full flaps: SQLite reuses room in its WAL, so
    /// some writes go through between refusals. The recovery is therefore
    /// said only once writes have gone through for [`SETTLE`] without a new
    /// refusal; refusals within that time belong to the same spell, said
    /// once.
    pub fn follow_space(self: &Arc<Self>) {
        let log = Arc::downgrade(self);
        let mut space = self.store.space();
        tokio::spawn(async move {
            // The spell being told: the file, since when, the writes refused
            // in its earlier parts; and its end, once writes went through.
            let mut spell: Option<(PathBuf, Millis, u64)> = None;
            let mut ended: Option<(Millis, u64)> = None;
            loop {
                let settled = async {
                    match ended {
                        Some(_) => tokio::time::sleep(SETTLE).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = space.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = settled => {
                        let Some(log) = log.upgrade() else { return };
                        if let (Some((file, since, before)), Some((until, refused))) =
                            (spell.as_ref(), ended)
                        {
                            if log.say_writable(file, *since, until, before + refused).await {
                                spell = None;
                            }
                        }
                        ended = None;
                        continue;
                    }
                }
                let now = space.borrow_and_update().clone();
                let Some(log) = log.upgrade() else { return };
                match now {
                    Space::Writable => {}
                    Space::Full { file, since } => {
                        let (file, since, before) = spell.get_or_insert((file, since, 0));
                        if let Some((_, refused)) = ended.take() {
                            *before += refused;
                        }
                        log.say_full(file, *since);
                    }
                    Space::Recovered {
                        file,
                        since,
                        until,
                        refused,
                    } => {
                        // A short spell may show only its end: it is said all
                        // the same.
                        let (file, since, before) = spell.get_or_insert((file, since, 0));
                        if let Some((_, earlier)) = ended.take() {
                            *before += earlier;
                        }
                        log.say_full(file, *since);
                        ended = Some((until, refused));
                    }
                }
            }
        });
    }

    /// Says that the disk takes writes again, after it was full from
    /// `since` to `until`: first the line that said it was full, stored now
    /// that it can be. `false` (nothing said) if the disk is full again.
    async fn say_writable(&self, file: &Path, since: Millis, until: Millis, refused: u64) -> bool {
        let said = self.full.lock().take();
        if let Some((said, filed)) = said {
            if said.level <= self.keep_level() {
                let _in_order = self.in_order.lock().await;
                match self
                    .store
                    .append_log(said.ts, said.level, &said.message)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_disk_full() => {
                        // Full again: its spell goes on, still to be ended.
                        *self.full.lock() = Some((said, filed));
                        return false;
                    }
                    Err(e) => tracing::error!(site = %self.site, "cannot store a log line: {e}"),
                }
                if !filed {
                    self.append_to_file(&said);
                }
            }
        }
        let dropped = self.dropped.swap(0, Ordering::SeqCst);
        let mut message = format!(
            "The disk is writable again: {} after {} full; {refused} write(s) were refused \
             meanwhile",
            file.display(),
            spell_length(until - since)
        );
        if dropped > 0 {
            message.push_str(&format!(
                "; {dropped} log line(s) could not be stored and are missing here (the \
                 daemon's output has them)"
            ));
        }
        // As loud on the daemon's output as the line it ends.
        tracing::warn!(site = %self.site, level = level::INFO, "{message}");
        self.keep(level::INFO, message).await;
        true
    }

    /// Says (unless it is said already) that the disk is full: on the
    /// daemon's output, to live subscribers and to the log file if it can
    /// take it; the stored log gets it once the disk takes writes again.
    fn say_full(&self, file: &Path, since: Millis) {
        let mut full = self.full.lock();
        if full.is_some() {
            return;
        }
        let message = format!(
            "The disk is full: {} cannot be written. Writes are refused until space is \
             freed: webhooks are answered 507, operators' changes are refused, deliveries \
             wait to be recorded; nothing stored is lost",
            file.display()
        );
        tracing::warn!(site = %self.site, level = level::ERROR, "{message}");
        let entry = LogEntry {
            id: 0,
            ts: since,
            level: level::ERROR,
            message,
        };
        let filed = entry.level <= self.keep_level() && self.append_to_file(&entry);
        if entry.level <= self.keep_level() {
            let _unheard = self.live.send(entry.clone());
        }
        *full = Some((entry, filed));
    }

    pub fn keep_level(&self) -> u8 {
        self.keep_level.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A reload may change the level; the log itself (and who follows it)
    /// stays.
    pub fn set_keep_level(&self, level: u8) {
        self.keep_level
            .store(level, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes one line, if its level is kept. Never fails: a log that cannot
    /// be written is reported on the daemon's own output instead.
    pub async fn write(&self, level: u8, message: impl Into<String>) {
        let message = message.into();
        if level <= level::ERROR {
            tracing::warn!(site = %self.site, level, "{message}");
        } else if level <= level::INFO {
            tracing::info!(site = %self.site, level, "{message}");
        } else {
            tracing::debug!(site = %self.site, level, "{message}");
        }
        self.keep(level, message).await;
    }

    /// Stores, files and broadcasts a line, if its level is kept.
    async fn keep(&self, level: u8, message: String) {
        if level > self.keep_level() {
            return;
        }
        let _in_order = self.in_order.lock().await;
        let ts = now_millis();
        let id = match self.store.append_log(ts, level, &message).await {
            Ok(id) => id,
            // Counted, and said once with the disk's recovery.
            Err(e) if e.is_disk_full() => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                0
            }
            Err(e) => {
                tracing::error!(site = %self.site, "cannot store a log line: {e}");
                0
            }
        };
        let entry = LogEntry {
            id,
            ts,
            level,
            message,
        };
        self.append_to_file(&entry);
        // Nobody listening is fine.
        let _unheard = self.live.send(entry);
    }

    /// Appends a line to the log file; `false` if it could not. A failure
    /// is said once, and once when the file is written again; a line cut
    /// off by a full disk is taken back out.
    fn append_to_file(&self, entry: &LogEntry) -> bool {
        let mut guard = self.file.lock();
        if guard.is_none() {
            *guard = open_append(&self.path).ok();
        }
        let line = format!("{}\n", format_entry(entry));
        let written = match guard.as_mut() {
            None => Err(std::io::Error::other("it cannot be opened")),
            Some(file) => {
                let before = file.metadata().map(|m| m.len());
                file.write_all(line.as_bytes()).inspect_err(|_| {
                    if let Ok(len) = before {
                        // Best effort: a half line is worse than none.
                        let _cut = file.set_len(len);
                    }
                })
            }
        };
        match written {
            Ok(()) => {
                if self.file_failing.swap(false, Ordering::SeqCst) {
                    tracing::warn!(site = %self.site, path = %self.path.display(),
                        "the site log file is written again");
                }
                true
            }
            Err(e) => {
                if !self.file_failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(site = %self.site, path = %self.path.display(),
                        "cannot write the site log file: {e}; its lines are kept in the data \
                         file (when it has space) until it can be written again");
                }
                *guard = None;
                false
            }
        }
    }

    /// Lines kept from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogEntry> {
        self.live.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// How long a spell lasted, for a person: `less than a second`, `12s`,
/// `3m 5s`, `2h 3m`.
fn spell_length(ms: Millis) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0 => "less than a second".to_string(),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The log file, private to the daemon's user (`0600`) like every file in
/// the data directory.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    crate::data_dir::private_file(path)?;
    crate::data_dir::private_options().append(true).open(path)
}

/// `08-Jul-2014 15:04:46 (4) : message`, in the daemon's local time.
pub fn format_entry(entry: &LogEntry) -> String {
    format!(
        "{} ({}) : {}",
        format_ts(entry.ts),
        entry.level,
        entry.message
    )
}

pub fn format_ts(ts: Millis) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ts).single() {
        Some(t) => t.format("%d-%b-%Y %H:%M:%S").to_string(),
        None => ts.to_string(),
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC), the form of every time
/// in the API.
pub fn rfc3339(ts: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(ts) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ts.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_format() {
        let line = format_entry(&LogEntry {
            id: 1,
            ts: now_millis(),
            level: 4,
            message: "Site DEV started successfully!".into(),
        });
        // e.g. "24-Nov-2026 15:05:30 (4) : Site DEV started successfully!"
        let (stamp, rest) = line.split_at(20);
        assert_eq!(rest, " (4) : Site DEV started successfully!");
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp, "%d-%b-%Y %H:%M:%S").is_ok(),
            "{stamp}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn live_lines_arrive_in_id_order_when_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let log = Arc::new(SiteLog::open("T", 9, store, &dir.path().join("t.log")));
        let mut live = log.subscribe();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        log.write(4, format!("writer {w} line {i}")).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let mut last = 0;
        for _ in 0..200 {
            let e = live.recv().await.unwrap();
            assert!(e.id > last, "id {} after {last}", e.id);
            last = e.id;
        }
    }

    #[test]
    fn spells_read_as_a_person_says_them() {
        assert_eq!(spell_length(-5), "less than a second");
        assert_eq!(spell_length(999), "less than a second");
        assert_eq!(spell_length(12_400), "12s");
        assert_eq!(spell_length(185_000), "3m 5s");
        assert_eq!(spell_length(7_380_000), "2h 3m");
    }

    #[test]
    fn api_times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
