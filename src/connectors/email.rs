//! Email: the alert channel of `kind = "email"` — its settings, their
//! checks, and the sender (SMTP, by `lettre`).
//!
//! Not an endpoint kind (no flow delivers records to a mailbox), but built
//! the way they are: settings ([`EmailConfig`]), their problems each
//! naming its key ([`EmailConfig::validate`]), the thing that sends
//! ([`EmailSender`]), failures as [`DeliveryError`]s with their class. What
//! it shares with the endpoints: the TLS keys (`ca_file`, `client_cert`,
//! `client_key`, read as [`tls::ClientKeys`] reads them) and the password
//! from the environment ([`super::password_from_env`]).
//!
//! # Invariants
//! - The password is read from `password_env` when an email is sent and
//!   goes nowhere else: no URL carries it (user-info in `smtp_url` is
//!   refused), and a failure's message, which may quote the server, is
//!   cleaned of it before anyone sees it.
//! - `smtp://` is plain, upgraded with STARTTLS whenever the server offers
//!   it (an upgrade that fails fails the email: never a silent fall back
//!   to plain); `smtps://` is TLS from the first byte. Certificates are
//!   verified as everywhere in sluice: the platform's roots plus `ca_file`.
//! - Every failure is an `Err`, so the outbox keeps the alert and sends it
//!   again; the class tells one that may pass by itself (4xx, no
//!   connection, no answer) from one that needs a person (5xx refusals,
//!   credentials, TLS). An alert is never dropped for either.
//! - One email is one SMTP session, bounded by `timeout` as a whole. The
//!   same alert sent again carries the same `Message-ID` (made from its
//!   key), so a mail system may tell a repeat (a session cut after the
//!   server took the message) from a new alert.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{DeliveryError, FailureClass, KeyProblem};
use crate::model::alert::Document;
use crate::{redact, tls};

/// How long one email (connection, TLS, login, the message) may take
/// unless `timeout` says otherwise: well within the while an alert being
/// sent is claimed for.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The keys of an email channel, beside those of every alert channel.
pub const KEYS: [&str; 9] = [
    "smtp_url",
    "username",
    "password_env",
    "from",
    "to",
    "ca_file",
    "client_cert",
    "client_key",
    "timeout",
];

/// `[alerts.NAME]` with `kind = "email"`, as read (paths as written,
/// relative to the configuration file's folder).
#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    /// `smtp://host:port` (STARTTLS when offered) or `smtps://host:port`
    /// (implicit TLS); no user-info.
    pub smtp_url: String,
    /// With `password_env`: the login (AUTH) at the server.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The sender, `sluice@example.com` or `Sluice <sluice@example.com>`.
    pub from: String,
    /// At least one recipient.
    pub to: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// One email as a whole; above zero.
    pub timeout: Duration,
}

/// Where `smtp_url` points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
    /// `smtps://`: TLS from the first byte.
    implicit_tls: bool,
}

/// `smtp_url` read, or why it cannot be.
fn server(smtp_url: &str) -> Result<Server, String> {
    let url = reqwest::Url::parse(smtp_url)
        .map_err(|e| format!("'{}' is not a URL: {e}", redact::url(smtp_url)))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "'{}' carries a user: give username, and the name of an environment variable \
             holding the password in password_env",
            redact::url(smtp_url)
        ));
    }
    let (implicit_tls, default_port) = match url.scheme() {
        "smtp" => (false, 25),
        "smtps" => (true, 465),
        other => {
            return Err(format!(
                "scheme '{other}' is not supported (use smtp:// — STARTTLS when the server \
                 offers it — or smtps://)"
            ))
        }
    };
    // An IPv6 address without its brackets, as a socket address takes it.
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("'{smtp_url}' names no host"))?
        .to_string();
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{smtp_url}': only a host and a port, e.g. smtp://mail.example.com:587"
        ));
    }
    Ok(Server {
        host,
        port: url.port().unwrap_or(default_port),
        implicit_tls,
    })
}

