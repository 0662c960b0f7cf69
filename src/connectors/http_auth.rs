//! How an HTTP endpoint proves who we are: `auth = "bearer" | "basic" |
//! "api_key" | "oauth2"` and the keys of each, shared by every kind that
//! calls an HTTP API (the `http` target, the `http_poll` source).
//!
//! Reuse: `#[serde(deny_unknown_fields)]` does not combine with
//! `#[serde(flatten)]`, so a config keeps the auth keys as fields of its
//! own ([`AuthSettings`] lists them) and builds the settings with a
//! `fn auth(&self) -> AuthSettings`. It then validates them with
//! [`AuthSettings::validate`], builds an [`Authorizer`] once, sends every
//! request through [`Authorizer::send`], and hands a reauthorization to
//! [`Authorizer::set_credentials`].
//!
//! Invariants: a secret (token, password, key, client secret, access
//! token) is read from the environment, sent only in a header reqwest
//! marks sensitive, and never appears in a message or a `Debug`. An OAuth2
//! access token is fetched by one caller at a time (the others wait for
//! it and share it), kept until shortly before it expires, and dropped
//! when the API refuses it: the refused request is sent once more with a
//! fresh token before the refusal counts.

use std::time::Duration;

use tokio::time::Instant;

use super::http::{transport_failure, truncated};
use super::{Credentials, DeliveryError, FailureClass, KeyProblem};
use crate::redact;

/// The auth keys of a config, as written (see the module's doc for how a
/// config holds them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSettings {
    /// `bearer`, `basic`, `api_key`, `oauth2`; inferred from the other keys
    /// when absent (files written before `auth` existed).
    pub auth: Option<String>,
    /// bearer: the environment variable holding the token.
    pub token_env: Option<String>,
    /// basic: the user name and the variable holding the password.
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// api_key: the header that carries the key, and the variable holding it.
    pub header: Option<String>,
    pub key_env: Option<String>,
    /// oauth2 (client credentials grant, RFC 6749 §4.4).
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub scope: Option<String>,
}

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Bearer,
    Basic,
    ApiKey,
    OAuth2,
}

impl AuthKind {
    const ALL: [AuthKind; 4] = [
        AuthKind::Bearer,
        AuthKind::Basic,
        AuthKind::ApiKey,
        AuthKind::OAuth2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::ApiKey => "api_key",
            AuthKind::OAuth2 => "oauth2",
        }
    }

    /// What a reauthorization of this kind takes, as its JSON body.
    pub fn takes(self) -> &'static str {
        match self {
            AuthKind::Bearer => "{\"token\"}",
            AuthKind::Basic => "{\"username\", \"password\"}",
            AuthKind::ApiKey => "{\"key\"}",
            AuthKind::OAuth2 => "{\"client_secret\"}",
        }
    }

    /// Its keys: the required ones, then the optional ones.
    fn keys(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            AuthKind::Bearer => (&["token_env"], &[]),
            AuthKind::Basic => (&["username"], &["password_env"]),
            AuthKind::ApiKey => (&["header", "key_env"], &[]),
            AuthKind::OAuth2 => (&["token_url", "client_id", "client_secret_env"], &["scope"]),
        }
    }
}

impl AuthSettings {
    fn value(&self, key: &str) -> Option<&str> {
        match key {
            "token_env" => self.token_env.as_deref(),
            "username" => self.username.as_deref(),
            "password_env" => self.password_env.as_deref(),
            "header" => self.header.as_deref(),
            "key_env" => self.key_env.as_deref(),
            "token_url" => self.token_url.as_deref(),
            "client_id" => self.client_id.as_deref(),
            "client_secret_env" => self.client_secret_env.as_deref(),
            "scope" => self.scope.as_deref(),
            _ => None,
        }
    }

    /// The kinds whose keys are given.
    fn kinds_given(&self) -> Vec<AuthKind> {
        AuthKind::ALL
            .into_iter()
            .filter(|k| {
                let (required, optional) = k.keys();
                required
                    .iter()
                    .chain(optional)
                    .any(|key| self.value(key).is_some())
            })
            .collect()
    }

