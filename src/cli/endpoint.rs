//! `sluice endpoint list|show|test|reauthorize`.

use clap::Subcommand;

use super::client::Client;
use super::error::CliError;
use super::output::{self, or_blank, table};
use crate::api::endpoints::{EndpointView, TestAnswer};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// A site's endpoints and what is observed of them.
    List {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// One endpoint: its state, its last test and error, and what you may
    /// do to it now.
    Show {
        /// The site, e.g. LIVE.
        site: String,
        /// The endpoint.
        name: String,
    },
    /// Call an endpoint now and show what it answered and how fast.
    Test {
        /// The site, e.g. LIVE.
        site: String,
        /// The endpoint.
        name: String,
    },
    /// Give an endpoint new credentials of the kind its `auth` takes,
    /// tested at once: a token (the default), a password (--username), an
    /// API key (--api-key) or an OAuth2 client secret (--client-secret).
    /// The secret is read from an environment variable, from standard
    /// input, or asked for at a prompt; never from the command line.
    Reauthorize {
        /// The site, e.g. LIVE.
        site: String,
        /// The endpoint.
        name: String,
        /// Basic authentication with this user (else a bearer token).
        #[arg(long, conflicts_with_all = ["api_key", "client_secret"])]
        username: Option<String>,
        /// The secret is an API key (auth = "api_key").
        #[arg(long, conflicts_with = "client_secret")]
        api_key: bool,
        /// The secret is an OAuth2 client secret (auth = "oauth2").
        #[arg(long)]
        client_secret: bool,
        /// Read the secret (token, password, key) from this environment variable.
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
        /// Read the secret from the first line of standard input.
        #[arg(long, conflicts_with = "secret_env")]
        stdin: bool,
    },
}

/// The secret, from where the operator said, or from a prompt.
fn read_secret(secret_env: Option<&str>, stdin: bool, what: &str) -> Result<String, CliError> {
    let secret = if let Some(var) = secret_env {
        std::env::var(var)
            .map_err(|_| CliError::Failed(format!("environment variable {var} is not set")))?
    } else if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(format!("{what}: "))
            .map_err(|e| CliError::Failed(format!("cannot read the {what}: {e}")))?
    };
    if secret.is_empty() {
        return Err(CliError::Failed(format!("the {what} is empty")));
    }
    Ok(secret)
}

pub async fn run(client: &Client, command: EndpointCommand) -> Result<(), CliError> {
    match command {
        EndpointCommand::List { site } => {
            let v = client.get(&["sites", &site, "endpoints"], &[]).await?;
            output::answer(client.json, &v, |e: &Vec<EndpointView>| list_table(e))
        }
        EndpointCommand::Show { site, name } => {
            let v = client
                .get(&["sites", &site, "endpoints", &name], &[])
                .await?;
            output::answer(client.json, &v, show_text)
        }
        EndpointCommand::Reauthorize {
            site,
            name,
            username,
            api_key,
            client_secret,
            secret_env,
            stdin,
        } => {
            let what = match (&username, api_key, client_secret) {
                (Some(_), _, _) => "password",
                (None, true, _) => "API key",
                (None, false, true) => "client secret",
                (None, false, false) => "token",
            };
            let secret = read_secret(secret_env.as_deref(), stdin, what)?;
            let body = match username {
                Some(username) => serde_json::json!({"username": username, "password": secret}),
                None if api_key => serde_json::json!({ "key": secret }),
                None if client_secret => serde_json::json!({ "client_secret": secret }),
                None => serde_json::json!({ "token": secret }),
            };
            let v = client
                .post(&["sites", &site, "endpoints", &name, "reauthorize"], body)
                .await?;
            output::answer(client.json, &v, |a: &TestAnswer| {
                format!("Endpoint {name} reauthorized: now {}", a.endpoint.state)
            })
        }
        EndpointCommand::Test { site, name } => {
            let v = client
                .post(
                    &["sites", &site, "endpoints", &name, "test"],
                    serde_json::json!({}),
                )
                .await?;
            let found: TestAnswer = output::read(&v)?;
            output::answer(client.json, &v, |a: &TestAnswer| test_text(&name, a))?;
            if !found.ok {
                return Err(CliError::Failed(format!(
                    "endpoint {name} cannot be reached"
                )));
            }
            Ok(())
        }
    }
}

fn list_table(endpoints: &[EndpointView]) -> String {
    let rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.kind.clone(),
                e.state.clone(),
                e.since.clone(),
                output::truncate(or_blank(&e.last_error), 60),
            ]
        })
        .collect();
    table(&["ENDPOINT", "KIND", "STATE", "SINCE", "LAST ERROR"], &rows)
}

/// `Endpoint crm: reachable in 3.2 ms (HTTP 200); now online`.
fn test_text(name: &str, a: &TestAnswer) -> String {
    format!(
        "Endpoint {name}: {} in {} ms ({}); now {}",
        if a.ok { "reachable" } else { "NOT reachable" },
        // As the daemon wrote it (12.0, not 12).
        serde_json::Value::from(a.latency_ms),
        a.detail,
        a.endpoint.state
    )
}

/// One endpoint, a fact a line.
fn show_text(e: &EndpointView) -> String {
    let mut out = format!(
        "Endpoint {} ({}): {} since {}",
        e.name, e.kind, e.state, e.since
    );
    if let Some(test) = &e.last_test {
        out.push_str(&format!(
            "\nlast test: {} at {}: {}",
            if test.ok { "reached" } else { "not reached" },
            test.at,
            test.detail
        ));
    }
    if let Some(error) = &e.last_error {
        out.push_str(&format!("\nlast error: {error}"));
    }
    out.push_str(&format!("\nactions: {}", output::actions(&e.actions)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The endpoint `crm` as the daemon answers it, with more fields.
    fn crm(more: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"name": "crm", "kind": "http", "state": "offline", "since": "T1",
            "last_error": "connection refused",
            "last_test": {"at": "T2", "ok": false, "detail": "connection refused"},
            "actions": ["test", "reauthorize"]});
        v.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        v
    }

    #[test]
    fn endpoints_as_a_table_and_one_by_one() {
        let e: EndpointView = serde_json::from_value(crm(json!({}))).unwrap();
        assert_eq!(
            list_table(std::slice::from_ref(&e)),
            "ENDPOINT  KIND  STATE    SINCE  LAST ERROR\n\
             crm       http  offline  T1     connection refused"
        );
        assert_eq!(
            show_text(&e),
            "Endpoint crm (http): offline since T1\n\
             last test: not reached at T2: connection refused\n\
             last error: connection refused\n\
             actions: test, reauthorize"
        );
    }

    #[test]
    fn a_test_says_what_it_found() {
        let v = crm(json!({"ok": false, "latency_ms": 1.5, "detail": "connection refused"}));
        let a: TestAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(
            test_text("crm", &a),
            "Endpoint crm: NOT reachable in 1.5 ms (connection refused); now offline"
        );
        let v =
            crm(json!({"ok": true, "latency_ms": 12.0, "detail": "HTTP 200", "state": "online"}));
        let a: TestAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(
            test_text("crm", &a),
            "Endpoint crm: reachable in 12.0 ms (HTTP 200); now online"
        );
    }
}
