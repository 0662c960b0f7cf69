//! Alerts: which conditions of a site need a person, and the document that
//! tells them. Pure: the engine gathers the facts ([`SiteFacts`]), this
//! says which conditions hold ([`conditions`]) and what is sent when one
//! starts, lasts or ends ([`Document`]).
//!
//! A condition is known by its [`Condition::key`] (its kind, integration
//! and endpoint): one alert when a key appears, reminders while it stays,
//! one "resolved" when it is gone.

use serde::{Deserialize, Serialize};

use super::{rfc3339, Hold, HoldKind, Millis};

/// What an alert is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "kebab-case")]
pub enum AlertKind {
    /// An integration held by the system: an endpoint offline or refusing
    /// its credentials.
    Held,
    /// An integration's queue waits behind a transaction in Error.
    Blocked,
    /// An integration may send yet has delivered nothing for `stall_after`.
    Stalled,
    /// A site stopped.
    SiteStopped,
    /// More than the channel's `failing_threshold` failed deliveries in its
    /// `failing_window`.
    Failing,
    /// A person paused an integration (only when a channel asks for it).
    Paused,
    /// `sluice alert test`.
    Test,
}

impl AlertKind {
    /// What a channel is told of when its `on` is not given.
    pub const DEFAULT_ON: [AlertKind; 5] = [
        AlertKind::Held,
        AlertKind::Blocked,
        AlertKind::Stalled,
        AlertKind::SiteStopped,
        AlertKind::Failing,
    ];
    /// What `on` may name.
    pub const ON: [AlertKind; 6] = [
        AlertKind::Held,
        AlertKind::Blocked,
        AlertKind::Stalled,
        AlertKind::SiteStopped,
        AlertKind::Failing,
        AlertKind::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        s.parse().ok()
    }
}

/// One condition that needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: AlertKind,
    pub site: String,
    pub integration: Option<String>,
    pub endpoint: Option<String>,
    /// Why, in a person's words (a hold's reason, an endpoint's last error,
    /// a stop's reason).
    pub reason: String,
    /// Who or what caused it: `sluice`, or the person.
    pub by: String,
    pub since: Millis,
}

impl Condition {
    /// Who it is: the same condition while this stays the same.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.kind.as_str(),
            self.integration.as_deref().unwrap_or(""),
            self.endpoint.as_deref().unwrap_or("")
        )
    }
}

/// What the engine knows of a site now.
#[derive(Debug, Clone, Default)]
pub struct SiteFacts {
    pub site: String,
    /// Set while the site is stopped: who stopped it, why, when.
    pub stopped: Option<Hold>,
    pub integrations: Vec<IntegrationFacts>,
}

/// What the engine knows of one integration now.
#[derive(Debug, Clone, Default)]
pub struct IntegrationFacts {
    pub name: String,
    pub holds: Vec<Hold>,
    /// The target endpoints that are not online, with their last error.
    pub endpoints_down: Vec<(String, String)>,
    /// The transaction the queue waits behind, and why it failed.
    pub blocked: Option<(i64, String)>,
    /// Since when, and why, the drain is stalled.
    pub stalled: Option<(Millis, String)>,
    /// Failed deliveries (retried or for good) by second: (second's start,
    /// count), oldest first.
    pub failures: Vec<(Millis, u64)>,
    /// The last failure's error, if any.
    pub last_failure: Option<String>,
}

/// When a channel counts an integration as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    /// More failures than this …
    pub threshold: u64,
    /// … within this many milliseconds.
    pub window: Millis,
}

