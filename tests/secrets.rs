//! No secret in a URL leaks: with `url = "http://user:PASSWORD@host/x"` the
//! password appears in nothing sluice prints, logs, stores or answers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const SECRET: &str = "S3cretPW";

/// Every file under `dir` but the configuration (which holds the secret by
/// definition), read as bytes: databases, their WAL, logs, output.
fn files_holding(dir: &Path, secret: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_holding(&path, secret, found);
        } else if path.file_name().is_some_and(|n| n != "sluice.toml") {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                found.push(path.display().to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_an_endpoint_url_is_never_shown_logged_or_stored() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.stop().await;
    let url = format!("http://user:{SECRET}@{}/records", target.addr);
    let toml = webhook_site_with(&url, "", "health_path = \"/records\"");
    let options = Options {
        capture: true,
        ..Options::default()
    };
    let daemon = Daemon::start_opts(dir.path(), &toml, options).await;

    // Down for a while: errors are logged, kept and shown.
    for n in 0..3 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "crm offline", || async {
        let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
        crm["state"] == "offline"
    })
    .await;
    let mut said = Vec::new();
    // A person's test (kept in the audit trail) and the CLI's views.
    for args in [
        &["endpoint", "test", "LIVE", "crm"][..],
        &["endpoint", "list", "LIVE"],
        &["status"],
        &["log", "LIVE"],
        &["integration", "show", "LIVE", "orders"],
        &["--json", "integration", "show", "LIVE", "orders"],
        &["tx", "list", "LIVE", "orders"],
    ] {
        let out = daemon.cli(args);
        said.push(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    let shown = crm["last_error"].as_str().unwrap().to_string();
    assert!(
        shown.contains(&format!("http://***@{}/records", target.addr)),
        "the URL is still shown, without its user-info: {shown}"
    );

    // Then up: delivered (reqwest still sends the user-info as Basic auth).
    target.restart().await;
    eventually(10, "delivered once the target is back", || async {
        target.count() >= 3
    })
    .await;

    for path in [
        "/api/v1/sites",
        "/api/v1/sites/LIVE",
        "/api/v1/sites/LIVE/integrations",
        "/api/v1/sites/LIVE/integrations/orders",
        "/api/v1/sites/LIVE/integrations/orders/transactions",
        "/api/v1/sites/LIVE/integrations/orders/transactions?state=sent",
        "/api/v1/sites/LIVE/integrations/orders/transactions/1",
        "/api/v1/sites/LIVE/flows",
        "/api/v1/sites/LIVE/flows/web",
        "/api/v1/sites/LIVE/endpoints",
        "/api/v1/sites/LIVE/endpoints/crm",
        "/api/v1/sites/LIVE/log",
        "/api/v1/sites/LIVE/audit",
        "/api/v1/audit",
        "/api/v1/openapi.json",
        "/metrics",
        "/api/v1/metrics",
        "/",
        "/assets/app.js",
    ] {
        said.push(format!("{path}: {}", daemon.get_text(path).await));
    }
    let (_, tested) = daemon
        .post(
            "/api/v1/sites/LIVE/endpoints/crm/test",
            serde_json::json!({}),
        )
        .await;
    said.push(format!("test: {tested}"));
    let log = daemon.log("LIVE").await;
    assert!(
        log.contains(&format!(
            "Endpoint crm is offline: GET http://***@{}",
            target.addr
        )),
        "{log}"
    );

    let leaks: Vec<&String> = said.iter().filter(|s| s.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the password is shown: {leaks:#?}");
    let output = daemon.output();
    assert!(!output.contains(SECRET), "the daemon printed it: {output}");
    let mut found = Vec::new();
    files_holding(dir.path(), SECRET, &mut found);
    assert!(found.is_empty(), "the password is stored in {found:?}");
}

#[test]
fn a_broken_url_with_a_password_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[sites.LIVE.endpoints.crm]\nkind = \"http\"\nurl = \"http://user:{SECRET}@127.0.0.1:99999/x\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("sites.LIVE.endpoints.crm.url: 'http://***@127.0.0.1:99999/x' is not a URL"),
        "{said}"
    );
    assert!(!said.contains(SECRET), "{said}");
}