    /// The kind: `auth`, or the one kind whose keys are given; `None` when
    /// there is no auth (or the settings are not valid).
    pub fn kind(&self) -> Option<AuthKind> {
        match &self.auth {
            Some(name) => AuthKind::ALL.into_iter().find(|k| k.name() == name),
            None => match self.kinds_given()[..] {
                [one] => Some(one),
                _ => None,
            },
        }
    }

    /// What a reauthorization of these settings takes, for a message.
    pub fn takes(&self) -> String {
        match self.kind() {
            Some(k) => format!("{} (auth = \"{}\")", k.takes(), k.name()),
            None => format!(
                "{} or {} (no auth configured)",
                AuthKind::Bearer.takes(),
                AuthKind::Basic.takes()
            ),
        }
    }

    /// Problems with the auth keys, each naming its key.
    pub fn validate(&self) -> Vec<KeyProblem> {
        let mut problems: Vec<KeyProblem> = Vec::new();
        let kind = match &self.auth {
            Some(name) => match AuthKind::ALL.into_iter().find(|k| k.name() == name) {
                Some(k) => k,
                None => {
                    problems.push((
                        "auth".into(),
                        format!("'{name}' is not one of bearer, basic, api_key, oauth2"),
                    ));
                    return problems;
                }
            },
            None => match self.kinds_given()[..] {
                [] => return problems,
                [one] => one,
                [AuthKind::Bearer, AuthKind::Basic] => {
                    problems.push((
                        "token_env".into(),
                        "give either token_env or username, not both".into(),
                    ));
                    return problems;
                }
                ref several => {
                    let names: Vec<_> = several.iter().map(|k| k.name()).collect();
                    problems.push((
                        "auth".into(),
                        format!(
                            "keys of several kinds of auth are given ({}): say which with auth = \"…\"",
                            names.join(", ")
                        ),
                    ));
                    return problems;
                }
            },
        };
        let (required, optional) = kind.keys();
        for other in AuthKind::ALL.into_iter().filter(|k| *k != kind) {
            let (r, o) = other.keys();
            for key in r.iter().chain(o) {
                if self.value(key).is_some() {
                    problems.push((
                        (*key).into(),
                        format!(
                            "is not used with auth = \"{}\" (it takes {})",
                            kind.name(),
                            required
                                .iter()
                                .chain(optional)
                                .copied()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        for key in required {
            if self.value(key).is_none() {
                problems.push((
                    (*key).into(),
                    format!("missing: auth = \"{}\" needs it", kind.name()),
                ));
            }
        }
        for key in required.iter().chain(optional) {
            if self.value(key).is_some_and(|v| v.trim().is_empty()) {
                problems.push(((*key).into(), "must not be empty".into()));
            }
        }
        if let Some(h) = self.header.as_deref().filter(|h| !h.is_empty()) {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                problems.push(("header".into(), format!("'{h}' is not a header name")));
            }
        }
        if let Some(u) = self.token_url.as_deref().filter(|u| !u.is_empty()) {
            match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => problems.push((
                    "token_url".into(),
                    format!(
                        "scheme '{}' is not supported (use http or https)",
                        url.scheme()
                    ),
                )),
                Err(e) => problems.push((
                    "token_url".into(),
                    format!("'{}' is not a URL: {e}", redact::url(u)),
                )),
            }
        }
        problems
    }
}

/// Whether `c` fits the header it travels in (Basic credentials and a
/// client secret are base64 by reqwest).
fn fits_a_header(c: &Credentials) -> bool {
    let value = |v: &str| reqwest::header::HeaderValue::from_str(v).is_ok();
    match c {
        Credentials::Bearer(token) => value(&format!("Bearer {token}")),
        Credentials::ApiKey(key) => value(key),
        Credentials::Basic { .. } | Credentials::ClientSecret(_) => true,
    }
}

/// An access token and until when it is used.
struct AccessToken {
    value: String,
    /// Shortly before it expires: 10 % of its life or 30 s, whichever is less.
    fresh_until: Instant,
    /// The [`Authorizer`] generation of the client secret it was fetched
    /// with: a new secret makes it stale.
    generation: u64,
}

/// The OAuth2 client (credentials grant) and its cached token.
struct OAuth2 {
    token_url: String,
    /// `token_url` as messages show it.
    shown: String,
    client_id: String,
    scope: Option<String>,
    /// Held while fetching: concurrent callers wait for one fetch.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

/// Applies an endpoint's credentials to its requests. Built once per
/// endpoint; a reauthorization replaces the credentials in place.
pub struct Authorizer {
    kind: Option<AuthKind>,
    /// The credentials (for oauth2: the client secret) and their
    /// generation, bumped by each reauthorization.
    current: parking_lot::RwLock<(Option<Credentials>, u64)>,
    /// api_key: the header the key goes in.
    header: Option<reqwest::header::HeaderName>,
    oauth2: Option<OAuth2>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("kind", &self.kind.map(AuthKind::name))
            .finish_non_exhaustive()
    }
}

/// What was applied to a request: the access token, for oauth2.
pub struct Applied(Option<String>);

impl Authorizer {
    /// The authorizer of (valid) `settings`, reading the secrets from the
    /// environment. A variable that is not set is warned about (naming the
    /// endpoint by `shown`) and leaves the requests without credentials:
    /// the endpoint is then refused until reauthorized.
    pub fn new(settings: &AuthSettings, shown: &str) -> Authorizer {
        let kind = settings.kind();
        let var = |name: &Option<String>| -> Option<String> {
            let name = name.as_deref()?;
            match std::env::var(name) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(url = %shown, "no credentials: environment variable {name} is not set");
                    None
                }
            }
        };
        let credentials = match kind {
            None => None,
            Some(AuthKind::Bearer) => var(&settings.token_env).map(Credentials::Bearer),
            Some(AuthKind::Basic) => settings.username.clone().and_then(|username| {
                let password = match &settings.password_env {
                    Some(_) => var(&settings.password_env)?,
                    None => String::new(),
                };
                Some(Credentials::Basic { username, password })
            }),
            Some(AuthKind::ApiKey) => var(&settings.key_env).map(Credentials::ApiKey),
            Some(AuthKind::OAuth2) => {
                var(&settings.client_secret_env).map(Credentials::ClientSecret)
            }
        };
        let credentials = match credentials {
            Some(c) if !fits_a_header(&c) => {
                tracing::warn!(url = %shown, "the credentials hold characters a header cannot carry");
                None
            }
            c => c,
        };
        let oauth2 = match (kind, &settings.token_url, &settings.client_id) {
            (Some(AuthKind::OAuth2), Some(url), Some(id)) => Some(OAuth2 {
                token_url: url.clone(),
                shown: redact::url(url),
                client_id: id.clone(),
                scope: settings.scope.clone(),
                token: tokio::sync::Mutex::new(None),
            }),
            _ => None,
        };
        Authorizer {
            kind,
            current: parking_lot::RwLock::new((credentials, 0)),
            header: settings
                .header
                .as_deref()
                .and_then(|h| reqwest::header::HeaderName::from_bytes(h.as_bytes()).ok()),
            oauth2,
        }
    }

    /// Takes new credentials (a reauthorization): only of this endpoint's
    /// kind (with no auth configured: a token or a user name and
    /// password). A new client secret drops the cached access token.
    pub fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        let fits = matches!(
            (self.kind, &credentials),
            (None | Some(AuthKind::Bearer), Credentials::Bearer(_))
                | (None | Some(AuthKind::Basic), Credentials::Basic { .. })
                | (Some(AuthKind::ApiKey), Credentials::ApiKey(_))
                | (Some(AuthKind::OAuth2), Credentials::ClientSecret(_))
        );
        if !fits {
            let takes = match self.kind {
                Some(k) => format!("{} (auth = \"{}\")", k.takes(), k.name()),
                None => format!(
                    "{} or {}",
                    AuthKind::Bearer.takes(),
                    AuthKind::Basic.takes()
                ),
            };
            return Err(format!("this endpoint takes {takes}"));
        }
        if !fits_a_header(&credentials) {
            return Err("the credentials hold characters a header cannot carry".into());
        }
        let mut current = self.current.write();
        *current = (Some(credentials), current.1 + 1);
        Ok(())
    }

    /// `request` with the credentials (fetching an access token if need
    /// be, with `client`).
    pub async fn apply(
        &self,
        client: &reqwest::Client,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::RequestBuilder, Applied), DeliveryError> {
        let (credentials, generation) = self.current.read().clone();
        Ok(match credentials {
            None => (request, Applied(None)),
            Some(Credentials::Bearer(token)) => (request.bearer_auth(token), Applied(None)),
            Some(Credentials::Basic { username, password }) => {
                (request.basic_auth(username, Some(password)), Applied(None))
            }
            Some(Credentials::ApiKey(key)) => {
                let request = match (&self.header, reqwest::header::HeaderValue::from_str(&key)) {
                    (Some(header), Ok(mut value)) => {
                        value.set_sensitive(true);
                        request.header(header.clone(), value)
                    }
                    _ => request,
                };
                (request, Applied(None))
            }
            Some(Credentials::ClientSecret(secret)) => match &self.oauth2 {
                Some(oauth2) => {
                    let token = oauth2.token(client, &secret, generation).await?;
                    (request.bearer_auth(&token), Applied(Some(token)))
                }
                None => (request, Applied(None)),
            },
        })
    }

    /// The API refused what `applied` carried: an access token is dropped
    /// (unless another caller has already replaced it). Whether the
    /// request is worth sending once more, with a fresh token.
    pub async fn refused(&self, applied: &Applied) -> bool {
        let (Some(used), Some(oauth2)) = (&applied.0, &self.oauth2) else {
            return false;
        };
        let mut token = oauth2.token.lock().await;
        if token.as_ref().is_some_and(|t| &t.value == used) {
            *token = None;
        }
        true
    }

    /// Sends the request `build` makes, with the credentials; if the API
    /// answers 401 or 403 to an access token, once more with a fresh one.
    /// `what` names the request in messages. The answer is the caller's to
    /// classify.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        let (request, applied) = self.apply(client, build()).await?;
        let response = request
            .send()
            .await
            .map_err(|e| transport_failure(what, e))?;
        let refused = matches!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
        );
        if refused && self.refused(&applied).await {
            let (request, _) = self.apply(client, build()).await?;
            return request.send().await.map_err(|e| transport_failure(what, e));
        }
        Ok(response)
    }
}

