//! `sluice endpoint list|test|reauthorize`.

use clap::Subcommand;

use super::client::Client;
use super::error::CliError;
use super::output::{self, rows, table, text};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// A site's endpoints and what is observed of them.
    List {
        /// The site, e.g. LIVE.
        site: String,
    },
    /// Call an endpoint now and show what it answered and how fast.
    Test {
        /// The site, e.g. LIVE.
        site: String,
        /// The endpoint.
        name: String,
    },
    /// Give an endpoint new credentials, tested at once. The secret is
    /// read from an environment variable, from standard input, or asked for
    /// at a prompt; never from the command line.
    Reauthorize {
        /// The site, e.g. LIVE.
        site: String,
        /// The endpoint.
        name: String,
        /// Basic authentication with this user (else a bearer token).
        #[arg(long)]
        username: Option<String>,
        /// Read the token (or password) from this environment variable.
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
        /// Read the token (or password) from the first line of standard input.
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
            output::answer(client.json, &v, |v| {
                let rows = rows(v, |e| {
                    vec![
                        text(&e["name"]),
                        text(&e["kind"]),
                        text(&e["state"]),
                        text(&e["since"]),
                        output::truncate(&text(&e["last_error"]), 60),
                    ]
                });
                table(&["ENDPOINT", "KIND", "STATE", "SINCE", "LAST ERROR"], &rows)
            })
        }
        EndpointCommand::Reauthorize {
            site,
            name,
            username,
            secret_env,
            stdin,
        } => {
            let what = if username.is_some() {
                "password"
            } else {
                "token"
            };
            let secret = read_secret(secret_env.as_deref(), stdin, what)?;
            let body = match username {
                Some(username) => serde_json::json!({"username": username, "password": secret}),
                None => serde_json::json!({ "token": secret }),
            };
            let v = client
                .post(&["sites", &site, "endpoints", &name, "reauthorize"], body)
                .await?;
            output::answer(client.json, &v, |v| {
                format!("Endpoint {name} reauthorized: now {}", text(&v["state"]))
            })
        }
        EndpointCommand::Test { site, name } => {
            let v = client
                .post(
                    &["sites", &site, "endpoints", &name, "test"],
                    serde_json::json!({}),
                )
                .await?;
            output::answer(client.json, &v, |v| {
                format!(
                    "Endpoint {name}: {} in {} ms ({}); now {}",
                    if v["ok"].as_bool() == Some(true) {
                        "reachable"
                    } else {
                        "NOT reachable"
                    },
                    text(&v["latency_ms"]),
                    text(&v["detail"]),
                    text(&v["state"])
                )
            })?;
            if v["ok"].as_bool() == Some(false) {
                return Err(CliError::Failed(format!(
                    "endpoint {name} cannot be reached"
                )));
            }
            Ok(())
        }
    }
}