/// The conditions of a site now, of the kinds in `on`.
pub fn conditions(
    facts: &SiteFacts,
    on: &[AlertKind],
    failing: Failing,
    now: Millis,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let site = &facts.site;
    let mut push = |c: Condition| {
        if on.contains(&c.kind) {
            out.push(c);
        }
    };
    if let Some(stop) = &facts.stopped {
        push(Condition {
            kind: AlertKind::SiteStopped,
            site: site.clone(),
            integration: None,
            endpoint: None,
            reason: stop.reason.clone(),
            by: stop.by.clone(),
            since: stop.since,
        });
    }
    for i in &facts.integrations {
        let of = |kind, endpoint: Option<&str>, reason: &str, by: &str, since| Condition {
            kind,
            site: site.clone(),
            integration: Some(i.name.clone()),
            endpoint: endpoint.map(str::to_string),
            reason: reason.to_string(),
            by: by.to_string(),
            since,
        };
        for hold in &i.holds {
            match hold.kind {
                HoldKind::EndpointOffline | HoldKind::Unauthorized => {
                    // The endpoint down, with its own last error; the
                    // hold's reason when it is up again already.
                    let (endpoint, reason) = i
                        .endpoints_down
                        .first()
                        .map(|(e, why)| (Some(e.as_str()), format!("endpoint {e}: {why}")))
                        .unwrap_or((None, hold.reason.clone()));
                    push(of(AlertKind::Held, endpoint, &reason, &hold.by, hold.since));
                }
                HoldKind::Operator => push(of(
                    AlertKind::Paused,
                    None,
                    &hold.reason,
                    &hold.by,
                    hold.since,
                )),
                // Said once for the site, not for each of its integrations.
                HoldKind::SiteStopped => {}
            }
        }
        if let Some((seq, why)) = &i.blocked {
            let reason = format!("transaction {seq} failed: {why}");
            push(of(AlertKind::Blocked, None, &reason, "sluice", now));
        }
        if let Some((since, why)) = &i.stalled {
            push(of(AlertKind::Stalled, None, why, "sluice", *since));
        }
        let from = now - failing.window;
        let recent: Vec<_> = i.failures.iter().filter(|(at, _)| *at >= from).collect();
        let count: u64 = recent.iter().map(|(_, n)| n).sum();
        if count > failing.threshold {
            let since = recent.first().map_or(now, |(at, _)| *at);
            let reason = format!(
                "{count} failed deliveries in the last {}s{}",
                failing.window / 1000,
                i.last_failure
                    .as_deref()
                    .map(|e| format!("; the last: {e}"))
                    .unwrap_or_default()
            );
            push(of(AlertKind::Failing, None, &reason, "sluice", since));
        }
    }
    out
}

/// Whether an alert says a condition started (or lasts) or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// The JSON document an alert is (fields may be added, never renamed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Document {
    pub alert: AlertKind,
    pub state: AlertState,
    pub site: Option<String>,
    pub integration: Option<String>,
    pub endpoint: Option<String>,
    pub reason: String,
    pub by: String,
    /// When the condition started, RFC 3339.
    pub since: String,
    /// When it ended, RFC 3339; null while it lasts.
    pub resolved_at: Option<String>,
    /// How long it lasted, in seconds; null while it lasts.
    pub duration_s: Option<i64>,
    /// One line a person reads.
    pub text: String,
}

impl Document {
    /// The alert that `condition` started (or, a reminder, still lasts).
    pub fn firing(c: &Condition) -> Document {
        let text = format!("{}: {}", Document::what(c), c.reason);
        Document {
            alert: c.kind,
            state: AlertState::Firing,
            site: Some(c.site.clone()),
            integration: c.integration.clone(),
            endpoint: c.endpoint.clone(),
            reason: c.reason.clone(),
            by: c.by.clone(),
            since: rfc3339(c.since),
            resolved_at: None,
            duration_s: None,
            text,
        }
    }

    /// The alert that `condition` ended at `at`.
    pub fn resolved(c: &Condition, at: Millis) -> Document {
        let duration_s = (at - c.since).max(0) / 1000;
        let text = format!(
            "Resolved after {}: {}",
            human(duration_s),
            Document::what(c)
        );
        Document {
            state: AlertState::Resolved,
            resolved_at: Some(rfc3339(at)),
            duration_s: Some(duration_s),
            text,
            ..Document::firing(c)
        }
    }

    /// A channel's test.
    pub fn test(channel: &str, by: &str, at: Millis) -> Document {
        Document {
            alert: AlertKind::Test,
            state: AlertState::Firing,
            site: None,
            integration: None,
            endpoint: None,
            reason: format!("a test of alert channel {channel}"),
            by: by.to_string(),
            since: rfc3339(at),
            resolved_at: None,
            duration_s: None,
            text: format!("Test of sluice alert channel {channel}, sent by {by}"),
        }
    }

