//! `sluice flow run SITE FLOW --all|--changed` (seed 000's 'Send All' and
//! 'Send Changed'), `sluice flow list SITE`, `sluice flow show SITE FLOW`
//! and `sluice flow try SITE FLOW [--file RECORD.json]` (what a record
//! becomes through the flow's `map` and `transform`).

use clap::{ArgGroup, Subcommand};
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output::{self, or_blank, table};
use crate::api::flows::{FlowView, RunAnswer, TryAnswer};

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
    /// One flow: route, schedule, status, checkpoint, last run, and what
    /// you may do to it now.
    Show {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
    },
    /// What a record becomes through the flow's `map` and `transform`, as
    /// it would be sent; nothing is queued or sent. Prints the records the
    /// target would get, one JSON a line, or why the record would be
    /// ignored; exit 1 if the transform fails on it.
    Try {
        /// The site, e.g. LIVE.
        site: String,
        /// The flow.
        flow: String,
        /// A file holding the record (JSON). Without it, the flow's source
        /// is read now: its first record past the checkpoint, else its
        /// first record.
        #[arg(long, value_name = "RECORD.json")]
        file: Option<std::path::PathBuf>,
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
            output::answer(client.json, &v, |a: &RunAnswer| run_text(&site, &flow, a))
        }
        FlowCommand::List { site } => {
            let v = client.get(&["sites", &site, "flows"], &[]).await?;
            output::answer(client.json, &v, |f: &Vec<FlowView>| flows_table(f))
        }
        FlowCommand::Show { site, flow } => {
            let v = client.get(&["sites", &site, "flows", &flow], &[]).await?;
            output::answer(client.json, &v, show_text)
        }
        FlowCommand::Try { site, flow, file } => {
            let body = match file {
                None => json!({}),
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        CliError::Usage(format!("cannot read {}: {e}", path.display()))
                    })?;
                    let record: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                        CliError::Usage(format!("{} is not JSON: {e}", path.display()))
                    })?;
                    json!({ "record": record })
                }
            };
            let v = client
                .post(&["sites", &site, "flows", &flow, "try"], body)
                .await?;
            let answer: TryAnswer = output::read(&v)?;
            if client.json {
                output::json(&v)?;
            } else if answer.error.is_none() {
                output::line(try_text(&answer))?;
            }
            match answer.error {
                Some(error) => Err(CliError::Failed(error)),
                None => Ok(()),
            }
        }
    }
}

