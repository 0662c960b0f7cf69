//! `sluice flow run SITE FLOW --all|--changed`.

use clap::{ArgGroup, Subcommand};
use serde_json::json;

use super::client::{seg, text, CliError, Client};

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// 'Send All' or 'Send Changed'. While the site is stopped the flow
    /// becomes 'Pending …' and the request does not run.
    #[command(group(ArgGroup::new("mode").required(true).args(["all", "changed"])))]
    Run {
        site: String,
        flow: String,
        /// Send All: every source record.
        #[arg(long)]
        all: bool,
        /// Send Changed: records past the flow's checkpoint.
        #[arg(long)]
        changed: bool,
    },
}

pub async fn run(client: &Client, command: FlowCommand) -> Result<(), CliError> {
    match command {
        FlowCommand::Run {
            site, flow, all, ..
        } => {
            let mode = if all { "all" } else { "changed" };
            let v = client
                .post(
                    &format!("/sites/{}/flows/{}/run", seg(&site), seg(&flow)),
                    json!({ "mode": mode }),
                )
                .await?;
            if !client.print_json(&v) {
                let status = text(&v["status"]);
                if status.starts_with("Pending") {
                    println!(
                        "Flow {flow}: {status} (site {site} is stopped; the request will not run)"
                    );
                } else {
                    println!("Flow {flow}: {status}");
                }
            }
        }
    }
    Ok(())
}
