//! `sluice integration pause|resume|start|stop|list|show`.

use clap::Subcommand;
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::flow::flows_table;
use super::output::{self, table};
use super::resume;
use crate::api::integrations::IntegrationView;

#[derive(Debug, Subcommand)]
pub enum IntegrationCommand {
    /// Stop sending; records are still captured and queue in order.
    /// Returns once no send will start any more.
    Pause {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        name: String,
        /// Why (kept with the hold and in the audit trail).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift the operator's hold and send the queue in creation order,
    /// showing progress until the backlog is sent.
    Resume {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        name: String,
        /// Why (kept in the audit trail).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Return at once instead of following the backlog.
        #[arg(long)]
        detach: bool,
    },
    /// Activate a stopped integration (starts are queued, one at a time).
    Start {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        name: String,
        /// Why (kept in the audit trail).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Deactivate: nothing is captured and nothing is sent.
    Stop {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        name: String,
        /// Why (kept in the audit trail).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// A site's integrations.
    List {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// One integration: state, status, holds, the resume under way, what
    /// you may do to it now, and its flows.
    Show {
        /// The site, e.g. LIVE.
        site: String,
        /// The integration.
        name: String,
    },
}

pub async fn run(client: &Client, command: IntegrationCommand) -> Result<(), CliError> {
    match command {
        IntegrationCommand::Pause { site, name, reason } => {
            act(client, &site, &name, "pause", reason, "paused").await
        }
        IntegrationCommand::Start { site, name, reason } => {
            act(client, &site, &name, "start", reason, "started").await
        }
        IntegrationCommand::Stop { site, name, reason } => {
            act(client, &site, &name, "stop", reason, "stopped").await
        }
        IntegrationCommand::Resume {
            site,
            name,
            reason,
            detach,
        } => resume::run(client, &site, &name, reason, detach).await,
        IntegrationCommand::List { site } => {
            let v = client.get(&["sites", &site, "integrations"], &[]).await?;
            output::answer(client.json, &v, |i: &Vec<IntegrationView>| list_table(i))
        }
        IntegrationCommand::Show { site, name } => {
            let v = client
                .get(&["sites", &site, "integrations", &name], &[])
                .await?;
            output::answer(client.json, &v, show_text)
        }
    }
}

async fn act(
    client: &Client,
    site: &str,
    name: &str,
    verb: &str,
    reason: Option<String>,
    done: &str,
) -> Result<(), CliError> {
    let v = client
        .post(
            &["sites", site, "integrations", name, verb],
            json!({ "reason": reason }),
        )
        .await?;
    output::answer(client.json, &v, |i: &IntegrationView| {
        act_text(name, done, i)
    })
}

/// `Integration orders paused; 12 queued.`
pub fn act_text(name: &str, done: &str, answer: &IntegrationView) -> String {
    format!("Integration {name} {done}; {} queued.", answer.queued)
}

pub fn list_table(integrations: &[IntegrationView]) -> String {
    let rows: Vec<Vec<String>> = integrations
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.state.as_str().to_string(),
                i.status.as_str().to_string(),
                i.queued.to_string(),
                output::holds(i).join("; "),
            ]
        })
        .collect();
    table(
        &["INTEGRATION", "STATE", "STATUS", "QUEUED", "HOLDS"],
        &rows,
    )
}

pub fn show_text(i: &IntegrationView) -> String {
    let mut out = format!(
        "Integration {}/{}: {}, {}, {} queued",
        i.site,
        i.name,
        i.state.as_str(),
        i.status.as_str(),
        i.queued
    );
    let holds = output::holds(i);
    if !holds.is_empty() {
        out.push_str("\nholds (it sends only when there are none):");
        for hold in holds {
            out.push_str(&format!("\n  {hold}"));
        }
    }
    if let Some(resume) = &i.resume {
        out.push_str(&format!(
            "\nresuming: {}/{} sent, {}",
            resume.done,
            resume.total,
            resume::progress_message(resume.rate, resume.eta_s, None)
        ));
    }
    if let Some(stalled) = &i.stalled {
        out.push_str(&format!("\nstalled: {stalled}"));
    }
    if let Some(blocked) = &i.blocked {
        out.push_str(&format!(
            "\nblocked behind transaction {}: {}",
            blocked.seq, blocked.error
        ));
    }
    out.push_str(&format!("\nactions: {}", output::actions(&i.actions)));
    out.push('\n');
    out.push_str(&flows_table(&i.flows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::integrations::{BlockedView, ResumeView};
    use serde_json::Value;

    fn orders() -> Value {
        json!({
            "name": "orders", "site": "LIVE", "state": "paused", "status": "Running",
            "holds": [{"kind": "operator", "by": "ann@cli", "since": "T1", "reason": "stocktake"}],
            "queued": 12, "on_error": "block",
            "resume": null, "stalled": null, "blocked": null,
            "flows": [{"name": "web", "integration": "orders", "source": "shop", "target": "crm",
                       "schedule": null, "enabled": true, "status": "", "checkpoint": null,
                       "last_run": null, "stalled": null, "actions": []}],
            "actions": ["resume", "stop"]
        })
    }

    fn read(v: Value) -> IntegrationView {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn actions_say_what_happened() {
        assert_eq!(
            act_text("orders", "paused", &read(orders())),
            "Integration orders paused; 12 queued."
        );
    }

    #[test]
    fn the_list_names_the_holds() {
        assert_eq!(
            list_table(&[read(orders())]),
            "INTEGRATION  STATE   STATUS   QUEUED  HOLDS\n\
             orders       paused  Running  12      operator by ann@cli since T1: stocktake"
        );
    }

    #[test]
    fn show_lists_holds_progress_actions_and_flows() {
        let i = IntegrationView {
            resume: Some(ResumeView {
                done: 40,
                total: 150,
                rate: 20.0,
                eta_s: Some(5.5),
            }),
            blocked: Some(BlockedView {
                seq: 41,
                error: "HTTP 422: no such customer".into(),
            }),
            ..read(orders())
        };
        assert_eq!(
            show_text(&i),
            "Integration LIVE/orders: paused, Running, 12 queued\n\
             holds (it sends only when there are none):\n  \
             operator by ann@cli since T1: stocktake\n\
             resuming: 40/150 sent, 20.0/s, 6s left\n\
             blocked behind transaction 41: HTTP 422: no such customer\n\
             actions: resume, stop\n\
             FLOW  ROUTE       SCHEDULE  STATUS  LAST RUN  FINISHED  CAPTURED  ERROR\n\
             web   shop → crm"
        );
    }
}
