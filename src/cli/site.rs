//! `sluice site start|stop|list|show|reload|audit`.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::Client;
use super::error::CliError;
use super::output::{self, rows, table, text};

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Start a stopped site: its workers start and every flow's status is
    /// reset; ad-hoc requests made while it was stopped are discarded.
    Start {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// Stop a running site, also mid-task; nothing queued is lost. The
    /// reason is kept in the audit trail with who stopped it and when.
    Stop {
        /// The site, e.g. LIVE.
        site: String,
        /// Why, e.g. 'Stopping integration due to stocktake'.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Every site and its state.
    List,
    /// One site: its state, the last stop and what it holds.
    Show {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// Read the configuration file again and apply this site's part (what
    /// SIGHUP does for every site). States, holds and queues stay.
    Reload {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// Who did what to the site, newest first.
    Audit {
        /// The site, e.g. LIVE.
        site: String,
        /// At most this many entries (default 100).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

pub async fn run(client: &Client, command: SiteCommand) -> Result<(), CliError> {
    let json = client.json;
    match command {
        SiteCommand::Start { site } => {
            let v = client.post(&["sites", &site, "start"], json!({})).await?;
            output::answer(json, &v, |_| format!("Site {site} started."))
        }
        SiteCommand::Stop { site, reason } => {
            let v = client
                .post(&["sites", &site, "stop"], json!({ "reason": reason }))
                .await?;
            output::answer(json, &v, |_| format!("Site {site} stopped."))
        }
        SiteCommand::Reload { site } => {
            let v = client.post(&["sites", &site, "reload"], json!({})).await?;
            output::answer(json, &v, |v| {
                format!("Site {site} reloaded; it is {}.", text(&v["state"]))
            })
        }
        SiteCommand::List => {
            let v = client.get(&["sites"], &[]).await?;
            output::answer(json, &v, list_table)
        }
        SiteCommand::Show { site } => {
            let v = client.get(&["sites", &site], &[]).await?;
            output::answer(json, &v, show_text)
        }
        SiteCommand::Audit { site, limit } => {
            let query: Vec<(&str, String)> = limit
                .map(|n| ("limit", n.to_string()))
                .into_iter()
                .collect();
            let v = client.get(&["sites", &site, "audit"], &query).await?;
            output::answer(json, &v, audit_table)
        }
    }
}

pub fn list_table(sites: &Value) -> String {
    let rows = rows(sites, |s| {
        vec![
            text(&s["name"]),
            text(&s["state"]),
            text(&s["since"]),
            text(&s["stop_reason"]),
        ]
    });
    table(&["SITE", "STATE", "SINCE", "LAST STOP REASON"], &rows)
}

fn show_text(s: &Value) -> String {
    let mut out = format!(
        "Site {}: {} since {}",
        text(&s["name"]),
        text(&s["state"]),
        text(&s["since"])
    );
    if !s["stop_reason"].is_null() {
        out.push_str(&format!(
            "\nlast stop: {} by {} at {}",
            text(&s["stop_reason"]),
            text(&s["stopped_by"]),
            text(&s["stopped_at"])
        ));
    }
    for (label, key) in [("integrations", "integrations"), ("endpoints", "endpoints")] {
        let names: Vec<String> = s[key].as_array().into_iter().flatten().map(text).collect();
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        out.push_str(&format!("\n{label}: {names}"));
    }
    out
}

fn audit_table(entries: &Value) -> String {
    let rows = rows(entries, |a| {
        vec![
            text(&a["at"]),
            text(&a["actor"]),
            text(&a["action"]),
            text(&a["subject"]),
            text(&a["outcome"]),
            output::truncate(&text(&a["reason"]), 60),
        ]
    });
    table(
        &["AT", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "REASON"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_list() {
        let sites = json!([
            {"name": "LIVE", "state": "running", "since": "2026-11-24T10:00:00Z", "stop_reason": null},
            {"name": "DEV", "state": "stopped", "since": "2026-11-24T09:00:00Z", "stop_reason": "stocktake"}
        ]);
        assert_eq!(
            list_table(&sites),
            "SITE  STATE    SINCE                 LAST STOP REASON\n\
             LIVE  running  2026-11-24T10:00:00Z\n\
             DEV   stopped  2026-11-24T09:00:00Z  stocktake"
        );
    }

    #[test]
    fn one_site() {
        let site = json!({
            "name": "DEV", "state": "stopped", "since": "T1", "stop_reason": "stocktake",
            "stopped_by": "ann@cli", "stopped_at": "T1", "integrations": ["orders", "stock"],
            "endpoints": []
        });
        assert_eq!(
            show_text(&site),
            "Site DEV: stopped since T1\nlast stop: stocktake by ann@cli at T1\n\
             integrations: orders, stock\nendpoints: none"
        );
    }
}