fn mailbox(text: &str) -> Result<Mailbox, String> {
    Mailbox::from_str(text.trim()).map_err(|e| {
        format!(
            "'{text}' is not an email address (e.g. ops@example.com or Ops <ops@example.com>): {e}"
        )
    })
}

impl EmailConfig {
    fn tls_keys(&self) -> tls::ClientKeys<'_> {
        tls::ClientKeys {
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
        }
    }

    /// Problems with the values, each naming its key. The TLS files are
    /// read (relative to `base`), so that one that cannot be used stops
    /// the daemon at its start rather than failing every alert.
    pub fn validate(&self, base: &Path) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let tls = match server(&self.smtp_url) {
            // STARTTLS uses the TLS keys as much as smtps:// does.
            Ok(_) => Some(true),
            Err(e) => {
                problems.push(("smtp_url".into(), e));
                None
            }
        };
        problems.extend(self.tls_keys().validate(tls, "smtp:// or smtps://", base));
        match (&self.username, &self.password_env) {
            (Some(_), None) => problems.push((
                "password_env".into(),
                "missing: username needs the name of the environment variable holding its \
                 password"
                    .into(),
            )),
            (None, Some(_)) => problems.push((
                "username".into(),
                "missing: password_env needs the user it is the password of".into(),
            )),
            _ => {}
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push((
                    "password_env".into(),
                    format!("'{var}' is not the name of an environment variable (A-Z, 0-9, _)"),
                ));
            }
        }
        if let Err(e) = mailbox(&self.from) {
            problems.push(("from".into(), e));
        }
        if self.to.is_empty() {
            problems.push((
                "to".into(),
                "names no one: give at least one address".into(),
            ));
        }
        for to in &self.to {
            if let Err(e) = mailbox(to) {
                problems.push(("to".into(), e));
            }
        }
        problems
    }
}

fn error(class: FailureClass, message: impl Into<String>) -> DeliveryError {
    DeliveryError {
        class,
        message: message.into(),
        retry_after: None,
    }
}

/// An email channel, ready to send.
pub struct EmailSender {
    config: EmailConfig,
    /// Everything that does not change between emails, or why the
    /// settings could not be used (only if a file changed since they were
    /// checked): every send answers that then.
    ready: Result<Ready, DeliveryError>,
}

struct Ready {
    server: Server,
    tls: TlsParameters,
    from: Mailbox,
    to: Vec<Mailbox>,
    hello: ClientId,
}

impl EmailSender {
    /// `base`: the configuration file's folder; `hello`: the name this
    /// host gives itself to the server (EHLO).
    pub fn new(config: &EmailConfig, base: &Path, hello: &str) -> EmailSender {
        EmailSender {
            config: config.clone(),
            ready: Ready::new(config, base, hello),
        }
    }

    /// What the email is sent to, as a person reads it.
    fn what(&self) -> String {
        format!("mail server {}", redact::url(&self.config.smtp_url))
    }

    /// Sends `document` as one email; `key` is the alert's idempotency key
    /// (its `Message-ID`).
    pub async fn send(&self, key: &str, document: &Document) -> Result<(), DeliveryError> {
        let ready = self.ready.as_ref().map_err(Clone::clone)?;
        let password = super::password_from_env(self.config.password_env.as_deref())?;
        let hide = |message: String| match password.as_deref() {
            Some(p) if !p.is_empty() => message.replace(p, "***"),
            _ => message,
        };
        let mut message = Message::builder()
            .from(ready.from.clone())
            .subject(document.subject())
            .message_id(Some(message_id(key, &ready.from)))
            .header(ContentType::TEXT_PLAIN);
        for to in &ready.to {
            message = message.to(to.clone());
        }
        let message = message.body(document.plain_text()).map_err(|e| {
            error(
                FailureClass::Rejected,
                format!("the email cannot be made: {e}"),
            )
        })?;
        let tls = match ready.server.implicit_tls {
            true => Tls::Wrapper(ready.tls.clone()),
            false => Tls::Opportunistic(ready.tls.clone()),
        };
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ready.server.host.as_str())
                .port(ready.server.port)
                .tls(tls)
                .hello_name(ready.hello.clone())
                .timeout(Some(self.config.timeout));
        if let (Some(user), Some(password)) = (&self.config.username, &password) {
            transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let transport = transport.build();
        let what = self.what();
        match tokio::time::timeout(self.config.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let mut failure = failure(&what, self.config.username.as_deref(), &e);
                failure.message = hide(failure.message);
                Err(failure)
            }
            Err(_) => Err(error(
                FailureClass::NoAnswer,
                format!(
                    "{what}: the email was not through within {}s (timeout)",
                    self.config.timeout.as_secs_f64()
                ),
            )),
        }
    }
}

