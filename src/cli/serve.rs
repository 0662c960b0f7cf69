//! `sluice serve` and `sluice demo`: the daemon itself, not a client of it.
//! The command line parses their arguments; the server runs them (`main`
//! hands them over: the CLI sits below the server and does not import it).

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
    /// This node's name in a cluster (store = "postgres"); by default the
    /// host's name. Each node of a cluster needs a name of its own.
    #[arg(long, value_name = "NAME", value_parser = parse_node)]
    pub node: Option<String>,
}

/// A node's name: letters, digits, `.`, `-` and `_`, 1 to 64 of them.
fn parse_node(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}': a node's name is 1 to 64 letters, digits, '.', '-' or '_'"
        ))
    }
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

impl ServeArgs {
    /// The configuration file, loaded and checked (every error at once:
    /// exit 2 when there are any), with the flags winning over the file.
    pub fn config(&self) -> Result<crate::config::Config, CliError> {
        let mut config = crate::config::Config::load(&self.config, self.data_dir.as_deref())
            .map_err(|errors| CliError::Config(errors.to_string()))?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(node) = &self.node {
            config.node = node.clone();
        }
        Ok(config)
    }
}
