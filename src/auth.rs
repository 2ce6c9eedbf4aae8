//! Bearer-token authentication: which route needs which token, the tokens themselves (from flags
//! and from a file re-read on change), and the one middleware that checks every request.
//!
//! Access is decided by route template from the routes the API declares (a [`RouteSet`], given
//! to [`Auth::new`]): a path no route serves is [`Access::Protected`], so nothing is open by
//! omission. Off by default: with no token configured every request passes, as the original
//! service did.
//!
//! The dashboard (`/ui`) may carry its token in the [`COOKIE`] cookie instead of the header (a
//! browser cannot send a header with a link); a dashboard page asked for without a valid token
//! goes to the sign-in page. A request that passes gets its [`Grant`] as an extension, so a page
//! shows a read-only token no button it may not press.
//!
//! Tokens are compared in constant time with `subtle`; a token never reaches a log, only the
//! route, the outcome and which configured token matched (`flag#2`, `file#1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use poem::http::{header, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use subtle::ConstantTimeEq;

use crate::config::watch::{self, ConfigWatcher};
use crate::http::{refuse, Access, RouteSet};

/// The cookie the dashboard keeps its token in (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "cs_token";

/// What a request's token allows, once it passed: set as a request extension when tokens are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A full token: may change things.
    Full,
    /// A read-only (or metrics) token: may look only.
    Read,
}

/// Whether `path` belongs to the dashboard, where the token may come in [`COOKIE`].
fn is_dashboard(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The token of `req`: its bearer header, or on the dashboard its cookie.
fn given_token(req: &Request) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    if bearer.is_some() || !is_dashboard(req.uri().path()) {
        return bearer;
    }
    cookie_value(req.header(header::COOKIE)?, COOKIE)
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), percent-decoded.
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v.trim_matches('"'))
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|v| !v.is_empty())
}

/// The token flags of `celery-service run`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Full tokens from `--auth-token`.
    pub tokens: Vec<String>,
    /// `--auth-token-file`: one full token a line, re-read on change.
    pub token_file: Option<PathBuf>,
    /// Read-only tokens from `--read-token`.
    pub read_tokens: Vec<String>,
    /// Tokens that may read `/metrics` (`--metrics-token`); none leaves it open.
    pub metrics_tokens: Vec<String>,
}

/// Why the token settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file cannot be read.
    #[error("--auth-token-file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Read-only tokens with no full token: nothing could ever change anything.
    #[error("--read-token needs --auth-token or --auth-token-file")]
    ReadWithoutFull,
}

impl AuthSettings {
    /// Whether requests need a token at all.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.token_file.is_some()
    }

    /// Checks the settings and reads the token file once, so a bad file stops the start.
    pub fn validate(&self) -> Result<(), AuthError> {
        if !self.read_tokens.is_empty() && !self.enabled() {
            return Err(AuthError::ReadWithoutFull);
        }
        if let Some(path) = &self.token_file {
            read_token_file(path)?;
        }
        Ok(())
    }
}

/// The tokens of a file: one a line, blank lines and `#` comments skipped, spaces trimmed.
pub fn read_token_file(path: &Path) -> Result<Vec<String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Tokens as checked: each with the name logs give it.
#[derive(Default)]
struct Tokens {
    full: Vec<(String, Vec<u8>)>,
    read: Vec<(String, Vec<u8>)>,
    metrics: Vec<(String, Vec<u8>)>,
}

fn named(prefix: &str, tokens: &[String]) -> Vec<(String, Vec<u8>)> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{prefix}#{}", i + 1), t.as_bytes().to_vec()))
        .collect()
}

/// The first token of `set` equal to `given`, compared in constant time against every one.
fn matching<'a>(set: &'a [(String, Vec<u8>)], given: &[u8]) -> Option<&'a str> {
    let mut found = None;
    for (name, token) in set {
        if bool::from(token.as_slice().ct_eq(given)) && found.is_none() {
            found = Some(name.as_str());
        }
    }
    found
}

/// The middleware: checks every request against the current tokens.
pub struct Auth {
    settings: AuthSettings,
    routes: &'static RouteSet,
    tokens: Arc<ArcSwap<Tokens>>,
    _watch: Option<Arc<ConfigWatcher>>,
}

impl Auth {
    /// Builds the checker of the requests to `routes` and starts watching the token file, if
    /// there is one.
    pub fn new(
        settings: AuthSettings,
        debounce: std::time::Duration,
        routes: &'static RouteSet,
    ) -> Self {
        let tokens = Arc::new(ArcSwap::from_pointee(Tokens::default()));
        load_tokens(&settings, &tokens);
        let watch = settings.token_file.as_ref().and_then(|path| {
            let (s, t) = (settings.clone(), tokens.clone());
            match watch::watch(path, debounce, move || load_tokens(&s, &t)) {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    tracing::error!(error = %e, "token file changes are not picked up; restart after each edit");
                    None
                }
            }
        });
        Self {
            settings,
            routes,
            tokens,
            _watch: watch,
        }
    }
}

