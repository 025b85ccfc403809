//! Client credentials: a token provider and a layer that attaches its token to every call.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use super::BoxFuture;
use crate::{Request, Status};

/// How long before its expiry a cached token is replaced, unless configured otherwise.
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(30);

/// A bearer token and when it stops being valid.
///
/// Its `Debug` output never shows the token.
///
/// ```
/// use std::time::Duration;
/// let token = ferry::auth::Token::new("eyJhbGciOi...").expires_in(Duration::from_secs(300));
/// assert_eq!(token.value(), "eyJhbGciOi...");
/// assert!(format!("{token:?}").contains("redacted"));
/// ```
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    expires_at: Option<SystemTime>,
}

impl Token {
    /// A token that does not expire (as far as the client knows).
    pub fn new(value: impl Into<Arc<str>>) -> Token {
        Token {
            value: value.into(),
            expires_at: None,
        }
    }

    /// Sets the instant the token expires (a JWT's `exp`, an OAuth response's `expires_in`).
    pub fn expires_at(mut self, at: SystemTime) -> Token {
        self.expires_at = Some(at);
        self
    }

    /// Sets the expiry `ttl` from now.
    pub fn expires_in(self, ttl: Duration) -> Token {
        self.expires_at(SystemTime::now() + ttl)
    }

    /// The token.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// When it expires, if known.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether it is still good for at least `margin`.
    fn fresh_for(&self, margin: Duration) -> bool {
        self.expires_at
            .is_none_or(|at| SystemTime::now() + margin < at)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a client gets the bearer token it sends; asked before every call, so it should answer
/// from a cache ([`RefreshingToken`] does the caching for a fetch function).
///
/// A failure fails the call with the returned status (say `UNAVAILABLE` when the token service
/// cannot be reached).
pub trait TokenProvider: Send + Sync + 'static {
    /// A token valid now.
    fn token(&self) -> BoxFuture<'_, Result<Token, Status>>;
}

/// A fixed token, such as one read from a file or an environment variable at start-up.
///
/// ```
/// let layer = ferry::auth::BearerLayer::new(ferry::auth::StaticToken::new("s3cr3t"));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct StaticToken {
    token: Token,
}

impl StaticToken {
    /// Always answers `token`.
    pub fn new(token: impl Into<Arc<str>>) -> StaticToken {
        StaticToken {
            token: Token::new(token),
        }
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<Token, Status>> {
        Box::pin(std::future::ready(Ok(self.token.clone())))
    }
}

/// Caches the token a fetch function returns and fetches a new one shortly (30 s by default)
/// before it expires.
///
/// Concurrent calls that find the cache stale wait for one fetch rather than each fetching. If a
/// refresh fails while the cached token has not expired yet, the cached token is used and the
/// next call tries again.
///
/// ```
/// use std::time::Duration;
/// use ferry::auth::{RefreshingToken, Token};
/// let provider = RefreshingToken::new(|| async {
///     // ask the identity provider (OAuth client credentials, a workload identity file, ...)
///     Ok(Token::new("fresh-token").expires_in(Duration::from_secs(600)))
/// })
/// .refresh_before(Duration::from_secs(60));
/// # let _ = provider;
/// ```
pub struct RefreshingToken<F> {
    fetch: F,
    cached: tokio::sync::Mutex<Option<Token>>,
    refresh_before: Duration,
}

impl<F, Fut> RefreshingToken<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, Status>> + Send + 'static,
{
    /// Caches what `fetch` returns.
    pub fn new(fetch: F) -> RefreshingToken<F> {
        RefreshingToken {
            fetch,
            cached: tokio::sync::Mutex::new(None),
            refresh_before: DEFAULT_REFRESH_BEFORE,
        }
    }

    /// Fetches a new token this long before the cached one expires.
    pub fn refresh_before(mut self, margin: Duration) -> RefreshingToken<F> {
        self.refresh_before = margin;
        self
    }
}

impl<F, Fut> TokenProvider for RefreshingToken<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, Status>> + Send + 'static,
{
    fn token(&self) -> BoxFuture<'_, Result<Token, Status>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some(token) = cached.as_ref().filter(|t| t.fresh_for(self.refresh_before)) {
                return Ok(token.clone());
            }
            match (self.fetch)().await {
                Ok(token) => {
                    *cached = Some(token.clone());
                    Ok(token)
                }
                Err(status) => match cached.as_ref().filter(|t| t.fresh_for(Duration::ZERO)) {
                    Some(still_valid) => {
                        tracing::debug!("token refresh failed, using the cached token: {status}");
                        Ok(still_valid.clone())
                    }
                    None => Err(status),
                },
            }
        })
    }
}

