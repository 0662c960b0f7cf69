//! `sluice tx list SITE INTEGRATION`.

use clap::Subcommand;

use super::client::{rows, seg, table, text, CliError, Client};

#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// An integration's transactions, newest first.
    List {
        site: String,
        integration: String,
        /// queued, sending, sent, error or ignored.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Only those with a smaller sequence number (to page back).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Send a failed (error) transaction again, in its place in the queue.
    Retry {
        site: String,
        integration: String,
        seq: i64,
    },
    /// Queue a copy of a transaction at the end of the queue.
    Replay {
        site: String,
        integration: String,
        seq: i64,
    },
    /// Give up on a queued or failed transaction: the queue moves on.
    Ignore {
        site: String,
        integration: String,
        seq: i64,
    },
}

pub async fn run(client: &Client, command: TxCommand) -> Result<(), CliError> {
    let act = |site: String, integration: String, seq: i64, verb: &'static str| async move {
        let v = client
            .post(
                &format!(
                    "/sites/{}/integrations/{}/transactions/{seq}/{verb}",
                    seg(&site),
                    seg(&integration)
                ),
                serde_json::json!({}),
            )
            .await?;
        if !client.print_json(&v) {
            println!(
                "Transaction {} of {integration}: {}",
                text(&v["seq"]),
                text(&v["state"])
            );
        }
        Ok::<(), CliError>(())
    };
    match command {
        TxCommand::Retry {
            site,
            integration,
            seq,
        } => act(site, integration, seq, "retry").await?,
        TxCommand::Replay {
            site,
            integration,
            seq,
        } => act(site, integration, seq, "replay").await?,
        TxCommand::Ignore {
            site,
            integration,
            seq,
        } => act(site, integration, seq, "ignore").await?,
        TxCommand::List {
            site,
            integration,
            state,
            limit,
            before,
        } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(format!("state={}", seg(&s)));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            if let Some(b) = before {
                query.push(format!("before={b}"));
            }
            let v = client
                .get(&format!(
                    "/sites/{}/integrations/{}/transactions?{}",
                    seg(&site),
                    seg(&integration),
                    query.join("&")
                ))
                .await?;
            if !client.print_json(&v) {
                let rows = rows(&v, |t| {
                    let mut err = text(&t["last_error"]);
                    if err.chars().count() > 60 {
                        err = err.chars().take(59).collect::<String>() + "…";
                    }
                    vec![
                        text(&t["seq"]),
                        text(&t["state"]),
                        text(&t["flow"]),
                        text(&t["key"]),
                        text(&t["attempts"]),
                        text(&t["created_at"]),
                        err,
                    ]
                });
                println!(
                    "{}",
                    table(
                        &[
                            "SEQ",
                            "STATE",
                            "FLOW",
                            "KEY",
                            "ATTEMPTS",
                            "CREATED",
                            "LAST ERROR"
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(())
}
