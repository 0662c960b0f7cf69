//! `sluice token create|list|revoke`: the API's tokens.
//!
//! With `--config FILE` (or `SLUICE_CONFIG`) the command works on the
//! token store that configuration names, whether the daemon runs or not —
//! this is how the first admin token is made: `tokens.db` in its data
//! directory, or with `store = "postgres"` the database every node shares
//! (its URL from the variable `store_url_env` names, as for `sluice
//! serve`). Without it, it asks a running daemon (`--server`), which needs
//! an admin token.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{actor, Client};
use super::error::CliError;
use super::output::{self, or_blank, table};
use crate::api::auth::CreatedToken;
use crate::auth::{AuthError, Role, TokenInfo, Tokens};

#[derive(Debug, Args)]
pub struct Local {
    /// Work on the token store of this configuration (its data directory,
    /// or its PostgreSQL store) instead of asking a running daemon.
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory, when the daemon runs with --data-dir.
    #[arg(long, value_name = "DIR", requires = "config")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only this once: only its hash is kept).
    Create {
        /// viewer (reads), operator (also runs flows, pauses, resumes,
        /// tests endpoints) or admin (also starts and stops, reauthorizes,
        /// manages tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Who or what holds it, e.g. alice or grafana.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        local: Local,
    },
    /// Every token: name, role, when created and last used.
    List {
        #[command(flatten)]
        local: Local,
    },
    /// Revoke a token: refused from now on.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        local: Local,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("'{s}': use viewer, operator or admin"))
}

/// The token store the configuration names, with `--config`: its data
/// directory's `tokens.db`, or with `store = "postgres"` the database (the
/// URL from the variable `store_url_env` names; never printed).
async fn store(local: &Local) -> Result<Option<Tokens>, CliError> {
    let Some(file) = &local.config else {
        return Ok(None);
    };
    let config = crate::config::Config::load(file, local.data_dir.as_deref())
        .map_err(|errors| CliError::Config(errors.to_string()))?;
    match Tokens::open_configured(&config, None).await {
        Ok(tokens) => Ok(Some(tokens)),
        Err(e @ AuthError::NoStoreUrl(_)) => Err(CliError::Usage(e.to_string())),
        Err(e) => Err(failed(e)),
    }
}

fn failed(e: AuthError) -> CliError {
    // The store's errors carry no password; a URL in one is said without.
    CliError::Failed(crate::redact::urls_in(&e.to_string()))
}

pub async fn run(client: &Client, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { role, name, local } => {
            let token = match store(&local).await? {
                Some(tokens) => tokens.create(&name, role, &actor()).await.map_err(failed)?,
                None => {
                    let v = client
                        .post(&["tokens"], json!({ "name": name, "role": role }))
                        .await?;
                    output::read::<CreatedToken>(&v)?.token
                }
            };
            eprintln!("Token '{name}' ({role}) created. It is shown only now; keep it safe:");
            output::line(token)
        }
        TokenCommand::List { local } => {
            let (json, v) = match store(&local).await? {
                Some(tokens) => {
                    let list = tokens.list().await.map_err(failed)?;
                    let v =
                        serde_json::to_value(list).map_err(|e| CliError::Failed(e.to_string()))?;
                    (client.json, v)
                }
                None => (client.json, client.get(&["tokens"], &[]).await?),
            };
            output::answer(json, &v, |t: &Vec<TokenInfo>| list_table(t))
        }
        TokenCommand::Revoke { name, local } => {
            match store(&local).await? {
                Some(tokens) => tokens.revoke(&name, &actor()).await.map_err(failed)?,
                None => client.delete(&["tokens", &name]).await?,
            }
            output::line(format!("Token '{name}' revoked."))
        }
    }
}

fn list_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.as_str().to_string(),
                t.created_at.clone(),
                t.created_by.clone(),
                or_blank(&t.last_used_at).to_string(),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "CREATED", "BY", "LAST USED"], &rows)
}
