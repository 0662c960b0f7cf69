//! `sluice tx list|show|retry|replay|ignore SITE INTEGRATION …`: an
//! integration's transactions and seed 002's error-handling suite.

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output::{self, or_blank, table, truncate};
use crate::api::transactions::TxView;

/// How much of a transaction's last error the list shows.
const ERROR_WIDTH: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TxStateArg {
    Queued,
    Sending,
    Sent,
    Error,
    Ignored,
}

impl TxStateArg {
    fn as_str(self) -> &'static str {
        match self {
            TxStateArg::Queued => "queued",
            TxStateArg::Sending => "sending",
            TxStateArg::Sent => "sent",
            TxStateArg::Error => "error",
            TxStateArg::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// An integration's transactions, newest first.
    List {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// Only transactions in this state.
        #[arg(long, value_enum)]
        state: Option<TxStateArg>,
        /// At most this many (default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only those with a smaller sequence number (to page back).
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
    },
    /// One transaction with its record, and what you may do to it now.
    Show {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        seq: i64,
    },
    /// Send a failed transaction again, in its place in the queue.
    Retry {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        seq: i64,
    },
    /// Queue a copy of a transaction at the end of the queue.
    Replay {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        seq: i64,
    },
    /// Give up on a queued or failed transaction: the queue moves on.
    Ignore {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        seq: i64,
    },
}

pub async fn run(client: &Client, command: TxCommand) -> Result<(), CliError> {
    let json = client.json;
    match command {
        TxCommand::List {
            site,
            integration,
            state,
            limit,
            before,
        } => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(("state", state.as_str().to_string()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(before) = before {
                query.push(("before", before.to_string()));
            }
            let v = client
                .get(
                    &["sites", &site, "integrations", &integration, "transactions"],
                    &query,
                )
                .await?;
            output::answer(json, &v, |t: &Vec<TxView>| list_table(t))
        }
        TxCommand::Show {
            site,
            integration,
            seq,
        } => {
            let seq = seq.to_string();
            let v = client
                .get(
                    &[
                        "sites",
                        &site,
                        "integrations",
                        &integration,
                        "transactions",
                        &seq,
                    ],
                    &[],
                )
                .await?;
            output::answer(json, &v, show_text)
        }
        TxCommand::Retry {
            site,
            integration,
            seq,
        } => act(client, &site, &integration, seq, "retry").await,
        TxCommand::Replay {
            site,
            integration,
            seq,
        } => act(client, &site, &integration, seq, "replay").await,
        TxCommand::Ignore {
            site,
            integration,
            seq,
        } => act(client, &site, &integration, seq, "ignore").await,
    }
}

async fn act(
    client: &Client,
    site: &str,
    integration: &str,
    seq: i64,
    action: &str,
) -> Result<(), CliError> {
    let seq = seq.to_string();
    let v = client
        .post(
            &[
                "sites",
                site,
                "integrations",
                integration,
                "transactions",
                &seq,
                action,
            ],
            json!({}),
        )
        .await?;
    output::answer(client.json, &v, |t: &TxView| {
        format!(
            "Transaction {} of {integration}: {}",
            t.seq,
            t.state.as_str()
        )
    })
}

pub fn list_table(transactions: &[TxView]) -> String {
    let rows: Vec<Vec<String>> = transactions
        .iter()
        .map(|t| {
            vec![
                t.seq.to_string(),
                t.state.as_str().to_string(),
                t.flow.clone(),
                or_blank(&t.key).to_string(),
                t.attempts.to_string(),
                t.updated_at.clone(),
                truncate(or_blank(&t.last_error), ERROR_WIDTH),
            ]
        })
        .collect();
    table(
        &[
            "SEQ",
            "STATE",
            "FLOW",
            "KEY",
            "ATTEMPTS",
            "UPDATED",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn show_text(t: &TxView) -> String {
    let mut out = format!(
        "Transaction {}: {} (flow {}, key {}, {} attempts)\ncreated {}, updated {}",
        t.seq,
        t.state.as_str(),
        t.flow,
        or_blank(&t.key),
        t.attempts,
        t.created_at,
        t.updated_at
    );
    if let Some(error) = &t.last_error {
        out.push_str(&format!("\nlast error: {error}"));
    }
    out.push_str(&format!("\nactions: {}", output::actions(&t.actions)));
    out.push_str("\nrecord:\n");
    out.push_str(&serde_json::to_string_pretty(&t.record).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(v: serde_json::Value) -> TxView {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_list_truncates_errors() {
        let txs = [
            tx(
                json!({"seq": 12, "flow": "web", "key": "o-12", "state": "error", "created_at": "T1",
             "updated_at": "T2", "attempts": 3,
             "last_error": format!("HTTP 422: {}\nmore", "x".repeat(100)), "record": {},
             "actions": ["retry", "replay", "ignore"]}),
            ),
            tx(
                json!({"seq": 11, "flow": "web", "key": null, "state": "sent", "created_at": "T1",
             "updated_at": "T1", "attempts": 1, "last_error": null, "record": {},
             "actions": ["replay"]}),
            ),
        ];
        let t = list_table(&txs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "SEQ  STATE  FLOW  KEY   ATTEMPTS  UPDATED  LAST ERROR"
        );
        assert!(lines[1].starts_with("12   error  web   o-12  3         T2       HTTP 422: xxx"));
        assert!(lines[1].ends_with('…'));
        assert_eq!(
            lines[1].split("HTTP").nth(1).unwrap().chars().count() + 4,
            ERROR_WIDTH
        );
        assert_eq!(lines[2], "11   sent   web         1         T1");
    }

    #[test]
    fn one_transaction() {
        let t = tx(
            json!({"seq": 3, "flow": "web", "key": "a", "state": "queued", "created_at": "T1",
                       "updated_at": "T1", "attempts": 0, "last_error": null, "record": {"id": "a"},
                       "actions": ["ignore"]}),
        );
        assert_eq!(
            show_text(&t),
            "Transaction 3: queued (flow web, key a, 0 attempts)\ncreated T1, updated T1\n\
             actions: ignore\nrecord:\n{\n  \"id\": \"a\"\n}"
        );
    }
}
