//! `sluice log SITE [--follow]`.

use clap::Args;
use futures_util::StreamExt;

use super::client::{seg, CliError, Client};

#[derive(Debug, Args)]
pub struct LogArgs {
    pub site: String,
    /// Only lines at this level or more important (lower number).
    #[arg(long)]
    pub level: Option<u8>,
    /// Only lines from this time on (RFC 3339, or milliseconds since the epoch).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many lines (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing lines as they are written.
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn run(client: &Client, args: LogArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(l) = args.level {
        query.push(format!("level={l}"));
    }
    if args.follow {
        if let Some(n) = args.limit {
            query.push(format!("tail={n}"));
        }
        let response = client
            .stream(&format!(
                "/sites/{}/log/stream?{}",
                seg(&args.site),
                query.join("&")
            ))
            .await?;
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| CliError::Failed(format!("the log stream broke: {e}")))?;
            for line in parser.push(&chunk) {
                println!("{line}");
            }
        }
        return Ok(());
    }
    if let Some(s) = &args.since {
        query.push(format!("since={}", seg(s)));
    }
    if let Some(n) = args.limit {
        query.push(format!("limit={n}"));
    }
    let text = client
        .get_text(&format!(
            "/sites/{}/log?{}",
            seg(&args.site),
            query.join("&")
        ))
        .await?;
    print!("{text}");
    Ok(())
}

/// Reads server-sent events from chunks that may split lines and events
/// anywhere; yields each event's data (lines joined with '\n').
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if line.starts_with(':') {
                // A comment (keep-alive).
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p
            .push(b"id: 1\ndata: 24-Nov-2026 10:00:00 (4) : Site")
            .is_empty());
        assert_eq!(
            p.push(b" A started\n\n: keep-alive\n\ndata: two\r\n"),
            ["24-Nov-2026 10:00:00 (4) : Site A started"]
        );
        assert_eq!(p.push(b"data: lines\n\n"), ["two\nlines"]);
    }
}
