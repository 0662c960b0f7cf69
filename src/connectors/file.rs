//! `kind = "file"`: a JSONL file, one record a line.
//!
//! As a source it is read whole on each run; 'Send Changed' keeps the records
//! whose cursor field is past the flow's checkpoint. As a target each
//! delivered record is appended as one line, and the batch is flushed to disk
//! before it counts as delivered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{
    key_text, Cursor, Delivered, Delivery, DeliveryError, FailureClass, KeyProblem, Pages,
    ReadRequest, ReadWhole, Source, SourceError, SourceRecord, Target,
};
use crate::duration::duration_opt;
use crate::model::RunMode;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The JSONL file; relative to the configuration file's folder.
    pub path: PathBuf,
    /// Records per page when read (per store transaction).
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// A pause between pages when read.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub pace: Option<Duration>,
    /// Records per delivery when written.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_page() -> usize {
    500
}

fn default_batch() -> usize {
    100
}

impl FileConfig {
    pub fn validate(&self) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push(("path".into(), "must not be empty".into()));
        }
        if self.page_size == 0 {
            problems.push(("page_size".into(), "must be at least 1".into()));
        }
        if self.batch == 0 {
            problems.push(("batch".into(), "must be at least 1".into()));
        }
        problems
    }
}

fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The file can be read, or (for a target) created in its folder.
pub async fn probe(config: &FileConfig, base: &Path) -> Result<String, DeliveryError> {
    probe_path(&resolve(&config.path, base)).await
}

async fn probe_path(path: &Path) -> Result<String, DeliveryError> {
    let failed = |message: String| DeliveryError {
        class: FailureClass::Intermittent,
        message,
        retry_after: None,
    };
    match tokio::fs::metadata(path).await {
        Ok(m) if m.is_file() => Ok(format!("{} ({} bytes)", path.display(), m.len())),
        Ok(_) => Err(failed(format!("{} is not a file", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("."));
            match tokio::fs::metadata(dir).await {
                Ok(m) if m.is_dir() => Ok(format!(
                    "{} does not exist yet; its folder does",
                    path.display()
                )),
                _ => Err(failed(format!(
                    "neither {} nor its folder exists",
                    path.display()
                ))),
            }
        }
        Err(e) => Err(failed(format!("{}: {e}", path.display()))),
    }
}

pub struct FileSource {
    path: PathBuf,
    page_size: usize,
    pace: Duration,
}

impl FileSource {
    pub fn new(config: &FileConfig, base: &Path) -> FileSource {
        FileSource {
            path: resolve(&config.path, base),
            page_size: config.page_size,
            pace: config.pace.unwrap_or_default(),
        }
    }
}

impl FileSource {
    /// Every record the run captures, in file order.
    async fn read(&self, req: &ReadRequest) -> Result<Vec<SourceRecord>, SourceError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| SourceError {
                message: format!("cannot read {}: {e}", self.path.display()),
            })?;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: serde_json::Value =
                serde_json::from_str(line).map_err(|e| SourceError {
                    message: format!("{} line {}: not JSON: {e}", self.path.display(), i + 1),
                })?;
            let key = req
                .key_field
                .as_deref()
                .and_then(|f| record.get(f))
                .and_then(key_text);
            let cursor = match req.cursor_field.as_deref() {
                None => None,
                Some(field) => match record.get(field).and_then(Cursor::from_json) {
                    Some(c) => Some(c),
                    None if req.mode == RunMode::All => None,
                    None => {
                        return Err(SourceError {
                            message: format!(
                                "{} line {}: no number or text in cursor field '{field}'",
                                self.path.display(),
                                i + 1
                            ),
                        })
                    }
                },
            };
            if req.mode == RunMode::Changed {
                if let (Some(checkpoint), Some(c)) = (&req.checkpoint, &cursor) {
                    if c <= checkpoint {
                        continue;
                    }
                }
            }
            records.push(SourceRecord {
                key,
                cursor,
                payload: record.to_string(),
            });
        }
        Ok(records)
    }
}

#[async_trait]
impl Source for FileSource {
    async fn open(&self, req: ReadRequest) -> Result<Box<dyn Pages>, SourceError> {
        Ok(Box::new(ReadWhole::new(
            self.read(&req).await?,
            self.page_size,
        )))
    }

    fn pace(&self) -> Duration {
        self.pace
    }
}

pub struct FileTarget {
    path: PathBuf,
    batch: usize,
    /// One writer at a time, so lines of two batches never interleave.
    lock: tokio::sync::Mutex<()>,
}

impl FileTarget {
    pub fn new(config: &FileConfig, base: &Path) -> FileTarget {
        FileTarget {
            path: resolve(&config.path, base),
            batch: config.batch,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Target for FileTarget {
    fn batch_size(&self) -> usize {
        self.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let failed = |e: std::io::Error| DeliveryError {
            class: FailureClass::Intermittent,
            message: format!("cannot append to {}: {e}", self.path.display()),
            retry_after: None,
        };
        let mut buf = String::with_capacity(batch.iter().map(|d| d.payload.len() + 1).sum());
        for d in batch {
            buf.push_str(d.payload);
            buf.push('\n');
        }
        let _guard = self.lock.lock().await;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(failed)?;
        file.write_all(buf.as_bytes()).await.map_err(failed)?;
        file.sync_data().await.map_err(failed)?;
        Ok(Delivered::default())
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        probe_path(&self.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> FileConfig {
        FileConfig {
            path: path.to_path_buf(),
            page_size: 10,
            pace: None,
            batch: 10,
        }
    }

    async fn read_all(
        source: &FileSource,
        req: ReadRequest,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        let mut pages = source.open(req).await?;
        let mut all = Vec::new();
        while let Some(page) = pages.next().await? {
            all.extend(page);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn send_changed_reads_only_past_the_checkpoint_in_cursor_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(
            &path,
            "{\"id\":1,\"u\":3}\n\n{\"id\":2,\"u\":1}\n{\"id\":3,\"u\":5}\n{\"id\":4,\"u\":4}\n",
        )
        .unwrap();
        let source = FileSource::new(&config(&path), dir.path());
        let checkpoint = Cursor::Number(3.0);
        let got = read_all(
            &source,
            ReadRequest {
                mode: RunMode::Changed,
                checkpoint: Some(checkpoint.clone()),
                key_field: Some("id".into()),
                cursor_field: Some("u".into()),
            },
        )
        .await
        .unwrap();
        let keys: Vec<_> = got.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, ["4", "3"]);
        let all = read_all(
            &source,
            ReadRequest {
                mode: RunMode::All,
                checkpoint: Some(checkpoint),
                key_field: Some("id".into()),
                cursor_field: Some("u".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 4);
    }

    #[tokio::test]
    async fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"id\":1}\nnot json\n").unwrap();
        let source = FileSource::new(&config(&path), dir.path());
        let err = read_all(
            &source,
            ReadRequest {
                mode: RunMode::All,
                checkpoint: None,
                key_field: None,
                cursor_field: None,
            },
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[tokio::test]
    async fn the_target_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let target = FileTarget::new(&config(&path), dir.path());
        let batch = [
            Delivery::new("a", "{\"x\":1}"),
            Delivery::new("b", "{\"x\":2}"),
        ];
        target.deliver(&batch).await.unwrap();
        target.deliver(&batch[..1]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"x\":1}\n{\"x\":2}\n{\"x\":1}\n");
    }
}
