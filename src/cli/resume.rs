//! `sluice integration resume SITE NAME`: resume, then follow the backlog
//! until it is sent.
//!
//! The daemon reports a drain in the integration's `resume` field
//! (`{done, total, rate, eta_s}` while the backlog a resume released is
//! being sent, null once it is). The command polls the integration every
//! 200 ms and shows a progress bar on a terminal, or a plain
//! `progress: done/total` line at most once a second when standard error is
//! not one (a script sees progress too). It ends with success when the
//! backlog is sent, and with exit code 1 when sending stops on the way: a
//! hold (someone paused it again, its endpoint went offline), a stop, or a
//! failed transaction the queue waits behind (`on_error = "block"`). Ctrl-C
//! only stops following; the drain goes on in the daemon.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::client::Client;
use super::error::CliError;
use super::output::{self, text};

const POLL: Duration = Duration::from_millis(200);
/// At most one plain progress line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// What one look at the integration says about the drain.
#[derive(Debug, Clone, PartialEq)]
pub enum Drain {
    /// Sending the backlog.
    Sending {
        done: u64,
        total: u64,
        rate: f64,
        eta_s: Option<f64>,
        stalled: Option<String>,
    },
    /// The backlog is sent.
    Sent,
    /// Sending stopped: these holds (each `kind by WHO …: reason`).
    Held(Vec<String>),
    /// Sending stopped: the integration is no longer active (stopped).
    Inactive(String),
    /// Sending stopped: the queue waits behind a failed transaction.
    Blocked { seq: String, error: String },
}

/// Reads the drain from an integration as the API shows it.
pub fn observe(integration: &Value) -> Drain {
    let resume = &integration["resume"];
    let holds = output::holds(integration);
    if !holds.is_empty() {
        // A hold placed just after the backlog was sent does not undo it.
        if resume.is_null() && integration["queued"].as_i64() == Some(0) {
            return Drain::Sent;
        }
        return Drain::Held(holds);
    }
    if let Some(state) = integration["state"].as_str() {
        if state != "active" {
            return Drain::Inactive(state.to_string());
        }
    }
    if resume.is_null() {
        return Drain::Sent;
    }
    let done = resume["done"].as_u64().unwrap_or(0);
    let total = resume["total"].as_u64().unwrap_or(0);
    if done >= total {
        return Drain::Sent;
    }
    if let Some(blocked) = integration["blocked"].as_object() {
        return Drain::Blocked {
            seq: blocked.get("seq").map(text).unwrap_or_default(),
            error: blocked.get("error").map(text).unwrap_or_default(),
        };
    }
    Drain::Sending {
        done,
        total,
        rate: resume["rate"].as_f64().unwrap_or(0.0),
        eta_s: resume["eta_s"].as_f64(),
        stalled: integration["stalled"].as_str().map(str::to_string),
    }
}

/// The bar's message: `20.0/s, 6s left`, or why it makes no progress.
pub fn progress_message(rate: f64, eta_s: Option<f64>, stalled: Option<&str>) -> String {
    if let Some(why) = stalled {
        return format!("stalled: {why}");
    }
    let eta = match eta_s {
        Some(s) if s.is_finite() && s >= 0.0 => format!("{} left", duration_text(s)),
        _ => "time left unknown".to_string(),
    };
    format!("{rate:.1}/s, {eta}")
}

/// Seconds as `42s`, `3m05s` or `2h07m`, rounded up.
pub fn duration_text(secs: f64) -> String {
    let s = secs.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The error when sending stops before the backlog is sent.
pub fn stopped_message(site: &str, name: &str, progress: (u64, u64), why: &Drain) -> String {
    let (done, total) = progress;
    let head = format!("{name} stopped sending at {done}/{total}");
    match why {
        Drain::Held(holds) => {
            let mut s = format!("{head}; it is held:");
            for hold in holds {
                s.push_str(&format!("\n  {hold}"));
            }
            s.push_str("\nthe rest stays queued in order and is sent once the holds are lifted");
            s
        }
        Drain::Inactive(state) => format!("{head}; it is {state} now"),
        Drain::Blocked { seq, error } => format!(
            "{head}; the queue waits behind failed transaction {seq}: {error}\n\
             retry or ignore it: sluice tx retry|ignore {site} {name} {seq}"
        ),
        Drain::Sending { .. } | Drain::Sent => head,
    }
}

pub async fn run(
    client: &Client,
    site: &str,
    name: &str,
    reason: Option<String>,
    detach: bool,
) -> Result<(), CliError> {
    let path = ["sites", site, "integrations", name];
    // What is queued before the resume: the count to report should the
    // backlog be sent before the first look at the drain.
    let backlog = if detach {
        0
    } else {
        let before = client.get(&path, &[]).await?;
        before["queued"].as_u64().unwrap_or(0)
    };
    let started = Instant::now();
    let answer = client
        .post(
            &["sites", site, "integrations", name, "resume"],
            json!({ "reason": reason }),
        )
        .await?;
    if detach {
        return output::answer(client.json, &answer, |v| {
            format!("Integration {name} resumed; {} queued.", text(&v["queued"]))
        });
    }
    let bar = if client.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(backlog);
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} transactions  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    // Without a terminal indicatif draws nothing: print plain lines instead.
    let plain = !client.json && bar.is_hidden();
    let mut last_plain: Option<Instant> = None;
    let mut progress = (0, backlog);
    let mut seen_total = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut current = answer;
    loop {
        match observe(&current) {
            Drain::Sent => break,
            Drain::Sending {
                done,
                total,
                rate,
                eta_s,
                stalled,
            } => {
                progress = (done, total);
                seen_total = Some(total);
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(progress_message(rate, eta_s, stalled.as_deref()));
                if plain && last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    output::line(format!("progress: {done}/{total}"))?;
                    last_plain = Some(Instant::now());
                }
            }
            stopped => {
                leave(&bar, false);
                if let Some(resume) = current["resume"].as_object() {
                    let get = |k: &str| resume.get(k).and_then(Value::as_u64);
                    progress = (
                        get("done").unwrap_or(progress.0),
                        get("total").unwrap_or(progress.1),
                    );
                }
                if client.json {
                    output::json(&current)?;
                }
                return Err(CliError::Failed(stopped_message(
                    site, name, progress, &stopped,
                )));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted => {
                leave(&bar, false);
                eprintln!(
                    "Stopped following; the backlog of {name} keeps draining \
                     ('sluice integration show {site} {name}' shows how far)."
                );
                return Ok(());
            }
        }
        current = client.get(&path, &[]).await?;
    }
    let sent = seen_total.unwrap_or(backlog);
    bar.set_length(sent);
    bar.set_position(sent);
    bar.set_message("done");
    leave(&bar, true);
    if client.json {
        return output::json(&current);
    }
    output::line(format!(
        "Resumed {name}: {sent} transactions sent in {:.1}s",
        started.elapsed().as_secs_f64()
    ))
}