impl OAuth2 {
    /// A fresh access token: the cached one, or one fetched now.
    async fn token(
        &self,
        client: &reqwest::Client,
        secret: &str,
        generation: u64,
    ) -> Result<String, DeliveryError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if t.generation == generation && Instant::now() < t.fresh_until {
                return Ok(t.value.clone());
            }
        }
        *cached = None;
        let (value, expires_in) = self.fetch(client, secret).await?;
        // Used until 10 % of its life (at most 30 s) before it expires.
        let margin = (expires_in / 10).min(Duration::from_secs(30));
        *cached = Some(AccessToken {
            value: value.clone(),
            fresh_until: Instant::now() + expires_in - margin,
            generation,
        });
        Ok(value)
    }

    /// `POST token_url` with `grant_type=client_credentials` (and the
    /// scope), the client authenticated by HTTP Basic (RFC 6749 §2.3.1:
    /// id and secret form-encoded first). Unreachable or busy: an
    /// intermittent failure; any other refusal: Unauthorized.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        secret: &str,
    ) -> Result<(String, Duration), DeliveryError> {
        let what = format!("token request POST {}", self.shown);
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let response = client
            .post(&self.token_url)
            .basic_auth(form_encode(&self.client_id), Some(form_encode(secret)))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_failure(&what, e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let answer: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        if !status.is_success() {
            let class = if status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
            {
                FailureClass::Intermittent
            } else {
                FailureClass::Unauthorized
            };
            // Only the error code and its description (RFC 6749 §5.2):
            // nothing else of the answer is echoed.
            let said = answer
                .as_ref()
                .map(|a| {
                    [&a["error"], &a["error_description"]]
                        .into_iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .unwrap_or_default();
            return Err(DeliveryError {
                class,
                message: format!("{what}: {} {}", status.as_u16(), truncated(said, 512))
                    .trim_end()
                    .to_string(),
                retry_after: None,
            });
        }
        let token = answer
            .as_ref()
            .and_then(|a| a["access_token"].as_str())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(DeliveryError {
                class: FailureClass::Unauthorized,
                message: format!("{what}: {} without an access_token", status.as_u16()),
                retry_after: None,
            });
        };
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(DeliveryError {
                class: FailureClass::Unauthorized,
                message: format!("{what}: the access token holds characters a header cannot carry"),
                retry_after: None,
            });
        }
        let expires_in = answer
            .as_ref()
            .and_then(|a| match &a["expires_in"] {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .filter(|s| s.is_finite() && *s > 0.0)
            // No lifetime given: kept for an hour, or until refused.
            .map_or(Duration::from_secs(3600), |s| {
                Duration::from_secs_f64(s.min(1e9))
            });
        Ok((token.to_string(), expires_in))
    }
}

/// `text` percent-encoded with only the unreserved characters (RFC 3986
/// §2.3) left as they are: safe as a URL path segment.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(text: &str) -> String {
    percent_encode(text).replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> AuthSettings {
        #[derive(serde::Deserialize)]
        struct T {
            auth: Option<String>,
            token_env: Option<String>,
            username: Option<String>,
            password_env: Option<String>,
            header: Option<String>,
            key_env: Option<String>,
            token_url: Option<String>,
            client_id: Option<String>,
            client_secret_env: Option<String>,
            scope: Option<String>,
        }
        let t: T = toml::from_str(toml).unwrap();
        AuthSettings {
            auth: t.auth,
            token_env: t.token_env,
            username: t.username,
            password_env: t.password_env,
            header: t.header,
            key_env: t.key_env,
            token_url: t.token_url,
            client_id: t.client_id,
            client_secret_env: t.client_secret_env,
            scope: t.scope,
        }
    }

    fn keys(toml: &str) -> Vec<String> {
        settings(toml)
            .validate()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn the_kind_is_said_or_inferred() {
        assert_eq!(settings("token_env = \"T\"").kind(), Some(AuthKind::Bearer));
        assert_eq!(settings("username = \"u\"").kind(), Some(AuthKind::Basic));
        assert_eq!(settings("").kind(), None);
        assert_eq!(settings("auth = \"oauth2\"").kind(), Some(AuthKind::OAuth2));
        assert!(keys("token_env = \"T\"").is_empty());
        assert!(keys("username = \"u\"\npassword_env = \"P\"").is_empty());
        assert!(keys("auth = \"api_key\"\nheader = \"X-Key\"\nkey_env = \"K\"").is_empty());
        assert!(keys(
            "auth = \"oauth2\"\ntoken_url = \"https://h/t\"\nclient_id = \"c\"\nclient_secret_env = \"S\""
        )
        .is_empty());
    }

    #[test]
    fn each_kind_names_its_missing_and_foreign_keys() {
        assert_eq!(
            keys("auth = \"oauth2\"\nclient_id = \"c\"\nclient_secret_env = \"S\""),
            ["token_url"]
        );
        assert_eq!(
            keys("auth = \"bearer\"\ntoken_env = \"T\"\nusername = \"u\""),
            ["username"]
        );
        assert_eq!(keys("auth = \"api_key\"\nkey_env = \"K\""), ["header"]);
        assert_eq!(keys("auth = \"digest\""), ["auth"]);
        assert_eq!(keys("token_env = \"T\"\nusername = \"u\""), ["token_env"]);
        assert_eq!(keys("token_env = \"T\"\nkey_env = \"K\""), ["auth"]);
        assert_eq!(
            keys("auth = \"api_key\"\nheader = \"bad header\"\nkey_env = \"K\""),
            ["header"]
        );
        assert_eq!(
            keys("auth = \"oauth2\"\ntoken_url = \"ftp://h\"\nclient_id = \"c\"\nclient_secret_env = \"S\""),
            ["token_url"]
        );
    }

    #[test]
    fn a_reauthorization_takes_only_the_endpoints_kind() {
        let a = Authorizer::new(&settings("auth = \"oauth2\"\ntoken_url = \"https://h/t\"\nclient_id = \"c\"\nclient_secret_env = \"SLUICE_TEST_UNSET_VAR\""), "x");
        let e = a
            .set_credentials(Credentials::Bearer("t".into()))
            .unwrap_err();
        assert!(e.contains("{\"client_secret\"}"), "{e}");
        a.set_credentials(Credentials::ClientSecret("s".into()))
            .unwrap();
        let none = Authorizer::new(&settings(""), "x");
        none.set_credentials(Credentials::Bearer("t".into()))
            .unwrap();
        assert!(none
            .set_credentials(Credentials::ApiKey("k".into()))
            .is_err());
        let debug = format!("{a:?} {:?}", Credentials::ClientSecret("S3cret".into()));
        assert!(!debug.contains("S3cret"), "{debug}");
    }

    #[test]
    fn values_are_encoded_as_path_segments_and_forms() {
        assert_eq!(percent_encode("a b/c?d%é"), "a%20b%2Fc%3Fd%25%C3%A9");
        assert_eq!(percent_encode("Az09-._~"), "Az09-._~");
        assert_eq!(form_encode("a b:c"), "a+b%3Ac");
    }

    /// A token endpoint on 127.0.0.1 answering `status` (a token when
    /// 200), slowly; it counts its requests.
    async fn token_endpoint(
        status: u16,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = if status == 200 {
                        serde_json::json!({"access_token": format!("tok-{n}"), "expires_in": 3600})
                    } else {
                        serde_json::json!({"error": "invalid_client", "secret": "S3cret"})
                    };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(body),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/token"), count)
    }

    fn oauth2(token_url: &str) -> Authorizer {
        let a = Authorizer::new(
            &settings(&format!(
                "auth = \"oauth2\"\ntoken_url = \"{token_url}\"\nclient_id = \"c\"\nclient_secret_env = \"SLUICE_TEST_UNSET_VAR\""
            )),
            "x",
        );
        a.set_credentials(Credentials::ClientSecret("S3cret".into()))
            .unwrap();
        a
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_token_fetch() {
        use std::sync::atomic::Ordering;
        let (url, count) = token_endpoint(200).await;
        let a = oauth2(&url);
        let client = reqwest::Client::new();
        let tokens = futures_util::future::join_all((0..8).map(|_| async {
            let (request, applied) = a
                .apply(&client, client.get("http://127.0.0.1/"))
                .await
                .unwrap();
            let request = request.build().unwrap();
            (request.headers()["authorization"].clone(), applied.0)
        }))
        .await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|(h, _)| h == "Bearer tok-1"));
        // Refused by the API: dropped once, even when many say so.
        for (_, applied) in &tokens {
            assert!(a.refused(&Applied(applied.clone())).await);
        }
        let (request, _) = a
            .apply(&client, client.get("http://127.0.0.1/"))
            .await
            .unwrap();
        assert!(request.build().is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // A new client secret drops the token.
        a.set_credentials(Credentials::ClientSecret("n3w".into()))
            .unwrap();
        let (request, _) = a
            .apply(&client, client.get("http://127.0.0.1/"))
            .await
            .unwrap();
        assert!(request.build().is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_client_is_unauthorized_and_a_busy_token_endpoint_intermittent() {
        let client = reqwest::Client::new();
        for (status, class) in [
            (401, FailureClass::Unauthorized),
            (400, FailureClass::Unauthorized),
            (503, FailureClass::Intermittent),
        ] {
            let (url, _) = token_endpoint(status).await;
            let e = oauth2(&url)
                .apply(&client, client.get("http://127.0.0.1/"))
                .await
                .err()
                .unwrap();
            assert_eq!(e.class, class, "{status}: {}", e.message);
            assert!(e.message.contains("invalid_client"), "{}", e.message);
            assert!(!e.message.contains("S3cret"), "{}", e.message);
        }
        let e = oauth2("http://127.0.0.1:9/token")
            .apply(&client, client.get("http://127.0.0.1/"))
            .await
            .err()
            .unwrap();
        assert!(e.is_intermittent(), "{e:?}");
    }
}