    /// The condition, in words: the site, the integration, the endpoint.
    fn what(c: &Condition) -> String {
        let integration = c.integration.as_deref().unwrap_or("");
        let endpoint = c.endpoint.as_deref();
        match c.kind {
            AlertKind::Held => format!(
                "site {} integration {integration} held{}",
                c.site,
                endpoint
                    .map(|e| format!(": endpoint {e} is down"))
                    .unwrap_or_default()
            ),
            AlertKind::Blocked => format!(
                "site {} integration {integration} blocked by a transaction in Error",
                c.site
            ),
            AlertKind::Stalled => format!("site {} integration {integration} stalled", c.site),
            AlertKind::SiteStopped => format!("site {} stopped by {}", c.site, c.by),
            AlertKind::Failing => format!("site {} integration {integration} failing", c.site),
            AlertKind::Paused => format!(
                "site {} integration {integration} paused by {}",
                c.site, c.by
            ),
            AlertKind::Test => "a test".to_string(),
        }
    }

    /// The email subject or chat line's head: the state, the site, the
    /// integration and the cause.
    pub fn subject(&self) -> String {
        let state = match self.state {
            AlertState::Firing => "ALERT",
            AlertState::Resolved => "RESOLVED",
        };
        format!("[sluice {state}] {}", self.text)
    }

