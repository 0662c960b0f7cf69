//! A small SMTP server for the tests, so that CI needs nothing but cargo:
//! EHLO/HELO, STARTTLS or TLS from the first byte (with a certificate of a
//! test CA, [`super::tls`]), AUTH PLAIN checked against one user, MAIL,
//! RCPT, DATA (dot-stuffing undone), RSET, NOOP, QUIT. It records every
//! message it took and every login tried, and answers MAIL FROM as a test
//! scripts it (a 451 or a 550 first).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the server speaks TLS.
#[derive(Clone, Default)]
pub enum Security {
    /// Plain SMTP, no STARTTLS offered.
    #[default]
    Plain,
    /// Plain first, STARTTLS offered.
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (`smtps://`).
    Implicit(Arc<rustls::ServerConfig>),
}

#[derive(Clone, Default)]
pub struct SmtpOptions {
    pub security: Security,
    /// When set, AUTH PLAIN is offered and a message is taken only after a
    /// login as this (user, password).
    pub login: Option<(String, String)>,
}

/// One message the server took.
#[derive(Debug, Clone)]
pub struct Mail {
    /// MAIL FROM's address.
    pub from: String,
    /// Each RCPT TO's address.
    pub to: Vec<String>,
    /// The message as sent (headers, blank line, body), dot-stuffing
    /// undone, lines ending in CRLF.
    pub data: String,
    /// The login of the session, if any.
    pub login: Option<(String, String)>,
    /// Whether the session was encrypted when the message came.
    pub tls: bool,
}

impl Mail {
    /// The header `name`'s value, unfolded (encoded words as they are).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut fields: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match (line.starts_with([' ', '\t']), fields.last_mut()) {
                (true, Some(last)) => last.push_str(line),
                _ => fields.push(line.to_string()),
            }
        }
        fields.iter().find_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body, its transfer encoding undone, lines ending in `\n`.
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => quoted_printable(raw),
            "base64" => base64(&raw.replace("\r\n", "")).expect("a base64 body"),
            _ => raw.as_bytes().to_vec(),
        };
        String::from_utf8(bytes).unwrap().replace("\r\n", "\n")
    }
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("=XX in quoted-printable"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Standard base64, padded.
pub fn base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim().bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    /// Every AUTH PLAIN tried: (user, password).
    logins: Vec<(String, String)>,
    /// Answers to MAIL FROM before any other (e.g. `451 4.3.0 try later`).
    script: VecDeque<String>,
    /// While set, a login is answered with this (it may quote anything).
    refuse_logins: Option<String>,
}

