//! `sluice site start|stop|list|show|reload|audit`.

use clap::Subcommand;
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output::{self, or_blank, table};
use crate::api::log::AuditView;
use crate::api::sites::SiteView;

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
    /// One site: its state, the last stop, what it holds and what you may
    /// do to it now.
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
            output::answer(json, &v, |_: &SiteView| format!("Site {site} started."))
        }
        SiteCommand::Stop { site, reason } => {
            let v = client
                .post(&["sites", &site, "stop"], json!({ "reason": reason }))
                .await?;
            output::answer(json, &v, |_: &SiteView| format!("Site {site} stopped."))
        }
        SiteCommand::Reload { site } => {
            let v = client.post(&["sites", &site, "reload"], json!({})).await?;
            output::answer(json, &v, |s: &SiteView| {
                format!("Site {site} reloaded; it is {}.", s.state.as_str())
            })
        }
        SiteCommand::List => {
            let v = client.get(&["sites"], &[]).await?;
            output::answer(json, &v, |s: &Vec<SiteView>| list_table(s))
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
            output::answer(json, &v, |a: &Vec<AuditView>| audit_table(a))
        }
    }
}

pub fn list_table(sites: &[SiteView]) -> String {
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.state.as_str().to_string(),
                s.since.clone(),
                or_blank(&s.stop_reason).to_string(),
            ]
        })
        .collect();
    table(&["SITE", "STATE", "SINCE", "LAST STOP REASON"], &rows)
}

fn show_text(s: &SiteView) -> String {
    let mut out = format!("Site {}: {} since {}", s.name, s.state.as_str(), s.since);
    if let Some(reason) = &s.stop_reason {
        out.push_str(&format!(
            "\nlast stop: {reason} by {} at {}",
            or_blank(&s.stopped_by),
            or_blank(&s.stopped_at)
        ));
    }
    for (label, names) in [
        ("integrations", &s.integrations),
        ("endpoints", &s.endpoints),
    ] {
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        out.push_str(&format!("\n{label}: {names}"));
    }
    out.push_str(&format!("\nactions: {}", output::actions(&s.actions)));
    out
}

fn audit_table(entries: &[AuditView]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|a| {
            vec![
                a.at.clone(),
                a.actor.clone(),
                a.action.clone(),
                a.subject.clone(),
                a.outcome.clone(),
                output::truncate(or_blank(&a.reason), 60),
            ]
        })
        .collect();
    table(
        &["AT", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "REASON"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn site(v: Value) -> SiteView {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_site_list() {
        let sites = vec![
            site(
                json!({"name": "LIVE", "state": "running", "since": "2026-11-24T10:00:00Z",
                "stop_reason": null, "stopped_by": null, "stopped_at": null, "log_level": 4,
                "integrations": [], "endpoints": [], "actions": ["stop", "reload"]}),
            ),
            site(
                json!({"name": "DEV", "state": "stopped", "since": "2026-11-24T09:00:00Z",
                "stop_reason": "stocktake", "stopped_by": "ann@cli", "stopped_at": "T",
                "log_level": 4, "integrations": [], "endpoints": [], "actions": []}),
            ),
        ];
        assert_eq!(
            list_table(&sites),
            "SITE  STATE    SINCE                 LAST STOP REASON\n\
             LIVE  running  2026-11-24T10:00:00Z\n\
             DEV   stopped  2026-11-24T09:00:00Z  stocktake"
        );
    }

    #[test]
    fn one_site() {
        let dev = site(json!({
            "name": "DEV", "state": "stopped", "since": "T1", "stop_reason": "stocktake",
            "stopped_by": "ann@cli", "stopped_at": "T1", "log_level": 4,
            "integrations": ["orders", "stock"], "endpoints": [], "actions": ["start", "reload"]
        }));
        assert_eq!(
            show_text(&dev),
            "Site DEV: stopped since T1\nlast stop: stocktake by ann@cli at T1\n\
             integrations: orders, stock\nendpoints: none\nactions: start, reload"
        );
        let viewer = SiteView {
            actions: vec![],
            ..dev
        };
        assert!(show_text(&viewer).ends_with("\nactions: none"));
    }
}