fn load_tokens(settings: &AuthSettings, into: &ArcSwap<Tokens>) {
    let mut full = named("flag", &settings.tokens);
    if let Some(path) = &settings.token_file {
        match read_token_file(path) {
            Ok(t) => {
                tracing::info!(tokens = t.len(), file = %path.display(), "auth tokens loaded from the token file");
                full.extend(named("file", &t));
            }
            // Keep the tokens in use: a file half-written or removed must not lock everyone out.
            Err(e) => {
                tracing::error!(error = %e, "cannot read the token file; keeping the tokens in use");
                return;
            }
        }
    }
    if full.is_empty() && settings.enabled() {
        tracing::warn!(
            "authentication is on but no token is configured: every protected request is refused"
        );
    }
    into.store(Arc::new(Tokens {
        full,
        read: named("read", &settings.read_tokens),
        metrics: named("metrics", &settings.metrics_tokens),
    }));
}

impl<E: Endpoint> Middleware<E> for Auth {
    type Output = AuthEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        AuthEndpoint {
            inner: ep,
            routes: self.routes,
            enabled: self.settings.enabled(),
            metrics_closed: !self.settings.metrics_tokens.is_empty(),
            tokens: self.tokens.clone(),
            _watch: self._watch.clone(),
        }
    }
}

/// An endpoint behind [`Auth`].
pub struct AuthEndpoint<E> {
    inner: E,
    routes: &'static RouteSet,
    enabled: bool,
    metrics_closed: bool,
    tokens: Arc<ArcSwap<Tokens>>,
    /// Keeps the token file watched as long as the endpoint serves.
    _watch: Option<Arc<ConfigWatcher>>,
}

/// What the check decided, as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Open,
    Allowed(Grant),
    Missing,
    Wrong,
    ReadOnly,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Allowed(_) => "allowed",
            Self::Missing => "no_token",
            Self::Wrong => "wrong_token",
            Self::ReadOnly => "read_only",
        }
    }
}

impl<E: Endpoint> AuthEndpoint<E> {
    fn decide(&self, req: &Request) -> (Outcome, Option<String>) {
        let need = match self.routes.access(req.uri().path()) {
            Access::Metrics if !self.metrics_closed => Access::Open,
            Access::Metrics => Access::Metrics,
            _ if !self.enabled => Access::Open,
            a => a,
        };
        if need == Access::Open {
            return (Outcome::Open, None);
        }
        let Some(given) = given_token(req) else {
            return (Outcome::Missing, None);
        };
        let tokens = self.tokens.load();
        let given = given.as_bytes();
        if let Some(name) = matching(&tokens.full, given) {
            return (Outcome::Allowed(Grant::Full), Some(name.to_string()));
        }
        let other = match need {
            Access::Read => matching(&tokens.read, given),
            Access::Metrics => matching(&tokens.metrics, given),
            _ => None,
        };
        if let Some(name) = other {
            return (Outcome::Allowed(Grant::Read), Some(name.to_string()));
        }
        if need == Access::Protected && matching(&tokens.read, given).is_some() {
            return (Outcome::ReadOnly, Some("read".into()));
        }
        (Outcome::Wrong, None)
    }
}

impl<E: Endpoint> Endpoint for AuthEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !self.enabled && !self.metrics_closed {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let (outcome, token) = self.decide(&req);
        let route = self
            .routes
            .template(req.uri().path())
            .unwrap_or("unmatched");
        crate::metrics::auth_checked(route, outcome.as_str());
        let method = req.method().clone();
        let token = token.as_deref().unwrap_or("-");
        let (status, msg) = match outcome {
            Outcome::Open => return self.inner.call(req).await.map(IntoResponse::into_response),
            Outcome::Allowed(grant) => {
                tracing::debug!(%method, route, outcome = outcome.as_str(), token, "auth");
                let mut req = req;
                req.extensions_mut().insert(grant);
                return self.inner.call(req).await.map(IntoResponse::into_response);
            }
            Outcome::Missing | Outcome::Wrong
                if method == poem::http::Method::GET && is_dashboard(req.uri().path()) =>
            {
                return Ok(Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/ui/signin")
                    .finish());
            }
            Outcome::Missing => (
                StatusCode::UNAUTHORIZED,
                "this route needs `Authorization: Bearer <token>` (--auth-token)",
            ),
            Outcome::Wrong => (
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid for this route",
            ),
            Outcome::ReadOnly => (
                StatusCode::FORBIDDEN,
                "a read-only token (--read-token) cannot call this route",
            ),
        };
        tracing::warn!(%method, route, outcome = outcome.as_str(), token, "auth refused");
        let mut resp = refuse(status, msg);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_finds_the_token_and_names_it() {
        let set = named("flag", &["alpha".into(), "beta".into()]);
        assert_eq!(matching(&set, b"beta"), Some("flag#2"));
        assert_eq!(matching(&set, b"bet"), None);
        assert_eq!(matching(&set, b""), None);
    }
}
