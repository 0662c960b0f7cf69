//! `sluice serve` and `sluice demo`: the daemon itself, not a client of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::error::CliError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Listen here instead of the file's `listen` (e.g. 0.0.0.0:7070).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Keep the data here instead of the file's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Listen here instead of 127.0.0.1:7070.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Keep the data here instead of ./sluice-demo.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Loads the configuration (every error at once, exit 2 when there are
/// any), lets the flags win over the file, and runs the daemon.
pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = crate::config::Config::load(&args.config, args.data_dir.as_deref())
        .map_err(|errors| CliError::Config(errors.to_string()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    crate::server::serve(config)
        .await
        .map_err(|e| CliError::Failed(format!("{e:#}")))
}

pub async fn demo(args: DemoArgs) -> Result<(), CliError> {
    crate::demo::run(args.listen, args.data_dir)
        .await
        .map_err(|e| CliError::Failed(format!("{e:#}")))
}
