//! The HTTP client the subcommands share: one place that builds URLs under
//! `/api/v1`, sends the actor and token, and turns every answer that is not
//! a success into a [`CliError`] with its exit code.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;

use super::error::CliError;
use crate::api::openapi::ErrorBody;

/// How long to wait for a connection before calling the daemon unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request (not a stream) may take. Generous: a pause returns only
/// once no send will start any more, a reload lets deliveries finish.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a body that is not JSON an error message quotes.
const QUOTE_MAX: usize = 300;

/// Parses `--server`: an absolute `http` or `https` URL. A bad one is a usage
/// error (exit 2), found before anything is sent.
pub fn parse_server(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("expected an http:// or https:// URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// The actor the daemon records in its audit trail: `$USER@cli`.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "cli".into());
    format!("{user}@cli")
}

pub struct Client {
    base: Url,
    token: Option<String>,
    /// `--json`: print the daemon's answers instead of text.
    pub json: bool,
    http: reqwest::Client,
    actor: String,
}

impl Client {
    /// A client of the daemon at `base`. An `https://` daemon's certificate
    /// is verified against the platform's roots plus `ca_file` (its private
    /// certificate authority, `--ca-file`).
    pub fn new(
        base: Url,
        token: Option<String>,
        json: bool,
        ca_file: Option<&Path>,
    ) -> Result<Client, CliError> {
        let tls = crate::tls::client_config(crate::tls::ClientFiles {
            ca_file,
            identity: None,
        })
        .map_err(|e| CliError::Usage(format!("--ca-file: {}", e.message)))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sluice-cli/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| CliError::Failed(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            base,
            token: token.filter(|t| !t.is_empty()),
            json,
            http,
            actor: actor(),
        })
    }

    /// The server as the operator wrote it (without any user-info), for
    /// messages.
    pub fn server(&self) -> String {
        crate::redact::url(self.base.as_str())
            .trim_end_matches('/')
            .to_string()
    }

    /// `{server}/api/v1/{segments…}`, each segment percent-encoded, so a
    /// site or flow name can hold any character.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self
            .http
            .request(method, self.url(segments))
            .header("x-sluice-actor", &self.actor);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; a success status is the answer, anything else the
    /// daemon's refusal.
    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let mut message = error_message(&body, status.canonical_reason());
        if status.as_u16() == 401 {
            message.push_str(if self.token.is_some() {
                "; check --token / SLUICE_TOKEN"
            } else {
                "; pass --token or set SLUICE_TOKEN"
            });
        }
        Err(CliError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    /// What went wrong below HTTP: no daemon there, or none we trust
    /// (exit 3), or no answer in time.
    fn transport(&self, e: reqwest::Error) -> CliError {
        if let Some(failure) = crate::tls::failure(&e) {
            return CliError::Untrusted {
                server: self.server(),
                reason: failure.to_string(),
            };
        }
        let cause = root_cause(&e);
        if e.is_connect() || (e.is_request() && !e.is_timeout()) {
            CliError::Unreachable {
                server: self.server(),
                cause,
            }
        } else if e.is_timeout() {
            CliError::Failed(format!(
                "sluice at {} did not answer within {}s",
                self.server(),
                REQUEST_TIMEOUT.as_secs()
            ))
        } else {
            CliError::Failed(format!(
                "request to sluice at {} failed: {cause}",
                self.server()
            ))
        }
    }

    async fn body(&self, response: Response) -> Result<String, CliError> {
        response
            .text()
            .await
            .map_err(|e| CliError::Failed(format!("cannot read the answer: {}", root_cause(&e))))
    }

    async fn json_of(&self, response: Response) -> Result<Value, CliError> {
        let text = self.body(response).await?;
        serde_json::from_str(&text).map_err(|e| {
            CliError::Failed(format!(
                "unexpected answer from {} ({e}): {}",
                self.server(),
                quote(&text)
            ))
        })
    }

    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let request = self
            .request(Method::GET, segments)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.json_of(response).await
    }

    pub async fn get_text(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<String, CliError> {
        let request = self
            .request(Method::GET, segments)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.body(response).await
    }

    pub async fn post(&self, segments: &[&str], body: Value) -> Result<Value, CliError> {
        let request = self
            .request(Method::POST, segments)
            .json(&body)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.json_of(response).await
    }

    pub async fn put(&self, segments: &[&str], body: Value) -> Result<Value, CliError> {
        let request = self
            .request(Method::PUT, segments)
            .json(&body)
            .timeout(REQUEST_TIMEOUT);
        let response = self.send(request).await?;
        self.json_of(response).await
    }

    /// A DELETE; its answer has no body (204).
    pub async fn delete(&self, segments: &[&str]) -> Result<(), CliError> {
        let request = self
            .request(Method::DELETE, segments)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await.map(drop)
    }

    /// A GET whose answer is read as it comes (server-sent events); no
    /// overall time limit.
    pub async fn stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Response, CliError> {
        let request = self
            .request(Method::GET, segments)
            .query(query)
            .header("accept", "text/event-stream");
        self.send(request).await
    }
}

/// The message of an error answer: its JSON `error`, else the body as text,
/// else the status's reason phrase.
pub fn error_message(body: &str, reason: Option<&str>) -> String {
    if let Ok(answer) = serde_json::from_str::<ErrorBody>(body) {
        return answer.error;
    }
    let text = quote(body);
    if text.is_empty() {
        reason.unwrap_or("no message").to_string()
    } else {
        text
    }
}

/// A body quoted in a message: one line, at most [`QUOTE_MAX`] characters.
fn quote(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    super::output::truncate(&one_line, QUOTE_MAX)
}

/// The innermost cause of an error: "Connection refused" rather than
/// "error sending request for url …".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(parse_server(server).unwrap(), None, false, None).unwrap()
    }

    #[test]
    fn servers_must_be_http_urls() {
        assert!(parse_server("http://127.0.0.1:7070").is_ok());
        assert!(parse_server("https://sluice.example.com/").is_ok());
        assert!(parse_server("127.0.0.1:7070").is_err());
        assert!(parse_server("ftp://h/").is_err());
        assert!(parse_server("mailto:a@b").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = client("http://127.0.0.1:7070");
        assert_eq!(
            c.url(&["sites", "LIVE", "integrations", "a b/c?"]).as_str(),
            "http://127.0.0.1:7070/api/v1/sites/LIVE/integrations/a%20b%2Fc%3F"
        );
        // Behind a proxy under a path prefix, with or without a final slash.
        for server in ["http://h/sluice", "http://h/sluice/"] {
            assert_eq!(
                client(server).url(&["sites"]).as_str(),
                "http://h/sluice/api/v1/sites"
            );
        }
        assert_eq!(client("http://h:1/").server(), "http://h:1");
        assert_eq!(client("http://u:S3cret@h:1/").server(), "http://***@h:1");
    }

    #[test]
    fn error_messages_come_from_json_or_text() {
        assert_eq!(
            error_message(r#"{"error":"site LIVE is stopped"}"#, Some("Conflict")),
            "site LIVE is stopped"
        );
        assert_eq!(
            error_message(
                "<html>\n  <b>Bad   Gateway</b>\n</html>",
                Some("Bad Gateway")
            ),
            "<html> <b>Bad Gateway</b> </html>"
        );
        assert_eq!(error_message("", Some("Not Found")), "Not Found");
        assert_eq!(error_message(r#"{"other":1}"#, None), r#"{"other":1}"#);
        assert_eq!(
            error_message(&"x".repeat(1000), None).chars().count(),
            QUOTE_MAX
        );
    }

    #[test]
    fn the_actor_names_the_user() {
        assert!(actor().ends_with("@cli"));
    }
}
