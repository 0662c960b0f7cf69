//! TLS both ways, with rustls and its `ring` provider: the client side of
//! `https://` endpoints and of the CLI, and the daemon's own HTTPS.
//!
//! # Invariants
//! - Certificates are always verified: a client trusts the platform's roots
//!   plus the certificates of a `ca_file`, and there is no setting that
//!   turns verification off.
//! - Every problem with a PEM file names the configuration key that points
//!   to it ([`SetupError::key`]), so a configuration error reads
//!   `file:line: key: message`.
//! - [`failure`] is the one place that tells a TLS failure (a certificate
//!   not trusted, ours refused) from any other transport error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, RootCertStore};

/// Why TLS settings cannot be used: the key that names the file, and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> SetupError {
    SetupError {
        key,
        message: message.into(),
    }
}

/// The crypto provider of every TLS configuration sluice builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))
}

/// The certificates of the PEM file `path` (at least one).
pub fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(key, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(problem(
            key,
            format!(
                "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key of the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no private key (-----BEGIN PRIVATE KEY-----)".to_string()
            }
            e => format!("is not a valid PEM private key: {e}"),
        };
        problem(key, format!("{} {why}", path.display()))
    })
}

/// The platform's trust roots, read once per process (a certificate that
/// cannot be used is skipped, as the platform's own tools do).
fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (_added, _skipped) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            tracing::warn!(
                "no trusted root certificates found on this system; https:// needs a ca_file"
            );
        }
        roots
    })
}

/// What a client trusts and presents. Paths are taken as given (the
/// caller resolves them); the keys name them in errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFiles<'a> {
    /// More certificate authorities to trust (`ca_file`).
    pub ca_file: Option<&'a Path>,
    /// For mutual TLS: our certificate chain and its key
    /// (`client_cert`, `client_key`).
    pub identity: Option<(&'a Path, &'a Path)>,
}

/// The TLS keys of an endpoint that connects (`ca_file`, `client_cert`,
/// `client_key`), as configured: paths relative to the configuration
/// file's folder.
#[derive(Debug, Clone, Copy)]
pub struct ClientKeys<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

/// A path of the configuration, against the configuration file's folder.
pub fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl ClientKeys<'_> {
    fn each(&self) -> [(&'static str, Option<&Path>); 3] {
        [
            ("ca_file", self.ca_file),
            ("client_cert", self.client_cert),
            ("client_key", self.client_key),
        ]
    }

    /// Problems with the keys, each naming its key. `tls`: whether the
    /// url's scheme is one with TLS (`None` when the url is broken);
    /// `schemes` names those schemes (for "is only used with …"). The files
    /// are read, so that a missing or broken one stops the daemon at its
    /// start rather than failing every connection.
    pub fn validate(&self, tls: Option<bool>, schemes: &str, base: &Path) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut usable = true;
        for (key, value) in self.each() {
            if value.is_some() && tls == Some(false) {
                problems.push((key.into(), format!("is only used with {schemes}")));
                usable = false;
            }
            if value.is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push((key.into(), "must not be empty".into()));
                usable = false;
            }
        }
        match (self.client_cert, self.client_key) {
            (Some(_), None) => {
                problems.push((
                    "client_key".into(),
                    "missing: client_cert needs the key of its certificate".into(),
                ));
                usable = false;
            }
            (None, Some(_)) => {
                problems.push((
                    "client_cert".into(),
                    "missing: client_key needs the certificate it is the key of".into(),
                ));
                usable = false;
            }
            _ => {}
        }
        if usable && self.each().iter().any(|(_, v)| v.is_some()) {
            // Each file on its own first, so that every broken one is named.
            let mut files_ok = true;
            for (key, path) in self.each() {
                let Some(path) = path else { continue };
                let path = resolve(path, base);
                let read = match key {
                    "client_key" => private_key(key, &path).map(drop),
                    _ => certificates(key, &path).map(drop),
                };
                if let Err(e) = read {
                    problems.push((e.key.into(), e.message));
                    files_ok = false;
                }
            }
            // Then together: a key that is not the certificate's, a CA
            // certificate that cannot be a trust anchor.
            if files_ok {
                if let Err(e) = self.config(base) {
                    problems.push((e.key.into(), e.message));
                }
            }
        }
        problems
    }

    /// The client's TLS settings: the platform's roots plus `ca_file`, and
    /// `client_cert`/`client_key` for mutual TLS.
    pub fn config(&self, base: &Path) -> Result<rustls::ClientConfig, SetupError> {
        let ca_file = self.ca_file.map(|p| resolve(p, base));
        let identity = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => Some((resolve(cert, base), resolve(key, base))),
            _ => None,
        };
        client_config(ClientFiles {
            ca_file: ca_file.as_deref(),
            identity: identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        })
    }
}

/// A client configuration: the platform's roots plus `ca_file`, and our
/// certificate for mutual TLS.
pub fn client_config(files: ClientFiles<'_>) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = platform_roots().clone();
    if let Some(path) = files.ca_file {
        for (i, cert) in certificates("ca_file", path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                problem(
                    "ca_file",
                    format!(
                        "certificate {} of {} cannot be trusted as an authority: {e}",
                        i + 1,
                        path.display()
                    ),
                )
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| problem("ca_file", format!("TLS cannot be set up: {e}")))?
        .with_root_certificates(roots);
    match files.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates("client_cert", cert)?;
            let key_der = private_key("client_key", key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                problem(
                    "client_key",
                    format!(
                        "{} cannot be used with {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                )
            })
        }
    }
}

