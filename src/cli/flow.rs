//! `sluice flow run SITE FLOW --all|--changed` (seed 000's 'Send All' and
//! 'Send Changed') and `sluice flow list SITE`.

use clap::{ArgGroup, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::error::CliError;
use super::output::{self, rows, table, text};

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Run a flow now. While the site is stopped the flow only becomes
    /// 'Pending All' / 'Pending Changed' and the request does not run.
    #[command(group(ArgGroup::new("mode").required(true).args(["all", "changed"])))]
    Run {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
        /// Send All: every source record.
        #[arg(long)]
        all: bool,
        /// Send Changed: the records changed since the flow's checkpoint.
        #[arg(long)]
        changed: bool,
    },
    /// A site's flows: route, schedule, status and last run.
    List {
        /// The site, e.g. LIVE.
        site: String,
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
                    &["sites", &site, "flows", &flow, "run"],
                    json!({ "mode": mode }),
                )
                .await?;
            output::answer(client.json, &v, |v| run_text(&site, &flow, v))
        }
        FlowCommand::List { site } => {
            let v = client.get(&["sites", &site, "flows"], &[]).await?;
            output::answer(client.json, &v, flows_table)
        }
    }
}

/// `Flow customers: Running`, or why a pending request will not run.
pub fn run_text(site: &str, flow: &str, answer: &Value) -> String {
    let status = text(&answer["status"]);
    if status.starts_with("Pending") {
        format!("Flow {flow}: {status} (site {site} is stopped; the request will not run)")
    } else {
        format!("Flow {flow}: {status}")
    }
}

/// Flows as a table; `rows` are the flows of one integration or of a site.
pub fn flows_table(flows: &Value) -> String {
    let rows = rows(flows, |f| {
        let run = &f["last_run"];
        vec![
            text(&f["name"]),
            format!("{} → {}", text(&f["source"]), text(&f["target"])),
            text(&f["schedule"]),
            text(&f["status"]),
            text(&run["result"]),
            text(&run["finished_at"]),
            text(&run["captured"]),
            output::truncate(&text(&run["error"]), 60),
        ]
    });
    table(
        &[
            "FLOW", "ROUTE", "SCHEDULE", "STATUS", "LAST RUN", "FINISHED", "CAPTURED", "ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_requests_say_they_will_not_run() {
        assert_eq!(
            run_text(
                "LIVE",
                "customers",
                &json!({"flow": "customers", "mode": "all", "status": "Running"})
            ),
            "Flow customers: Running"
        );
        assert_eq!(
            run_text("LIVE", "customers", &json!({"status": "Pending Changed"})),
            "Flow customers: Pending Changed (site LIVE is stopped; the request will not run)"
        );
    }

    #[test]
    fn flows_show_their_last_run() {
        let flows = json!([
            {"name": "customers", "source": "erp", "target": "crm", "schedule": "every 30s",
             "status": "Success", "last_run": {"result": "success", "finished_at": "T2", "captured": 3, "error": null}},
            {"name": "web", "source": "shop", "target": "crm", "schedule": null, "status": "", "last_run": null}
        ]);
        assert_eq!(
            flows_table(&flows),
            "FLOW       ROUTE       SCHEDULE   STATUS   LAST RUN  FINISHED  CAPTURED  ERROR\n\
             customers  erp → crm   every 30s  Success  success   T2        3\n\
             web        shop → crm"
        );
    }
}
