//! Alerts at a webhook channel: one alert when a condition starts and one
//! when it is over, not one per record; kept and sent once a channel that
//! was down is back; a test alert on demand. The same at an email channel,
//! through a real SMTP server ([`common::smtp`]): the emails name the site,
//! the integration and the cause, the password goes to the server and
//! nowhere else, a refused or deferred email stays queued, TLS with a
//! private CA (STARTTLS and smtps://).

mod common;

use axum::http::StatusCode;
use common::smtp::{Mail, Security, SmtpOptions, SmtpServer};
use common::*;
use serde_json::{json, Value};

/// The site of [`webhook_site`] with an alert channel `ops` at `alerts`.
fn alerting_site(target: &Target, alerts: &Target, more: &str) -> String {
    format!(
        "{}\n[alerts.ops]\nkind = \"webhook\"\nurl = \"{}\"\n{more}",
        webhook_site(target, 1),
        alerts.url()
    )
}

/// (alert, state) of each alert received, in arrival order.
fn kinds(alerts: &Target) -> Vec<(String, String)> {
    alerts
        .received()
        .iter()
        .map(|r| {
            (
                r.record["alert"].as_str().unwrap_or("?").to_string(),
                r.record["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn pair(alert: &str, state: &str) -> (String, String) {
    (alert.to_string(), state.to_string())
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_held_alert_and_one_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let daemon = Daemon::start(dir.path(), &alerting_site(&target, &alerts, "")).await;

    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;
    let before = chrono::Utc::now();

    // The target goes away while records keep coming.
    target.stop().await;
    for n in 2..=20 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(15, "a held alert", || async {
        !alerts.received().is_empty()
    })
    .await;
    let held = alerts.received()[0].record.clone();
    assert_eq!(held["alert"], "held", "{held}");
    assert_eq!(held["state"], "firing");
    assert_eq!(held["site"], "LIVE");
    assert_eq!(held["integration"], "orders");
    assert_eq!(held["endpoint"], "crm");
    assert_eq!(held["by"], "sluice");
    assert_eq!(held["resolved_at"], Value::Null);
    assert_eq!(held["duration_s"], Value::Null);
    let reason = held["reason"].as_str().unwrap();
    assert!(reason.contains("crm"), "{held}");
    let text = held["text"].as_str().unwrap();
    assert!(text.contains("LIVE") && text.contains("orders"), "{held}");
    assert!(time(&held["since"]) >= before - chrono::Duration::seconds(1));

    // Back: one "resolved", with how long it lasted.
    target.restart().await;
    eventually(20, "the resolved alert", || async { alerts.count() >= 2 }).await;
    let resolved = alerts.received()[1].record.clone();
    assert_eq!(
        (&resolved["alert"], &resolved["state"]),
        (&json!("held"), &json!("resolved")),
        "{resolved}"
    );
    assert_eq!(resolved["since"], held["since"]);
    assert_eq!(resolved["endpoint"], "crm");
    let lasted = time(&resolved["resolved_at"]) - time(&resolved["since"]);
    assert_eq!(
        resolved["duration_s"],
        json!(lasted.num_seconds()),
        "{resolved}"
    );
    eventually(20, "all delivered", || async {
        target.deduplicated().len() == 20
    })
    .await;

    // A stop is alerted after them: had the outage been alerted more than
    // once, it would show before this.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the site-stopped alert", || async {
        alerts.count() >= 3
    })
    .await;
    assert_eq!(
        kinds(&alerts),
        [
            pair("held", "firing"),
            pair("held", "resolved"),
            pair("site-stopped", "firing")
        ]
    );
    let stopped = alerts.received()[2].record.clone();
    assert_eq!(stopped["by"], "tester");
    assert_eq!(stopped["reason"], "stocktake");
    assert_eq!(stopped["integration"], Value::Null);

    // Each alert sent is in the site's audit trail (written once the
    // channel has taken it: the last one may come just after it arrived).
    let sent = || async {
        let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "alert.sent" && a["subject"] == "alert/ops")
            .count()
    };
    eventually(10, "three alerts audited", || async { sent().await >= 3 }).await;
    assert_eq!(sent().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_waits_for_a_channel_that_is_down_and_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let toml = alerting_site(&target, &alerts, "format = \"slack\"\non = [\"paused\"]\n");
    let daemon = Daemon::start(dir.path(), &toml).await;
    alerts.stop().await;

    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "month end"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    daemon
        .await_log("LIVE", "Alert channel ops cannot be reached", 10)
        .await;
    // The integration is not held up by the channel: it resumes and sends.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;

    // Back, the channel gets the alert and its "resolved", Slack's way.
    alerts.restart().await;
    eventually(30, "both alerts", || async { alerts.count() >= 2 }).await;
    let texts: Vec<String> = alerts
        .received()
        .iter()
        .map(|r| r.record["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("[sluice ALERT]") && texts[0].contains("paused by tester"),
        "{texts:?}"
    );
    assert!(texts[0].contains("month end"), "{texts:?}");
    assert!(texts[1].starts_with("[sluice RESOLVED]"), "{texts:?}");
    assert!(
        alerts.received()[0].record.get("alert").is_none(),
        "only text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_of_an_integration_a_reload_removes_is_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let toml = alerting_site(&target, &alerts, "on = [\"paused\"]\n");
    let daemon = Daemon::start(dir.path(), &toml).await;
    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "being replaced"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the paused alert", || async { alerts.count() >= 1 }).await;

    // The integration is replaced by another in the file: nobody judges
    // `orders` any more, and its condition is over.
    let file = std::fs::read_to_string(&daemon.config).unwrap();
    let replaced = file
        .replace(
            "[sites.LIVE.integrations.orders]",
            "[sites.LIVE.integrations.orders2]",
        )
        .replace(
            "[[sites.LIVE.integrations.orders.flows]]",
            "[[sites.LIVE.integrations.orders2.flows]]",
        );
    assert_ne!(replaced, file);
    std::fs::write(&daemon.config, replaced).unwrap();
    let (status, v) = daemon.post("/api/v1/sites/LIVE/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the resolved alert", || async { alerts.count() >= 2 }).await;
    assert_eq!(
        kinds(&alerts),
        [pair("paused", "firing"), pair("paused", "resolved")]
    );
    let resolved = alerts.received()[1].record.clone();
    assert_eq!(resolved["integration"], "orders", "{resolved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_delivers_nothing_for_stall_after_is_a_stalled_alert_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let toml = format!(
        "[sites.LIVE]\nstall_after = \"1s\"\n{}",
        // Only the stall is looked at: failures counted do not alert.
        alerting_site(&target, &alerts, "failing_threshold = 1000\n")
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    // The target answers 503 (retried, nothing holds the integration) for
    // over a second: stalled, with the answer. It keeps failing until the
    // alert came (a loaded machine's alerts worker may look late).
    target.script(&[(503, Some(1)); 60]);
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(15, "the stalled alert", || async { alerts.count() >= 1 }).await;
    let stalled = alerts.received()[0].record.clone();
    assert_eq!(
        (&stalled["alert"], &stalled["state"]),
        (&json!("stalled"), &json!("firing")),
        "{stalled}"
    );
    assert_eq!(stalled["integration"], "orders");
    assert!(
        stalled["reason"].as_str().unwrap().contains("503"),
        "{stalled}"
    );
    assert_eq!(
        daemon.integration("LIVE", "orders").await["holds"],
        json!([])
    );

    // The record goes through at last: resolved, and nothing else.
    target.end_script();
    eventually(15, "delivered", || async { target.count() >= 1 }).await;
    eventually(10, "the resolved alert", || async { alerts.count() >= 2 }).await;
    assert_eq!(
        kinds(&alerts),
        [pair("stalled", "firing"), pair("stalled", "resolved")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_alert_is_sent_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let daemon = Daemon::start(dir.path(), &alerting_site(&target, &alerts, "")).await;

    let out = daemon.cli(&["alert", "test", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alerts.count(), 1);
    let test = alerts.received()[0].record.clone();
    assert_eq!(test["alert"], "test", "{test}");
    assert_eq!(test["state"], "firing");
    assert_eq!(test["site"], Value::Null);

    let (status, v) = daemon.post("/api/v1/alerts/nothing/test", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nothing"), "{v}");

    alerts.stop().await;
    let out = daemon.cli(&["alert", "test", "ops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not take the test alert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The variable holding the SMTP password, and the password.
const SMTP_PASSWORD_ENV: &str = "SLUICE_TEST_SMTP_PASSWORD";
const SMTP_PASSWORD: &str = "pw-S3cret-4711";

/// `[alerts.oncall]` of kind email at `smtp`, with `more` lines.
fn email_channel(smtp: &SmtpServer, more: &str) -> String {
    format!(
        "\n[alerts.oncall]\nkind = \"email\"\nsmtp_url = \"{}\"\n\
         from = \"Sluice <sluice@example.com>\"\nto = [\"ops@example.com\", \"ann@example.com\"]\n\
         {more}\n",
        smtp.url()
    )
}

/// The daemon, with the SMTP password in its environment.
async fn start_with_password(dir: &std::path::Path, toml: &str) -> Daemon {
    let options = Options {
        env: vec![(SMTP_PASSWORD_ENV.into(), SMTP_PASSWORD.into())],
        ..Options::default()
    };
    Daemon::start_opts(dir, toml, options).await
}

/// The email's subject and body both name `parts`.
#[track_caller]
fn names(mail: &Mail, parts: &[&str]) {
    let subject = mail.header("Subject").unwrap();
    let body = mail.body();
    for part in parts {
        assert!(subject.contains(part), "{part} in the subject {subject:?}");
        assert!(body.contains(part), "{part} in the body:\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_held_email_and_one_resolved_and_the_password_goes_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let smtp = SmtpServer::start(SmtpOptions {
        login: Some(("sluice".into(), SMTP_PASSWORD.into())),
        ..SmtpOptions::default()
    })
    .await;
    let login = format!("username = \"sluice\"\npassword_env = \"{SMTP_PASSWORD_ENV}\"");
    let toml = format!(
        "{}{}",
        webhook_site(&target, 1),
        email_channel(&smtp, &login)
    );
    let daemon = start_with_password(dir.path(), &toml).await;

    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;
    target.stop().await;
    for n in 2..=10 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(15, "the held email", || async { smtp.count() >= 1 }).await;
    let held = smtp.mails()[0].clone();
    assert_eq!(held.from, "sluice@example.com");
    assert_eq!(held.to, ["ops@example.com", "ann@example.com"]);
    assert!(
        held.header("Subject")
            .unwrap()
            .starts_with("[sluice ALERT]"),
        "{}",
        held.data
    );
    // The site, the integration and the cause: the endpoint that is down.
    names(&held, &["LIVE", "orders", "crm"]);
    let body = held.body();
    for line in [
        "site: LIVE",
        "integration: orders",
        "endpoint: crm",
        "by: sluice",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
    }
    assert!(body.contains("reason: endpoint crm"), "{body}");
    assert!(
        body.contains("\"alert\": \"held\""),
        "the JSON document: {body}"
    );
    assert_eq!(
        held.header("Content-Type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(held
        .header("Message-ID")
        .unwrap()
        .ends_with("@example.com>"));
    // Logged in, with the password from the environment.
    assert_eq!(held.login, Some(("sluice".into(), SMTP_PASSWORD.into())));

    // Back: one "resolved", with how long it lasted.
    target.restart().await;
    eventually(20, "the resolved email", || async { smtp.count() >= 2 }).await;
    let resolved = smtp.mails()[1].clone();
    let subject = resolved.header("Subject").unwrap();
    assert!(
        subject.starts_with("[sluice RESOLVED] Resolved after"),
        "{subject}"
    );
    names(&resolved, &["LIVE", "orders", "crm"]);
    let body = resolved.body();
    assert!(body.contains("reason: endpoint crm"), "{body}");
    assert!(
        body.contains("resolved_at: ") && body.contains("duration: "),
        "{body}"
    );
    assert_ne!(
        resolved.header("Message-ID"),
        held.header("Message-ID"),
        "two alerts, two ids"
    );
    eventually(20, "all delivered", || async {
        target.deduplicated().len() == 10
    })
    .await;

    // A stop is emailed after them: had the outage been emailed more than
    // once, it would show before this.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the site-stopped email", || async { smtp.count() >= 3 }).await;
    let subjects: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:#?}");
    assert!(
        subjects[2].contains("site LIVE stopped by tester"),
        "{subjects:#?}"
    );

    // `sluice alert test` sends an email too.
    let out = daemon.cli(&["alert", "test", "oncall"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(smtp.count(), 4);
    let test = &smtp.mails()[3];
    assert!(
        test.header("Subject")
            .unwrap()
            .contains("Test of sluice alert channel oncall"),
        "{}",
        test.data
    );

    // A server that refuses the login quoting what it was given: the
    // answer says so, without the password.
    smtp.refuse_logins(Some(&format!("535 5.7.8 bad password {SMTP_PASSWORD}")));
    let (status, v) = daemon.post("/api/v1/alerts/oncall/test", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("refused the login of sluice"), "{detail}");
    assert!(detail.contains("bad password ***"), "{detail}");
    let out = daemon.cli(&["alert", "test", "oncall"]);
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("refused the login"), "{said}");

    // Every login was with the right password, and the password is in no
    // log line, no answer, no output.
    assert!(smtp.logins().len() >= 5, "{:?}", smtp.logins());
    assert!(smtp
        .logins()
        .iter()
        .all(|l| l == &("sluice".to_string(), SMTP_PASSWORD.to_string())));
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    let (_, site) = daemon.get("/api/v1/sites/LIVE").await;
    let (_, integration) = daemon.get("/api/v1/sites/LIVE/integrations/orders").await;
    let seen = [
        daemon.log("LIVE").await,
        daemon.stderr().join("\n"),
        audit.to_string(),
        site.to_string(),
        integration.to_string(),
        v.to_string(),
        said,
    ];
    for text in seen {
        assert!(!text.contains(SMTP_PASSWORD), "the password in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_deferred_or_refused_stays_queued_until_the_server_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    // A deferral, then a refusal for good: both kept, then it goes through.
    smtp.script(&[
        "451 4.3.0 mailbox busy, try later",
        "550 5.7.1 relaying denied",
    ]);
    let toml = format!(
        "{}{}",
        webhook_site(&target, 1),
        email_channel(&smtp, "on = [\"paused\"]")
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "month end"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    daemon
        .await_log("LIVE", "Alert channel oncall cannot be reached", 10)
        .await;
    let log = daemon.log("LIVE").await;
    assert!(
        log.contains("put the email off: it answered 451 4.3.0 mailbox busy"),
        "{log}"
    );
    // Tried again a second later (refused for good: kept all the same),
    // then two seconds later taken: the one alert, once.
    eventually(20, "the paused email", || async { smtp.count() >= 1 }).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    names(&mails[0], &["LIVE", "orders", "month end"]);
    // Audited as sent once it went through (just after the server took it).
    eventually(10, "the email audited", || async {
        let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
        let sent = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "alert.sent" && a["subject"] == "alert/oncall");
        sent.count() == 1
    })
    .await;

    // The answer of a test alert says which is which: a refusal for good
    // needs a person yet loses nothing; a deferral passes.
    smtp.script(&["550 5.7.1 relaying denied"]);
    let (_, v) = daemon.post("/api/v1/alerts/oncall/test", json!({})).await;
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused the email for good (550 5.7.1 relaying denied)")
            && detail.contains("stays queued meanwhile and is sent again, not lost"),
        "{detail}"
    );
    smtp.script(&["421 4.7.0 too many connections"]);
    let (_, v) = daemon.post("/api/v1/alerts/oncall/test", json!({})).await;
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("put the email off: it answered 421"),
        "{detail}"
    );
    // No server at all: said, and not taken for a refusal.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = gone.local_addr().unwrap().port();
    drop(gone);
    let toml = format!(
        "{}\n[alerts.nobody]\nkind = \"email\"\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\
         from = \"sluice@example.com\"\nto = \"ops@example.com\"\n",
        webhook_site(&target, 1)
    );
    let dir2 = tempfile::tempdir().unwrap();
    let other = Daemon::start(dir2.path(), &toml).await;
    let (_, v) = other.post("/api/v1/alerts/nobody/test", json!({})).await;
    assert_eq!(v["ok"], false, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("mail server smtp://127.0.0.1:{port}")),
        "{detail}"
    );
    assert!(
        detail.contains("no connection: Connection refused"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_smtps_trusts_a_private_ca_given_by_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::TestCa::new(dir.path(), "mail");
    let starttls = SmtpServer::start(SmtpOptions {
        security: Security::StartTls(ca.server_config("starttls", None)),
        login: Some(("sluice".into(), SMTP_PASSWORD.into())),
    })
    .await;
    let smtps = SmtpServer::start(SmtpOptions {
        security: Security::Implicit(ca.server_config("smtps", None)),
        ..SmtpOptions::default()
    })
    .await;
    let ca_file = ca.ca_file();
    let target = Target::start().await;
    let channel = |name: &str, smtp: &SmtpServer, more: &str| {
        format!(
            "\n[alerts.{name}]\nkind = \"email\"\nsmtp_url = \"{}\"\n\
             from = \"sluice@example.com\"\nto = \"ops@example.com\"\n{more}\n",
            smtp.url()
        )
    };
    let trusted = format!("ca_file = \"{}\"", ca_file.display());
    let login = format!("username = \"sluice\"\npassword_env = \"{SMTP_PASSWORD_ENV}\"\n");
    let toml = format!(
        "{}{}{}{}{}",
        webhook_site(&target, 1),
        channel("upgraded", &starttls, &format!("{trusted}\n{login}")),
        channel("implicit", &smtps, &trusted),
        channel("untrusted", &starttls, &login),
        channel("untrusted_smtps", &smtps, ""),
    );
    let daemon = start_with_password(dir.path(), &toml).await;

    // smtp:// upgraded with STARTTLS before the login and the message.
    let (_, v) = daemon.post("/api/v1/alerts/upgraded/test", json!({})).await;
    assert_eq!(v["ok"], true, "{v}");
    let mail = &starttls.mails()[0];
    assert!(mail.tls, "STARTTLS before the message");
    assert_eq!(mail.login, Some(("sluice".into(), SMTP_PASSWORD.into())));
    // smtps://: TLS from the first byte.
    let (_, v) = daemon.post("/api/v1/alerts/implicit/test", json!({})).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(smtps.mails()[0].tls);

    // Without the CA: not trusted, said with the key that fixes it, and
    // never a fall back to plain text (no login, no message).
    let logins = starttls.logins().len();
    for name in ["untrusted", "untrusted_smtps"] {
        let (_, v) = daemon
            .post(&format!("/api/v1/alerts/{name}/test"), json!({}))
            .await;
        assert_eq!(v["ok"], false, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("not trusted") && detail.contains("ca_file"),
            "{name}: {detail}"
        );
    }
    assert_eq!(starttls.logins().len(), logins);
    assert_eq!((starttls.count(), smtps.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deliveries_and_a_blocked_queue_are_alerted_and_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let more = "on = [\"blocked\", \"failing\"]\nfailing_threshold = 2\nfailing_window = \"3s\"\n";
    let daemon = Daemon::start(dir.path(), &alerting_site(&target, &alerts, more)).await;
    let has = |alert: &'static str, state: &'static str| {
        let alerts = &alerts;
        async move { kinds(alerts).contains(&pair(alert, state)) }
    };

    // Three busy answers, retried: more than two failures within 3 s.
    target.script(&[(503, None), (503, None), (503, None)]);
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(20, "a failing alert", || has("failing", "firing")).await;
    let failing = alerts.received()[0].record.clone();
    assert_eq!(failing["integration"], "orders", "{failing}");
    assert!(
        failing["reason"]
            .as_str()
            .unwrap()
            .contains("failed deliveries"),
        "{failing}"
    );
    eventually(10, "delivered", || async { target.count() == 1 }).await;
    // Once the window has no more than two: resolved.
    eventually(20, "the failing alert resolved", || {
        has("failing", "resolved")
    })
    .await;

    // A record refused for good: the queue waits behind it.
    let mut refused = order(2);
    refused["reject"] = json!(true);
    daemon.hook("LIVE", "orders", "web", refused).await;
    eventually(10, "a blocked alert", || has("blocked", "firing")).await;
    let blocked = alerts
        .received()
        .into_iter()
        .map(|r| r.record)
        .find(|d| d["alert"] == "blocked")
        .unwrap();
    assert_eq!(blocked["integration"], "orders", "{blocked}");
    let reason = blocked["reason"].as_str().unwrap();
    assert!(
        reason.contains("transaction 2") && reason.contains("no such customer"),
        "{blocked}"
    );

    // Retried once the target takes it: resolved.
    target.accept_all();
    let out = daemon.cli(&["tx", "retry", "LIVE", "orders", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, "the blocked alert resolved", || {
        has("blocked", "resolved")
    })
    .await;
    assert_eq!(
        kinds(&alerts),
        [
            pair("failing", "firing"),
            pair("failing", "resolved"),
            pair("blocked", "firing"),
            pair("blocked", "resolved")
        ]
    );
}
