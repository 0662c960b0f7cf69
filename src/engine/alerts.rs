//! The Alerts worker: tells people when a site needs them.
//!
//! Once a second it gathers what the engine knows of each site
//! ([`SiteFacts`]), asks the model which conditions hold for each channel
//! ([`conditions`]), and compares them with the conditions the site's store
//! has open for that channel: a new one is opened and its alert queued, one
//! that lasts is reminded every `remind_every`, one that is gone is closed
//! and its "resolved" queued — each in one write of the store, which queues
//! nothing when another node of a cluster did it first. Then it sends what
//! the sites' outboxes hold, oldest first, each alert until it went through
//! (an alert channel that is down loses nothing and holds up no
//! integration: the outbox waits, retried with a growing pause), and
//! audits every alert sent in its site's trail.
//!
//! On a cluster each node judges the integrations it sends (whose lease it
//! holds) and the sites' states; a condition of an integration another
//! node sends is left to that node. A condition of an integration a reload
//! removed is resolved.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Daemon, Site};
use crate::config::{AlertChannel, AlertConfig, AlertFormat};
use crate::connectors::email::EmailSender;
use crate::connectors::http::HttpTarget;
use crate::connectors::{Delivery, DeliveryError, Target};
use crate::model::alert::{conditions, Condition, Document, Failing, IntegrationFacts, SiteFacts};
use crate::model::{now_millis, EndpointState, Hold, HoldKind, Millis, SiteState};
use crate::store::AuditEntry;

/// How often conditions are looked at and the outbox emptied.
const TICK: Duration = Duration::from_secs(1);
/// An alert being sent is not due again on any node before this.
const CLAIM: Millis = 60_000;
/// Pauses between tries of an alert that could not be sent: doubling from
/// the first to the last.
const RETRY_FIRST: Millis = 1_000;
const RETRY_LAST: Millis = 300_000;

/// An alert channel, ready to send.
pub struct Channel {
    pub config: AlertConfig,
    sender: Sender,
}

/// What sends a channel's alerts.
// One per channel, built once: not worth a box.
#[allow(clippy::large_enum_variant)]
enum Sender {
    /// A POST, with the webhook's format.
    Webhook(HttpTarget, AlertFormat),
    /// An email through an SMTP server.
    Email(EmailSender),
}

impl Channel {
    pub fn new(config: AlertConfig, base_dir: &std::path::Path) -> Channel {
        let sender = match &config.channel {
            AlertChannel::Webhook { http, format } => {
                Sender::Webhook(HttpTarget::new(http, base_dir), *format)
            }
            AlertChannel::Email(email) => Sender::Email(EmailSender::new(
                email,
                base_dir,
                &crate::config::host_name(),
            )),
        };
        Channel { config, sender }
    }

    /// Sends one alert; `key` is its idempotency key.
    pub async fn send(&self, key: &str, document: &Document) -> Result<(), DeliveryError> {
        let (target, format) = match &self.sender {
            Sender::Webhook(target, format) => (target, format),
            Sender::Email(email) => return email.send(key, document).await,
        };
        let body = match format {
            AlertFormat::Json => serde_json::to_string(document),
            AlertFormat::Slack => {
                serde_json::to_string(&serde_json::json!({ "text": document.subject() }))
            }
        }
        .expect("a document is JSON");
        target
            .deliver(&[Delivery::new(key, &body)])
            .await
            .map(|_| ())
    }

