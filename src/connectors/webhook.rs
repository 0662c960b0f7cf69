//! `kind = "webhook"`: records POSTed to `/hooks/{site}/{integration}/{flow}`.
//!
//! A webhook is a push source: it has no run of its own. The API queues what
//! arrives and answers 202 once it is durably queued (see `api::hooks`).

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}