    /// What an email says: the `text` line, each field that is set on a
    /// line of its own (what a person scans for: site, integration,
    /// endpoint, cause, who, since when, until when, how long), then the
    /// whole JSON document for a program that reads the mail.
    pub fn plain_text(&self) -> String {
        let mut out = format!("{}\n\n", self.text);
        let duration = self
            .duration_s
            .map(|s| format!("{} ({s} s)", human(s.max(0))));
        let fields = [
            ("site", self.site.as_deref()),
            ("integration", self.integration.as_deref()),
            ("endpoint", self.endpoint.as_deref()),
            ("reason", Some(self.reason.as_str())),
            ("by", Some(self.by.as_str())),
            ("since", Some(self.since.as_str())),
            ("resolved_at", self.resolved_at.as_deref()),
            ("duration", duration.as_deref()),
        ];
        for (name, value) in fields {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        let json = serde_json::to_string_pretty(self).expect("a document is JSON");
        out.push_str(&format!("\n{json}\n"));
        out
    }
}

/// `s` seconds as a person reads them: 45s, 3m 20s, 2h 5m.
fn human(s: i64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(kind: HoldKind, by: &str, reason: &str, since: Millis) -> Hold {
        Hold {
            kind,
            by: by.into(),
            since,
            reason: reason.into(),
        }
    }

    const NO_FAILING: Failing = Failing {
        threshold: 10,
        window: 300_000,
    };

    #[test]
    fn held_paused_blocked_stalled_and_stopped_are_conditions_of_their_own() {
        let facts = SiteFacts {
            site: "LIVE".into(),
            stopped: Some(hold(HoldKind::SiteStopped, "ann", "stocktake", 5)),
            integrations: vec![IntegrationFacts {
                name: "orders".into(),
                holds: vec![
                    hold(
                        HoldKind::EndpointOffline,
                        "sluice",
                        "endpoint crm is offline",
                        10,
                    ),
                    hold(HoldKind::Operator, "bob", "month end", 11),
                    hold(HoldKind::SiteStopped, "ann", "stocktake", 5),
                ],
                endpoints_down: vec![("crm".into(), "connection refused".into())],
                blocked: Some((7, "422 no such customer".into())),
                stalled: Some((12, "no delivery for 5m".into())),
                ..IntegrationFacts::default()
            }],
        };
        let all = conditions(&facts, &AlertKind::ON, NO_FAILING, 100);
        let keys: Vec<_> = all.iter().map(Condition::key).collect();
        assert_eq!(
            keys,
            [
                "site-stopped||",
                "held|orders|crm",
                "paused|orders|",
                "blocked|orders|",
                "stalled|orders|"
            ]
        );
        assert_eq!(all[1].reason, "endpoint crm: connection refused");
        assert_eq!((all[0].by.as_str(), all[0].since), ("ann", 5));
        // By default a person's pause is not alerted.
        let default = conditions(&facts, &AlertKind::DEFAULT_ON, NO_FAILING, 100);
        assert!(default.iter().all(|c| c.kind != AlertKind::Paused));
        assert_eq!(default.len(), 4);
    }

    #[test]
    fn failing_counts_failures_within_the_window_only() {
        let facts = |failures: Vec<(Millis, u64)>| SiteFacts {
            site: "LIVE".into(),
            integrations: vec![IntegrationFacts {
                name: "orders".into(),
                failures,
                last_failure: Some("HTTP 500".into()),
                ..IntegrationFacts::default()
            }],
            ..SiteFacts::default()
        };
        let on = [AlertKind::Failing];
        let failing = Failing {
            threshold: 3,
            window: 10_000,
        };
        // Four, but one of them too old.
        let f = facts(vec![(1_000, 1), (15_000, 2), (19_000, 1)]);
        assert!(conditions(&f, &on, failing, 20_000).is_empty());
        let f = facts(vec![(15_000, 2), (19_000, 2)]);
        let c = conditions(&f, &on, failing, 20_000);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].since, 15_000);
        assert!(c[0].reason.contains("4 failed") && c[0].reason.contains("HTTP 500"));
    }

    #[test]
    fn documents_name_the_site_integration_and_cause_and_how_long() {
        let c = Condition {
            kind: AlertKind::Held,
            site: "LIVE".into(),
            integration: Some("orders".into()),
            endpoint: Some("crm".into()),
            reason: "endpoint crm: connection refused".into(),
            by: "sluice".into(),
            since: 1_764_000_000_000,
        };
        let firing = Document::firing(&c);
        assert_eq!(firing.state, AlertState::Firing);
        assert_eq!(firing.since, "2025-11-24T16:00:00.000Z");
        assert!(firing.text.contains("LIVE") && firing.text.contains("orders"));
        assert!(
            firing.text.contains("connection refused"),
            "{}",
            firing.text
        );
        let resolved = Document::resolved(&c, c.since + 125_000);
        assert_eq!(resolved.duration_s, Some(125));
        assert_eq!(
            resolved.resolved_at.as_deref(),
            Some("2025-11-24T16:02:05.000Z")
        );
        assert!(
            resolved.text.starts_with("Resolved after 2m 5s"),
            "{}",
            resolved.text
        );
        assert!(resolved.subject().starts_with("[sluice RESOLVED]"));
        let json = serde_json::to_value(&resolved).unwrap();
        for field in [
            "alert",
            "state",
            "site",
            "integration",
            "endpoint",
            "reason",
            "by",
            "since",
            "resolved_at",
            "duration_s",
            "text",
        ] {
            assert!(json.get(field).is_some(), "{field} in {json}");
        }
        assert_eq!(json["alert"], "held");
        assert_eq!(json["state"], "resolved");
    }

    #[test]
    fn an_email_body_is_the_text_then_a_line_per_field_then_the_document() {
        let c = Condition {
            kind: AlertKind::Held,
            site: "LIVE".into(),
            integration: Some("orders".into()),
            endpoint: Some("crm".into()),
            reason: "endpoint crm: connection refused".into(),
            by: "sluice".into(),
            since: 1_764_000_000_000,
        };
        let firing = Document::firing(&c).plain_text();
        let lines: Vec<&str> = firing.lines().collect();
        assert_eq!(lines[0], Document::firing(&c).text);
        assert_eq!(
            lines[1..9],
            [
                "",
                "site: LIVE",
                "integration: orders",
                "endpoint: crm",
                "reason: endpoint crm: connection refused",
                "by: sluice",
                "since: 2025-11-24T16:00:00.000Z",
                "",
            ],
            "{firing}"
        );
        // No resolved_at nor duration while it lasts; the document follows.
        let json: Document = serde_json::from_str(&lines[9..].join("\n")).unwrap();
        assert_eq!(json, Document::firing(&c));

        let resolved = Document::resolved(&c, c.since + 125_000).plain_text();
        assert!(
            resolved.contains("resolved_at: 2025-11-24T16:02:05.000Z\nduration: 2m 5s (125 s)\n"),
            "{resolved}"
        );
        // A test names no site: no empty lines for it.
        let test = Document::test("ops", "ann", 0).plain_text();
        assert!(
            !test.contains("site:") && test.contains("by: ann"),
            "{test}"
        );
    }
}