    fn failing(&self) -> Failing {
        Failing {
            threshold: self.config.failing_threshold,
            window: i64::try_from(self.config.failing_window.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// Runs until `token` is cancelled.
pub async fn run(daemon: Arc<Daemon>, channels: Arc<Vec<Channel>>, token: CancellationToken) {
    if channels.is_empty() {
        return;
    }
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for site in daemon.sites() {
            if let Err(e) = watch(&site, &channels).await {
                tracing::warn!(site = %site.name, "alerts: cannot compare conditions: {e}");
            }
            if let Err(e) = send_due(&site, &channels).await {
                tracing::warn!(site = %site.name, "alerts: cannot read the outbox: {e}");
            }
        }
    }
}

/// What the engine knows of `site` now; `judged`: the integrations this
/// node judges (the ones it sends).
fn facts(site: &Site) -> (SiteFacts, Vec<String>) {
    let now = now_millis();
    let status = site.status();
    let stopped = (status.state == SiteState::Stopped).then(|| {
        let stop = status.last_stop.clone();
        Hold {
            kind: HoldKind::SiteStopped,
            by: stop.as_ref().map_or("sluice".into(), |s| s.by.clone()),
            since: stop.as_ref().map_or(status.since, |s| s.at),
            reason: stop.map(|s| s.reason).unwrap_or_default(),
        }
    });
    let mut integrations = Vec::new();
    let mut judged = Vec::new();
    for integration in site.integrations() {
        if !integration.owned() {
            continue;
        }
        judged.push(integration.name.clone());
        let record = integration.record();
        let mut endpoints_down = Vec::new();
        for flow in &integration.config.flows {
            if let Ok(endpoint) = site.endpoint(&flow.target) {
                let observed = endpoint.observed();
                let known = endpoints_down.iter().any(|(n, _)| n == &endpoint.name);
                if observed.state != EndpointState::Online && !known {
                    let why = observed
                        .last_error
                        .unwrap_or_else(|| observed.state.as_str().into());
                    endpoints_down.push((endpoint.name.clone(), why));
                }
            }
        }
        integrations.push(IntegrationFacts {
            name: integration.name.clone(),
            holds: record.holds.iter().cloned().collect(),
            endpoints_down,
            blocked: integration.blocked(),
            stalled: integration
                .stalled(site.config.stall_after)
                .map(|why| (now, why)),
            failures: integration.tally.recent_failures(),
            last_failure: integration.last_failure(),
        });
    }
    let facts = SiteFacts {
        site: site.name.clone(),
        stopped,
        integrations,
    };
    (facts, judged)
}

/// Opens, reminds and closes `site`'s conditions for each channel.
async fn watch(site: &Site, channels: &[Channel]) -> crate::store::Result<()> {
    let now = now_millis();
    let (facts, judged) = facts(site);
    let mut open: HashMap<(String, String), (Condition, Millis)> = HashMap::new();
    for a in site.store.open_alerts().await? {
        match serde_json::from_str::<Condition>(&a.condition) {
            Ok(c) => {
                open.insert((a.channel, a.key), (c, a.last_sent));
            }
            Err(e) => tracing::warn!("alerts: an open condition cannot be read: {e}"),
        }
    }
    for channel in channels.iter().filter(|c| c.config.covers(&site.name)) {
        let name = &channel.config.name;
        let now_holding: BTreeMap<String, Condition> =
            conditions(&facts, &channel.config.on, channel.failing(), now)
                .into_iter()
                .map(|c| (c.key(), c))
                .collect();
        for (key, condition) in &now_holding {
            match open.get(&(name.clone(), key.clone())) {
                None => {
                    let document = json(&Document::firing(condition));
                    let stored = serde_json::to_string(condition).expect("a condition is JSON");
                    if site
                        .store
                        .open_alert(name, key, &stored, &document, now)
                        .await?
                    {
                        site.log
                            .write(
                                crate::log::level::DETAIL,
                                format!("Alert to {name}: {}", Document::firing(condition).text),
                            )
                            .await;
                    }
                }
                Some((first, last_sent)) => {
                    let due = channel
                        .config
                        .remind_every
                        .and_then(|every| i64::try_from(every.as_millis()).ok())
                        .is_some_and(|every| now - last_sent >= every);
                    if due {
                        let document = json(&Document::firing(first));
                        site.store
                            .remind_alert(name, key, *last_sent, &document, now)
                            .await?;
                    }
                }
            }
        }
        for ((channel_name, key), (condition, _)) in &open {
            if channel_name != name || now_holding.contains_key(key) {
                continue;
            }
            // Left to the node that sends the integration; that of an
            // integration a reload removed is over for every node (the
            // store resolves it once).
            let mine = condition
                .integration
                .as_ref()
                .is_none_or(|i| judged.contains(i) || site.integration(i).is_err());
            if !mine {
                continue;
            }
            let document = json(&Document::resolved(condition, now));
            site.store.close_alert(name, key, &document, now).await?;
        }
    }
    // Conditions of a channel no longer configured are closed without a
    // word: nobody is there to be told.
    for (channel_name, key) in open.keys() {
        if !channels.iter().any(|c| &c.config.name == channel_name) {
            site.store.close_alert(channel_name, key, "", now).await?;
        }
    }
    Ok(())
}

fn json(document: &Document) -> String {
    serde_json::to_string(document).expect("a document is JSON")
}

/// Sends what `site`'s outbox holds that is due, oldest first.
async fn send_due(site: &Site, channels: &[Channel]) -> crate::store::Result<()> {
    let now = now_millis();
    // A channel that failed this time: when it is tried again.
    let mut failed: HashMap<String, Millis> = HashMap::new();
    for alert in site.store.due_alerts(now, CLAIM, 50).await? {
        if let Some(next_at) = failed.get(&alert.channel) {
            // Behind the one that failed, in order.
            site.store.postpone_alert(alert.id, *next_at).await?;
            continue;
        }
        let channel = channels.iter().find(|c| c.config.name == alert.channel);
        let document = serde_json::from_str::<Document>(&alert.document);
        let (Some(channel), Ok(document)) = (channel, document) else {
            // Its channel is gone from the configuration (or it is the
            // empty "resolved" of such a channel): dropped, and said.
            let audit = audit(&alert.channel, "alert.dropped", None, "no such channel");
            site.store.alert_sent(alert.id, audit).await?;
            continue;
        };
        let key = format!("sluice-alert:{}:{}", site.name, alert.id);
        match channel.send(&key, &document).await {
            Ok(()) => {
                let audit = audit(&alert.channel, "alert.sent", Some(document.text), "ok");
                site.store.alert_sent(alert.id, audit).await?;
            }
            Err(e) => {
                let pause = RETRY_FIRST
                    .saturating_mul(1 << alert.attempts.clamp(0, 20))
                    .min(RETRY_LAST);
                site.store
                    .alert_failed(alert.id, now + pause, &e.message)
                    .await?;
                failed.insert(alert.channel.clone(), now + pause);
                if alert.attempts == 0 {
                    site.log
                        .write(
                            crate::log::level::ERROR,
                            format!(
                                "Alert channel {} cannot be reached: {}; the alert is kept and \
                                 sent again",
                                alert.channel, e.message
                            ),
                        )
                        .await;
                }
            }
        }
    }
    Ok(())
}

fn audit(channel: &str, action: &str, reason: Option<String>, outcome: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        ts: now_millis(),
        actor: "sluice".into(),
        action: action.into(),
        subject: format!("alert/{channel}"),
        reason,
        outcome: outcome.into(),
        node: None,
    }
}