/// Stops drawing the bar and leaves it on the screen as it is; what is
/// printed next starts on a line of its own.
fn leave(bar: &ProgressBar, finished: bool) {
    if finished {
        bar.finish();
    } else {
        bar.abandon();
    }
    if !bar.is_hidden() {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(resume: Value) -> Value {
        json!({"name": "orders", "state": "active", "holds": [], "queued": 100,
               "resume": resume, "stalled": null, "blocked": null})
    }

    #[test]
    fn a_drain_under_way() {
        let i = integration(json!({"done": 50, "total": 150, "rate": 25.0, "eta_s": 4.0}));
        assert_eq!(
            observe(&i),
            Drain::Sending {
                done: 50,
                total: 150,
                rate: 25.0,
                eta_s: Some(4.0),
                stalled: None
            }
        );
        let mut stalled = i.clone();
        stalled["stalled"] = json!("no delivery for 30s: HTTP 503");
        assert!(matches!(
            observe(&stalled),
            Drain::Sending {
                stalled: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_drain_that_is_done() {
        assert_eq!(observe(&integration(Value::Null)), Drain::Sent);
        assert_eq!(
            observe(&integration(
                json!({"done": 150, "total": 150, "rate": 1.0, "eta_s": 0.0})
            )),
            Drain::Sent
        );
        // Answers that lack the fields do not make it wait forever.
        assert_eq!(observe(&json!({})), Drain::Sent);
        assert_eq!(observe(&json!("nonsense")), Drain::Sent);
    }

    #[test]
    fn holds_stop_the_drain() {
        // Paused again: the daemon drops the progress and adds the hold.
        let mut i = integration(Value::Null);
        i["state"] = json!("paused");
        i["holds"] = json!([{"kind": "operator", "by": "bob@cli", "reason": "wrong prices"}]);
        assert_eq!(
            observe(&i),
            Drain::Held(vec!["operator by bob@cli: wrong prices".into()])
        );
        // The endpoint went offline: the progress stays, the hold is added.
        let mut i = integration(json!({"done": 3, "total": 10, "rate": 1.0, "eta_s": null}));
        i["holds"] =
            json!([{"kind": "endpoint-offline", "by": "system", "reason": "crm: refused"}]);
        assert!(matches!(observe(&i), Drain::Held(_)));
        // A hold after everything was sent does not count.
        let mut i = integration(Value::Null);
        i["queued"] = json!(0);
        i["holds"] = json!([{"kind": "site-stopped", "by": "ann@cli", "reason": ""}]);
        assert_eq!(observe(&i), Drain::Sent);
    }

    #[test]
    fn a_stop_or_a_blocked_queue_ends_the_drain() {
        let mut i = integration(Value::Null);
        i["state"] = json!("stopped");
        assert_eq!(observe(&i), Drain::Inactive("stopped".into()));
        let mut i = integration(json!({"done": 3, "total": 10, "rate": 1.0, "eta_s": 7.0}));
        i["blocked"] = json!({"seq": 4, "error": "HTTP 422"});
        assert_eq!(
            observe(&i),
            Drain::Blocked {
                seq: "4".into(),
                error: "HTTP 422".into()
            }
        );
    }

    #[test]
    fn messages() {
        assert_eq!(
            progress_message(12.345, Some(61.2), None),
            "12.3/s, 1m02s left"
        );
        assert_eq!(
            progress_message(0.0, None, None),
            "0.0/s, time left unknown"
        );
        assert_eq!(
            progress_message(5.0, Some(3.0), Some("HTTP 503")),
            "stalled: HTTP 503"
        );
        assert_eq!(duration_text(0.0), "0s");
        assert_eq!(duration_text(59.5), "1m00s");
        assert_eq!(duration_text(7260.0), "2h01m");
        assert_eq!(
            stopped_message(
                "LIVE",
                "orders",
                (40, 150),
                &Drain::Held(vec!["operator by bob@cli: wrong prices".into()])
            ),
            "orders stopped sending at 40/150; it is held:\n  operator by bob@cli: wrong prices\n\
             the rest stays queued in order and is sent once the holds are lifted"
        );
        assert_eq!(
            stopped_message("LIVE", "orders", (1, 2), &Drain::Inactive("stopped".into())),
            "orders stopped sending at 1/2; it is stopped now"
        );
        assert!(stopped_message(
            "LIVE",
            "orders",
            (1, 2),
            &Drain::Blocked {
                seq: "2".into(),
                error: "HTTP 422".into()
            }
        )
        .ends_with("sluice tx retry|ignore LIVE orders 2"));
    }
}
