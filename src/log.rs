//! The site log, in seed 000's format: `08-Jul-2014 15:04:46 (4) : message`.
//!
//! Each line has a verbosity level (lower = more important); a site keeps the
//! lines at or below its `log_level`. A kept line goes, from this one place,
//! to the site's store (for `GET …/log`), to its plain-text log file, to the
//! live subscribers (`…/log/stream`, `sluice log --follow`) and to the
//! daemon's own tracing output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::{now_millis, Millis};
use crate::store::{LogEntry, Store};

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
        }
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
        if level > self.keep_level() {
            return;
        }
        let _in_order = self.in_order.lock().await;
        let ts = now_millis();
        let id = match self.store.append_log(ts, level, &message).await {
            Ok(id) => id,
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

    fn append_to_file(&self, entry: &LogEntry) {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = open_append(&self.path).ok();
        }
        if let Some(file) = guard.as_mut() {
            if let Err(e) = writeln!(file, "{}", format_entry(entry)) {
                tracing::warn!(site = %self.site, "cannot write the site log file: {e}");
                *guard = None;
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
    fn api_times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
