//! The `sluice` command line. `serve` and `demo` run the daemon; every
//! other subcommand talks to a running daemon over its REST API.
//!
//! Exit codes: 0 success; 1 the daemon refused (its message is printed);
//! 2 usage or configuration errors; 3 the daemon cannot be reached.

mod client;
mod endpoint;
mod flow;
mod integration;
mod log;
mod site;
mod status;
mod tx;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use client::{CliError, Client};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "An integration runtime: sites, integrations, flows and a durable ordered queue."
)]
pub struct Cli {
    /// The daemon's address.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the daemon's JSON answers instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run the demo: the daemon on the embedded demo configuration and a
    /// local HTTP target that prints what it receives.
    Demo(DemoArgs),
    /// Every site and integration at a glance.
    Status,
    /// Start, stop and list sites.
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Pause, resume, start, stop and show integrations.
    #[command(subcommand)]
    Integration(integration::IntegrationCommand),
    /// Run flows ('Send All', 'Send Changed').
    #[command(subcommand)]
    Flow(flow::FlowCommand),
    /// Show a site's log; --follow streams it.
    Log(log::LogArgs),
    /// List, retry, replay or ignore an integration's transactions.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// List endpoints and test them.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    pub config: PathBuf,
    /// Listen here instead of the file's `listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Keep data here instead of the file's `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Listen here instead of 127.0.0.1:7070.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Keep data here instead of ./sluice-demo.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.server, cli.token.clone(), cli.json);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => crate::demo::run(args.listen, args.data_dir)
            .await
            .map_err(|e| CliError::Failed(format!("{e:#}"))),
        Command::Status => status::run(&client).await,
        Command::Site(c) => site::run(&client, c).await,
        Command::Integration(c) => integration::run(&client, c).await,
        Command::Flow(c) => flow::run(&client, c).await,
        Command::Log(args) => log::run(&client, args).await,
        Command::Tx(c) => tx::run(&client, c).await,
        Command::Endpoint(c) => endpoint::run(&client, c).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = crate::config::Config::load(&args.config, args.data_dir.as_deref())
        .map_err(|e| CliError::Config(e.to_string()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    crate::engine::serve(config)
        .await
        .map_err(|e| CliError::Failed(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn subcommands_parse() {
        assert!(parse(&["status"]).is_ok());
        assert!(parse(&["site", "stop", "LIVE", "--reason", "stocktake"]).is_ok());
        assert!(
            parse(&["site", "stop", "LIVE"]).is_err(),
            "a stop needs --reason"
        );
        assert!(parse(&["integration", "resume", "LIVE", "orders", "--detach"]).is_ok());
        assert!(parse(&["flow", "run", "LIVE", "f", "--all"]).is_ok());
        assert!(
            parse(&["flow", "run", "LIVE", "f"]).is_err(),
            "--all or --changed"
        );
        assert!(parse(&["flow", "run", "LIVE", "f", "--all", "--changed"]).is_err());
        assert!(parse(&["log", "LIVE", "--follow", "--level", "4"]).is_ok());
        assert!(parse(&["tx", "list", "LIVE", "orders", "--state", "error"]).is_ok());
        assert!(parse(&["tx", "retry", "LIVE", "orders", "12"]).is_ok());
        assert!(parse(&["tx", "ignore", "LIVE", "orders", "x"]).is_err());
        assert!(parse(&["endpoint", "test", "LIVE", "crm"]).is_ok());
        assert!(parse(&["serve", "--config", "x.toml", "--listen", "127.0.0.1:0"]).is_ok());
        let cli = parse(&["--server", "http://h:1", "status"]).unwrap();
        assert_eq!(cli.server, "http://h:1");
    }
}
