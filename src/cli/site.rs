//! `sluice site start|stop|list`.

use clap::Subcommand;
use serde_json::json;

use super::client::{rows, seg, table, text, CliError, Client};

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Start a stopped site.
    Start { site: String },
    /// Stop a running site; the reason is kept in the audit trail.
    Stop {
        site: String,
        /// Why, e.g. 'Stopping integration due to stocktake'.
        #[arg(long)]
        reason: String,
    },
    /// Every site and its state.
    List,
    /// Read the configuration file again and apply this site's part (also
    /// what SIGHUP does for every site). States, holds and queues stay.
    Reload { site: String },
}

pub async fn run(client: &Client, command: SiteCommand) -> Result<(), CliError> {
    match command {
        SiteCommand::Start { site } => {
            let v = client
                .post(&format!("/sites/{}/start", seg(&site)), json!({}))
                .await?;
            if !client.print_json(&v) {
                println!("Site {site} started.");
            }
        }
        SiteCommand::Stop { site, reason } => {
            let v = client
                .post(
                    &format!("/sites/{}/stop", seg(&site)),
                    json!({ "reason": reason }),
                )
                .await?;
            if !client.print_json(&v) {
                println!("Site {site} stopped: {}", text(&v["stop_reason"]));
            }
        }
        SiteCommand::Reload { site } => {
            let v = client
                .post(&format!("/sites/{}/reload", seg(&site)), json!({}))
                .await?;
            if !client.print_json(&v) {
                println!("Site {site} reloaded: {}.", text(&v["state"]));
            }
        }
        SiteCommand::List => {
            let v = client.get("/sites").await?;
            if !client.print_json(&v) {
                let rows = rows(&v, |s| {
                    vec![
                        text(&s["name"]),
                        text(&s["state"]),
                        text(&s["since"]),
                        text(&s["stop_reason"]),
                    ]
                });
                println!(
                    "{}",
                    table(&["SITE", "STATE", "SINCE", "LAST STOP REASON"], &rows)
                );
            }
        }
    }
    Ok(())
}
