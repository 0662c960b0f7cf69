//! HTTPS both ways, with certificate authorities made in the test: `https://`
//! endpoints (a private CA with `ca_file`, mutual TLS with `client_cert` and
//! `client_key`), what a certificate that is not trusted does to an
//! endpoint, and the daemon serving HTTPS itself.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use common::tls::TestCa;
use common::*;
use serde_json::{json, Value};

fn holds(integration: &Value) -> Vec<String> {
    integration["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn endpoint(daemon: &Daemon, name: &str) -> Value {
    let (status, v) = daemon
        .get(&format!("/api/v1/sites/LIVE/endpoints/{name}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// `sluice_endpoint_probes_total` of an endpoint, by result (`ok`, `failed`).
async fn probes(daemon: &Daemon, name: &str, result: &str) -> u64 {
    let text = daemon.get_text("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("sluice_endpoint_probes_total{"))
        .filter(|l| {
            l.contains(&format!("endpoint=\"{name}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn site(crm_url: &str, crm_tls: &str, down_port: u16) -> String {
    format!(
        r#"{}
[sites.LIVE.endpoints.down]
kind = "http"
url = "http://127.0.0.1:{down_port}/records"

[sites.LIVE.integrations.other]

[[sites.LIVE.integrations.other.flows]]
name = "web2"
source = "shop"
target = "down"
key = "id"
"#,
        webhook_site_with(crm_url, "", crm_tls)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_holds_the_endpoint_until_its_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    let target = Target::start_tls(ca.server_config("receiver", None)).await;
    let down = closed_port();
    let mut daemon = Daemon::start(dir.path(), &site(&target.url(), "", down)).await;
    for n in 0..3 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // Beside it, an endpoint that is simply down: probed with back-off.
    daemon.hook("LIVE", "other", "web2", order(100)).await;

    eventually(10, "crm offline for its certificate", || async {
        holds(&daemon.integration("LIVE", "orders").await) == ["endpoint-offline"]
    })
    .await;
    let crm = endpoint(&daemon, "crm").await;
    assert_eq!(crm["state"], "offline", "{crm}");
    let reason = crm["last_error"].as_str().unwrap();
    assert!(
        reason.contains(&target.url())
            && reason.contains("the certificate is not trusted")
            && reason.contains("unknown issuer")
            && reason.contains("ca_file"),
        "{reason}"
    );
    let orders = daemon.integration("LIVE", "orders").await;
    assert!(
        orders["holds"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{orders}"
    );
    let log = daemon.log("LIVE").await;
    assert!(
        log.contains(&format!(
            "Endpoint crm is offline: GET {}: the certificate",
            target.url()
        )),
        "{log}"
    );

    // No storm: both are tested once at the start; then the endpoint that
    // is down is probed again and again (back-off from 250 ms), while the
    // untrusted one waits for its probe_every (an hour).
    eventually(
        15,
        "three more probes of the endpoint that is down",
        || async { probes(&daemon, "down", "failed").await >= 4 },
    )
    .await;
    assert_eq!(probes(&daemon, "crm", "failed").await, 1);
    assert_eq!(probes(&daemon, "crm", "ok").await, 0);
    let tried = target.connections.load(Ordering::SeqCst);
    assert!(
        tried <= 2,
        "{tried} connections for an untrusted certificate"
    );
    // Nothing reached the receiver, nothing is lost or marked Error.
    assert_eq!(target.requests.load(Ordering::SeqCst), 0);
    assert_eq!(target.count(), 0);
    let (_, failed) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=error")
        .await;
    assert_eq!(failed, json!([]));
    let (_, queued) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=queued")
        .await;
    assert_eq!(queued.as_array().unwrap().len(), 3, "{queued}");

    // A person's test checks again at once, and says why.
    let out = daemon.cli(&["endpoint", "test", "LIVE", "crm"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("the certificate is not trusted"), "{said}");
    assert_eq!(target.connections.load(Ordering::SeqCst), tried + 1);

    // Trust the private CA (relative to the file's folder) and reload: the
    // endpoint is Online, the hold lifted, the records delivered in order.
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        config.replace(
            &format!("url = \"{}\"", target.url()),
            &format!("url = \"{}\"\nca_file = \"private-ca.pem\"", target.url()),
        ),
    )
    .unwrap();
    let out = daemon.cli(&["site", "reload", "LIVE"]);
    assert!(out.status.success(), "{out:?}");
    eventually(10, "the three records delivered", || async {
        target.count() >= 3
    })
    .await;
    assert_eq!(target.field("n"), [json!(0), json!(1), json!(2)]);
    assert!(holds(&daemon.integration("LIVE", "orders").await).is_empty());
    assert_eq!(endpoint(&daemon, "crm").await["state"], "online");

    // And it stays trusted after a restart.
    daemon.restart().await;
    daemon.hook("LIVE", "orders", "web", order(3)).await;
    eventually(10, "delivered after a restart", || async {
        target.count() >= 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_certificate_is_not_for_is_not_trusted_either() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    let other = ca.issue("other", &["other.example"], false);
    let target = Target::start_tls(common::tls::server_config(&other, None)).await;
    let daemon = Daemon::start(
        dir.path(),
        &site(&target.url(), "ca_file = \"private-ca.pem\"", closed_port()),
    )
    .await;
    daemon.hook("LIVE", "orders", "web", order(0)).await;
    eventually(10, "crm offline", || async {
        endpoint(&daemon, "crm").await["state"] == "offline"
    })
    .await;
    let crm = endpoint(&daemon, "crm").await;
    let reason = crm["last_error"].as_str().unwrap();
    assert!(
        reason.contains("the certificate is not trusted") && reason.contains("127.0.0.1"),
        "{reason}"
    );
    assert_eq!(target.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_sends_with_a_client_certificate_and_is_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let servers = TestCa::new(dir.path(), "servers");
    let clients = TestCa::new(dir.path(), "clients");
    clients.issue("sluice-client", &["sluice"], true);
    // A client certificate of a CA the receiver does not know.
    servers.issue("stranger", &["stranger"], true);
    let target = Target::start_tls(servers.server_config("receiver", Some(&clients))).await;
    let toml = format!(
        r#"
[sites.LIVE.endpoints.shop]
kind = "webhook"

[sites.LIVE.endpoints.signed]
kind = "http"
url = "{url}"
ca_file = "servers-ca.pem"
client_cert = "sluice-client.pem"
client_key = "sluice-client-key.pem"

[sites.LIVE.endpoints.anonymous]
kind = "http"
url = "{url}"
ca_file = "servers-ca.pem"

[sites.LIVE.endpoints.stranger]
kind = "http"
url = "{url}"
ca_file = "servers-ca.pem"
client_cert = "stranger.pem"
client_key = "stranger-key.pem"

[sites.LIVE.integrations.signed]
[[sites.LIVE.integrations.signed.flows]]
name = "a"
source = "shop"
target = "signed"
key = "id"

[sites.LIVE.integrations.anonymous]
[[sites.LIVE.integrations.anonymous.flows]]
name = "b"
source = "shop"
target = "anonymous"
key = "id"

[sites.LIVE.integrations.stranger]
[[sites.LIVE.integrations.stranger.flows]]
name = "c"
source = "shop"
target = "stranger"
key = "id"
"#,
        url = target.url()
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    for n in 0..3 {
        daemon.hook("LIVE", "signed", "a", order(n)).await;
    }
    daemon.hook("LIVE", "anonymous", "b", order(10)).await;
    daemon.hook("LIVE", "stranger", "c", order(20)).await;
    eventually(10, "the signed records delivered", || async {
        target.count() >= 3
    })
    .await;
    for name in ["anonymous", "stranger"] {
        // With TLS 1.3 the server's refusal may come after the client saw
        // its handshake done: the first attempt can end as a cut connection
        // and the alert be read by the next one. Offline, with the reason,
        // once the refusal is read.
        eventually(
            10,
            "held for its refused certificate, saying so",
            || async {
                let ep = endpoint(&daemon, name).await;
                let reason = ep["last_error"].as_str().unwrap_or_default().to_string();
                ep["state"] == "offline"
                    && reason.contains("our client certificate was refused")
                    && reason.contains("client_cert")
            },
        )
        .await;
    }
    assert_eq!(target.field("n"), [json!(0), json!(1), json!(2)]);
    assert_eq!(target.requests.load(Ordering::SeqCst), 3);
    assert_eq!(endpoint(&daemon, "signed").await["state"], "online");
    // Held, not failed: nothing is lost.
    for name in ["anonymous", "stranger"] {
        let (_, failed) = daemon
            .get(&format!(
                "/api/v1/sites/LIVE/integrations/{name}/transactions?state=error"
            ))
            .await;
        assert_eq!(failed, json!([]), "{name}");
        assert_eq!(
            holds(&daemon.integration("LIVE", name).await),
            ["endpoint-offline"]
        );
    }
}

/// A daemon configuration beside its CA's files, with `extra` at the top.
fn daemon_toml(dir: &std::path::Path, listen: &str, extra: &str) -> std::path::PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\n{extra}\n\n\
             [sites.LIVE.endpoints.shop]\nkind = \"webhook\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_https_with_tls_cert_and_tls_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    ca.issue("daemon", &["127.0.0.1", "localhost"], false);
    let config = daemon_toml(
        dir.path(),
        "127.0.0.1:0",
        "tls_cert = \"daemon.pem\"\ntls_key = \"daemon-key.pem\"",
    );
    let options = Options {
        ca_file: Some(ca.ca_file()),
        capture: true,
        ..Options::default()
    };
    let daemon = Daemon::start_file(dir.path(), &config, options).await;
    assert_eq!(daemon.scheme, "https");
    assert!(daemon
        .output()
        .contains(&format!("sluice listening on https://{}", daemon.addr)));

    // A client that never finishes its handshake holds up no one.
    let stalled = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let (status, sites) = daemon.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::OK, "{sites}");
    assert_eq!(sites[0]["name"], "LIVE");
    let mut buf = [0u8; 16];
    assert!(
        matches!(stalled.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled connection is still open: the answer did not wait for it"
    );
    drop(stalled);

    // Plain HTTP and an untrusting client get nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/api/v1/sites", daemon.addr))
        .send()
        .await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
    let untrusting = reqwest::Client::new()
        .get(daemon.url("/api/v1/sites"))
        .send()
        .await;
    assert!(untrusting.is_err());

    // The CLI with --ca-file works; without it, it says why it cannot.
    let out = daemon.cli(&["site", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("LIVE"));
    let out = Command::new(BIN)
        .args(["--server", &daemon.server(), "site", "list"])
        .env_remove("SLUICE_CA_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the certificate is not trusted") && said.contains("--ca-file"),
        "{said}"
    );
    let out = Command::new(BIN)
        .args(["--server", &daemon.server(), "site", "list"])
        .env("SLUICE_CA_FILE", ca.ca_file())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .args([
            "--server",
            &daemon.server(),
            "--ca-file",
            "nowhere.pem",
            "site",
            "list",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The dashboard's session cookie is Secure over HTTPS.
    let token = daemon.create_token("admin", "ops");
    let r = daemon
        .http()
        .post(daemon.url("/api/v1/session"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    // Listening on loopback: no warning about clear text.
    assert!(
        !daemon.output().contains("clear text"),
        "{}",
        daemon.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_warns_that_tokens_travel_in_clear_text() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(ca_dir.path(), "private");
    for (extra, warned) in [
        ("", true),
        ("behind_proxy = true", false),
        (
            "tls_cert = \"daemon.pem\"\ntls_key = \"daemon-key.pem\"",
            false,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let issued = ca.issue("daemon", &["127.0.0.1"], false);
        std::fs::copy(&issued.cert, dir.path().join("daemon.pem")).unwrap();
        std::fs::copy(&issued.key, dir.path().join("daemon-key.pem")).unwrap();
        let config = daemon_toml(dir.path(), "0.0.0.0:0", extra);
        // Beyond loopback the daemon needs a token first.
        let out = Command::new(BIN)
            .args([
                "token", "create", "--role", "admin", "--name", "ops", "--config",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let options = Options {
            ca_file: Some(ca.ca_file()),
            capture: true,
            ..Options::default()
        };
        let daemon = Daemon::start_file(dir.path(), &config, options).await;
        let said = daemon.output();
        assert_eq!(said.contains("clear text"), warned, "{extra:?}: {said}");
        if warned {
            assert!(
                said.contains("tls_cert") && said.contains("behind_proxy"),
                "{said}"
            );
        }
    }
}

/// `sluice serve` on a file that cannot be used: exit 2 and what is wrong.
fn refused(config: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tls_files_that_cannot_be_used_stop_the_start_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "private");
    ca.issue("daemon", &["127.0.0.1"], false);
    ca.issue("other", &["127.0.0.1"], false);
    let config = daemon_toml(dir.path(), "127.0.0.1:0", "tls_cert = \"daemon.pem\"");
    let said = refused(&config);
    assert!(said.contains("sluice.toml:3: tls_key: missing"), "{said}");

    let config = daemon_toml(
        dir.path(),
        "127.0.0.1:0",
        "tls_cert = \"nowhere.pem\"\ntls_key = \"daemon-key.pem\"",
    );
    let said = refused(&config);
    assert!(
        said.contains("sluice.toml:3: tls_cert: cannot read") && said.contains("nowhere.pem"),
        "{said}"
    );

    // The key of another certificate.
    let config = daemon_toml(
        dir.path(),
        "127.0.0.1:0",
        "tls_cert = \"daemon.pem\"\ntls_key = \"other-key.pem\"",
    );
    let said = refused(&config);
    assert!(said.contains("sluice.toml:4: tls_key:"), "{said}");

    // An endpoint's ca_file, and a client key without its certificate.
    let endpoint = |lines: &str| {
        std::fs::write(
            dir.path().join("sluice.toml"),
            format!(
                "[sites.LIVE.endpoints.crm]\nkind = \"http\"\nurl = \"https://127.0.0.1:1/x\"\n{lines}\n"
            ),
        )
        .unwrap();
        refused(&dir.path().join("sluice.toml"))
    };
    let said = endpoint("ca_file = \"missing-ca.pem\"");
    assert!(
        said.contains("sluice.toml:4: sites.LIVE.endpoints.crm.ca_file: cannot read")
            && said.contains("missing-ca.pem"),
        "{said}"
    );
    let said = endpoint("client_key = \"daemon-key.pem\"");
    assert!(
        said.contains("sites.LIVE.endpoints.crm.client_cert: missing"),
        "{said}"
    );
    let said = endpoint("client_cert = \"daemon.pem\"\nclient_key = \"other-key.pem\"");
    assert!(
        said.contains("sluice.toml:5: sites.LIVE.endpoints.crm.client_key:"),
        "{said}"
    );
    let said = endpoint("ca_file = \"daemon-key.pem\"");
    assert!(said.contains("holds no certificate"), "{said}");
}
