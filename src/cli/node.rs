//! `sluice node list`: the nodes of a cluster.

use clap::Subcommand;

use super::client::Client;
use super::error::CliError;
use super::output::{self, table};
use crate::api::nodes::NodeView;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node on the store, when it last gave a heartbeat, and the
    /// integrations it sends (on a single node: this one, sending all).
    List,
}

pub async fn run(client: &Client, command: NodeCommand) -> Result<(), CliError> {
    match command {
        NodeCommand::List => {
            let v = client.get(&["nodes"], &[]).await?;
            output::answer(client.json, &v, |n: &Vec<NodeView>| list_table(n))
        }
    }
}

pub fn list_table(nodes: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.alive { "alive" } else { "gone" }.to_string(),
                n.address.clone(),
                n.heartbeat_at.clone(),
                n.integrations.join(", "),
            ]
        })
        .collect();
    table(
        &["NODE", "STATE", "ADDRESS", "HEARTBEAT", "INTEGRATIONS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_as_a_table() {
        let nodes: Vec<NodeView> = serde_json::from_value(serde_json::json!([
            {"name": "n1", "address": "http://127.0.0.1:7070", "started_at": "2026-12-03T10:00:00.000Z",
             "heartbeat_at": "2026-12-03T10:05:00.000Z", "alive": true, "integrations": ["LIVE/orders", "LIVE/stock"]},
            {"name": "n2", "address": "http://127.0.0.1:7071", "started_at": "2026-12-03T10:00:00.000Z",
             "heartbeat_at": "2026-12-03T10:01:00.000Z", "alive": false, "integrations": []}
        ]))
        .unwrap();
        let text = list_table(&nodes);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{text}");
        assert!(
            lines[1].contains("n1")
                && lines[1].contains("alive")
                && lines[1].contains("LIVE/orders, LIVE/stock"),
            "{text}"
        );
        assert!(
            lines[2].contains("n2") && lines[2].contains("gone"),
            "{text}"
        );
    }
}
