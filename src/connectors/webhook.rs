//! `kind = "webhook"`: records POSTed to `/hooks/{site}/{integration}/{flow}`.
//!
//! A webhook is a push source: it has no run of its own. The API queues what
//! arrives and answers 202 once it is durably queued (see `api::hooks`).
//!
//! # Who may post
//! Without `secret_env` anyone who reaches the daemon's port may post
//! records (the source systems' door, as before). With it, a request must
//! prove it knows the shared secret held in that environment variable:
//! - `signature = "bearer"` (the default): `Authorization: Bearer SECRET`;
//! - `signature = "hmac-sha256"`: the hex HMAC-SHA256 of the raw body under
//!   the secret in `signature_header` (default `X-Sluice-Signature`),
//!   optionally prefixed `sha256=` as GitHub sends it.
//!
//! A missing or wrong proof is refused and nothing is queued. Comparisons
//! take the same time whatever the first wrong byte ([`subtle`], and
//! `hmac`'s own verification). A secret variable that is not set refuses
//! every request (fails closed), it never opens the webhook.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::KeyProblem;

/// The header an HMAC signature comes in unless `signature_header` says
/// otherwise.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Sluice-Signature";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// The environment variable holding the shared secret (never the secret
    /// itself in the file). Without it the webhook takes any caller.
    pub secret_env: Option<String>,
    /// How a request proves it knows the secret.
    #[serde(default)]
    pub signature: Signature,
    /// Where an `hmac-sha256` signature comes.
    pub signature_header: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            max_body: default_max_body(),
            secret_env: None,
            signature: Signature::default(),
            signature_header: None,
        }
    }
}

/// How a request to a webhook with a secret proves it knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signature {
    /// `Authorization: Bearer SECRET`.
    #[default]
    Bearer,
    /// The hex HMAC-SHA256 of the body under the secret, in a header.
    HmacSha256,
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The caller did not prove it knows the secret (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The daemon cannot check: the secret's variable is not set (HTTP
    /// 503); the webhook stays closed until it is.
    #[error("{0}")]
    NoSecret(String),
}