impl Ready {
    fn new(config: &EmailConfig, base: &Path, hello: &str) -> Result<Ready, DeliveryError> {
        let setup = |m: String| error(FailureClass::Untrusted, m);
        let server = server(&config.smtp_url).map_err(setup)?;
        let from = mailbox(&config.from).map_err(setup)?;
        let to = config
            .to
            .iter()
            .map(|t| mailbox(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let read = |key: &'static str, path: &Path| {
            let path = tls::resolve(path, base);
            std::fs::read(&path)
                .map_err(|e| setup(format!("{key}: cannot read {}: {e}", path.display())))
        };
        // The platform's roots (what `tls::ClientKeys` trusts too) plus
        // `ca_file`; rustls with ring, as everywhere.
        let mut params = TlsParameters::builder(server.host.clone())
            .certificate_store(CertificateStore::Default);
        if let Some(ca) = &config.ca_file {
            let pem = read("ca_file", ca)?;
            let certs = Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("ca_file: {}: {e}", ca.display())))?;
            params = params.add_root_certificate(certs);
        }
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            let identity =
                Identity::from_pem(&read("client_cert", cert)?, &read("client_key", key)?)
                    .map_err(|e| setup(format!("client_key: {}: {e}", key.display())))?;
            params = params.identify_with(identity);
        }
        let tls = params
            .build_rustls()
            .map_err(|e| setup(format!("TLS cannot be set up: {e}")))?;
        Ok(Ready {
            server,
            tls,
            from,
            to,
            hello: ClientId::Domain(hello.to_string()),
        })
    }
}

/// `<{key}@{the sender's domain}>`, the key's separators made dots.
fn message_id(key: &str, from: &Mailbox) -> String {
    let left: String = key
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '.',
            },
        )
        .collect();
    format!("<{left}@{}>", from.email.domain())
}

/// What an SMTP failure means for sluice, in the server's words.
fn failure(
    what: &str,
    username: Option<&str>,
    e: &lettre::transport::smtp::Error,
) -> DeliveryError {
    if let Some(failure) = tls::failure(e) {
        let hint = failure.hint();
        return error(FailureClass::Untrusted, format!("{what}: {failure}{hint}"));
    }
    if let Some(code) = e.status() {
        // The server's own words, when it gave any.
        let answer = std::error::Error::source(e)
            .map(|s| s.to_string())
            .filter(|s| !s.trim().is_empty())
            .map(|t| format!(" {t}"))
            .unwrap_or_default();
        let code = code.to_string();
        return match code.as_bytes().first() {
            Some(b'4') => error(
                FailureClass::Intermittent,
                format!("{what} put the email off: it answered {code}{answer}"),
            ),
            // 530 authentication required, 534 mechanism too weak, 535
            // credentials refused.
            _ if matches!(code.as_str(), "530" | "534" | "535") => error(
                FailureClass::Unauthorized,
                format!(
                    "{what} refused the login{} ({code}{answer}): check username and the \
                     password in password_env (an alert stays queued meanwhile)",
                    username.map(|u| format!(" of {u}")).unwrap_or_default()
                ),
            ),
            _ => error(
                FailureClass::Rejected,
                format!(
                    "{what} refused the email for good ({code}{answer}): a person must look \
                     at from, to and the server's settings; an alert stays queued meanwhile \
                     and is sent again, not lost"
                ),
            ),
        };
    }
    if e.is_timeout() {
        return error(FailureClass::NoAnswer, format!("{what}: no answer ({e})"));
    }
    if e.is_client() {
        // The server does not offer what we need (a login mechanism, …).
        return error(FailureClass::Rejected, format!("{what}: {e}"));
    }
    match io_error(e) {
        // Cut off, or silent, once connected.
        Some(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::TimedOut
            ) =>
        {
            error(FailureClass::NoAnswer, format!("{what}: no answer: {io}"))
        }
        // Refused, unreachable, a name that does not resolve.
        Some(io) => error(
            FailureClass::Unreachable,
            format!("{what}: no connection: {io}"),
        ),
        // An answer that is not SMTP.
        None if e.is_response() => error(FailureClass::Intermittent, format!("{what}: {e}")),
        None => error(FailureClass::Unreachable, format!("{what}: {e}")),
    }
}

