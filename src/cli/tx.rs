//! `sluice tx list|show|retry|replay|ignore SITE INTEGRATION …`: an
//! integration's transactions and seed 002's error-handling suite;
//! `sluice tx errors SITE INTEGRATION` and `retry|ignore --group G`: its
//! errors grouped by cause, handled a group at a time.

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output::{self, or_blank, table, truncate};
use crate::api::errors::{ErrorGroupActed, ErrorGroupView};
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
    /// Send a failed transaction again, in its place in the queue; with
    /// --group, every transaction of a group of errors (see `tx errors`).
    Retry {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        #[arg(required_unless_present = "group")]
        seq: Option<i64>,
        /// A group of errors, by its id (`sluice tx errors` lists them).
        #[arg(long, value_name = "GROUP", conflicts_with = "seq")]
        group: Option<String>,
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
    /// Give up on a queued or failed transaction: the queue moves on; with
    /// --group, on every transaction of a group of errors.
    Ignore {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// The transaction's sequence number.
        #[arg(required_unless_present = "group")]
        seq: Option<i64>,
        /// A group of errors, by its id (`sluice tx errors` lists them).
        #[arg(long, value_name = "GROUP", conflicts_with = "seq")]
        group: Option<String>,
    },
    /// An integration's transactions in Error grouped by cause (endpoint,
    /// status, the answer with numbers, ids and quoted values masked), the
    /// largest group first.
    Errors {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        integration: String,
        /// At most this many groups (default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
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
            group,
        } => act_on_one_or_group(client, &site, &integration, seq, group, "retry").await,
        TxCommand::Replay {
            site,
            integration,
            seq,
        } => act(client, &site, &integration, seq, "replay").await,
        TxCommand::Ignore {
            site,
            integration,
            seq,
            group,
        } => act_on_one_or_group(client, &site, &integration, seq, group, "ignore").await,
        TxCommand::Errors {
            site,
            integration,
            limit,
        } => {
            let query: Vec<(&str, String)> = limit
                .map(|n| ("limit", n.to_string()))
                .into_iter()
                .collect();
            let v = client
                .get(
                    &["sites", &site, "integrations", &integration, "errors"],
                    &query,
                )
                .await?;
            output::answer(json, &v, |g: &Vec<ErrorGroupView>| errors_table(g))
        }
    }
}

/// One transaction by its sequence number, or a group of errors by its id
/// (clap lets exactly one through).
async fn act_on_one_or_group(
    client: &Client,
    site: &str,
    integration: &str,
    seq: Option<i64>,
    group: Option<String>,
    action: &str,
) -> Result<(), CliError> {
    match (seq, group) {
        (Some(seq), None) => act(client, site, integration, seq, action).await,
        (None, Some(group)) => act_on_group(client, site, integration, &group, action).await,
        _ => Err(CliError::Usage(format!(
            "tx {action}: give a transaction's SEQ or --group GROUP, not both"
        ))),
    }
}

async fn act_on_group(
    client: &Client,
    site: &str,
    integration: &str,
    group: &str,
    action: &str,
) -> Result<(), CliError> {
    let v = client
        .post(
            &[
                "sites",
                site,
                "integrations",
                integration,
                "errors",
                group,
                action,
            ],
            json!({}),
        )
        .await?;
    output::answer(client.json, &v, |a: &ErrorGroupActed| {
        acted_text(integration, a)
    })
}

fn acted_text(integration: &str, a: &ErrorGroupActed) -> String {
    let past = if a.action == "retry" {
        "retried"
    } else {
        "ignored"
    };
    let mut out = format!(
        "Error group {} of {integration}: {} transactions {past}",
        a.group, a.done
    );
    if a.skipped > 0 {
        out.push_str(&format!(
            " ({} no longer in error, left as they are)",
            a.skipped
        ));
    }
    out
}

/// How much of a group's sample answer the table shows.
const SAMPLE_WIDTH: usize = 60;

pub fn errors_table(groups: &[ErrorGroupView]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.count.to_string(),
                if g.first_seq == g.last_seq {
                    g.first_seq.to_string()
                } else {
                    format!("{}-{}", g.first_seq, g.last_seq)
                },
                g.endpoint.clone().unwrap_or_default(),
                g.status.map(|s| s.to_string()).unwrap_or_default(),
                g.last_at.clone(),
                truncate(&g.sample, SAMPLE_WIDTH),
            ]
        })
        .collect();
    table(
        &[
            "GROUP", "COUNT", "SEQS", "ENDPOINT", "STATUS", "LAST", "SAMPLE",
        ],
        &rows,
    )
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
    fn groups_of_errors_and_what_an_action_on_one_did() {
        let groups: Vec<ErrorGroupView> = serde_json::from_value(json!([
            {"group": "3fa2c91b07de", "count": 120, "first_seq": 1, "last_seq": 199,
             "first_at": "T1", "last_at": "T2", "endpoint": "crm", "status": 422,
             "cause": "POST http://h/x: # no such customer #",
             "sample": format!("POST http://h/x: 422 no such customer 17 {}", "x".repeat(80)),
             "actions": ["retry", "ignore"]},
            {"group": "0123456789ab", "count": 1, "first_seq": 7, "last_seq": 7,
             "first_at": "T3", "last_at": "T3", "endpoint": null, "status": null,
             "cause": "flow '…' is no longer configured",
             "sample": "flow 'old' is no longer configured", "actions": []},
        ]))
        .unwrap();
        let t = errors_table(&groups);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "GROUP         COUNT  SEQS   ENDPOINT  STATUS  LAST  SAMPLE"
        );
        assert!(lines[1].starts_with(
            "3fa2c91b07de  120    1-199  crm       422     T2    POST http://h/x: 422 no such"
        ));
        assert!(lines[1].ends_with('…'));
        assert_eq!(
            lines[2],
            "0123456789ab  1      7                        T3    flow 'old' is no longer configured"
        );
        let acted = |v| acted_text("orders", &serde_json::from_value(v).unwrap());
        assert_eq!(
            acted(
                json!({"group": "3fa2c91b07de", "action": "retry", "count": 120, "done": 120, "skipped": 0})
            ),
            "Error group 3fa2c91b07de of orders: 120 transactions retried"
        );
        assert_eq!(
            acted(json!({"group": "3fa2c91b07de", "action": "ignore", "count": 3, "done": 1, "skipped": 2})),
            "Error group 3fa2c91b07de of orders: 1 transactions ignored (2 no longer in error, left as they are)"
        );
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
