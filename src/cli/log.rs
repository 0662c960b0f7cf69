//! `sluice log SITE [--level N] [--since TIME] [--limit N] [--follow]`: the
//! site log in seed 000's format, as the daemon formats it.

use clap::Args;
use futures_util::StreamExt;

use super::client::Client;
use super::error::CliError;
use super::output;
use super::sse::SseParser;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The site, e.g. LIVE.
    pub site: String,
    /// Only lines at this level or more important (a lower number; 4 is
    /// site and thread starts and stops).
    #[arg(long, value_name = "N")]
    pub level: Option<u8>,
    /// Only lines from this time on: RFC 3339 (2026-11-24T15:04:05Z) or
    /// milliseconds since the epoch. Not with --follow.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub since: Option<String>,
    /// At most this many lines, the newest (with --follow: how many recent
    /// lines to show first).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep printing lines as they are written, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
}

impl LogArgs {
    /// The query of `GET /sites/{site}/log`.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(level) = self.level {
            query.push(("level", level.to_string()));
        }
        if let Some(since) = &self.since {
            query.push(("since", since.clone()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        query
    }

    /// The query of `GET /sites/{site}/log/stream`.
    fn stream_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(level) = self.level {
            query.push(("level", level.to_string()));
        }
        if let Some(tail) = self.limit {
            query.push(("tail", tail.to_string()));
        }
        query
    }
}

pub async fn run(client: &Client, args: LogArgs) -> Result<(), CliError> {
    if args.follow {
        return follow(client, &args).await;
    }
    let text = client
        .get_text(&["sites", &args.site, "log"], &args.query())
        .await?;
    output::text_block(&text)
}

/// Prints each line of the log stream as it arrives, until Ctrl-C or the
/// daemon ends the stream.
async fn follow(client: &Client, args: &LogArgs) -> Result<(), CliError> {
    let response = client
        .stream(
            &["sites", &args.site, "log", "stream"],
            &args.stream_query(),
        )
        .await?;
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let chunk = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            chunk = body.next() => chunk,
        };
        match chunk {
            Some(Ok(bytes)) => {
                for line in parser.push(&bytes) {
                    output::line(line)?;
                }
            }
            Some(Err(e)) => {
                return Err(CliError::Failed(format!(
                    "the log stream from {} broke off: {e}",
                    client.server()
                )))
            }
            None => {
                eprintln!("(the daemon ended the log stream)");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: LogArgs,
    }

    fn args(argv: &[&str]) -> LogArgs {
        Wrap::try_parse_from(std::iter::once("log").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn queries_carry_only_what_was_given() {
        assert!(args(&["LIVE"]).query().is_empty());
        assert_eq!(
            args(&[
                "LIVE",
                "--level",
                "4",
                "--since",
                "2026-11-24T10:00:00+01:00",
                "--limit",
                "5"
            ])
            .query(),
            [
                ("level", "4".to_string()),
                ("since", "2026-11-24T10:00:00+01:00".to_string()),
                ("limit", "5".to_string())
            ]
        );
        assert_eq!(
            args(&["LIVE", "-f", "--level", "2", "--limit", "0"]).stream_query(),
            [("level", "2".to_string()), ("tail", "0".to_string())]
        );
    }
}