impl<F> std::fmt::Debug for RefreshingToken<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingToken")
            .field("refresh_before", &self.refresh_before)
            .finish_non_exhaustive()
    }
}

/// A client-side tower layer that sends `authorization: Bearer <token>` with every call, so
/// credentials are set once per channel rather than per call.
///
/// A call that already carries an `authorization` entry keeps it (a per-call override).
///
/// ```
/// use tower::Layer;
/// use ferry::auth::{BearerLayer, StaticToken};
/// # fn demo(channel: ferry::Channel) {
/// let authed = BearerLayer::new(StaticToken::new("s3cr3t")).layer(channel);
/// # let _ = authed; }
/// ```
#[derive(Clone)]
pub struct BearerLayer {
    provider: Arc<dyn TokenProvider>,
}

impl BearerLayer {
    /// Attaches the tokens `provider` gives.
    pub fn new(provider: impl TokenProvider) -> BearerLayer {
        BearerLayer {
            provider: Arc::new(provider),
        }
    }
}

impl std::fmt::Debug for BearerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerLayer").finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> BearerService<S> {
        BearerService {
            inner,
            provider: self.provider.clone(),
        }
    }
}

/// The service [`BearerLayer`] wraps around a client service (a `Channel`, say).
#[derive(Clone)]
pub struct BearerService<S> {
    inner: S,
    provider: Arc<dyn TokenProvider>,
}

impl<S> std::fmt::Debug for BearerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerService").finish_non_exhaustive()
    }
}

impl<S, B> tower::Service<Request<B>> for BearerService<S>
where
    S: tower::Service<Request<B>, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Status;
    type Future = BoxFuture<'static, Result<S::Response, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The readied service goes into the future; a fresh clone stays for the next call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let provider = self.provider.clone();
        Box::pin(async move {
            if request.metadata().get_bin("authorization").is_none() {
                let token = provider.token().await?;
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {}", token.value()));
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt};

    fn echo_auth()
    -> impl tower::Service<Request<()>, Response = Response<String>, Error = Status, Future: Send>
    + Clone
    + Send
    + 'static {
        tower::service_fn(|req: Request<()>| async move {
            Ok::<_, Status>(Response::new(
                req.metadata()
                    .get("authorization")
                    .unwrap_or("none")
                    .to_owned(),
            ))
        })
    }

    #[tokio::test]
    async fn static_token_attached_and_override_kept() {
        let svc = BearerLayer::new(StaticToken::new("abc")).layer(echo_auth());
        let got = svc
            .clone()
            .oneshot(Request::new(()))
            .await
            .map(Response::into_inner);
        assert_eq!(got.ok().as_deref(), Some("Bearer abc"));
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer per-call");
        let got = svc.oneshot(req).await.map(Response::into_inner);
        assert_eq!(got.ok().as_deref(), Some("Bearer per-call"));
    }

    #[tokio::test]
    async fn refreshing_token_caches_until_near_expiry() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let provider = RefreshingToken::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            // The first token expires within the refresh margin; later ones last.
            let ttl = if n == 0 {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(3600)
            };
            async move { Ok(Token::new(format!("t{n}")).expires_in(ttl)) }
        });
        let svc = BearerLayer::new(provider).layer(echo_auth());
        let mut seen = Vec::new();
        for _ in 0..3 {
            let got = svc
                .clone()
                .oneshot(Request::new(()))
                .await
                .map(Response::into_inner);
            seen.push(got.unwrap_or_default());
        }
        assert_eq!(seen, ["Bearer t0", "Bearer t1", "Bearer t1"]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_refresh_uses_unexpired_token_then_fails() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let provider = RefreshingToken::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Ok(Token::new("only").expires_in(Duration::from_secs(10))),
                    _ => Err(Status::unavailable("token service down")),
                }
            }
        });
        assert_eq!(
            provider
                .token()
                .await
                .ok()
                .map(|t| t.value().to_owned())
                .as_deref(),
            Some("only")
        );
        // Within the 30 s margin: a refresh is tried, fails, the still-valid token is used.
        assert_eq!(
            provider
                .token()
                .await
                .ok()
                .map(|t| t.value().to_owned())
                .as_deref(),
            Some("only")
        );
        let expired =
            RefreshingToken::new(|| async { Err::<Token, _>(Status::unavailable("down")) });
        assert_eq!(
            expired.token().await.err().map(|s| s.code()),
            Some(crate::Code::Unavailable)
        );
    }
}
