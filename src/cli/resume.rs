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
use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::output;
use crate::api::integrations::IntegrationView;
use crate::model::IntegrationState;

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

/// A count as the bar takes it (a negative one, which the daemon never
/// sends, as none).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Reads the drain from an integration as the API shows it.
pub fn observe(integration: &IntegrationView) -> Drain {
    let resume = integration.resume.as_ref();
    let holds = output::holds(integration);
    if !holds.is_empty() {
        // A hold placed just after the backlog was sent does not undo it.
        if resume.is_none() && integration.queued == 0 {
            return Drain::Sent;
        }
        return Drain::Held(holds);
    }
    if integration.state != IntegrationState::Active {
        return Drain::Inactive(integration.state.as_str().to_string());
    }
    let Some(resume) = resume else {
        return Drain::Sent;
    };
    let (done, total) = (count(resume.done), count(resume.total));
    if done >= total {
        return Drain::Sent;
    }
    if let Some(blocked) = &integration.blocked {
        return Drain::Blocked {
            seq: blocked.seq.to_string(),
            error: blocked.error.clone(),
        };
    }
    Drain::Sending {
        done,
        total,
        rate: resume.rate,
        eta_s: resume.eta_s,
        stalled: integration.stalled.clone(),
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
        let before: IntegrationView = output::read(&client.get(&path, &[]).await?)?;
        count(before.queued)
    };
    let started = Instant::now();
    let answer = client
        .post(
            &["sites", site, "integrations", name, "resume"],
            json!({ "reason": reason }),
        )
        .await?;
    if detach {
        return output::answer(client.json, &answer, |i: &IntegrationView| {
            format!("Integration {name} resumed; {} queued.", i.queued)
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
        let view: IntegrationView = output::read(&current)?;
        match observe(&view) {
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
                if let Some(resume) = &view.resume {
                    progress = (count(resume.done), count(resume.total));
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
    use serde_json::Value;

    /// `orders` as the daemon answers it, with these fields.
    fn with(fields: Value) -> IntegrationView {
        let mut v = json!({"name": "orders", "site": "LIVE", "state": "active",
            "status": "Running", "holds": [], "queued": 100, "on_error": "block",
            "resume": null, "stalled": null, "blocked": null, "flows": [], "actions": []});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        output::read(&v).unwrap()
    }

    fn integration(resume: Value) -> IntegrationView {
        with(json!({ "resume": resume }))
    }

    fn hold(kind: &str, by: &str, reason: &str) -> Value {
        json!({"kind": kind, "by": by, "since": "", "reason": reason})
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
        let stalled = IntegrationView {
            stalled: Some("no delivery for 30s: HTTP 503".into()),
            ..i
        };
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
        // Answers that lack the fields do not make it wait forever: they
        // are an error that says what came.
        for nonsense in [json!({}), json!("nonsense")] {
            let read: Result<IntegrationView, _> = output::read(&nonsense);
            assert!(matches!(read, Err(CliError::Failed(_))), "{nonsense}");
        }
    }

    #[test]
    fn holds_stop_the_drain() {
        // Paused again: the daemon drops the progress and adds the hold.
        let i = with(json!({"state": "paused",
            "holds": [hold("operator", "bob@cli", "wrong prices")]}));
        assert_eq!(
            observe(&i),
            Drain::Held(vec!["operator by bob@cli: wrong prices".into()])
        );
        // The endpoint went offline: the progress stays, the hold is added.
        let i = with(
            json!({"resume": {"done": 3, "total": 10, "rate": 1.0, "eta_s": null},
            "holds": [hold("endpoint-offline", "system", "crm: refused")]}),
        );
        assert!(matches!(observe(&i), Drain::Held(_)));
        // A hold after everything was sent does not count.
        let i = with(json!({"queued": 0, "holds": [hold("site-stopped", "ann@cli", "")]}));
        assert_eq!(observe(&i), Drain::Sent);
    }

    #[test]
    fn a_stop_or_a_blocked_queue_ends_the_drain() {
        let i = with(json!({"state": "stopped"}));
        assert_eq!(observe(&i), Drain::Inactive("stopped".into()));
        let i = with(
            json!({"resume": {"done": 3, "total": 10, "rate": 1.0, "eta_s": 7.0},
            "blocked": {"seq": 4, "error": "HTTP 422"}}),
        );
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
