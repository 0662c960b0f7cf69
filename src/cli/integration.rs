//! `sluice integration pause|resume|start|stop|list|show`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{rows, seg, table, text, CliError, Client};

#[derive(Debug, Subcommand)]
pub enum IntegrationCommand {
    /// Stop sending; records keep being captured and queue in order.
    Pause {
        site: String,
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send the queue in order, with a progress bar until it is sent.
    Resume {
        site: String,
        name: String,
        #[arg(long)]
        reason: Option<String>,
        /// Return at once instead of following the drain.
        #[arg(long)]
        detach: bool,
    },
    /// Activate a stopped integration.
    Start {
        site: String,
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deactivate: nothing is captured or sent.
    Stop {
        site: String,
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A site's integrations.
    List { site: String },
    /// One integration with its flows and holds.
    Show { site: String, name: String },
}

fn path(site: &str, name: &str) -> String {
    format!("/sites/{}/integrations/{}", seg(site), seg(name))
}

fn holds_text(v: &Value) -> String {
    v["holds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            format!(
                "{} by {} ({})",
                text(&h["kind"]),
                text(&h["by"]),
                text(&h["reason"])
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
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
        } => {
            let started = Instant::now();
            let v = client
                .post(
                    &format!("{}/resume", path(&site, &name)),
                    json!({ "reason": reason }),
                )
                .await?;
            if client.print_json(&v) || detach {
                if !client.json {
                    println!("Integration {name} resumed; {} queued.", text(&v["queued"]));
                }
                return Ok(());
            }
            follow(client, &site, &name, v, started).await
        }
        IntegrationCommand::List { site } => {
            let v = client
                .get(&format!("/sites/{}/integrations", seg(&site)))
                .await?;
            if !client.print_json(&v) {
                let rows = rows(&v, |i| {
                    vec![
                        text(&i["name"]),
                        text(&i["state"]),
                        text(&i["status"]),
                        text(&i["queued"]),
                        holds_text(i),
                    ]
                });
                println!(
                    "{}",
                    table(
                        &["INTEGRATION", "STATE", "STATUS", "QUEUED", "HOLDS"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        IntegrationCommand::Show { site, name } => {
            let v = client.get(&path(&site, &name)).await?;
            if !client.print_json(&v) {
                println!(
                    "{site}/{name}: {} ({}), {} queued",
                    text(&v["state"]),
                    text(&v["status"]),
                    text(&v["queued"])
                );
                let holds = holds_text(&v);
                if !holds.is_empty() {
                    println!("holds: {holds}");
                }
                let rows = rows(&v["flows"], |f| {
                    vec![
                        text(&f["name"]),
                        format!("{} → {}", text(&f["source"]), text(&f["target"])),
                        text(&f["schedule"]),
                        text(&f["status"]),
                        text(&f["last_run"]["result"]),
                        text(&f["last_run"]["captured"]),
                    ]
                });
                println!(
                    "{}",
                    table(
                        &["FLOW", "ROUTE", "SCHEDULE", "STATUS", "LAST RUN", "CAPTURED"],
                        &rows
                    )
                );
            }
            Ok(())
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
            &format!("{}/{verb}", path(site, name)),
            json!({ "reason": reason }),
        )
        .await?;
    if !client.print_json(&v) {
        println!("Integration {name} {done}; {} queued.", text(&v["queued"]));
    }
    Ok(())
}

/// Follows the drain a resume started until the backlog is sent.
async fn follow(
    client: &Client,
    site: &str,
    name: &str,
    first: Value,
    started: Instant,
) -> Result<(), CliError> {
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if tty {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} transactions  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut v = first;
    let mut total = 0i64;
    let mut last_print = Instant::now() - Duration::from_secs(2);
    loop {
        let resume = &v["resume"];
        if resume.is_null() {
            break;
        }
        let done = resume["done"].as_i64().unwrap_or(0);
        total = resume["total"].as_i64().unwrap_or(total);
        let rate = resume["rate"].as_f64().unwrap_or(0.0);
        let eta = resume["eta_s"].as_f64();
        bar.set_length(total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        bar.set_message(format!(
            "{rate:.0}/s{}",
            eta.map(|e| format!(", {e:.0}s left")).unwrap_or_default()
        ));
        if !tty && last_print.elapsed() >= Duration::from_secs(1) {
            println!("progress: {done}/{total}");
            last_print = Instant::now();
        }
        let holds = v["holds"].as_array().is_some_and(|h| !h.is_empty());
        if holds {
            bar.abandon();
            return Err(CliError::Failed(format!(
                "integration {name} is held and not sending: {} ({done}/{total} sent)",
                holds_text(&v)
            )));
        }
        if total > 0 && done >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        v = client.get(&path(site, name)).await?;
    }
    bar.finish_and_clear();
    if total == 0 {
        total = v["resume"]["total"].as_i64().unwrap_or(0);
    }
    let sent = if total == 0 {
        "nothing was queued".to_string()
    } else {
        format!("{total} transactions sent")
    };
    println!(
        "Resumed {name}: {sent} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
