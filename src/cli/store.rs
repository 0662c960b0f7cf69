//! `sluice store copy`: moves a stopped site's data from its SQLite file
//! into the PostgreSQL store.
//!
//! It works on the files and the database directly, not through a daemon:
//! the daemon must not run on the site's data directory meanwhile (the copy
//! takes its lock), and the site must have been stopped (`sluice site stop`)
//! before that daemon ended. The database's URL is read from the variable
//! the configuration names in `store_url_env`, else `SLUICE_STORE_URL`, so
//! that the same variable serves the daemon once the configuration says
//! `store = "postgres"`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::client::actor;
use super::error::CliError;
use super::output;
use crate::config::{Config, StoreConfig, DEFAULT_STORE_URL_ENV};
use crate::store::copy::{self, Source};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped site's SQLite data (queue, sequences, states, holds,
    /// checkpoints, runs, links, log, audit) into the PostgreSQL store, in
    /// one transaction. Refused if PostgreSQL holds any row of the site.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The configuration: the site's data file and the store's URL
    /// variable.
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// The site to copy; it must be stopped.
    #[arg(long, value_name = "SITE")]
    pub site: String,
    /// The store to copy into.
    #[arg(long, value_enum, value_name = "STORE")]
    pub to: Target,
    /// The data directory, when the daemon runs with --data-dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The stores a site can be copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Postgres,
}

pub async fn run(command: StoreCommand, json: bool) -> Result<(), CliError> {
    match command {
        StoreCommand::Copy(args) => copy_site(args, json).await,
    }
}

async fn copy_site(args: CopyArgs, json: bool) -> Result<(), CliError> {
    let Target::Postgres = args.to;
    let config = Config::load(&args.config, args.data_dir.as_deref())
        .map_err(|errors| CliError::Config(errors.to_string()))?;
    let site = config.site(&args.site).ok_or_else(|| {
        CliError::Failed(format!(
            "no site '{}' in {}",
            args.site,
            args.config.display()
        ))
    })?;
    let var = match &config.store {
        StoreConfig::Postgres { url_env } => url_env.as_str(),
        StoreConfig::Sqlite => DEFAULT_STORE_URL_ENV,
    };
    let url = std::env::var(var).map_err(|_| {
        CliError::Usage(format!(
            "the environment variable {var} is not set: it holds the PostgreSQL store's URL, \
             postgres://USER:PASSWORD@HOST:5432/DB (store_url_env names another variable)"
        ))
    })?;
    let source = Source {
        site: &site.name,
        data_dir: &config.data_dir,
        data_file: &site.data_file,
    };
    let copied = copy::to_postgres(source, &url, &actor())
        .await
        .map_err(|e| CliError::Failed(crate::redact::urls_in(&e.to_string())))?;
    match json {
        true => output::json(
            &serde_json::to_value(&copied).map_err(|e| CliError::Failed(e.to_string()))?,
        ),
        false => output::line(copied),
    }
}