/// The records the target would get, one JSON a line; or why none.
fn try_text(answer: &TryAnswer) -> String {
    if let Some(reason) = &answer.ignored {
        return format!("ignored: {reason}");
    }
    answer
        .output
        .iter()
        .map(|record| record.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Flow customers: Running`, or why a pending request will not run.
pub fn run_text(site: &str, flow: &str, answer: &RunAnswer) -> String {
    let status = &answer.status;
    if status.starts_with("Pending") {
        format!("Flow {flow}: {status} (site {site} is stopped; the request will not run)")
    } else {
        format!("Flow {flow}: {status}")
    }
}

/// Flows as a table: those of one integration or of a site.
pub fn flows_table(flows: &[FlowView]) -> String {
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            let run = f.last_run.as_ref();
            vec![
                f.name.clone(),
                format!("{} → {}", f.source, f.target),
                or_blank(&f.schedule).to_string(),
                f.status.clone(),
                run.and_then(|r| r.result)
                    .map(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string(),
                run.map(|r| or_blank(&r.finished_at).to_string())
                    .unwrap_or_default(),
                run.map(|r| r.captured.to_string()).unwrap_or_default(),
                output::truncate(run.map(|r| or_blank(&r.error)).unwrap_or_default(), 60),
            ]
        })
        .collect();
    table(
        &[
            "FLOW", "ROUTE", "SCHEDULE", "STATUS", "LAST RUN", "FINISHED", "CAPTURED", "ERROR",
        ],
        &rows,
    )
}

/// One flow, a fact a line.
fn show_text(f: &FlowView) -> String {
    let mut out = format!(
        "Flow {} (integration {}): {} → {}, {}{}",
        f.name,
        f.integration,
        f.source,
        f.target,
        f.schedule.as_deref().unwrap_or("no schedule"),
        if f.enabled { "" } else { ", disabled" }
    );
    if !f.status.is_empty() {
        out.push_str(&format!("\nstatus: {}", f.status));
    }
    if let Some(checkpoint) = &f.checkpoint {
        out.push_str(&format!("\ncheckpoint: {checkpoint}"));
    }
    if let Some(run) = &f.last_run {
        out.push_str(&format!(
            "\nlast run: #{} {}, {}, started {}{}: {} captured, {} succeeded, {} failed, {} pages",
            run.id,
            run.mode.as_str(),
            run.result.map_or("running", |r| r.as_str()),
            run.started_at,
            run.finished_at
                .as_ref()
                .map(|t| format!(", finished {t}"))
                .unwrap_or_default(),
            run.captured,
            run.succeeded,
            run.failed,
            run.pages
        ));
        if let Some(error) = &run.error {
            out.push_str(&format!("\nrun error: {error}"));
        }
    }
    if let Some(stalled) = &f.stalled {
        out.push_str(&format!("\nstalled: {stalled}"));
    }
    out.push_str(&format!("\nactions: {}", output::actions(&f.actions)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn flow(fields: Value) -> FlowView {
        let mut v = json!({"integration": "customers", "enabled": true, "checkpoint": null,
            "stalled": null, "actions": []});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn answer(v: Value) -> RunAnswer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pending_requests_say_they_will_not_run() {
        assert_eq!(
            run_text(
                "LIVE",
                "customers",
                &answer(json!({"flow": "customers", "mode": "all", "status": "Running"}))
            ),
            "Flow customers: Running"
        );
        assert_eq!(
            run_text(
                "LIVE",
                "customers",
                &answer(
                    json!({"flow": "customers", "mode": "changed", "status": "Pending Changed"})
                )
            ),
            "Flow customers: Pending Changed (site LIVE is stopped; the request will not run)"
        );
    }

    #[test]
    fn flows_show_their_last_run() {
        let flows = [
            flow(
                json!({"name": "customers", "source": "erp", "target": "crm", "schedule": "every 30s",
             "status": "Success", "last_run": {"id": 1, "mode": "changed", "started_at": "T1",
             "result": "success", "finished_at": "T2", "captured": 3, "succeeded": 3, "failed": 0,
             "pages": 2, "error": null}}),
            ),
            flow(
                json!({"name": "web", "source": "shop", "target": "crm", "schedule": null, "status": "",
             "last_run": null}),
            ),
        ];
        assert_eq!(
            flows_table(&flows),
            "FLOW       ROUTE       SCHEDULE   STATUS   LAST RUN  FINISHED  CAPTURED  ERROR\n\
             customers  erp → crm   every 30s  Success  success   T2        3\n\
             web        shop → crm"
        );
    }

    #[test]
    fn a_try_prints_the_records_or_why_none() {
        let a = |v: Value| -> TryAnswer { serde_json::from_value(v).unwrap() };
        let two = a(
            json!({"flow": "f", "input": {"a": 1}, "output": [{"a": 1}, {"b": "x"}],
            "ignored": null, "error": null}),
        );
        assert_eq!(try_text(&two), "{\"a\":1}\n{\"b\":\"x\"}");
        let none = a(json!({"flow": "f", "input": {}, "output": [],
            "ignored": "flow f: the transform yielded nothing", "error": null}));
        assert_eq!(
            try_text(&none),
            "ignored: flow f: the transform yielded nothing"
        );
    }

    #[test]
    fn one_flow() {
        let f = flow(
            json!({"name": "customers", "source": "erp", "target": "crm",
            "schedule": "every 30s", "status": "Failed", "checkpoint": "2026-11-24T10:00:00Z",
            "last_run": {"id": 7, "mode": "all", "started_at": "T1", "result": "failed",
            "finished_at": "T2", "captured": 3, "succeeded": 2, "failed": 1, "pages": 1,
            "error": "HTTP 503"}, "actions": ["run-all", "run-changed"]}),
        );
        assert_eq!(
            show_text(&f),
            "Flow customers (integration customers): erp → crm, every 30s\n\
             status: Failed\n\
             checkpoint: \"2026-11-24T10:00:00Z\"\n\
             last run: #7 all, failed, started T1, finished T2: 3 captured, 2 succeeded, 1 failed, 1 pages\n\
             run error: HTTP 503\n\
             actions: run-all, run-changed"
        );
        let web = flow(
            json!({"name": "web", "source": "shop", "target": "crm", "schedule": null,
            "enabled": false, "status": "", "last_run": null}),
        );
        assert_eq!(
            show_text(&web),
            "Flow web (integration customers): shop → crm, no schedule, disabled\nactions: none"
        );
    }
}
