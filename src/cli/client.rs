//! The HTTP client the subcommands share, and their errors.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a subcommand failed; each has its exit code.
#[derive(Debug)]
pub enum CliError {
    /// The daemon answered with an error (exit 1).
    Refused { status: u16, message: String },
    /// Something else went wrong (exit 1).
    Failed(String),
    /// Invalid configuration (exit 2).
    Config(String),
    /// The daemon cannot be reached (exit 3).
    Unreachable { server: String, detail: String },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::Failed(_) => 1,
            CliError::Config(_) => 2,
            CliError::Unreachable { .. } => 3,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Refused { status, message } => write!(f, "{message} (HTTP {status})"),
            CliError::Failed(m) => write!(f, "{m}"),
            CliError::Config(m) => write!(f, "invalid configuration\n{m}"),
            CliError::Unreachable { server, detail } => write!(
                f,
                "cannot reach sluice at {server}: is 'sluice serve' running? ({detail})"
            ),
        }
    }
}

pub struct Client {
    server: String,
    token: Option<String>,
    pub json: bool,
    http: reqwest::Client,
    actor: String,
}

impl Client {
    pub fn new(server: &str, token: Option<String>, json: bool) -> Client {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "cli".into());
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            json,
            http: reqwest::Client::new(),
            actor: format!("{user}@cli"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, self.url(path))
            .header("x-sluice-actor", &self.actor);
        if let Some(token) = &self.token {
            r = r.bearer_auth(token);
        }
        r
    }

    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        Err(CliError::Refused { status, message })
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable {
                server: self.server.clone(),
                detail: e.to_string(),
            }
        } else {
            CliError::Failed(format!("request to {} failed: {e}", self.server))
        }
    }

    async fn json_of<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, CliError> {
        let text = response
            .text()
            .await
            .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| CliError::Failed(format!("unexpected answer ({e}): {text}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let r = self.send(self.request(reqwest::Method::GET, path)).await?;
        self.json_of(r).await
    }

    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let r = self.send(self.request(reqwest::Method::GET, path)).await?;
        r.text()
            .await
            .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        let r = self
            .send(self.request(reqwest::Method::POST, path).json(&body))
            .await?;
        self.json_of(r).await
    }

    /// A streaming GET (server-sent events).
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        self.send(
            self.request(reqwest::Method::GET, path)
                .header("accept", "text/event-stream"),
        )
        .await
    }

    /// Prints `value` as JSON when `--json` was given; returns whether it did.
    pub fn print_json(&self, value: &Value) -> bool {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        }
        self.json
    }
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Formats rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The table rows of a JSON array, one per element.
pub fn rows(v: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.as_array().into_iter().flatten().map(row).collect()
}

/// A JSON value as short text ("" for null).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("LIVE"), "LIVE");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
