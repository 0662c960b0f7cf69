//! `sluice link list|set|delete SITE FLOW …`: record links (Unifi's bonds),
//! listed and repaired by hand.

use clap::Subcommand;
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output::{self, table};
use crate::api::links::LinkView;

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// A flow's record links: each key and the id its target gave it.
    List {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
        /// Only this key's link.
        key: Option<String>,
        /// Only keys after this one (to page on).
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Set a key's link by hand: its next record updates this id.
    Set {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
        /// The record's key.
        key: String,
        /// The target's id for it.
        id: String,
    },
    /// Delete a key's link by hand: its next record is a create again.
    Delete {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
        /// The record's key.
        key: String,
    },
}

pub async fn run(client: &Client, command: LinkCommand) -> Result<(), CliError> {
    let json = client.json;
    match command {
        LinkCommand::List {
            site,
            flow,
            key,
            after,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(key) = key {
                query.push(("key", key));
            }
            if let Some(after) = after {
                query.push(("after", after));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let v = client
                .get(&["sites", &site, "flows", &flow, "links"], &query)
                .await?;
            output::answer(json, &v, |links: &Vec<LinkView>| {
                let rows: Vec<Vec<String>> = links
                    .iter()
                    .map(|l| vec![l.key.clone(), l.link.clone(), l.updated_at.clone()])
                    .collect();
                table(&["KEY", "LINK", "UPDATED"], &rows)
            })
        }
        LinkCommand::Set {
            site,
            flow,
            key,
            id,
        } => {
            let v = client
                .put(
                    &["sites", &site, "flows", &flow, "links", &key],
                    json!({ "link": id }),
                )
                .await?;
            output::answer(json, &v, |l: &LinkView| {
                format!("Key {} of flow {flow} is linked to {}", l.key, l.link)
            })
        }
        LinkCommand::Delete { site, flow, key } => {
            client
                .delete(&["sites", &site, "flows", &flow, "links", &key])
                .await?;
            if json {
                output::json(&json!({ "flow": flow, "key": key, "deleted": true }))
            } else {
                output::line(format!(
                    "Link of key {key} in flow {flow} deleted: its next record is a create"
                ))
            }
        }
    }
}