/// A running SMTP server on 127.0.0.1.
#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    options: SmtpOptions,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl SmtpServer {
    pub async fn start(options: SmtpOptions) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (opts, st) = (options.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (opts, st) = (opts.clone(), st.clone());
                tokio::spawn(async move {
                    // A session that fails (a client that gave up, a
                    // handshake refused) is simply over.
                    session(stream, &opts, &st).await.ok();
                });
            }
        });
        SmtpServer {
            addr,
            options,
            state,
            task: Arc::new(task),
        }
    }

    /// `smtp://127.0.0.1:PORT`, or `smtps://` for TLS from the first byte.
    pub fn url(&self) -> String {
        match self.options.security {
            Security::Implicit(_) => format!("smtps://{}", self.addr),
            _ => format!("smtp://{}", self.addr),
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().unwrap().mails.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().mails.len()
    }

    /// Every login tried, in order.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().logins.clone()
    }

    /// The next MAIL FROMs are answered with these lines (`451 …`, `550 …`).
    pub fn script(&self, answers: &[&str]) {
        let mut state = self.state.lock().unwrap();
        state.script.extend(answers.iter().map(|a| a.to_string()));
    }

    /// Until `None`, every login is refused with this answer.
    pub fn refuse_logins(&self, answer: Option<&str>) {
        self.state.lock().unwrap().refuse_logins = answer.map(str::to_string);
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a conversation ended with.
enum End {
    Quit,
    /// STARTTLS answered: the same connection, to be encrypted.
    StartTls(Box<dyn Io>),
}

async fn session(
    stream: TcpStream,
    options: &SmtpOptions,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let (mut io, mut tls): (Box<dyn Io>, bool) = match &options.security {
        Security::Implicit(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            (Box::new(acceptor.accept(stream).await?), true)
        }
        _ => (Box::new(stream), false),
    };
    io.write_all(b"220 127.0.0.1 ESMTP sluice-test\r\n").await?;
    loop {
        match converse(io, tls, options, state).await? {
            End::Quit => return Ok(()),
            End::StartTls(plain) => {
                let Security::StartTls(config) = &options.security else {
                    unreachable!("STARTTLS is offered only then")
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                io = Box::new(acceptor.accept(plain).await?);
                tls = true;
            }
        }
    }
}

/// One conversation, until QUIT or STARTTLS (after which the client says
/// EHLO again, over TLS).
async fn converse(
    io: Box<dyn Io>,
    tls: bool,
    options: &SmtpOptions,
    state: &Mutex<State>,
) -> std::io::Result<End> {
    let mut io = BufReader::new(io);
    let mut login: Option<(String, String)> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    loop {
        let Some(line) = read_line(&mut io).await? else {
            return Ok(End::Quit);
        };
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut lines = vec!["250-127.0.0.1".to_string()];
            if matches!(options.security, Security::StartTls(_)) && !tls {
                lines.push("250-STARTTLS".into());
            }
            if options.login.is_some() {
                lines.push("250-AUTH PLAIN".into());
            }
            lines.push("250 8BITMIME".into());
            lines.join("\r\n")
        } else if upper.starts_with("HELO") {
            "250 127.0.0.1".into()
        } else if upper == "STARTTLS" {
            if tls || !matches!(options.security, Security::StartTls(_)) {
                "502 5.5.1 not offered".into()
            } else {
                io.write_all(b"220 2.0.0 go ahead\r\n").await?;
                return Ok(End::StartTls(io.into_inner()));
            }
        } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN") {
            let mut encoded = line[line.len() - rest.len()..].trim().to_string();
            if encoded.is_empty() {
                io.write_all(b"334 \r\n").await?;
                encoded = read_line(&mut io).await?.unwrap_or_default();
            }
            let decoded = base64(&encoded).map(|b| String::from_utf8_lossy(&b).into_owned());
            let parts: Vec<String> = decoded
                .unwrap_or_default()
                .split('\0')
                .map(str::to_string)
                .collect();
            let tried = match parts.as_slice() {
                [_, user, password] => (user.clone(), password.clone()),
                _ => (String::new(), String::new()),
            };
            let mut st = state.lock().unwrap();
            st.logins.push(tried.clone());
            if let Some(answer) = st.refuse_logins.clone() {
                answer
            } else if options.login.as_ref() == Some(&tried) {
                login = Some(tried);
                "235 2.7.0 authenticated".into()
            } else {
                "535 5.7.8 authentication credentials invalid".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            let scripted = state.lock().unwrap().script.pop_front();
            if let Some(answer) = scripted {
                answer
            } else if options.login.is_some() && login.is_none() {
                "530 5.7.0 authentication required".into()
            } else {
                from = Some(address(&line["MAIL FROM:".len()..]));
                to.clear();
                "250 2.1.0 ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                "503 5.5.1 MAIL first".into()
            } else {
                to.push(address(&line["RCPT TO:".len()..]));
                "250 2.1.5 ok".into()
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                "503 5.5.1 MAIL and RCPT first".into()
            } else {
                io.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    let Some(line) = read_line(&mut io).await? else {
                        return Ok(End::Quit);
                    };
                    if line == "." {
                        break;
                    }
                    let line = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(line);
                    data.push_str("\r\n");
                }
                state.lock().unwrap().mails.push(Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                    login: login.clone(),
                    tls,
                });
                "250 2.0.0 queued".into()
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            io.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(End::Quit);
        } else {
            "502 5.5.2 not implemented".into()
        };
        io.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// `<a@b> SIZE=…` → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => arg[start + 1..end].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// One line without its CRLF; `None` at the end of the stream.
async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}
