//! `kind = "generator"`: a source that makes up records, for the demo and
//! for trying a configuration out before the real system is connected.
//!
//! Each run yields the next `count` records after the flow's checkpoint:
//! `{"id": "gen-N", "n": N, "at": "<RFC 3339 time>", "amount": …}`, with
//! `n` as the cursor, so nothing is produced twice and nothing is skipped.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Cursor, KeyProblem, Pages, ReadRequest, ReadWhole, Source, SourceError, SourceRecord};
use crate::duration::duration_opt;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Records per run.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Records per page (per store transaction).
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// Pause between pages.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub pace: Option<Duration>,
}

fn default_count() -> usize {
    5
}

fn default_page() -> usize {
    100
}

impl GeneratorConfig {
    pub fn validate(&self) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        if self.count == 0 || self.count > 1_000_000 {
            problems.push(("count".into(), "must be between 1 and 1000000".into()));
        }
        if self.page_size == 0 {
            problems.push(("page_size".into(), "must be at least 1".into()));
        }
        problems
    }
}

pub struct GeneratorSource {
    config: GeneratorConfig,
}

impl GeneratorSource {
    pub fn new(config: &GeneratorConfig) -> GeneratorSource {
        GeneratorSource {
            config: config.clone(),
        }
    }
}

#[async_trait]
impl Source for GeneratorSource {
    async fn open(&self, req: ReadRequest) -> Result<Box<dyn Pages>, SourceError> {
        let last = match req.checkpoint {
            Some(Cursor::Number(n)) => n as u64,
            _ => 0,
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let records = (last + 1..=last + self.config.count as u64)
            .map(|n| {
                let id = format!("gen-{n}");
                SourceRecord {
                    key: Some(id.clone()),
                    cursor: Some(Cursor::Number(n as f64)),
                    payload: serde_json::json!({
                        "id": id,
                        "n": n,
                        "at": now,
                        "amount": (n * 37 % 1000) as f64 / 10.0,
                    })
                    .to_string(),
                }
            })
            .collect();
        Ok(Box::new(ReadWhole::new(records, self.config.page_size)))
    }

    fn pace(&self) -> Duration {
        self.config.pace.unwrap_or_default()
    }
}