impl WebhookConfig {
    pub fn validate(&self) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        if self.max_body == 0 {
            problems.push(("max_body".into(), "must be at least 1 byte".into()));
        }
        if let Some(name) = &self.secret_env {
            if name.trim().is_empty() || name.contains('=') || name.contains('\0') {
                problems.push((
                    "secret_env".into(),
                    "name an environment variable, e.g. SHOP_WEBHOOK_SECRET".into(),
                ));
            }
        }
        if self.secret_env.is_none() && self.signature_header.is_some() {
            problems.push((
                "signature_header".into(),
                "needs secret_env (and signature = \"hmac-sha256\")".into(),
            ));
        }
        if let Some(h) = &self.signature_header {
            if self.secret_env.is_some() && self.signature != Signature::HmacSha256 {
                problems.push((
                    "signature_header".into(),
                    "is used only with signature = \"hmac-sha256\"".into(),
                ));
            }
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                problems.push((
                    "signature_header".into(),
                    format!("'{h}' is not a header name"),
                ));
            }
        }
        problems
    }

    /// Whether a request must prove it knows a secret.
    pub fn guarded(&self) -> bool {
        self.secret_env.is_some()
    }

    /// Whether the request may post, judged from its headers alone (a
    /// bearer secret): so a caller without the secret is refused before a
    /// byte of its body is read. An HMAC is checked by [`Self::verify_body`].
    pub fn verify_headers(&self, headers: &axum::http::HeaderMap) -> Result<(), Refused> {
        let Some(secret) = self.secret()? else {
            return Ok(());
        };
        if self.signature != Signature::Bearer {
            return Ok(());
        }
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                Refused::Unauthorized(
                    "this webhook needs its secret: send Authorization: Bearer SECRET".into(),
                )
            })?;
        // Equal-length digests, compared in constant time: neither the
        // secret's length nor its first wrong byte shows in the timing.
        let same: bool = Sha256::digest(given.as_bytes())
            .ct_eq(&Sha256::digest(secret.as_bytes()))
            .into();
        if same {
            Ok(())
        } else {
            Err(Refused::Unauthorized(
                "the webhook's secret is wrong".into(),
            ))
        }
    }

    /// Whether the body carries a valid signature (for `hmac-sha256`; a
    /// bearer secret was checked from the headers).
    pub fn verify_body(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), Refused> {
        if self.signature != Signature::HmacSha256 {
            return Ok(());
        }
        let Some(secret) = self.secret()? else {
            return Ok(());
        };
        let header = self.signature_header();
        let given = headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim())
            .ok_or_else(|| {
                Refused::Unauthorized(format!(
                    "this webhook needs a signature: the hex HMAC-SHA256 of the body in {header}"
                ))
            })?;
        let hex = given.strip_prefix("sha256=").unwrap_or(given);
        let wrong = || Refused::Unauthorized(format!("the signature in {header} is wrong"));
        let signature = decode_hex(hex).ok_or_else(wrong)?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).map_err(|_| wrong())?;
        mac.update(body);
        mac.verify_slice(&signature).map_err(|_| wrong())
    }

    /// The header an HMAC signature comes in.
    pub fn signature_header(&self) -> &str {
        self.signature_header
            .as_deref()
            .unwrap_or(DEFAULT_SIGNATURE_HEADER)
    }

    /// The shared secret, read from its variable; `None` for an open
    /// webhook.
    fn secret(&self) -> Result<Option<String>, Refused> {
        let Some(name) = &self.secret_env else {
            return Ok(None);
        };
        match std::env::var(name) {
            Ok(secret) if !secret.is_empty() => Ok(Some(secret)),
            _ => Err(Refused::NoSecret(format!(
                "this webhook is closed: its secret variable {name} is not set on the daemon"
            ))),
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn config(toml: &str) -> WebhookConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn open_without_a_secret() {
        let c = config("");
        assert!(!c.guarded());
        assert_eq!(c.verify_headers(&HeaderMap::new()), Ok(()));
        assert_eq!(c.verify_body(&HeaderMap::new(), b"{}"), Ok(()));
    }

    #[test]
    fn bearer_secret() {
        std::env::set_var("SLUICE_TEST_WEBHOOK_BEARER", "s3cret");
        let c = config("secret_env = \"SLUICE_TEST_WEBHOOK_BEARER\"");
        let mut h = HeaderMap::new();
        assert!(matches!(
            c.verify_headers(&h),
            Err(Refused::Unauthorized(_))
        ));
        h.insert("authorization", HeaderValue::from_static("Bearer s3cre"));
        assert!(matches!(
            c.verify_headers(&h),
            Err(Refused::Unauthorized(_))
        ));
        h.insert("authorization", HeaderValue::from_static("Basic s3cret"));
        assert!(matches!(
            c.verify_headers(&h),
            Err(Refused::Unauthorized(_))
        ));
        h.insert("authorization", HeaderValue::from_static("bearer s3cret"));
        assert_eq!(c.verify_headers(&h), Ok(()));
    }

    #[test]
    fn hmac_signature_as_github_sends_it() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        std::env::set_var("SLUICE_TEST_WEBHOOK_HMAC", "Jefe");
        let c = config(
            "secret_env = \"SLUICE_TEST_WEBHOOK_HMAC\"\nsignature = \"hmac-sha256\"\n\
             signature_header = \"X-Hub-Signature-256\"",
        );
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let body = b"what do ya want for nothing?";
        let good = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let mut h = HeaderMap::new();
        assert!(matches!(
            c.verify_body(&h, body),
            Err(Refused::Unauthorized(_))
        ));
        h.insert("x-hub-signature-256", HeaderValue::from_static(good));
        assert_eq!(c.verify_body(&h, body), Ok(()));
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&format!("sha256={good}")).unwrap(),
        );
        assert_eq!(c.verify_body(&h, body), Ok(()));
        assert!(matches!(
            c.verify_body(&h, b"what do ya want for nothing!"),
            Err(Refused::Unauthorized(_))
        ));
        h.insert("x-hub-signature-256", HeaderValue::from_static("sha256=zz"));
        assert!(matches!(
            c.verify_body(&h, body),
            Err(Refused::Unauthorized(_))
        ));
        // The headers alone do not decide for an HMAC.
        assert_eq!(c.verify_headers(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn an_unset_secret_closes_the_webhook() {
        let c = config("secret_env = \"SLUICE_TEST_WEBHOOK_NEVER_SET\"");
        assert!(matches!(
            c.verify_headers(&HeaderMap::new()),
            Err(Refused::NoSecret(_))
        ));
    }

    #[test]
    fn validation_names_keys() {
        let c = config("signature_header = \"X-Sig\"\nmax_body = 0");
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["max_body", "signature_header"]);
        let c = config("secret_env = \"S\"\nsignature_header = \"X-Sig\"");
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["signature_header"]);
        assert!(toml::from_str::<WebhookConfig>("signature = \"md5\"").is_err());
    }
}