/// The daemon's HTTPS configuration: its certificate chain and key
/// (`tls_cert`, `tls_key`), HTTP/1.1 only (what the API speaks).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, SetupError> {
    let chain = certificates("tls_cert", cert)?;
    let key_der = private_key("tls_key", key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| problem("tls_cert", format!("TLS cannot be set up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            problem(
                "tls_key",
                format!(
                    "{} cannot be used with {}: {e}",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS failure with a peer: it does not fix itself by trying again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer's certificate is not trusted here: signed by an unknown
    /// issuer, for another name, expired, …
    Untrusted {
        reason: String,
        unknown_issuer: bool,
    },
    /// The peer refused our client certificate (or wanted one).
    Refused(String),
    /// Another TLS failure: e.g. TLS spoken to a server without it.
    Other(String),
}

impl Failure {
    /// What a person checks for this failure, as a parenthesis to add to
    /// its message ("" when there is nothing to add).
    pub fn hint(&self) -> &'static str {
        match self {
            Failure::Untrusted {
                unknown_issuer: true,
                ..
            } => " (a private certificate authority is trusted with ca_file)",
            Failure::Refused(_) => " (mutual TLS: check client_cert and client_key)",
            _ => "",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Untrusted { reason, .. } => {
                write!(f, "the certificate is not trusted: {reason}")
            }
            Failure::Refused(reason) => write!(f, "our client certificate was refused: {reason}"),
            Failure::Other(reason) => write!(f, "TLS failed: {reason}"),
        }
    }
}

/// The TLS failure somewhere in `error`'s chain of causes, if any.
///
/// rustls' error reaches us wrapped in `io::Error`s (reqwest's connector
/// wraps tokio-rustls' in another), and `io::Error::source()` skips the
/// error it wraps: so each link of the chain is also opened up.
pub fn failure(error: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    let mut next = Some(error);
    while let Some(link) = next {
        let mut inner = Some(link);
        while let Some(e) = inner {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(describe(tls));
            }
            inner = wrapped(e);
        }
        next = link.source();
    }
    None
}

/// The error `e` wraps, when `e` is an `io::Error` around one.
fn wrapped<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    Some(inner)
}

fn describe(error: &rustls::Error) -> Failure {
    match error {
        rustls::Error::InvalidCertificate(e) => Failure::Untrusted {
            unknown_issuer: *e == CertificateError::UnknownIssuer,
            reason: certificate_problem(e),
        },
        rustls::Error::AlertReceived(alert) if refuses_our_certificate(*alert) => {
            Failure::Refused(format!("{alert:?}"))
        }
        other => Failure::Other(other.to_string()),
    }
}

/// Alerts a server sends when it does not accept the client's certificate.
fn refuses_our_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

fn certificate_problem(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "it is signed by an unknown issuer".into(),
        CertificateError::NotValidForName => "it is not valid for this host name".into(),
        CertificateError::Expired => "it has expired".into(),
        CertificateError::NotValidYet => "it is not valid yet".into(),
        CertificateError::Revoked => "it has been revoked".into(),
        CertificateError::BadSignature => "its signature does not verify".into(),
        // The others say enough in rustls' words (with the names or times).
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod test_ca;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let found = failure(&Outer(io)).expect("found");
        assert_eq!(
            found.to_string(),
            "the certificate is not trusted: it is signed by an unknown issuer"
        );
        assert!(matches!(
            found,
            Failure::Untrusted {
                unknown_issuer: true,
                ..
            }
        ));
        let refused = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(matches!(failure(&refused), Some(Failure::Refused(_))));
        // As reqwest's connector hands it on: in an io::Error of its own.
        let twice = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        ));
        assert_eq!(
            failure(&Outer(twice)).unwrap().to_string(),
            "the certificate is not trusted: it has expired"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(failure(&plain), None);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), made.cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                made.signing_key.serialize_pem(),
            )
            .unwrap();
        }
        let (a, a_key, b_key) = (
            dir.path().join("a.pem"),
            dir.path().join("a-key.pem"),
            dir.path().join("b-key.pem"),
        );
        assert!(server_config(&a, &a_key).is_ok());
        assert_eq!(server_config(&a, &b_key).unwrap_err().key, "tls_key");
        let with_key = |key: &Path| {
            client_config(ClientFiles {
                ca_file: Some(a.as_path()),
                identity: Some((a.as_path(), key)),
            })
        };
        assert!(with_key(&a_key).is_ok());
        assert_eq!(with_key(&b_key).unwrap_err().key, "client_key");
        // A key is no certificate authority.
        let e = client_config(ClientFiles {
            ca_file: Some(&a_key),
            identity: None,
        })
        .unwrap_err();
        assert_eq!(e.key, "ca_file");
    }

    #[test]
    fn unreadable_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("sluice-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = certificates("ca_file", &missing).unwrap_err();
        assert_eq!(e.key, "ca_file");
        assert!(e.message.contains("cannot read"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let e = certificates("ca_file", &empty).unwrap_err();
        assert!(e.message.contains("holds no certificate"), "{e}");
        let e = private_key("client_key", &empty).unwrap_err();
        assert_eq!(e.key, "client_key");
        assert!(e.message.contains("holds no private key"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
