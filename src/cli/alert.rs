//! `sluice alert test NAME`: a test alert to a channel, through the daemon.

use clap::Subcommand;

use super::client::Client;
use super::error::CliError;
use super::output;
use crate::api::alerts::AlertTestAnswer;

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a document with "alert": "test" to the channel `[alerts.NAME]`
    /// now; exits non-zero when the channel did not take it.
    Test {
        /// The channel, e.g. ops.
        name: String,
    },
}

pub async fn run(client: &Client, command: AlertCommand) -> Result<(), CliError> {
    match command {
        AlertCommand::Test { name } => {
            let v = client
                .post(&["alerts", &name, "test"], serde_json::json!({}))
                .await?;
            let found: AlertTestAnswer = output::read(&v)?;
            output::answer(client.json, &v, |a: &AlertTestAnswer| {
                format!(
                    "alert channel {}: {}\n",
                    a.channel,
                    if a.ok { &a.detail } else { "NOT SENT" }
                )
            })?;
            if !found.ok {
                return Err(CliError::Failed(format!(
                    "alert channel {name} did not take the test alert: {}",
                    found.detail
                )));
            }
            Ok(())
        }
    }
}