/// The I/O error in `e`'s chain of causes, if any.
fn io_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e std::io::Error> {
    let mut next = Some(e);
    while let Some(link) = next {
        if let Some(io) = link.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = link.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(smtp_url: &str) -> EmailConfig {
        EmailConfig {
            smtp_url: smtp_url.into(),
            username: None,
            password_env: None,
            from: "sluice@example.com".into(),
            to: vec!["ops@example.com".into()],
            ca_file: None,
            client_cert: None,
            client_key: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn keys(problems: &[KeyProblem]) -> Vec<&str> {
        problems.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn smtp_urls_say_host_port_and_tls() {
        assert_eq!(
            server("smtp://127.0.0.1:2525"),
            Ok(Server {
                host: "127.0.0.1".into(),
                port: 2525,
                implicit_tls: false
            })
        );
        assert_eq!(
            server("smtps://mail.example.com").unwrap(),
            Server {
                host: "mail.example.com".into(),
                port: 465,
                implicit_tls: true
            }
        );
        assert_eq!(server("smtp://[::1]:25").unwrap().host, "::1");
        assert_eq!(server("smtp://mail.example.com/").unwrap().port, 25);
        for (url, part) in [
            ("http://mail.example.com", "scheme 'http'"),
            ("smtp://mail.example.com/inbox", "only a host and a port"),
            ("mail.example.com:25", "not supported"),
            ("smtp://", "names no host"),
            ("smtp://a b", "not a URL"),
        ] {
            let e = server(url).unwrap_err();
            assert!(e.contains(part), "{url}: {e}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_repeated() {
        let problems = config("smtp://ann:S3cret@mail.example.com:587").validate(Path::new("/"));
        assert_eq!(keys(&problems), ["smtp_url"]);
        let message = &problems[0].1;
        assert!(message.contains("username") && message.contains("password_env"));
        assert!(!message.contains("S3cret"), "{message}");
    }

    #[test]
    fn each_wrong_value_names_its_key() {
        let mut c = config("smtp://mail.example.com:587");
        assert_eq!(c.validate(Path::new("/")), []);
        c.from = "sluice at example".into();
        c.to = vec!["ops@example.com".into(), "nobody".into()];
        c.username = Some("ann".into());
        assert_eq!(
            keys(&c.validate(Path::new("/"))),
            ["password_env", "from", "to"]
        );
        c.to.clear();
        c.from = "Sluice <sluice@example.com>".into();
        c.username = None;
        c.password_env = Some("SMTP PASSWORD".into());
        assert_eq!(
            keys(&c.validate(Path::new("/"))),
            ["username", "password_env", "to"]
        );
        let mut c = config("smtp://mail.example.com");
        c.ca_file = Some("/nowhere/ca.pem".into());
        let problems = c.validate(Path::new("/"));
        assert_eq!(keys(&problems), ["ca_file"]);
        assert!(problems[0].1.contains("cannot read"), "{problems:?}");
    }

    #[test]
    fn a_message_id_is_the_alert_key_at_the_senders_domain() {
        let from = mailbox("Sluice <sluice@example.com>").unwrap();
        assert_eq!(
            message_id("sluice-alert:LIVE:12", &from),
            "<sluice-alert.LIVE.12@example.com>"
        );
    }
}
