//! `sluice endpoint list|test`.

use clap::Subcommand;

use super::client::{seg, table, text, CliError, Client};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// A site's endpoints and what is observed of them.
    List { site: String },
    /// Call an endpoint now and show what it answered and how fast.
    Test { site: String, name: String },
}

pub async fn run(client: &Client, command: EndpointCommand) -> Result<(), CliError> {
    match command {
        EndpointCommand::List { site } => {
            let v = client
                .get(&format!("/sites/{}/endpoints", seg(&site)))
                .await?;
            if !client.print_json(&v) {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            text(&e["name"]),
                            text(&e["kind"]),
                            text(&e["state"]),
                            text(&e["since"]),
                            text(&e["last_error"]),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(&["ENDPOINT", "KIND", "STATE", "SINCE", "LAST ERROR"], &rows)
                );
            }
            Ok(())
        }
        EndpointCommand::Test { site, name } => {
            let v = client
                .post(
                    &format!("/sites/{}/endpoints/{}/test", seg(&site), seg(&name)),
                    serde_json::json!({}),
                )
                .await?;
            if !client.print_json(&v) {
                println!(
                    "Endpoint {name}: {} in {} ms ({}); now {}",
                    if v["ok"].as_bool() == Some(true) {
                        "reachable"
                    } else {
                        "NOT reachable"
                    },
                    text(&v["latency_ms"]),
                    text(&v["detail"]),
                    text(&v["state"])
                );
            }
            if v["ok"].as_bool() == Some(false) {
                return Err(CliError::Failed(format!(
                    "endpoint {name} cannot be reached"
                )));
            }
            Ok(())
        }
    }
}
